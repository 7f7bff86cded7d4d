"""Partition maintenance of ``log_entries`` on PostgreSQL: create weeks ahead, detach and drop, recover.

The layout (weekly ranges on ``timestamp``, no default partition) is in :mod:`db.partition_layout`;
this module changes the database at run time, the one documented exception to "an explicit
database is never changed behind your back" (docs/partitions.md). Alembic ignores partitions
(``include_object`` in migrations/env.py), so ``alembic check`` stays clean.

Ingest is never made to wait:

- **One maintainer at a time**: a session-level ``pg_try_advisory_lock`` on a dedicated
  connection that does all the work; a second maintainer finds it held and returns a
  report marked ``skipped``.
- **Creating** a week: the table is made standalone (``LIKE log_entries``, its indexes, a CHECK
  constraint matching the range and the counting trigger, see :func:`db.partition_layout.count_trigger_sql`),
  then ``ATTACH PARTITION``, which takes SHARE UPDATE EXCLUSIVE on the parent (inserts take ROW
  EXCLUSIVE: no conflict) and, thanks to the CHECK constraint, does not scan. The attach runs with
  ``lock_timeout`` (:data:`LOCK_TIMEOUT_MS`) and is retried with backoff, so the maintainer never
  queues for long behind someone else's DDL.
- **Dropping**: ``DETACH PARTITION … CONCURRENTLY`` on an AUTOCOMMIT connection (it cannot run
  in a transaction block), then ``DROP TABLE``.
- **Recovery**: a detach interrupted between its two transactions leaves the partition
  "detach pending"; the next run finishes it (``DETACH … FINALIZE``). Each step marks the table
  with a comment saying whose it is and where it stands (:data:`CREATED`, :data:`EXPIRING`,
  :data:`COUNTED`), written in the same transaction as the step, so the next run knows what
  to do with a table a killed process left: attach what it created, drop what retention
  already counted, attach back what retention detached but never counted (the next retention
  run counts and drops it). A table of a partition's name without a mark is somebody else's
  (an operator's archive): it is left alone and reported.

SQLite has no partitions: every function here is a no-op there.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.base import as_utc, utcnow
from db.partition_layout import (
    LEGACY,
    PARENT,
    WEEK,
    bound_literal,
    count_trigger_sql,
    is_partition,
    partition_name,
    wanted_weeks,
)

logger = logging.getLogger("aifw.partitions")

#: The maintainer's advisory lock key (per database), derived from a name like the retention lock's.
ADVISORY_LOCK_KEY: Final = int.from_bytes(
    hashlib.sha256(b"ai-usage-firewall.partitions").digest()[:8], "big", signed=True
)
#: How long one ATTACH (or FINALIZE, or DROP) waits for its locks before it gives up and retries.
LOCK_TIMEOUT_MS: Final = 200
#: How long the DROP of a detached partition waits for its lock (see :func:`_drop`).
DROP_LOCK_TIMEOUT_MS: Final = 5000
#: Attempts per step; the pauses between them double from :data:`FIRST_BACKOFF_SECONDS` (with jitter).
ATTEMPTS: Final = 6
FIRST_BACKOFF_SECONDS: Final = 0.05
#: How long :func:`detach_and_drop` waits for a running maintainer to finish before it gives up.
LOCK_WAIT_SECONDS: Final = 30.0
_POLL_SECONDS = 0.1
_LOCK_NOT_AVAILABLE = "55P03"

#: Marks (table comments): made by the maintainer and not attached yet.
CREATED: Final = "aifw:created"
#: Marked by retention before its detach; its rows are not counted in any run record yet.
EXPIRING: Final = "aifw:expiring"
#: Detached by retention and its rows counted in the run records: only the drop is left.
COUNTED: Final = "aifw:counted"
_MARKS = (CREATED, EXPIRING, COUNTED)
_BOUND = re.compile(r"^FOR VALUES FROM \((?P<lower>[^)]*)\) TO \((?P<upper>[^)]*)\)$")


@dataclass(frozen=True)
class PartitionInfo:
    """One partition of ``log_entries`` (or a table of a partition's name that is not attached)."""

    name: str
    #: Inclusive lower bound; None for MINVALUE (the legacy partition) or an unknown range.
    lower: datetime | None
    #: Exclusive upper bound; None for an unknown range (a standalone table without a mark).
    upper: datetime | None
    attached: bool
    #: A ``DETACH … CONCURRENTLY`` started and did not finish (the next maintenance finalizes it).
    detach_pending: bool
    #: The planner's estimate (``reltuples``; -1 when the table was never analysed).
    row_estimate: int
    size_bytes: int
    #: The maintenance mark (:data:`CREATED`, :data:`EXPIRING`, :data:`COUNTED`) or None.
    mark: str | None
    #: The bound clause as PostgreSQL prints it (``FOR VALUES FROM (…) TO (…)``), or None.
    bound: str | None

    @property
    def state(self) -> str:
        """A word for ``partitions status``: attached, detach pending, or the table's mark."""
        if self.detach_pending:
            return "detach pending"
        if self.attached:
            return "attached"
        return f"standalone ({self.mark.removeprefix('aifw:')})" if self.mark else "standalone (not ours)"


@dataclass
class MaintenanceReport:
    """What one :func:`maintain_partitions` run did."""

    #: True when nothing was done: SQLite, or another maintainer held the lock.
    skipped: bool = False
    reason: str | None = None
    created: list[str] = field(default_factory=list)
    finalized: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    #: Tables detached by retention before their rows were counted, attached back.
    reattached: list[str] = field(default_factory=list)
    #: Weeks not created because an existing partition (e.g. the legacy one) covers part of them.
    overlapping: list[str] = field(default_factory=list)
    #: Tables of a partition's name that are not ours: left alone.
    left_alone: list[str] = field(default_factory=list)
    #: Steps that kept timing out on a lock; the next run tries again.
    postponed: list[str] = field(default_factory=list)
    #: Lock timeouts met on the way (each followed by a retry).
    retries: int = 0

    def summary(self) -> str:
        """One line for the log and the command line."""
        if self.skipped:
            return f"partition maintenance skipped: {self.reason}"
        parts = [
            f"{len(self.created)} created",
            f"{len(self.finalized)} detaches finalized",
            f"{len(self.dropped)} dropped",
        ]
        for label, names in (
            ("attached back", self.reattached),
            ("postponed", self.postponed),
            ("left alone (not ours)", self.left_alone),
        ):
            if names:
                parts.append(f"{len(names)} {label} ({', '.join(names)})")
        if self.retries:
            parts.append(f"{self.retries} lock timeouts retried")
        return "partition maintenance: " + ", ".join(parts)


class PartitionLockBusy(RuntimeError):
    """Another maintainer held the partition lock for longer than the caller would wait."""


# --- reading ---------------------------------------------------------------------------------------

_ATTACHED = text(
    """
    SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), i.inhdetachpending,
           c.reltuples::bigint, pg_total_relation_size(c.oid), obj_description(c.oid, 'pg_class'),
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']*)''\\)'))[1]::timestamptz,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']*)''\\)'))[1]::timestamptz
    FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
    WHERE i.inhparent = to_regclass(:parent)
    """
)
_STANDALONE = text(
    """
    SELECT c.relname, c.reltuples::bigint, pg_total_relation_size(c.oid), obj_description(c.oid, 'pg_class')
    FROM pg_class AS c
    WHERE c.relkind = 'r' AND NOT c.relispartition
      AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
      AND (c.relname = :legacy OR c.relname ~ '^log_entries_p[0-9]{8}$')
    """
)


def _split_mark(comment: str | None) -> tuple[str | None, str | None]:
    """(mark, bound clause) from a table comment written by :func:`_mark_sql`."""
    if not comment:
        return None, None
    mark, _, bound = comment.partition(" ")
    return (mark, bound or None) if mark in _MARKS else (None, None)


async def _bounds_of(
    connection: AsyncConnection, bound: str | None
) -> tuple[datetime | None, datetime | None]:
    """The bounds in a ``FOR VALUES FROM (…) TO (…)`` clause, parsed by PostgreSQL itself."""
    match = _BOUND.match(bound or "")
    if match is None:
        return None, None
    values: list[datetime | None] = []
    for part in (match.group("lower"), match.group("upper")):
        if part.upper() in {"MINVALUE", "MAXVALUE"}:
            values.append(None)
        else:
            values.append(as_utc(await connection.scalar(text(f"SELECT {part}::timestamptz"))))
    return values[0], values[1]


async def list_partitions(connection: AsyncConnection) -> list[PartitionInfo]:
    """Every partition of ``log_entries`` with its bounds, and the standalone tables of a partition's name
    (left by an interrupted step, or somebody else's), oldest first; empty on SQLite."""
    if connection.dialect.name != "postgresql":
        return []
    found: dict[str, PartitionInfo] = {}
    for name, bound, pending, rows, size, comment, lower, upper in await connection.execute(
        _ATTACHED, {"parent": PARENT}
    ):
        found[name] = PartitionInfo(
            name=name,
            lower=None if lower is None else as_utc(lower),
            upper=None if upper is None else as_utc(upper),
            attached=True,
            detach_pending=bool(pending),
            row_estimate=int(rows),
            size_bytes=int(size),
            mark=_split_mark(comment)[0],
            bound=bound,
        )
    for name, rows, size, comment in await connection.execute(_STANDALONE, {"legacy": LEGACY}):
        mark, bound = _split_mark(comment)
        lower, upper = await _bounds_of(connection, bound)
        found[name] = PartitionInfo(
            name=name,
            lower=lower,
            upper=upper,
            attached=False,
            detach_pending=False,
            row_estimate=int(rows),
            size_bytes=int(size),
            mark=mark,
            bound=bound,
        )
    await connection.commit()
    return sorted(
        found.values(), key=lambda info: (info.lower is not None, info.lower or utcnow(), info.name)
    )


# --- the maintainer's lock and retries -----------------------------------------------------------


@asynccontextmanager
async def maintainer_connection(
    engine: AsyncEngine, *, wait_seconds: float = 0.0
) -> AsyncIterator[AsyncConnection | None]:
    """A dedicated connection holding the maintainer's advisory lock, or None if another maintainer
    holds it (after ``wait_seconds`` of polling). The lock is session-level: it lasts across the
    connection's transactions and goes with the connection if the process dies."""
    connection = await engine.connect()
    locked = False
    try:
        deadline = time.monotonic() + wait_seconds
        while True:
            locked = bool(
                await connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
            )
            await connection.commit()
            if locked or time.monotonic() >= deadline:
                break
            await asyncio.sleep(_POLL_SECONDS)
        yield connection if locked else None
    finally:
        try:
            if locked and not connection.invalidated:
                if connection.in_transaction():
                    await connection.rollback()
                await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
                await connection.commit()
        except Exception:  # closing the connection below releases a session-level lock anyway
            await connection.invalidate()
        await connection.close()


def _lock_timed_out(error: DBAPIError) -> bool:
    return getattr(error.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE


async def _with_lock_timeout(
    connection: AsyncConnection,
    statements: Sequence[str],
    report: MaintenanceReport,
    what: str,
    *,
    timeout_ms: int = LOCK_TIMEOUT_MS,
) -> bool:
    """Run ``statements`` in one transaction with ``lock_timeout``; retry with backoff while a lock is
    busy. False (and ``what`` postponed) if every attempt timed out."""
    for attempt in range(ATTEMPTS):
        try:
            async with connection.begin():
                await connection.execute(text(f"SET LOCAL lock_timeout = '{timeout_ms}ms'"))
                for statement in statements:
                    await connection.execute(text(statement))
            return True
        except DBAPIError as error:
            if not _lock_timed_out(error):
                raise
            report.retries += 1
            logger.info("%s: a lock was busy (attempt %d of %d)", what, attempt + 1, ATTEMPTS)
            if attempt + 1 < ATTEMPTS:
                pause = FIRST_BACKOFF_SECONDS * 2**attempt
                await asyncio.sleep(pause + random.uniform(0, pause))
    report.postponed.append(what)
    return False


def _quoted(name: str) -> str:
    if not is_partition(name):  # every name interpolated below comes from here
        raise ValueError(f"not a partition name of {PARENT}: {name!r}")
    return f'"{name}"'


def _mark_sql(name: str, mark: str | None, bound: str | None = None) -> str:
    comment = "NULL" if mark is None else "'" + f"{mark} {bound or ''}".strip().replace("'", "''") + "'"
    return f"COMMENT ON TABLE {_quoted(name)} IS {comment}"


def _range_check_sql(name: str, lower: datetime | None, upper: datetime) -> str:
    condition = f"timestamp < {bound_literal(upper)}"
    if lower is not None:
        condition = f"timestamp >= {bound_literal(lower)} AND {condition}"
    return f'ALTER TABLE {_quoted(name)} ADD CONSTRAINT "{name}_range" CHECK ({condition})'


def _bound_sql(lower: datetime | None, upper: datetime) -> str:
    low = "MINVALUE" if lower is None else bound_literal(lower)
    return f"FOR VALUES FROM ({low}) TO ({bound_literal(upper)})"


async def _attach(
    connection: AsyncConnection,
    name: str,
    lower: datetime | None,
    upper: datetime,
    report: MaintenanceReport,
) -> bool:
    """Attach the standalone table ``name`` (its CHECK constraint already proves the range) and drop the
    helper constraint and the mark in the same transaction."""
    return await _with_lock_timeout(
        connection,
        [
            f"ALTER TABLE {PARENT} ATTACH PARTITION {_quoted(name)} {_bound_sql(lower, upper)}",
            f'ALTER TABLE {_quoted(name)} DROP CONSTRAINT IF EXISTS "{name}_range"',
            _mark_sql(name, None),
        ],
        report,
        f"attach {name}",
    )


async def _prepare(
    connection: AsyncConnection, name: str, lower: datetime | None, upper: datetime, *, new: bool
) -> None:
    """Make ``name`` ready to attach: create it (``new``), or give a table that already holds rows the
    range constraint (one scan of that table, which nobody else uses) and, if missing, the counting
    trigger. One transaction, marked :data:`CREATED` with its bounds."""
    async with connection.begin():
        if new:
            await connection.execute(
                text(
                    f"CREATE TABLE {_quoted(name)} "
                    f"(LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)"
                )
            )
            await connection.execute(text(count_trigger_sql(name)))
        else:
            await connection.execute(
                text(f'ALTER TABLE {_quoted(name)} DROP CONSTRAINT IF EXISTS "{name}_range"')
            )
            has_trigger = await connection.scalar(
                text(
                    "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass(:name) AND tgname = :trigger"
                ),
                {"name": name, "trigger": "log_entries_count_rollups"},
            )
            if not has_trigger:
                await connection.execute(text(count_trigger_sql(name)))
        await connection.execute(text(_range_check_sql(name, lower, upper)))
        await connection.execute(text(_mark_sql(name, CREATED, _bound_sql(lower, upper))))


async def _drop(connection: AsyncConnection, name: str, report: MaintenanceReport) -> bool:
    # A detached table is nobody's: nothing of ingest queues behind this DROP, so it may wait longer
    # than an ATTACH. Long enough, too, for an autovacuum worker on the table to be cancelled for it
    # (PostgreSQL does that once a conflicting lock has waited deadlock_timeout, 1 s by default);
    # with 200 ms every attempt gave up first and the drop was postponed.
    statements = [f"DROP TABLE {_quoted(name)}"]
    if await _with_lock_timeout(
        connection, statements, report, f"drop {name}", timeout_ms=DROP_LOCK_TIMEOUT_MS
    ):
        report.dropped.append(name)
        return True
    return False


def _overlaps(start: datetime, end: datetime, info: PartitionInfo) -> bool:
    lower_ok = info.lower is None or info.lower < end
    upper_ok = info.upper is None or start < info.upper
    return lower_ok and upper_ok


async def _recover(connection: AsyncConnection, report: MaintenanceReport) -> None:
    """Finish what an interrupted run left: pending detaches, and standalone tables by their mark."""
    for info in await list_partitions(connection):
        if info.detach_pending:
            finalize = f"ALTER TABLE {PARENT} DETACH PARTITION {_quoted(info.name)} FINALIZE"
            if not await _with_lock_timeout(connection, [finalize], report, f"finalize {info.name}"):
                continue
            report.finalized.append(info.name)
            logger.warning("finished the interrupted detach of %s", info.name)
    for info in await list_partitions(connection):
        if info.attached:
            continue
        if info.mark == COUNTED:
            await _drop(connection, info.name, report)
        elif info.mark == EXPIRING and info.upper is not None:
            # Detached by a retention run that died before recording the counts: attach it back, rows and
            # all, so nothing is deleted uncounted; the next retention run counts and drops it.
            await _prepare(connection, info.name, info.lower, info.upper, new=False)
            if await _attach(connection, info.name, info.lower, info.upper, report):
                report.reattached.append(info.name)
        elif info.mark is None:
            report.left_alone.append(info.name)
            logger.warning("%s has a partition's name but is not ours: left alone", info.name)


async def _create_missing(
    connection: AsyncConnection, weeks: Sequence[datetime], report: MaintenanceReport
) -> None:
    known = await list_partitions(connection)
    by_name = {info.name: info for info in known}
    attached = [info for info in known if info.attached]
    for start in weeks:
        name, end = partition_name(start), start + WEEK
        existing = by_name.get(name)
        if existing is not None and existing.attached:
            continue
        if existing is not None and existing.mark != CREATED:
            continue  # somebody else's table of that name (reported by _recover)
        if any(_overlaps(start, end, info) for info in attached):
            report.overlapping.append(name)
            continue
        if existing is None:
            await _prepare(connection, name, start, end, new=True)
        if await _attach(connection, name, start, end, report):
            report.created.append(name)
        else:
            break  # the parent's lock stays busy: the next run (in an hour) tries the rest


async def maintain_partitions(engine: AsyncEngine, *, now: datetime | None = None) -> MaintenanceReport:
    """Finish interrupted detaches and steps, then create every missing partition of
    :func:`~db.partition_layout.wanted_weeks` (``now`` defaults to the clock).

    Under the maintainer's advisory lock: if another maintainer holds it, returns at once with
    ``skipped`` set. A week an existing partition overlaps (the legacy one) is left out. An ATTACH
    waits at most :data:`LOCK_TIMEOUT_MS` per attempt for its locks and is retried with backoff;
    what still cannot get its lock is ``postponed`` to the next run. On SQLite: a no-op report.
    """
    if engine.dialect.name != "postgresql":
        return MaintenanceReport(skipped=True, reason="SQLite has no partitions")
    report = MaintenanceReport()
    async with maintainer_connection(engine) as connection:
        if connection is None:
            return MaintenanceReport(skipped=True, reason="another maintainer is running")
        await _recover(connection, report)
        await _create_missing(connection, wanted_weeks(utcnow() if now is None else as_utc(now)), report)
    return report


# --- detaching, for retention ----------------------------------------------------------------------


async def mark_expiring(connection: AsyncConnection, info: PartitionInfo) -> bool:
    """Mark an attached partition :data:`EXPIRING` (with its bounds, so it can be attached back) in
    one transaction on ``connection`` (the maintainer's). False if its lock stayed busy."""
    if info.bound is None:
        raise ValueError(f"{info.name} has no bounds")
    report = MaintenanceReport()
    return await _with_lock_timeout(
        connection, [_mark_sql(info.name, EXPIRING, info.bound)], report, f"mark {info.name}"
    )


async def clear_mark(connection: AsyncConnection, info: PartitionInfo) -> None:
    """Remove the mark of a partition that stays attached (its detach failed before it began)."""
    if connection.in_transaction():
        await connection.rollback()
    await _with_lock_timeout(
        connection, [_mark_sql(info.name, None)], MaintenanceReport(), f"unmark {info.name}"
    )


def counted_mark_sql(info: PartitionInfo) -> str:
    """The statement that marks a detached partition :data:`COUNTED`: run it in the transaction that
    records its rows in the run records, so a table is marked counted exactly when it is."""
    return _mark_sql(info.name, COUNTED, info.bound)


async def detach_concurrently(connection: AsyncConnection, name: str) -> None:
    """``DETACH PARTITION … CONCURRENTLY`` on ``connection`` switched to AUTOCOMMIT for the statement
    (it cannot run in a transaction block). Inserts are never blocked: it takes SHARE UPDATE
    EXCLUSIVE, then waits for the queries that may still see the partition. Interrupted, it leaves
    the partition "detach pending" for :func:`maintain_partitions` to finalize."""
    if connection.in_transaction():
        await connection.commit()
    await connection.execution_options(isolation_level="AUTOCOMMIT")
    try:
        await connection.execute(text(f"ALTER TABLE {PARENT} DETACH PARTITION {_quoted(name)} CONCURRENTLY"))
    finally:
        if connection.in_transaction():  # SQLAlchemy's own bookkeeping; the server committed already
            await connection.rollback()
        await connection.execution_options(isolation_level=connection.default_isolation_level)


async def attach_back(connection: AsyncConnection, info: PartitionInfo) -> bool:
    """Attach a partition retention detached but did not drop (rows arrived that are not expired)."""
    if info.upper is None:
        raise ValueError(f"{info.name} has no upper bound")
    report = MaintenanceReport()
    await _prepare(connection, info.name, info.lower, info.upper, new=False)
    return await _attach(connection, info.name, info.lower, info.upper, report)


async def drop_detached(connection: AsyncConnection, name: str) -> bool:
    """Drop a detached partition (lock timeout and retries as for an attach)."""
    return await _drop(connection, name, MaintenanceReport())


async def detach_and_drop(engine: AsyncEngine, name: str, *, wait_seconds: float = LOCK_WAIT_SECONDS) -> None:
    """Detach ``name`` concurrently and drop it, under the maintainer's lock (waiting up to
    ``wait_seconds`` for a running maintainer; :class:`PartitionLockBusy` past that).

    The partition is marked :data:`COUNTED` before the detach: whoever calls this has no run
    record to keep (retention records its counts itself, see :mod:`db.retention`). Killed half-way,
    the next :func:`maintain_partitions` finalizes the detach and drops the table.
    """
    if engine.dialect.name != "postgresql":
        return
    async with maintainer_connection(engine, wait_seconds=wait_seconds) as connection:
        if connection is None:
            raise PartitionLockBusy(f"another partition maintainer kept its lock for {wait_seconds:g} s")
        info = next((p for p in await list_partitions(connection) if p.name == name), None)
        if info is None:
            raise LookupError(f"no partition {name!r}")
        if info.attached and not info.detach_pending:
            if not await _with_lock_timeout(
                connection, [counted_mark_sql(info)], MaintenanceReport(), f"mark {name}"
            ):
                raise PartitionLockBusy(f"{name} stayed locked")
            await detach_concurrently(connection, name)
        elif info.detach_pending:
            async with connection.begin():
                await connection.execute(
                    text(f"ALTER TABLE {PARENT} DETACH PARTITION {_quoted(name)} FINALIZE")
                )
        if not await drop_detached(connection, name):
            raise PartitionLockBusy(f"{name} stayed locked")
