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
past their rows), one bucket per short transaction, without locking out ingest
(``python -m console rollups rebuild``). Past the cap it keeps the most frequent
keys by name, where the trigger keeps the first to arrive.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from sqlalchemy import String, bindparam, delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.audit import record_change
from db.base import UTCDateTime, as_utc, utcnow
from db.engine import take_sqlite_write_lock
from db.identifiers import MAX_ROLLUP_KEY_CHARS
from db.models import (
    FirewallConfig,
    LogDailyCount,
    LogEntry,
    LogHourlyCount,
    LogWeeklyCount,
    OverviewKeySums,
    RollupSettings,
)
from db.partition_layout import WEEK, week_start
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
    """The start (Monday, midnight UTC) of the ISO week of ``moment``: the week of its partition too."""
    return week_start(moment)


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


async def forget_overview_sums(*, session: AsyncSession) -> None:
    """Drop the overview's stored sums of closed hours (:func:`db.overview.store_closed_sums`), in the
    caller's transaction: they were made from rollups that just changed. Consoles read the rollups
    themselves until the next hour's are made."""
    await session.execute(delete(OverviewKeySums))


# --- rebuilding from the raw rows -------------------------------------------------------------------

DAY: Final = timedelta(days=1)
HOUR: Final = timedelta(hours=1)

#: The hour of a row's timestamp, in UTC whatever the session's time zone. SQLite keeps UTC timestamps
#: as canonical 'YYYY-MM-DD HH:MM:SS.ffffff' text (migration 0012).
_HOUR_SQL: Final = {
    "postgresql": "date_trunc('hour', timestamp, 'UTC')",
    "sqlite": "substr(timestamp, 1, 13) || ':00:00.000000'",
}
#: Each row of ``picked`` once per distinct entity type (``key``), as the counting trigger reads them.
_ENTITIES_SQL: Final = {
    "postgresql": f"""
            SELECT p.bucket, p.risk_level, e.key FROM picked AS p
            CROSS JOIN LATERAL (
                SELECT DISTINCT left(value, {MAX_KEY_LENGTH}) AS key
                FROM jsonb_array_elements_text(
                    CASE WHEN jsonb_typeof(p.detected_entity_types) = 'array'
                         THEN p.detected_entity_types ELSE '[]'::jsonb END) AS value
            ) AS e""",
    # SQLite has no LATERAL: an entity type is made distinct per event by the event's identity.
    "sqlite": f"""
            SELECT DISTINCT p.id, p.timestamp, p.bucket, p.risk_level,
                            substr(j.value, 1, {MAX_KEY_LENGTH}) AS key
            FROM picked AS p, json_each(
                CASE WHEN json_type(p.detected_entity_types) = 'array'
                     THEN p.detected_entity_types ELSE '[]' END) AS j""",
}
#: The one bucket of a daily or weekly statement: the start of its range.
_START_SQL: Final = {"postgresql": "CAST(:start AS timestamptz)", "sqlite": ":start"}
#: Ties between keys as frequent as each other go by code point, as Python sorts them, whatever the locale.
_CODE_POINT_ORDER: Final = {"postgresql": 'COLLATE "C"', "sqlite": "COLLATE BINARY"}
_CAP_SQL: Final = (
    f"coalesce((SELECT max_keys_per_bucket FROM rollup_settings WHERE id = 1), {DEFAULT_MAX_KEYS})"
)
Grain = Literal["hour", "day", "week"]
_MODEL_OF: Final[dict[Grain, RollupTable]] = {
    "hour": LogHourlyCount,
    "day": LogDailyCount,
    "week": LogWeeklyCount,
}
_TABLE_OF: Final = {grain: model.__tablename__ for grain, model in _MODEL_OF.items()}


