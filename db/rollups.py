"""Hourly, daily and weekly pre-aggregated counts of stored events, kept by the database itself.

Every row inserted into ``log_entries``, by the ingest server, a ``COPY``, a
restore or plain SQL, is added once to its hour in ``log_hourly_counts``, its
UTC day in ``log_daily_counts`` and its ISO week (from Monday, UTC) in
``log_weekly_counts`` by a trigger (migration 0015): a statement trigger with a
transition table on PostgreSQL, a row trigger on SQLite. All three outlive
retention, so history older than the raw logs stays visible.

Distinct keys are capped per organisation, bucket and dimension (``tool``,
``user``, ``entity``) at ``rollup_settings.max_keys_per_bucket``: past it a new
key's events are counted under :data:`OVERFLOW_KEY`, so an agent that invents a
tool name per event adds one row, not thousands. Totals stay exact; only the
names past the cap are lost. Concurrent writers may each admit the last free
places, so the cap is soft by a batch.

An UPDATE of a counted column is refused. Work that moves or repairs rows
(partition maintenance, a migration copy, the scrub) runs inside
:func:`counting_paused` and keeps the counts right itself.

:func:`rebuild` recomputes from the raw rows every bucket that starts at or after
its organisation's retention cutoff (older buckets stay: retention keeps them
past their rows), one bucket per short transaction that no insert's counting can
interleave with (``python -m console rollups rebuild``). Past the cap it keeps the
most frequent keys by name, where the trigger keeps the first to arrive.
"""

from __future__ import annotations

import inspect
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from sqlalchemy import String, bindparam, delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.audit import record_change
from db.base import UTCDateTime, as_utc, utcnow
from db.engine import take_sqlite_write_lock
from db.identifiers import MAX_ROLLUP_KEY_CHARS
from db.models import FirewallConfig, LogDailyCount, LogEntry, LogHourlyCount, LogWeeklyCount, RollupSettings
from db.retention import cutoff_for
from db.rights import Actor, require_admin
from db.vocabulary import DEFAULT_RETENTION_DAYS, MAX_RETENTION_DAYS

DIMENSIONS = ("risk", "tool", "user", "entity")
MAX_KEY_LENGTH = MAX_ROLLUP_KEY_CHARS
#: The dimensions whose keys come from agents, so their number is capped per bucket.
CAPPED_DIMENSIONS = frozenset({"tool", "user", "entity"})
#: The key that counts the events of keys past the cap: empty, which no identifier can be
#: (the risk dimension's one key is empty too). The overview shows it as "(other)".
OVERFLOW_KEY = ""
#: The cap a database starts with (migration 0015).
DEFAULT_MAX_KEYS = 10_000


ROLLUP_KEY = ["bucket_start", "organization_id", "dimension", "key", "risk_level"]


def hour_of(moment: datetime) -> datetime:
    """The start of the UTC hour of ``moment``."""
    return as_utc(moment).replace(minute=0, second=0, microsecond=0)


def day_of(moment: datetime) -> datetime:
    """The start (midnight UTC) of the UTC day of ``moment``."""
    return as_utc(moment).replace(hour=0, minute=0, second=0, microsecond=0)


def week_of(moment: datetime) -> datetime:
    """The start (Monday, midnight UTC) of the ISO week of ``moment``."""
    day = day_of(moment)
    return day - timedelta(days=day.weekday())


RollupTable = type[LogHourlyCount] | type[LogDailyCount] | type[LogWeeklyCount]
#: Hourly, daily, weekly: always in this order, so concurrent writers lock rows in one order.
TABLES: tuple[RollupTable, ...] = (LogHourlyCount, LogDailyCount, LogWeeklyCount)


