"""The overview's figures, read from the rollups (never by counting raw log rows).

Every event figure comes from the hourly, daily and weekly rollups (kept
current at ingest by :mod:`db.rollups`, and kept past retention): a window
reads its whole weeks from the weekly counts, its other whole days from the
daily ones and only its partial days from the hourly ones, so a 30-day top
list reads about 15 rows per key instead of 720. The rest are two small reads: devices seen in the
last day and the newest retention run.

Even so a 30-day list of users by red events sums about 100,000 rows for 10,000 users. The closed
hours of a window's timeline and top lists change only when the hour turns, so the ingest server
reads them for every window once an hour (:func:`store_closed_sums`, kept in ``overview_key_sums``)
and a console reads those rows and adds the current hour. Without them (no ingest server running, or
in the seconds after the hour turns) the console reads the rollups itself, as before.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Select,
    SQLColumnExpression,
    cast,
    delete,
    func,
    literal,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.base import utcnow
from db.engine import insert_for
from db.models import (
    Device,
    LogDailyCount,
    LogHourlyCount,
    LogWeeklyCount,
    OverviewKeySums,
    RetentionRun,
)
from db.rollups import OVERFLOW_KEY, day_of, hour_of, week_of
from db.vocabulary import RISK_LEVELS

#: The windows the overview shows, by label, in hours.
WINDOWS: Final = {"24h": 24, "7d": 24 * 7, "30d": 24 * 30}
#: How many keys a top list holds: as many as the tallest overview shows (it shows those that fit).
TOP_LIMIT = 30
#: About the most bins a timeline has (the chart adds neighbouring bins up when it has fewer columns).
TIMELINE_BINS = 180
#: How the overview names the rollups' overflow key: the events of keys past the cap (rollup_settings).
OVERFLOW_LABEL: Final = "(other)"
#: The overview's top lists: a dimension and the risk level counted (None: every level).
TOP_LISTS: Final = (("tool", None), ("user", "red"), ("entity", None))


@dataclass(frozen=True)
class RiskTotals:
    """Events per risk level in one window."""

    window: str
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class Timeline:
    """Events per risk level in equal bins, oldest first."""

    bin_hours: int
    starts: list[datetime]
    series: dict[str, list[int]]


@dataclass(frozen=True)
class RetentionSummary:
    organization_id: str
    started_at: datetime
    status: str
    rows_deleted: int
    dry_run: bool


@dataclass(frozen=True)
class Overview:
    """Everything the overview screen shows, for one window (the window of the chart and top lists)."""

    window: str
    generated_at: datetime
    totals: list[RiskTotals]
    timeline: Timeline
    top_tools: list[tuple[str, int]]
    top_red_users: list[tuple[str, int]]
    top_entity_types: list[tuple[str, int]]
    devices_seen_last_day: int
    last_retention_run: RetentionSummary | None


def window_start(now: datetime, hours: int) -> datetime:
    """The first hour bucket of a window of ``hours`` hours ending with the current hour."""
    return hour_of(now) - timedelta(hours=hours - 1)


RollupTable = type[LogHourlyCount] | type[LogDailyCount] | type[LogWeeklyCount]
#: A coarser rollup: its table, the start of a moment's bucket, the bucket's length.
Level = tuple[RollupTable, Callable[[datetime], datetime], timedelta]
#: The coarser rollups, coarsest first.
COARSER_LEVELS: tuple[Level, ...] = (
    (LogWeeklyCount, week_of, timedelta(weeks=1)),
    (LogDailyCount, day_of, timedelta(days=1)),
)


def split_by_bucket(
    start: datetime, end: datetime | None, levels: tuple[Level, ...] = COARSER_LEVELS
) -> list[tuple[RollupTable, datetime, datetime | None]]:
    """The rollup reads covering hours [start, end): whole weeks weekly, whole days daily, the rest hourly.

    An open ``end`` (None) takes every later hour; its whole weeks and days end
    before the current ones (UTC). Any split is exact: the tables hold the same counts.
    """
    if not levels:
        return [(LogHourlyCount, start, end)]
    table, bucket_of, length = levels[0]
    first = bucket_of(start) if start == bucket_of(start) else bucket_of(start) + length
    last = bucket_of(end if end is not None else utcnow())
    if last <= first:
        return split_by_bucket(start, end, levels[1:])
    pieces: list[tuple[RollupTable, datetime, datetime | None]] = []
    if start < first:
        pieces += split_by_bucket(start, first, levels[1:])
    pieces.append((table, first, last))
    if end is None or last < end:
        pieces += split_by_bucket(last, end, levels[1:])
    return pieces


def _rollup_rows(
    table: RollupTable,
    *columns: SQLColumnExpression[Any],
    dimension: str,
    start: datetime,
    end: datetime | None,
    risk_level: str | None,
    organization: str | None,
) -> Select[*tuple[Any, ...]]:
    """Rows of one rollup table for one dimension in [start, end): an index range scan.

    With no risk level the known levels are listed anyway, so PostgreSQL walks
    the (dimension, risk_level, bucket_start) index once per level.
    """
    levels = (risk_level,) if risk_level is not None else RISK_LEVELS
    statement = select(*columns).where(
        table.dimension == dimension,
        table.risk_level.in_(levels) if len(levels) > 1 else table.risk_level == levels[0],
        table.bucket_start >= start,
    )
    if end is not None:
        statement = statement.where(table.bucket_start < end)
    if organization:
        statement = statement.where(table.organization_id == organization)
    return statement


async def risk_totals(
    *, session: AsyncSession, now: datetime, organization: str | None = None, end: datetime | None = None
) -> list[RiskTotals]:
    """Events by risk level for every window of :data:`WINDOWS`, in one read of the rollups; only the
    hours before ``end`` if given."""
    parts = [
        _rollup_rows(
            table,
            literal(label).label("window"),
            table.risk_level.label("risk_level"),
            table.event_count.label("event_count"),
            dimension="risk",
            start=start,
            end=piece_end,
            risk_level=None,
            organization=organization,
        )
        for label, hours in WINDOWS.items()
        for table, start, piece_end in split_by_bucket(window_start(now, hours), end)
    ]
    rows = union_all(*parts).subquery()
    statement = select(rows.c.window, rows.c.risk_level, func.sum(rows.c.event_count)).group_by(
        rows.c.window, rows.c.risk_level
    )
    counts: dict[str, dict[str, int]] = {label: dict.fromkeys(RISK_LEVELS, 0) for label in WINDOWS}
    for label, risk, total in (await session.execute(statement)).all():
        counts[label][risk] = int(total or 0)
    return [RiskTotals(window=label, counts=counts[label]) for label in WINDOWS]


def _bin_hours(hours: int) -> int:
    # Hourly bins for a day and a week, 4-hour ones for 30 days: at most about 180 bins (540 rows),
    # as many as a 200-column chart draws; the chart adds bins up when it has fewer columns.
    return max(1, -(-hours // TIMELINE_BINS))


async def timeline(
    *,
    session: AsyncSession,
    now: datetime,
    hours: int,
    organization: str | None = None,
    end: datetime | None = None,
) -> Timeline:
    """Events over time by risk level for the last ``hours`` hours, in bins of whole hours; only
    the hours before ``end`` if given (the bins stay those of the whole window).

    Bins start on UTC multiples of their length (00:00, 04:00, … for 4-hour bins), so the first
    one may also span hours before the window (they count nothing: only the window's hours are
    read). The hours are summed by the database over organisations: a 30-day chart fetches at
    most about 540 rows (180 bins, three levels).
    """
    shape = timeline_shape(now=now, hours=hours)
    bin_seconds = shape.bin_hours * 3600
    first = int(shape.starts[0].timestamp()) // bin_seconds
    bins = len(shape.starts)
    seconds = _epoch_seconds(LogHourlyCount.bucket_start, session.get_bind().dialect.name)
    bin_index = (seconds // bin_seconds - first).label("bin")
    statement = _rollup_rows(
        LogHourlyCount,
        bin_index,
        LogHourlyCount.risk_level,
        func.sum(LogHourlyCount.event_count),
        dimension="risk",
        start=window_start(now, hours),
        end=end,
        risk_level=None,
        organization=organization,
    ).group_by(bin_index, LogHourlyCount.risk_level)
    series = shape.series
    for position, risk, total in (await session.execute(statement)).all():
        if 0 <= int(position) < bins:
            series.setdefault(risk, [0] * bins)[int(position)] += int(total or 0)
    return shape


def _epoch_seconds(column: SQLColumnExpression[datetime], dialect: str) -> ColumnElement[int]:
    """Whole seconds since 1970 (UTC) of a UTCDateTime column, on either engine."""
    if dialect == "postgresql":
        return cast(func.extract("epoch", column), BigInteger)
    # SQLite keeps naive UTC text; strftime('%s') reads it as UTC.
    return cast(func.strftime("%s", column), Integer)


async def key_sums(
    *,
    session: AsyncSession,
    dimension: str,
    start: datetime,
    end: datetime | None = None,
    risk_level: str | None = None,
    organization: str | None = None,
    limit: int | None = None,
) -> list[tuple[str, int]]:
    """Events per key of a dimension (tool, user, entity) in hours [start, end), most first.

    Whole weeks and days are read from the weekly and daily counts, the rest
    from the hourly ones (:func:`split_by_bucket`). The events of keys past the
    rollups' cap come as :data:`OVERFLOW_LABEL`.
    """
    parts = [
        _rollup_rows(
            table,
            table.key.label("key"),
            table.event_count.label("event_count"),
            dimension=dimension,
            start=piece_start,
            end=piece_end,
            risk_level=risk_level,
            organization=organization,
        )
        for table, piece_start, piece_end in split_by_bucket(start, end)
    ]
    rows = (union_all(*parts) if len(parts) > 1 else parts[0]).subquery()
    total = func.sum(rows.c.event_count)
    statement = select(rows.c.key, total).group_by(rows.c.key).order_by(total.desc(), rows.c.key)
    if limit is not None:
        statement = statement.limit(limit)
    return [
        (OVERFLOW_LABEL if key == OVERFLOW_KEY else key, int(value or 0))
        for key, value in (await session.execute(statement)).all()
    ]


async def top_keys(
    *,
    session: AsyncSession,
    dimension: str,
    now: datetime,
    hours: int,
    risk_level: str | None = None,
    organization: str | None = None,
    limit: int = TOP_LIMIT,
) -> list[tuple[str, int]]:
    """The ``limit`` keys of a dimension (tool, user, entity) with the most events in the window."""
    return await key_sums(
        session=session,
        dimension=dimension,
        start=window_start(now, hours),
        risk_level=risk_level,
        organization=organization,
        limit=limit,
    )


def _top(sums: dict[str, int], limit: int) -> list[tuple[str, int]]:
    return heapq.nsmallest(limit, sums.items(), key=lambda item: (-item[1], item[0]))


#: The stored closed hours of a window's timeline: ``dimension`` of its row (each level's bins).
TIMELINE_DIMENSION: Final = "timeline"
#: One part of a window's closed hours: a top list (dimension, risk level) or the timeline.
Part = tuple[str, str | None]
TIMELINE: Final[Part] = (TIMELINE_DIMENSION, None)


class OverviewCache:
    """The overview refreshed cheaply: a window's closed hours are read once per hour.

    The timeline and the top lists of a window change, for every hour but the current one, only
    when the hour turns. The first read of a window in an hour takes what the ingest server stored
    of its closed hours for every console (:func:`store_closed_sums`), or, when there is none (an
    overview scoped to one organisation, no ingest server, the first seconds of the hour), reads the
    closed hours from the rollups itself (whole weeks and days from the weekly and daily counts, the
    rest from the hourly ones). Until the hour turns, a refresh reads only the current hour's rows
    and adds them. Counts that arrive late for an already closed hour (an agent's backlog) show in
    the timeline at once (see :meth:`timeline`) and in the top lists at the next hour.
    """

    def __init__(self) -> None:
        self._closed: dict[tuple[Part, str | None, int, datetime], Any] = {}
        #: Windows (organisation, hours, current hour) whose closed hours took late events this hour:
        #: the timeline the ingest server stored for them is no longer right.
        self._late: set[tuple[str | None, int, datetime]] = set()

    async def _closed_hours(
        self, *, session: AsyncSession, part: Part, hours: int, now: datetime, organization: str | None
    ) -> Any:
        current = hour_of(now)
        key = (part, organization, hours, current)
        if key in self._closed:
            return self._closed[key]
        closed = None
        late = part == TIMELINE and (organization, hours, current) in self._late
        if organization is None and not late:
            closed = await stored_closed_hours(session=session, part=part, hours=hours, current=current)
        if closed is None:
            closed = await closed_hours(
                session=session, part=part, hours=hours, current=current, organization=organization
            )
        self._closed = {k: v for k, v in self._closed.items() if k[3] == current}
        self._late = {window for window in self._late if window[2] == current}
        self._closed[key] = closed
        return closed

    async def top(
        self,
        *,
        session: AsyncSession,
        dimension: str,
        now: datetime,
        hours: int,
        risk_level: str | None = None,
        organization: str | None = None,
        limit: int = TOP_LIMIT,
    ) -> list[tuple[str, int]]:
        closed: dict[str, int] = await self._closed_hours(
            session=session, part=(dimension, risk_level), hours=hours, now=now, organization=organization
        )
        sums = dict(closed)
        for name, count in await key_sums(
            session=session,
            dimension=dimension,
            start=hour_of(now),
            risk_level=risk_level,
            organization=organization,
        ):
            sums[name] = sums.get(name, 0) + count
        return _top(sums, limit)

    async def timeline(
        self,
        *,
        session: AsyncSession,
        now: datetime,
        hours: int,
        closed_totals: dict[str, int],
        current: dict[str, int],
        organization: str | None = None,
    ) -> Timeline:
        """The window's timeline: its closed hours, checked against ``closed_totals`` (the events per
        level of the closed hours, read from the rollups just now), and the ``current`` hour's counts.

        Closed hours read earlier (here or by the ingest server) miss what arrived since for a
        closed hour (an agent's backlog): their bins then no longer add up to the totals, and they
        are read again from the rollups (about 15 ms for 30 days at 20 M events), so the chart is
        always exact. The top lists keep theirs until the hour turns.
        """
        scope = {"session": session, "hours": hours, "now": now, "organization": organization}
        closed: dict[str, list[int]] = await self._closed_hours(part=TIMELINE, **scope)  # type: ignore[arg-type]
        if any(sum(closed.get(level, ())) != count for level, count in closed_totals.items()):
            current_hour = hour_of(now)
            del self._closed[(TIMELINE, organization, hours, current_hour)]
            self._late.add((organization, hours, current_hour))
            closed = await self._closed_hours(part=TIMELINE, **scope)  # type: ignore[arg-type]
        shown = timeline_shape(now=now, hours=hours)
        series = {level: list(counts) for level, counts in closed.items()}
        for level, count in current.items():
            # The current hour is in the window's last bin, whatever the bins' length.
            series.setdefault(level, [0] * len(shown.starts))[-1] += count
        return Timeline(bin_hours=shown.bin_hours, starts=shown.starts, series=series)


def timeline_shape(*, now: datetime, hours: int) -> Timeline:
    """The bins of a window's timeline (see :func:`timeline`), every count zero."""
    start = window_start(now, hours)
    bin_hours = _bin_hours(hours)
    bin_seconds = bin_hours * 3600
    first = int(start.timestamp()) // bin_seconds
    bins = int(hour_of(now).timestamp()) // bin_seconds - first + 1
    starts = [datetime.fromtimestamp((first + index) * bin_seconds, UTC) for index in range(bins)]
    return Timeline(bin_hours=bin_hours, starts=starts, series={level: [0] * bins for level in RISK_LEVELS})


async def closed_hours(
    *, session: AsyncSession, part: Part, hours: int, current: datetime, organization: str | None = None
) -> dict[str, int] | dict[str, list[int]]:
    """One part of a window's closed hours (every hour before ``current``), read from the rollups:
    the timeline's bins per level, or a top list's events per key."""
    if part == TIMELINE:
        closed = await timeline(
            session=session, now=current, hours=hours, organization=organization, end=current
        )
        return closed.series
    dimension, risk_level = part
    return dict(
        await key_sums(
            session=session,
            dimension=dimension,
            start=window_start(current, hours),
            end=current,
            risk_level=risk_level,
            organization=organization,
        )
    )


#: Every part of a window's closed hours that the ingest server stores: the timeline and the top lists.
STORED_PARTS: Final[tuple[Part, ...]] = (TIMELINE, *TOP_LISTS)


async def stored_closed_hours(
    *, session: AsyncSession, part: Part, hours: int, current: datetime
) -> Any | None:
    """One part of the fleet's closed hours of a window ending with hour ``current``, as
    :func:`store_closed_sums` stored it; None if it has not (yet) for that hour."""
    dimension, risk_level = part
    stored = await session.scalar(
        select(OverviewKeySums.sums).where(
            OverviewKeySums.closed_before == current,
            OverviewKeySums.window_hours == hours,
            OverviewKeySums.dimension == dimension,
            OverviewKeySums.risk_level == (risk_level or ""),
        )
    )
    return None if stored is None else orjson.loads(stored)


async def store_closed_sums(
    sessions: async_sessionmaker[AsyncSession], *, now: datetime | None = None
) -> bool:
    """Read every part of every window's closed hours (:data:`STORED_PARTS`, :data:`WINDOWS`) fleet-wide
    and store them for the current hour, dropping older ones. False (nothing done) if they are there
    already: another ingest server made them.

    They are read in one session and written in another short transaction: on SQLite a read
    transaction that turns into a write fails if another writer committed meanwhile.
    """
    current = hour_of(now or utcnow())
    stored_for = select(func.count()).where(OverviewKeySums.closed_before == current)
    rows = []
    async with sessions() as session:
        if await session.scalar(stored_for) == len(WINDOWS) * len(STORED_PARTS):
            return False
        for hours in WINDOWS.values():
            for part in STORED_PARTS:
                closed = await closed_hours(session=session, part=part, hours=hours, current=current)
                dimension, risk_level = part
                rows.append(
                    {
                        "closed_before": current,
                        "window_hours": hours,
                        "dimension": dimension,
                        "risk_level": risk_level or "",
                        "sums": orjson.dumps(closed).decode(),
                        "computed_at": utcnow(),
                    }
                )
    async with sessions() as session, session.begin():
        await session.execute(insert_for(session)(OverviewKeySums).values(rows).on_conflict_do_nothing())
        await session.execute(delete(OverviewKeySums).where(OverviewKeySums.closed_before < current))
    return True


def _added(counts: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    return {level: n + more.get(level, 0) for level, n in counts.items()}


async def current_hour_counts(
    *, session: AsyncSession, now: datetime, organization: str | None = None
) -> dict[str, int]:
    """Events per risk level of the current hour (UTC)."""
    statement = _rollup_rows(
        LogHourlyCount,
        LogHourlyCount.risk_level,
        func.sum(LogHourlyCount.event_count),
        dimension="risk",
        start=hour_of(now),
        end=None,
        risk_level=None,
        organization=organization,
    ).group_by(LogHourlyCount.risk_level)
    return {risk: int(total or 0) for risk, total in (await session.execute(statement)).all()}


async def devices_seen_since(*, session: AsyncSession, since: datetime) -> int:
    """How many devices reported at or after ``since``."""
    statement = select(func.count()).select_from(Device).where(Device.last_seen >= since)
    return int(await session.scalar(statement) or 0)


async def last_retention_run(*, session: AsyncSession) -> RetentionSummary | None:
    """The most recently started retention run, if any."""
    run = await session.scalar(select(RetentionRun).order_by(RetentionRun.started_at.desc()).limit(1))
    if run is None:
        return None
    return RetentionSummary(
        organization_id=run.organization_id,
        started_at=run.started_at,
        status=run.status,
        rows_deleted=int(run.rows_deleted or 0),
        dry_run=bool(run.dry_run),
    )


async def load_overview(
    *,
    session: AsyncSession,
    window: str = "24h",
    now: datetime | None = None,
    organization: str | None = None,
    cache: OverviewCache | None = None,
) -> Overview:
    """Every figure of the overview for ``window`` (one of :data:`WINDOWS`).

    Pass the same ``cache`` to every refresh so the timeline and top lists read only the current
    hour; without one they still take the closed hours the ingest server stored, if any.
    """
    if window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}; use one of {', '.join(WINDOWS)}")
    now = now or utcnow()
    hours = WINDOWS[window]
    scope = {"session": session, "now": now, "hours": hours, "organization": organization}
    cache = cache or OverviewCache()
    top = cache.top
    closed = await risk_totals(session=session, now=now, organization=organization, end=hour_of(now))
    current = await current_hour_counts(session=session, now=now, organization=organization)
    totals = [RiskTotals(window=t.window, counts=_added(t.counts, current)) for t in closed]
    closed_totals = next(t.counts for t in closed if t.window == window)
    # The chart's closed hours are checked against the closed totals just read: late events show at once.
    chart = await cache.timeline(closed_totals=closed_totals, current=current, **scope)  # type: ignore[arg-type]
    return Overview(
        window=window,
        generated_at=now,
        totals=totals,
        timeline=chart,
        top_tools=await top(dimension="tool", **scope),  # type: ignore[arg-type]
        top_red_users=await top(dimension="user", risk_level="red", **scope),  # type: ignore[arg-type]
        top_entity_types=await top(dimension="entity", **scope),  # type: ignore[arg-type]
        devices_seen_last_day=await devices_seen_since(session=session, since=now - timedelta(days=1)),
        last_retention_run=await last_retention_run(session=session),
    )