def _counts_sql(dialect: str, grain: Grain, finer: Grain | None = None) -> str:
    """``<grain>_counts``: (bucket, dim, key, risk, n), the organisation's rows with ``:start <= timestamp
    < :end`` counted per bucket as the trigger counts them (before the cap): the risk level under the
    empty key, tool and user cut to the key's bound, each distinct entity type of a row once. Or
    summed from the ``finer`` grain's counts of the same statement.

    Each dimension is grouped on its own, so the planner estimates each from the rows it reads.
    """
    bucket = _HOUR_SQL[dialect] if grain == "hour" else _START_SQL[dialect]
    if finer is not None:
        return f"""
    {grain}_counts AS (
        SELECT {bucket} AS bucket, dim, key, risk, sum(n) AS n FROM {finer}_counts GROUP BY dim, key, risk
    )"""
    cut = "left({}, {})" if dialect == "postgresql" else "substr({}, 1, {})"
    return f"""
    {grain}_picked AS (
        SELECT {"id, timestamp, " if dialect == "sqlite" else ""}{bucket} AS bucket, risk_level, tool_name,
               user_id, detected_entity_types
        FROM log_entries
        WHERE organization_id = :organization_id AND timestamp >= :start AND timestamp < :end
    ),
    {grain}_counts AS (
        SELECT bucket, 'risk' AS dim, '' AS key, risk_level AS risk, count(*) AS n
        FROM {grain}_picked GROUP BY bucket, risk_level
        UNION ALL
        SELECT bucket, 'tool', {cut.format("tool_name", MAX_KEY_LENGTH)}, risk_level, count(*)
        FROM {grain}_picked GROUP BY 1, 3, 4
        UNION ALL
        SELECT bucket, 'user', {cut.format("user_id", MAX_KEY_LENGTH)}, risk_level, count(*)
        FROM {grain}_picked GROUP BY 1, 3, 4
        UNION ALL
        SELECT bucket, 'entity', key, risk_level, count(*)
        FROM ({_ENTITIES_SQL[dialect].replace("picked", f"{grain}_picked")}
        ) AS entities GROUP BY 1, 3, 4
    )"""


def _delta_sql(dialect: str, grain: Grain) -> str:
    """``<grain>_delta``: what to add to each stored row of the range to make it the capped raw counts.

    The cap keeps each bucket's most frequent keys per dimension (ties by key) and counts the rest
    (``<grain>_refused``) under the overflow key. The stored rows are subtracted in the same
    statement, so from the same snapshot as the raw rows: a transaction that inserted rows is seen
    with its counts or not at all.
    """
    return f"""
    {grain}_keys AS (
        SELECT bucket, dim, key, sum(n) AS events FROM {grain}_counts
        WHERE dim <> 'risk' AND key <> '' GROUP BY bucket, dim, key
    ),
    {grain}_refused AS (
        SELECT bucket, dim, key FROM (
            SELECT k.bucket, k.dim, k.key, row_number() OVER (
                PARTITION BY k.bucket, k.dim ORDER BY k.events DESC, k.key {_CODE_POINT_ORDER[dialect]}
            ) AS rank
            FROM {grain}_keys AS k
            -- Only the rare buckets past the cap are ranked (a sort); the others keep every key.
            JOIN (SELECT bucket, dim FROM {grain}_keys GROUP BY bucket, dim HAVING count(*) > {_CAP_SQL})
                AS full_bucket ON full_bucket.bucket = k.bucket AND full_bucket.dim = k.dim
        ) AS ranked
        WHERE rank > {_CAP_SQL}
    ),
    {grain}_delta AS (
        SELECT bucket, dim, key, risk, sum(n) AS delta FROM (
            SELECT c.bucket, c.dim,
                   CASE WHEN (c.bucket, c.dim, c.key) IN (SELECT bucket, dim, key FROM {grain}_refused)
                        THEN '' ELSE c.key END AS key,
                   c.risk, c.n
            FROM {grain}_counts AS c
            UNION ALL
            SELECT bucket_start, dimension, key, risk_level, -event_count FROM {_TABLE_OF[grain]}
            WHERE organization_id = :organization_id AND bucket_start >= :start AND bucket_start < :end
        ) AS both_sides
        GROUP BY bucket, dim, key, risk
        HAVING sum(n) <> 0
    )"""


