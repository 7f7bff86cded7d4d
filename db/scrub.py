"""Finding and removing what is already stored that today's identifier and metadata rules would refuse.

Rows stored before the rules tightened (or written by SQL before migration 0008
added the CHECK constraints) may hold what the ingest server now refuses.
:func:`scrub` walks them in batches, each its own short transaction (nothing
holds a lock on millions of rows), and with ``apply`` repairs them:

* ``log_metadata`` entries refused by :func:`db.metadata_keys.metadata_problem`
  (unknown keys, content-like keys, values of the wrong shape, under the
  organisation's allowed keys) are removed from their row; the rest stays.
* ``tool_name``, ``user_id`` and ``device_id`` of log entries and devices that
  break the identifier rules are rewritten with each refused character spelled
  as a visible escape (``\\u202e``) and cut to the column's bound, so the row
  (evidence of what happened) stays and reads honestly. A device whose repaired
  id is taken by another device is left and reported.
* ``organization_id`` values are reported, never rewritten: moving events or
  devices to another organisation is not a repair. A row whose organisation id
  breaks a CHECK is left whole (any update of it would be refused).
* Rollup keys (tool, user, entity) that break the rules are folded into the
  overflow key of their bucket (:data:`db.rollups.OVERFLOW_KEY`), so totals stay right.
  ``tool_name`` and ``user_id`` are counted columns, whose update the database refuses
  while it counts: the scrub rewrites them with counting paused
  (:func:`db.rollups.counting_paused`), as it keeps the rollups right itself.

A dry run (the default) changes nothing and reports the same counts. After an
applied scrub, PostgreSQL VALIDATEs the ``NOT VALID`` identifier constraints of
migration 0008 (a constraint that still fails is reported with the reason). On
SQLite the constraints hold for every row written since the migration, and the
scrub's own pass is what finds older rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, cast

from sqlalchemy import ColumnElement, Table, bindparam, delete, func, literal, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.audit import record_change
from db.base import as_utc
from db.engine import insert_for
from db.event_schema import identifier_problem
from db.identifiers import (
    MAX_DEVICE_ID_CHARS,
    MAX_ORGANIZATION_ID_CHARS,
    MAX_TOOL_NAME_CHARS,
    MAX_USER_ID_CHARS,
    escape_forbidden,
    forbidden_character,
)
from db.metadata_keys import Shape, metadata_problem, organization_shapes
from db.models import Device, LogDailyCount, LogEntry, LogHourlyCount, LogWeeklyCount
from db.rights import Actor, require_admin
from db.rollups import CAPPED_DIMENSIONS, OVERFLOW_KEY, ROLLUP_KEY, counting_paused, forget_overview_sums

RollupTable = type[LogHourlyCount] | type[LogDailyCount] | type[LogWeeklyCount]

#: Log entries read per transaction.
BATCH_ROWS: Final = 2000
#: Rollup keys folded per statement (three parameters each).
KEYS_PER_STATEMENT: Final = 500
#: How many findings the report quotes (the counts cover all of them).
MAX_EXAMPLES: Final = 20
#: Bucket range each rollup table is scanned in, one transaction each.
ROLLUP_WINDOWS: Final[dict[RollupTable, timedelta]] = {
    LogHourlyCount: timedelta(days=7),
    LogDailyCount: timedelta(days=120),
    LogWeeklyCount: timedelta(weeks=104),
}
#: The identifier columns the scrub repairs, with their bound; organization_id is only reported.
REPAIRED_COLUMNS: Final = {
    "tool_name": MAX_TOOL_NAME_CHARS,
    "user_id": MAX_USER_ID_CHARS,
    "device_id": MAX_DEVICE_ID_CHARS,
}
#: The identifier rule of each rollup dimension's keys.
KEY_RULES: Final = {"tool": "tool_name", "user": "user_id", "entity": "entity_type"}


@dataclass
class ScrubReport:
    """What a scrub found (dry run) or changed (applied): counts, a few examples, the constraints
    validated."""

    applied: bool
    organization_id: str | None
    log_rows_read: int = 0
    metadata_rows: int = 0
    metadata_entries: int = 0
    #: ``log_entries.tool_name`` → values repaired (or to repair); likewise ``devices.*``.
    identifiers: dict[str, int] = field(default_factory=dict)
    #: Rows whose organisation id breaks the rules: reported, not changed.
    organization_ids: int = 0
    #: Rows that could not be repaired (organisation id breaking a CHECK, device id taken).
    left: int = 0
    rollup_rows: int = 0
    rollup_keys: int = 0
    rollup_events: int = 0
    examples: list[str] = field(default_factory=list)
    validated: list[str] = field(default_factory=list)
    #: Constraint name → why VALIDATE failed.
    not_validated: dict[str, str] = field(default_factory=dict)

    @property
    def found(self) -> int:
        """How many things the scrub found to change (0: the database already follows today's rules)."""
        return (
            self.metadata_entries + sum(self.identifiers.values()) + self.rollup_rows + self.organization_ids
        )

    def note(self, example: str) -> None:
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(example)

    def summary(self) -> dict[str, Any]:
        """The counts, for the audit trail."""
        return {
            "log_rows_read": self.log_rows_read,
            "metadata_rows": self.metadata_rows,
            "metadata_entries": self.metadata_entries,
            "identifiers": dict(self.identifiers),
            "organization_ids": self.organization_ids,
            "left": self.left,
            "rollup_rows": self.rollup_rows,
            "rollup_keys": self.rollup_keys,
            "rollup_events": self.rollup_events,
            "validated": list(self.validated),
            "not_validated": sorted(self.not_validated),
        }


# --- the rules ----------------------------------------------------------------------------------------


def repaired_identifier(value: str, *, max_chars: int, joiners_between_letters: bool = False) -> str:
    """``value`` with every refused character written as a visible escape, cut to ``max_chars``.

    ``"report\u202etxt.exe"`` becomes ``report\u202etxt.exe`` spelled out; a
    joiner between two letters stays where ``joiners_between_letters`` allows it.
    """
    repaired = escape_forbidden(value, joiners_between_letters=joiners_between_letters)[:max_chars]
    return repaired if repaired.strip() else "(blank)"


def _breaks_check(value: str, max_chars: int) -> bool:
    """True if ``value`` breaks its CHECK constraint (what any UPDATE of its row would be refused for)."""
    return not 1 <= len(value) <= max_chars or forbidden_character(value) is not None


# --- log entries -----------------------------------------------------------------------------------


async def _shapes(
    session: AsyncSession, cache: dict[str, Mapping[str, Shape]], organization_id: str
) -> Mapping[str, Shape]:
    shapes = cache.get(organization_id)
    if shapes is None:
        shapes = cache[organization_id] = await organization_shapes(
            session=session, organization_id=organization_id
        )
    return shapes


async def _scrub_log_entries(
    session: AsyncSession, report: ScrubReport, apply: bool, batch_rows: int
) -> None:
    shapes_cache: dict[str, Mapping[str, Shape]] = {}
    # The rows are walked in primary key order (organization_id, id, timestamp): an index range per batch.
    after: tuple[str, uuid.UUID, datetime] | None = None
    walk = (LogEntry.organization_id, LogEntry.id, LogEntry.timestamp)
    columns = (*walk, LogEntry.tool_name, LogEntry.user_id, LogEntry.device_id, LogEntry.log_metadata)
    while True:
        statement = select(*columns).order_by(*walk).limit(batch_rows)
        if after is not None:
            bound = (literal(value, column.type) for value, column in zip(after, walk, strict=True))
            statement = statement.where(tuple_(*walk) > tuple_(*bound))
        if report.organization_id is not None:
            statement = statement.where(LogEntry.organization_id == report.organization_id)
        rows = (await session.execute(statement)).all()
        if not rows:
            break
        after = (rows[-1][0], rows[-1][1], rows[-1][2])
        report.log_rows_read += len(rows)
        metadata_only: list[dict[str, Any]] = []
        identifiers: list[tuple[uuid.UUID, str, datetime, dict[str, Any]]] = []
        for organization_id, event_id, timestamp, tool_name, user_id, device_id, metadata in rows:
            changes: dict[str, Any] = {}
            where = f"{organization_id}/{event_id}"
            for name, value in (("tool_name", tool_name), ("user_id", user_id), ("device_id", device_id)):
                problem = identifier_problem(name, value)
                if problem is not None:
                    changes[name] = repaired_identifier(
                        value, max_chars=REPAIRED_COLUMNS[name], joiners_between_letters=name == "user_id"
                    )
                    report.note(f"log entry {where}: {problem}")
            if identifier_problem("organization_id", organization_id) is not None:
                report.organization_ids += 1
                report.note(f"log entry {where}: organization_id breaks the rules (reported, not changed)")
            if isinstance(metadata, dict) and metadata:
                shapes = await _shapes(session, shapes_cache, organization_id)
                kept = {}
                for key, value in metadata.items():
                    refusal = metadata_problem(key, value, allowed=shapes)
                    if refusal is None:
                        kept[key] = value
                    else:
                        report.note(f"log entry {where}: {refusal.message}")
                if len(kept) < len(metadata):
                    report.metadata_rows += 1
                    report.metadata_entries += len(metadata) - len(kept)
                    changes["log_metadata"] = kept
            if not changes:
                continue
            for name in REPAIRED_COLUMNS:
                if name in changes:
                    counted = f"log_entries.{name}"
                    report.identifiers[counted] = report.identifiers.get(counted, 0) + 1
            if _breaks_check(organization_id, MAX_ORGANIZATION_ID_CHARS):
                report.left += 1
                continue
            if not apply:
                continue
            if changes.keys() == {"log_metadata"}:
                metadata_only.append(
                    {"b_id": event_id, "b_org": organization_id, "log_metadata": changes["log_metadata"]}
                )
            else:
                identifiers.append((event_id, organization_id, timestamp, changes))
        if metadata_only:
            await _update_metadata(session, metadata_only)
        if identifiers:
            # Counted columns: _scrub_rollups folds the refused keys of their buckets itself.
            async with counting_paused(session):
                for event_id, organization_id, timestamp, changes in identifiers:
                    await session.execute(
                        update(LogEntry)
                        .where(
                            LogEntry.organization_id == organization_id,
                            LogEntry.id == event_id,
                            LogEntry.timestamp == timestamp,
                        )
                        .values(**changes)
                    )
        # Each batch its own transaction: a dry run holds no snapshot, an applied one no long locks.
        await (session.commit() if apply else session.rollback())


async def _update_metadata(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """One executemany for the batch's metadata-only repairs (usually most of them)."""
    table = cast(Table, LogEntry.__table__)  # Core: a WHERE with executemany parameters
    statement = (
        update(table)
        .where(table.c.id == bindparam("b_id"), table.c.organization_id == bindparam("b_org"))
        .values(log_metadata=bindparam("log_metadata"))
    )
    await session.execute(statement, rows)


# --- devices -----------------------------------------------------------------------------------------


async def _scrub_devices(session: AsyncSession, report: ScrubReport, apply: bool, batch_rows: int) -> None:
    after: uuid.UUID | None = None
    while True:
        statement = select(Device).order_by(Device.id).limit(batch_rows)
        if after is not None:
            statement = statement.where(Device.id > after)
        if report.organization_id is not None:
            statement = statement.where(Device.organization_id == report.organization_id)
        devices = (await session.scalars(statement)).all()
        if not devices:
            break
        after = devices[-1].id
        for device in devices:
            changes: dict[str, str] = {}
            for name in ("device_id", "user_id"):
                value = getattr(device, name)
                problem = identifier_problem(name, value)
                if problem is not None:
                    changes[name] = repaired_identifier(
                        value, max_chars=REPAIRED_COLUMNS[name], joiners_between_letters=name == "user_id"
                    )
                    report.identifiers[f"devices.{name}"] = report.identifiers.get(f"devices.{name}", 0) + 1
                    report.note(f"device {device.organization_id}/{device.device_id}: {problem}")
            if identifier_problem("organization_id", device.organization_id) is not None:
                report.organization_ids += 1
                report.note(
                    f"device {device.device_id}: organization_id breaks the rules (reported, not changed)"
                )
            if not changes:
                continue
            taken = "device_id" in changes and await session.scalar(
                select(Device.id).where(Device.device_id == changes["device_id"])
            )
            if taken or _breaks_check(device.organization_id, MAX_ORGANIZATION_ID_CHARS):
                report.left += 1
                continue
            if apply:
                await session.execute(update(Device).where(Device.id == device.id).values(**changes))
        await (session.commit() if apply else session.rollback())


# --- rollups -----------------------------------------------------------------------------------------

_RollupKey = tuple[str, str, str]


async def _scrub_rollups(session: AsyncSession, report: ScrubReport, apply: bool) -> None:
    for table, window in ROLLUP_WINDOWS.items():
        scope: list[ColumnElement[bool]] = [table.dimension.in_(sorted(CAPPED_DIMENSIONS))]
        if report.organization_id is not None:
            scope.append(table.organization_id == report.organization_id)
        bounds = select(func.min(table.bucket_start), func.max(table.bucket_start)).where(*scope)
        first, last = (await session.execute(bounds)).one()
        await session.rollback()
        if first is None:
            continue
        start, last = as_utc(first), as_utc(last)
        seen_bad: set[_RollupKey] = set()
        while start <= last:
            end = start + window
            in_window = [*scope, table.bucket_start >= start, table.bucket_start < end]
            keys = (
                await session.execute(
                    select(table.organization_id, table.dimension, table.key).distinct().where(*in_window)
                )
            ).all()
            bad = []
            for org, dimension, key in keys:
                if key == OVERFLOW_KEY:
                    continue
                problem = identifier_problem(KEY_RULES[dimension], key)
                if problem is not None:
                    bad.append((org, dimension, key))
                    if (org, dimension, key) not in seen_bad:
                        seen_bad.add((org, dimension, key))
                        report.note(f"rollup key {org}/{dimension}: {problem}")
            for offset in range(0, len(bad), KEYS_PER_STATEMENT):
                await _fold(
                    session, table, in_window, bad[offset : offset + KEYS_PER_STATEMENT], report, apply
                )
            if bad and apply:
                # The overview's sums still name the keys just folded: they are made again next hour.
                await forget_overview_sums(session=session)
            await (session.commit() if apply else session.rollback())
            start = end
        report.rollup_keys += len(seen_bad)


async def _fold(
    session: AsyncSession,
    table: RollupTable,
    in_window: Sequence[ColumnElement[bool]],
    keys: list[_RollupKey],
    report: ScrubReport,
    apply: bool,
) -> None:
    """Count these keys' rows in the window and, with ``apply``, add them to the overflow key and delete
    them."""
    where = [*in_window, tuple_(table.organization_id, table.dimension, table.key).in_(keys)]
    rows, events = (
        await session.execute(select(func.count(), func.sum(table.event_count)).where(*where))
    ).one()
    report.rollup_rows += int(rows or 0)
    report.rollup_events += int(events or 0)
    if not apply or not rows:
        return
    folded = (
        select(
            table.bucket_start,
            table.organization_id,
            table.dimension,
            literal(OVERFLOW_KEY),
            table.risk_level,
            func.sum(table.event_count),
        )
        .where(*where)
        .group_by(table.bucket_start, table.organization_id, table.dimension, table.risk_level)
    )
    insert = insert_for(session)
    statement = insert(table).from_select([*ROLLUP_KEY, "event_count"], folded)
    statement = statement.on_conflict_do_update(
        index_elements=ROLLUP_KEY, set_={"event_count": table.event_count + statement.excluded.event_count}
    )
    await session.execute(statement)
    await session.execute(delete(table).where(*where))


# --- constraints ---------------------------------------------------------------------------------------


async def _validate_constraints(session: AsyncSession, report: ScrubReport) -> None:
    """PostgreSQL: VALIDATE each identifier CHECK still NOT VALID (migration 0008), one transaction each."""
    if session.get_bind().dialect.name != "postgresql":
        return
    pending = (
        await session.execute(
            text(
                "SELECT conrelid::regclass::text, conname FROM pg_constraint "
                "WHERE contype = 'c' AND NOT convalidated AND conname LIKE 'ck\\_%\\_identifier' "
                "ORDER BY 1, 2"
            )
        )
    ).all()
    await session.rollback()
    for table, name in pending:
        try:
            # Names come from pg_constraint, not from input; VALIDATE does not block writers.
            await session.execute(text(f'ALTER TABLE "{table}" VALIDATE CONSTRAINT "{name}"'))
            await session.commit()
            report.validated.append(name)
        except Exception as error:  # noqa: BLE001 - every failure is reported; the others still run
            await session.rollback()
            report.not_validated[name] = str(getattr(error, "orig", error)).splitlines()[0]


# --- the command -----------------------------------------------------------------------------------------


async def scrub(
    *,
    session: AsyncSession,
    organization_id: str | None = None,
    actor: Actor,
    apply: bool = False,
    batch_rows: int = BATCH_ROWS,
) -> ScrubReport:
    """Find (and with ``apply`` repair) stored rows that today's rules refuse; see the module docstring.

    Commits batch by batch when applying (and ends each read transaction on a dry
    run); an applied scrub ends with an audit row (``scrub.apply``) holding its counts.
    An applied scrub raises NotAllowed, before changing anything, unless ``actor`` is an
    administrator (a dry run changes nothing and is not checked).
    """
    report = ScrubReport(applied=apply, organization_id=organization_id)
    if apply:
        await require_admin(session=session, actor=actor, what="scrub stored rows")
    await _scrub_log_entries(session, report, apply, batch_rows)
    await _scrub_devices(session, report, apply, batch_rows)
    await _scrub_rollups(session, report, apply)
    if apply:
        await _validate_constraints(session, report)
        await record_change(
            session=session,
            actor=actor,
            action="scrub.apply",
            entity_type="organization",
            entity_id=organization_id or "*",
            changes={"scrub": {"after": report.summary()}},
        )
        await session.commit()
    return report
