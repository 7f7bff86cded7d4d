"""The overview's figures, read from the hourly rollups (never by counting raw log rows).

Every event figure comes from ``log_hourly_counts`` (kept current at ingest by
:mod:`db.rollups`, and kept past retention); the rest are two small reads:
devices seen in the last day and the newest retention run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.base import utcnow
from db.models import Device, LogHourlyCount, RetentionRun
from db.rollups import hour_of
from db.vocabulary import RISK_LEVELS

#: The windows the overview shows, by label, in hours.
WINDOWS: Final = {"24h": 24, "7d": 24 * 7, "30d": 24 * 30}
TOP_LIMIT = 5


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


async def risk_totals(
    *, session: AsyncSession, now: datetime, organization: str | None = None
) -> list[RiskTotals]:
    """Events by risk level for every window of :data:`WINDOWS`, in one read of the rollups."""
    longest = max(WINDOWS.values())
    columns = [
        func.sum(
            case(
                (LogHourlyCount.bucket_start >= window_start(now, hours), LogHourlyCount.event_count), else_=0
            )
        )
        for hours in WINDOWS.values()
    ]
    statement = (
        select(LogHourlyCount.risk_level, *columns)
        .where(LogHourlyCount.dimension == "risk", LogHourlyCount.bucket_start >= window_start(now, longest))
        .group_by(LogHourlyCount.risk_level)
    )
    if organization:
        statement = statement.where(LogHourlyCount.organization_id == organization)
    counts: dict[str, list[int]] = {level: [0] * len(WINDOWS) for level in RISK_LEVELS}
    for risk, *sums in (await session.execute(statement)).all():
        counts.setdefault(risk, [0] * len(WINDOWS))
        counts[risk] = [int(value or 0) for value in sums]
    return [
        RiskTotals(window=label, counts={risk: values[index] for risk, values in counts.items()})
        for index, label in enumerate(WINDOWS)
    ]


def _bin_hours(hours: int) -> int:
    # About 48 bins whatever the window: hourly for a day, 4 h for a week, 15 h for 30 days.
    return max(1, hours // 48)


async def timeline(
    *, session: AsyncSession, now: datetime, hours: int, organization: str | None = None
) -> Timeline:
    """Events over time by risk level for the last ``hours`` hours, in about 48 bins."""
    start = window_start(now, hours)
    statement = (
        select(LogHourlyCount.bucket_start, LogHourlyCount.risk_level, func.sum(LogHourlyCount.event_count))
        .where(LogHourlyCount.dimension == "risk", LogHourlyCount.bucket_start >= start)
        .group_by(LogHourlyCount.bucket_start, LogHourlyCount.risk_level)
    )
    if organization:
        statement = statement.where(LogHourlyCount.organization_id == organization)
    bin_hours = _bin_hours(hours)
    bins = -(-hours // bin_hours)
    series = {level: [0] * bins for level in RISK_LEVELS}
    for bucket, risk, total in (await session.execute(statement)).all():
        index = int((bucket - start).total_seconds() // 3600) // bin_hours
        if 0 <= index < bins:
            series.setdefault(risk, [0] * bins)[index] += int(total or 0)
    starts = [start + timedelta(hours=index * bin_hours) for index in range(bins)]
    return Timeline(bin_hours=bin_hours, starts=starts, series=series)


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
    """Events per key of a dimension (tool, user, entity) in hours [start, end), most first."""
    total = func.sum(LogHourlyCount.event_count)
    statement = (
        select(LogHourlyCount.key, total)
        .where(LogHourlyCount.dimension == dimension, LogHourlyCount.bucket_start >= start)
        .group_by(LogHourlyCount.key)
        .order_by(total.desc(), LogHourlyCount.key)
    )
    if end is not None:
        statement = statement.where(LogHourlyCount.bucket_start < end)
    if risk_level is not None:
        statement = statement.where(LogHourlyCount.risk_level == risk_level)
    if organization:
        statement = statement.where(LogHourlyCount.organization_id == organization)
    if limit is not None:
        statement = statement.limit(limit)
    return [(key, int(value or 0)) for key, value in (await session.execute(statement)).all()]


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
    return sorted(sums.items(), key=lambda item: (-item[1], item[0]))[:limit]


class TopListCache:
    """Top lists refreshed cheaply: the closed hours of a window are summed once per hour.

    The first read of a window sums every key over its closed hours (the
    expensive part at millions of events); until the hour turns, a refresh
    only reads the current hour's rows and adds them. Counts that arrive late
    for an already closed hour (an agent's backlog) show up at the next hour.
    """

    def __init__(self) -> None:
        self._closed: dict[tuple[str, str | None, str | None, datetime, datetime], dict[str, int]] = {}

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
        current = hour_of(now)
        start = window_start(now, hours)
        key = (dimension, risk_level, organization, start, current)
        scope = {
            "session": session,
            "dimension": dimension,
            "risk_level": risk_level,
            "organization": organization,
        }
        closed = self._closed.get(key)
        if closed is None:
            closed = dict(await key_sums(start=start, end=current, **scope))  # type: ignore[arg-type]
            self._closed = {k: v for k, v in self._closed.items() if k[4] == current}
            self._closed[key] = closed
        sums = dict(closed)
        for name, count in await key_sums(start=current, **scope):  # type: ignore[arg-type]
            sums[name] = sums.get(name, 0) + count
        return _top(sums, limit)


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
    cache: TopListCache | None = None,
) -> Overview:
    """Every figure of the overview for ``window`` (one of :data:`WINDOWS`).

    Pass the same ``cache`` to every refresh so top lists read only the current hour.
    """
    if window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}; use one of {', '.join(WINDOWS)}")
    now = now or utcnow()
    hours = WINDOWS[window]
    scope = {"session": session, "now": now, "hours": hours, "organization": organization}
    top = cache.top if cache is not None else top_keys
    return Overview(
        window=window,
        generated_at=now,
        totals=await risk_totals(session=session, now=now, organization=organization),
        timeline=await timeline(**scope),  # type: ignore[arg-type]
        top_tools=await top(dimension="tool", **scope),  # type: ignore[arg-type]
        top_red_users=await top(dimension="user", risk_level="red", **scope),  # type: ignore[arg-type]
        top_entity_types=await top(dimension="entity", **scope),  # type: ignore[arg-type]
        devices_seen_last_day=await devices_seen_since(session=session, since=now - timedelta(days=1)),
        last_retention_run=await last_retention_run(session=session),
    )