def _upsert_sql(grain: Grain) -> str:
    """Add ``<grain>_delta`` to the stored rows: ON CONFLICT adds it to the row's latest version, so counts
    that inserts committed after the statement's snapshot are kept. Rows are taken in the counting
    trigger's order (bucket, organisation, dimension, key, risk level), so neither waits for the other
    in a cycle; the ORDER BY sorts every row before the first is written, so no row is locked while the
    raw rows are read."""
    return f"""
        INSERT INTO {_TABLE_OF[grain]} AS t
            (bucket_start, organization_id, dimension, key, risk_level, event_count)
        SELECT bucket, :organization_id, dim, key, risk, delta FROM {grain}_delta WHERE true
        ORDER BY bucket, dim, key, risk
        ON CONFLICT (bucket_start, organization_id, dimension, key, risk_level)
        DO UPDATE SET event_count = t.event_count + excluded.event_count"""


def _rebuild_statements(dialect: str, grains: tuple[Grain, ...]) -> list[str]:
    """The statements that recount ``grains`` (``("hour",)``, ``("hour", "day")`` or ``("week",)``) over
    the rows of ``:organization_id`` with ``:start <= timestamp < :end``; the last one returns the events
    counted into the first grain when ``dialect`` is PostgreSQL.

    PostgreSQL: one statement, so one snapshot, the daily counts summed from the hourly ones. SQLite
    cannot write in a WITH clause: one statement per grain, under the transaction's write lock.
    """
    if dialect == "postgresql":
        ctes = []
        for index, grain in enumerate(grains):
            ctes.append(_counts_sql(dialect, grain, None if index == 0 else grains[0]))
            ctes.append(_delta_sql(dialect, grain))
        # Read in this order, the upserts lock hourly rows before daily ones, as the trigger does.
        ctes += [
            f"\n    {grain}_upsert AS ({_upsert_sql(grain)}\n"
            "        RETURNING bucket_start, dimension, key, risk_level, event_count\n    )"
            for grain in grains
        ]
        # Each grain's rows the difference brought to nothing, as JSON [[bucket, dimension, key, risk], ...].
        zeros = ", ".join(
            "(SELECT coalesce(json_agg(json_build_array(bucket_start, dimension, key, risk_level)), '[]') "
            f"FROM {grain}_upsert WHERE event_count = 0)"
            for grain in grains
        )
        return [
            f"WITH {','.join(ctes)}\n"
            f"SELECT (SELECT coalesce(sum(n), 0) FROM {grains[0]}_counts WHERE dim = 'risk'), {zeros}"
        ]
    return [
        f"WITH {_counts_sql(dialect, grain)}, {_delta_sql(dialect, grain)}{_upsert_sql(grain)}"
        for grain in grains
    ]


_SESSION_SETTINGS: Final = "SELECT set_config('jit', 'off', true), set_config('work_mem', '64MB', true)"
#: Delete the rows a rebuild's upsert left at zero, by key (``:keys``: its JSON); the condition is checked
#: again on the row's latest version, which the rebuild's transaction has held since its upsert.
_DELETE_ZEROS_SQL: Final = """
    DELETE FROM {table}
    WHERE organization_id = :organization_id AND event_count = 0
      AND (bucket_start, dimension, key, risk_level) IN (
          SELECT CAST(k ->> 0 AS timestamptz), k ->> 1, k ->> 2, k ->> 3
          FROM json_array_elements(CAST(:keys AS json)) AS k)
"""
#: The rebuild's advisory lock key (per database), derived from a name like the retention lock's.
_ADVISORY_KEY: Final = int.from_bytes(
    hashlib.sha256(b"ai-usage-firewall.rollups.rebuild").digest()[:8], "big", signed=True
)