@asynccontextmanager
async def counting_paused(session: AsyncSession) -> AsyncIterator[None]:
    """Inside this block, rows the session inserts are not counted and counted columns may be updated.

    For work that moves or repairs rows and keeps the counts right itself. It
    holds for the session's current transaction only: on PostgreSQL a
    transaction-local setting; on SQLite a switch in ``rollup_settings`` that is
    turned back on before the block ends (SQLite has one writer, so no other
    connection sees it off).
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT set_config('aifw.counting', 'off', true)"))
        try:
            yield
        finally:
            await session.execute(text("SELECT set_config('aifw.counting', 'on', true)"))
        return
    await session.execute(update(RollupSettings).where(RollupSettings.id == 1).values(counting=False))
    try:
        yield
    finally:
        await session.execute(update(RollupSettings).where(RollupSettings.id == 1).values(counting=True))


async def key_cap(*, session: AsyncSession) -> int:
    """The distinct keys a bucket of one dimension of one organisation holds before the overflow key."""
    value = await session.scalar(select(RollupSettings.max_keys_per_bucket).where(RollupSettings.id == 1))
    return int(value) if value is not None else DEFAULT_MAX_KEYS


async def set_key_cap(*, session: AsyncSession, actor: Actor, max_keys: int) -> None:
    """Change the cap on distinct keys per bucket, with an audit row (in the caller's transaction).

    Raises ValueError for a cap below 1, NotAllowed unless ``actor`` is an administrator. Buckets
    already past the new cap keep their keys; only keys new to a bucket meet it.
    """
    if max_keys < 1:
        raise ValueError("the cap on distinct keys must be at least 1")
    await require_admin(session=session, actor=actor, what="change the cap on rollup keys")
    before = await key_cap(session=session)
    await session.execute(
        update(RollupSettings).where(RollupSettings.id == 1).values(max_keys_per_bucket=max_keys)
    )
    if before != max_keys:
        await record_change(
            session=session,
            actor=actor,
            action="rollups.cap",
            entity_type="config",
            entity_id="rollup_settings",
            changes={"max_keys_per_bucket": {"before": before, "after": max_keys}},
        )


# --- rebuilding from the raw rows -------------------------------------------------------------------

DAY: Final = timedelta(days=1)
WEEK: Final = timedelta(weeks=1)
#: (bucket start, dimension, key, risk level) → events.
Counts = Counter[tuple[datetime, str, str, str]]

#: Each stored row's keys, as the counting trigger (migration 0015) reads them from its new rows: the
#: risk level under the empty key, tool and user cut to the key's bound, each distinct entity type once.
_KEYED_ROWS_POSTGRESQL = f"""
    picked AS (
        SELECT timestamp, risk_level, tool_name, user_id, detected_entity_types FROM log_entries
        WHERE organization_id = :organization_id AND timestamp >= :start AND timestamp < :end
    ),
    keyed AS (
        SELECT timestamp, 'risk' AS dim, '' AS key, risk_level FROM picked
        UNION ALL SELECT timestamp, 'tool', left(tool_name, {MAX_KEY_LENGTH}), risk_level FROM picked
        UNION ALL SELECT timestamp, 'user', left(user_id, {MAX_KEY_LENGTH}), risk_level FROM picked
        UNION ALL
        SELECT p.timestamp, 'entity', e.key, p.risk_level
        FROM picked AS p
        CROSS JOIN LATERAL (
            SELECT DISTINCT left(value, {MAX_KEY_LENGTH}) AS key
            FROM jsonb_array_elements_text(
                CASE WHEN jsonb_typeof(p.detected_entity_types) = 'array'
                     THEN p.detected_entity_types ELSE '[]'::jsonb END) AS value
        ) AS e
    )"""
# SQLite has no LATERAL: an entity type is made distinct per event by the event's identity.
_KEYED_ROWS_SQLITE = f"""
    picked AS (
        SELECT id, timestamp, risk_level, tool_name, user_id, detected_entity_types FROM log_entries
        WHERE organization_id = :organization_id AND timestamp >= :start AND timestamp < :end
    ),
    keyed AS (
        SELECT timestamp, 'risk' AS dim, '' AS key, risk_level FROM picked
        UNION ALL SELECT timestamp, 'tool', substr(tool_name, 1, {MAX_KEY_LENGTH}), risk_level FROM picked
        UNION ALL SELECT timestamp, 'user', substr(user_id, 1, {MAX_KEY_LENGTH}), risk_level FROM picked
        UNION ALL
        SELECT timestamp, 'entity', key, risk_level FROM (
            SELECT DISTINCT p.id, p.timestamp, substr(j.value, 1, {MAX_KEY_LENGTH}) AS key, p.risk_level
            FROM picked AS p, json_each(
                CASE WHEN json_type(p.detected_entity_types) = 'array'
                     THEN p.detected_entity_types ELSE '[]' END) AS j
        )
    )"""
#: The bucket of a row's timestamp, in UTC whatever the session's time zone.
_BUCKET_SQL: Final = {
    ("postgresql", "hour"): "date_trunc('hour', timestamp, 'UTC')",
    ("postgresql", "week"): "date_trunc('week', timestamp, 'UTC')",
    # SQLite keeps UTC timestamps as canonical 'YYYY-MM-DD HH:MM:SS.ffffff' text (migration 0012).
    ("sqlite", "hour"): "substr(timestamp, 1, 13) || ':00:00.000000'",
    ("sqlite", "week"): "date(substr(timestamp, 1, 10), 'weekday 0', '-6 days') || ' 00:00:00.000000'",
}


@dataclass(frozen=True)
class RebuildProgress:
    """One bucket rebuilt (and committed) by :func:`rebuild`.

    ``grain`` ``day``: the UTC day's hourly buckets that start at or after the cutoff, and the
    day's own bucket if it does; ``week``: one weekly bucket. ``done`` of ``total`` counts the
    organisation's buckets.
    """

    organization_id: str
    grain: Literal["day", "week"]
    bucket_start: datetime
    events: int
    done: int
    total: int


@dataclass
class OrganizationRebuild:
    """What :func:`rebuild` did for one organisation."""

    organization_id: str
    retention_days: int
    cutoff: datetime
    days: int = 0
    weeks: int = 0
    #: Events counted into the rebuilt hourly buckets (each event once).
    events: int = 0


@dataclass
class RebuildReport:
    """What :func:`rebuild` did, organisation by organisation."""

    organization_id: str | None
    organizations: list[OrganizationRebuild] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The counts, for the audit trail."""
        return {
            org.organization_id: {
                "cutoff": org.cutoff,
                "days": org.days,
                "weeks": org.weeks,
                "events": org.events,
            }
            for org in self.organizations
        }


ProgressCallback = Callable[[RebuildProgress], Awaitable[None] | None]


def capped(counts: Mapping[tuple[datetime, str, str, str], int], max_keys: int) -> Counts:
    """``counts`` with, in each bucket and capped dimension, the keys past the ``max_keys`` most frequent
    (ties in key order) counted under :data:`OVERFLOW_KEY`; totals unchanged."""
    totals: defaultdict[tuple[datetime, str], Counter[str]] = defaultdict(Counter)
    for (bucket, dimension, key, _), events in counts.items():
        if dimension in CAPPED_DIMENSIONS and key != OVERFLOW_KEY:
            totals[(bucket, dimension)][key] += events
    kept = {
        group: {key for key, _ in sorted(keys.items(), key=lambda item: (-item[1], item[0]))[:max_keys]}
        for group, keys in totals.items()
    }
    result: Counts = Counter()
    for (bucket, dimension, key, risk_level), events in counts.items():
        if dimension in CAPPED_DIMENSIONS and key != OVERFLOW_KEY and key not in kept[(bucket, dimension)]:
            key = OVERFLOW_KEY
        result[(bucket, dimension, key, risk_level)] += events
    return result


async def raw_counts(
    *,
    session: AsyncSession,
    organization_id: str,
    start: datetime,
    end: datetime,
    grain: Literal["hour", "week"],
) -> Counts:
    """The organisation's stored rows with ``start <= timestamp < end`` counted per ``grain`` bucket,
    dimension, key and risk level, as the counting trigger counts them (before the cap)."""
    dialect = session.get_bind().dialect.name
    keyed = _KEYED_ROWS_POSTGRESQL if dialect == "postgresql" else _KEYED_ROWS_SQLITE
    statement = (
        text(
            f"WITH {keyed} SELECT {_BUCKET_SQL[(dialect, grain)]} AS bucket, dim, key, risk_level, "
            "count(*) AS events FROM keyed GROUP BY 1, 2, 3, 4"
        )
        .bindparams(
            bindparam("organization_id", organization_id, type_=String()),
            bindparam("start", start, type_=UTCDateTime()),
            bindparam("end", end, type_=UTCDateTime()),
        )
        .columns(bucket=UTCDateTime())
    )
    counts: Counts = Counter()
    for bucket, dimension, key, risk_level, events in (await session.execute(statement)).all():
        counts[(bucket, dimension, key, risk_level)] += int(events)
    return counts


async def _lock_rollups(session: AsyncSession) -> None:
    """Hold off every insert's counting until the transaction ends, so no count lands between the read of
    the raw rows and the write of their buckets.

    PostgreSQL: EXCLUSIVE mode lets the overview read (ACCESS SHARE) but not the trigger upsert
    (ROW EXCLUSIVE); once granted, every transaction that counted has committed, and a statement
    whose rows this transaction cannot see waits to count them after it. SQLite: the one write lock.
    """
    if session.get_bind().dialect.name == "postgresql":
        names = ", ".join(table.__tablename__ for table in TABLES)
        await session.execute(text(f"LOCK TABLE {names} IN EXCLUSIVE MODE"))
    else:
        await take_sqlite_write_lock(session, LogHourlyCount)


async def _replace(
    session: AsyncSession,
    table: RollupTable,
    organization_id: str,
    start: datetime,
    end: datetime,
    counts: Counts,
) -> None:
    """Replace the organisation's rows of ``table`` with ``start <= bucket_start < end`` by ``counts``."""
    await session.execute(
        delete(table).where(
            table.organization_id == organization_id, table.bucket_start >= start, table.bucket_start < end
        )
    )
    if counts:
        await session.execute(
            insert(table),
            [
                {
                    "bucket_start": bucket,
                    "organization_id": organization_id,
                    "dimension": dimension,
                    "key": key,
                    "risk_level": risk_level,
                    "event_count": events,
                }
                for (bucket, dimension, key, risk_level), events in sorted(counts.items())
            ],
        )


async def _rebuild_day(session: AsyncSession, organization_id: str, day: datetime, cutoff: datetime) -> int:
    """One transaction: the day's hourly buckets at or after ``cutoff`` and, if the day starts at or after
    it, the daily bucket (the sum of its hours, as the trigger sums them). Returns the events counted."""
    try:
        await _lock_rollups(session)
        cap = await key_cap(session=session)
        hours = await raw_counts(
            session=session, organization_id=organization_id, start=day, end=day + DAY, grain="hour"
        )
        kept = Counter({bucket_key: n for bucket_key, n in hours.items() if bucket_key[0] >= cutoff})
        await _replace(
            session, LogHourlyCount, organization_id, max(day, cutoff), day + DAY, capped(kept, cap)
        )
        if day >= cutoff:
            whole: Counts = Counter()
            for (_, dimension, key, risk_level), events in hours.items():
                whole[(day, dimension, key, risk_level)] += events
            await _replace(session, LogDailyCount, organization_id, day, day + DAY, capped(whole, cap))
        await session.commit()
    except BaseException:
        await session.rollback()
        raise
    return sum(events for (_, dimension, _, _), events in kept.items() if dimension == "risk")


async def _rebuild_week(session: AsyncSession, organization_id: str, week: datetime) -> int:
    """One transaction: the weekly bucket starting at ``week``, from the week's raw rows."""
    try:
        await _lock_rollups(session)
        cap = await key_cap(session=session)
        counts = await raw_counts(
            session=session, organization_id=organization_id, start=week, end=week + WEEK, grain="week"
        )
        await _replace(session, LogWeeklyCount, organization_id, week, week + WEEK, capped(counts, cap))
        await session.commit()
    except BaseException:
        await session.rollback()
        raise
    return sum(events for (_, dimension, _, _), events in counts.items() if dimension == "risk")


async def _starts(
    session: AsyncSession,
    column: Any,
    organization_column: Any,
    organization_id: str,
    since: datetime,
    bucket_of: Callable[[datetime], datetime],
    width: timedelta,
) -> set[datetime]:
    """The buckets (by ``bucket_of``) holding a value of ``column`` at or after ``since``: one index probe
    per bucket found, not a scan of the rows."""
    found: set[datetime] = set()
    cursor = since
    while True:
        first = await session.scalar(
            select(func.min(column)).where(organization_column == organization_id, column >= cursor)
        )
        if first is None:
            return found
        start = bucket_of(as_utc(first))
        found.add(start)
        cursor = start + width


async def _buckets_to_rebuild(
    session: AsyncSession, organization_id: str, cutoff: datetime
) -> tuple[list[datetime], list[datetime]]:
    """The UTC days and ISO weeks that hold rows or rollups of the organisation at or after ``cutoff``."""
    days: set[datetime] = set()
    for column, owner in (
        (LogEntry.timestamp, LogEntry.organization_id),
        (LogHourlyCount.bucket_start, LogHourlyCount.organization_id),
        (LogDailyCount.bucket_start, LogDailyCount.organization_id),
    ):
        days |= await _starts(session, column, owner, organization_id, cutoff, day_of, DAY)
    weeks = {week_of(day) for day in days} | await _starts(
        session,
        LogWeeklyCount.bucket_start,
        LogWeeklyCount.organization_id,
        organization_id,
        cutoff,
        week_of,
        WEEK,
    )
    return sorted(days), sorted(week for week in weeks if week >= cutoff)


async def _organizations(
    session: AsyncSession, organization_id: str | None, now: datetime
) -> list[tuple[str, int]]:
    """(organisation, retention days) for each organisation to rebuild: configured ones, and those with
    logs or recent rollups (at the default retention)."""
    configured = {
        org: days
        for org, days in (
            await session.execute(select(FirewallConfig.organization_id, FirewallConfig.log_retention_days))
        ).all()
    }
    if organization_id is not None:
        return [(organization_id, configured.get(organization_id, DEFAULT_RETENTION_DAYS))]
    found = set(configured)
    # A loose index scan: one probe per organisation with logs.
    org = await session.scalar(select(func.min(LogEntry.organization_id)))
    while org is not None:
        found.add(org)
        org = await session.scalar(
            select(func.min(LogEntry.organization_id)).where(LogEntry.organization_id > org)
        )
    earliest = week_of(now - timedelta(days=MAX_RETENTION_DAYS))
    recent = select(LogWeeklyCount.organization_id).where(LogWeeklyCount.bucket_start >= earliest).distinct()
    found.update((await session.scalars(recent)).all())
    return [(org, configured.get(org, DEFAULT_RETENTION_DAYS)) for org in sorted(found)]


async def _report(progress: ProgressCallback | None, step: RebuildProgress) -> None:
    if progress is None:
        return
    outcome = progress(step)
    if inspect.isawaitable(outcome):
        await outcome


async def rebuild(
    *,
    session: AsyncSession,
    actor: Actor,
    organization_id: str | None = None,
    now: datetime | None = None,
    progress: ProgressCallback | None = None,
) -> RebuildReport:
    """Recompute from the raw rows every rollup bucket that starts at or after its organisation's
    retention cutoff, for every organisation or only ``organization_id``; older buckets are kept.

    Each organisation's cutoff is ``now`` less its ``log_retention_days`` (the default without a
    config row), advanced with the clock while the rebuild runs so a cleanup running meanwhile
    never leaves a rebuilt bucket short of rows it deleted. Each UTC day (its hourly buckets and
    the daily one) and then each week is rebuilt in its own short transaction, committed before
    ``progress`` hears of it, with the rollups locked against every insert's counting
    (:func:`_lock_rollups`): a rebuild running beside ingest ends exact. The result is what the
    trigger counts for the rows inserted in one statement, except past the cap (see
    :func:`capped`). Ends with an audit row (``rollups.rebuild``). Raises NotAllowed unless
    ``actor`` is an administrator.
    """
    await require_admin(session=session, actor=actor, what="rebuild the rollups")
    now = utcnow() if now is None else as_utc(now)
    started = utcnow()

    def cutoff(days: int) -> datetime:
        return cutoff_for(now + (utcnow() - started), days)

    plan = await _organizations(session, organization_id, now)
    await session.rollback()
    report = RebuildReport(organization_id=organization_id)
    for org, retention_days in plan:
        result = OrganizationRebuild(org, retention_days, cutoff(retention_days))
        report.organizations.append(result)
        days, weeks = await _buckets_to_rebuild(session, org, result.cutoff)
        await session.rollback()
        total = len(days) + len(weeks)
        for day in days:
            events = await _rebuild_day(session, org, day, cutoff(retention_days))
            result.days += 1
            result.events += events
            await _report(progress, RebuildProgress(org, "day", day, events, result.days, total))
        for week in weeks:
            if week < cutoff(retention_days):
                continue  # the cutoff passed it while the days were rebuilt: retention keeps it as it is
            events = await _rebuild_week(session, org, week)
            result.weeks += 1
            await _report(
                progress, RebuildProgress(org, "week", week, events, result.days + result.weeks, total)
            )
    await record_change(
        session=session,
        actor=actor,
        action="rollups.rebuild",
        entity_type="organization",
        entity_id=organization_id or "*",
        changes={"rebuild": {"after": report.summary()}},
    )
    await session.commit()
    return report