async def _rebuild_range(
    session: AsyncSession, organization_id: str, start: datetime, end: datetime, grains: tuple[Grain, ...]
) -> int:
    """One transaction: the organisation's buckets of ``grains`` in ``[start, end)`` recounted from the raw
    rows in that range. Returns the events counted into the first grain's buckets.

    No table is locked. PostgreSQL: an insert counts its rows in its own transaction, so in the one
    snapshot of the rebuild's statement every insert's rows and counts are both seen or both not; the
    statement writes the difference between the two, and an insert that commits meanwhile adds its
    counts on top (READ COMMITTED). Two rebuilds take turns per bucket (an advisory lock no insert
    takes), or both would write the same difference. SQLite: the same under its one write lock.
    """
    dialect = session.get_bind().dialect.name
    parameters = {"organization_id": organization_id, "start": start, "end": end}
    types = (
        bindparam("organization_id", type_=String()),
        bindparam("start", type_=UTCDateTime()),
        bindparam("end", type_=UTCDateTime()),
    )
    statements = [text(statement).bindparams(*types) for statement in _rebuild_statements(dialect, grains)]
    try:
        if dialect == "postgresql":
            await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_KEY})
            # The plan's row estimates are far too high (a JSON array's elements), so PostgreSQL would spend
            # a second compiling it (JIT); a day's keys fit in memory where 4 MB would spill them to disk.
            await session.execute(text(_SESSION_SETTINGS))
            events, *zeros = (await session.execute(statements[0], parameters)).one()
            for grain, found in zip(grains, zeros, strict=True):
                keys = json.loads(found) if isinstance(found, str) else found
                if keys:
                    # Only the rows just written, so the row locks are released soon after the upsert.
                    await session.execute(
                        text(_DELETE_ZEROS_SQL.format(table=_TABLE_OF[grain])).bindparams(types[0]),
                        {"organization_id": organization_id, "keys": json.dumps(keys)},
                    )
        else:
            await take_sqlite_write_lock(session, LogHourlyCount)
            for statement in statements:
                await session.execute(statement, parameters)
            first = _MODEL_OF[grains[0]]
            events = await session.scalar(
                select(func.coalesce(func.sum(first.event_count), 0)).where(
                    first.organization_id == organization_id,
                    first.bucket_start >= start,
                    first.bucket_start < end,
                    first.dimension == "risk",
                )
            )
            for grain in grains:
                table = _MODEL_OF[grain]
                await session.execute(
                    delete(table).where(
                        table.organization_id == organization_id,
                        table.bucket_start >= start,
                        table.bucket_start < end,
                        table.event_count == 0,
                    )
                )
        await session.commit()
    except BaseException:
        await session.rollback()
        raise
    return int(events or 0)


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


async def _rebuild_day(session: AsyncSession, organization_id: str, day: datetime, cutoff: datetime) -> int:
    """The day's hourly buckets that start at or after ``cutoff`` and, if the day starts at or after it,
    the daily bucket, in one transaction. Returns the events counted into the hourly buckets."""
    first_hour = max(day, hour_of(cutoff) + (HOUR if cutoff > hour_of(cutoff) else timedelta(0)))
    if first_hour >= day + DAY:
        return 0
    grains: tuple[Grain, ...] = ("hour", "day") if first_hour == day else ("hour",)
    return await _rebuild_range(session, organization_id, first_hour, day + DAY, grains)


async def _rebuild_week(session: AsyncSession, organization_id: str, week: datetime) -> int:
    """The weekly bucket starting at ``week``, in one transaction. Returns its events."""
    return await _rebuild_range(session, organization_id, week, week + WEEK, ("week",))


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
    ``progress`` hears of it. No table is locked: one statement writes the difference between the
    raw rows and the stored counts as one snapshot sees them, so a rebuild running beside ingest
    neither stalls it nor loses its counts (:func:`_rebuild_range`). The result is what the trigger
    counts for the rows inserted in one statement, except past the cap, where the rebuild keeps
    each bucket's most frequent keys (ties by key). Ends with an audit row (``rollups.rebuild``).
    Raises NotAllowed unless ``actor`` is an administrator.
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
    await forget_overview_sums(session=session)
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
