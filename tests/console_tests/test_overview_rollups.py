"""Hourly, daily and weekly rollups: equal to counting raw rows, across day and week edges, on both
engines."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.base import utcnow
from db.engine import alembic_config, new_engine, new_sessionmaker
from db.models import LogDailyCount, LogEntry, LogHourlyCount, LogWeeklyCount
from db.overview import (
    WINDOWS,
    OverviewCache,
    key_sums,
    load_overview,
    split_by_bucket,
    timeline,
    window_start,
)
from db.rollups import day_of, hour_of, week_of
from tests.support.database import (
    make_event,
    settings_for,
    store_logs,
)

ROLLUPS = (LogHourlyCount, LogDailyCount, LogWeeklyCount)
BUCKET_OF = {LogHourlyCount: hour_of, LogDailyCount: day_of, LogWeeklyCount: week_of}
USERS = ("ann", "bob", "cyd", "dan")
TOOLS = ("ChatGPT", "Claude", "Gemini")
ENTITIES = ("EMAIL", "API_KEY", "IBAN")


def spread_events(now: datetime, days: int = 40) -> list[dict[str, Any]]:
    """Events on each of the last ``days`` days: at midnight, just before the next one, and at noon,
    so every window edge, day edge and week edge (Monday 00:00 UTC) has events on both sides."""
    events = []
    moments = []
    for back in range(days):
        day = day_of(now) - timedelta(days=back)
        moments += [day, day + timedelta(hours=23, minutes=59, seconds=59), day + timedelta(hours=12)]
    moments.append(hour_of(now))  # the current hour, which the cache reads on every refresh
    for index, moment in enumerate(m for m in moments if m <= now):
        events.append(
            make_event(
                timestamp=moment,
                risk_level=("green", "amber", "red")[index % 3],
                user_id=USERS[index % 4],
                tool_name=TOOLS[index % 3],
                detected_entity_types=[ENTITIES[index % 3], ENTITIES[(index + 1) % 3]][: index % 3],
            )
        )
    return events


def in_window(events: list[dict[str, Any]], now: datetime, hours: int) -> list[dict[str, Any]]:
    start = window_start(now, hours)
    return [e for e in events if e["timestamp"] >= start]


def ranked(counts: Counter[str], limit: int = 5) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]


async def rollup_sums(engine: AsyncEngine, table: Any, dimension: str = "risk") -> dict[tuple[Any, ...], int]:
    async with new_sessionmaker(engine)() as session:
        rows = await session.execute(
            select(table.bucket_start, table.key, table.risk_level, table.event_count).where(
                table.dimension == dimension
            )
        )
        return {(bucket, key, risk): count for bucket, key, risk, count in rows.all()}


async def test_every_rollup_equals_raw_counts_per_bucket_across_day_and_week_edges(
    engine: AsyncEngine,
) -> None:
    now = utcnow()
    events = spread_events(now, days=16)
    await store_logs(engine, events)
    for table in ROLLUPS:
        bucket_of = BUCKET_OF[table]
        for dimension, key_of in (("risk", lambda e: ""), ("user", lambda e: e["user_id"])):
            expected = Counter((bucket_of(e["timestamp"]), key_of(e), e["risk_level"]) for e in events)
            assert await rollup_sums(engine, table, dimension) == dict(expected), (
                table.__tablename__,
                dimension,
            )


async def test_resent_event_is_counted_once_in_every_rollup(engine: AsyncEngine) -> None:
    event = make_event(timestamp=utcnow(), risk_level="red")
    await store_logs(engine, [event])
    await store_logs(engine, [event])
    for table in ROLLUPS:
        assert list((await rollup_sums(engine, table)).values()) == [1], table.__tablename__


@pytest.mark.parametrize("window", list(WINDOWS))
async def test_overview_window_gives_the_numbers_of_counting_raw_rows(
    engine: AsyncEngine, window: str
) -> None:
    now = utcnow()
    events = spread_events(now)
    await store_logs(engine, events)
    hours = WINDOWS[window]
    async with new_sessionmaker(engine)() as session:
        raw = await session.execute(
            select(LogEntry.risk_level, func.count())
            .where(LogEntry.timestamp >= window_start(now, hours))
            .group_by(LogEntry.risk_level)
        )
        raw_totals = dict(raw.all())
        shown = await load_overview(session=session, window=window, now=now)
        cached = await load_overview(session=session, window=window, now=now, cache=OverviewCache())
    seen = in_window(events, now, hours)
    totals = {t.window: t.counts for t in shown.totals}[window]
    assert {risk: n for risk, n in totals.items() if n} == raw_totals
    assert shown.top_tools == ranked(Counter(e["tool_name"] for e in seen))
    assert shown.top_red_users == ranked(Counter(e["user_id"] for e in seen if e["risk_level"] == "red"))
    assert shown.top_entity_types == ranked(Counter(t for e in seen for t in e["detected_entity_types"]))
    assert (cached.top_tools, cached.top_red_users, cached.top_entity_types) == (
        shown.top_tools,
        shown.top_red_users,
        shown.top_entity_types,
    )


async def test_timeline_bins_equal_raw_counts_per_bin(engine: AsyncEngine) -> None:
    now = utcnow()
    events = spread_events(now, days=8)
    await store_logs(engine, events)
    hours = WINDOWS["7d"]
    async with new_sessionmaker(engine)() as session:
        chart = await timeline(session=session, now=now, hours=hours)
    expected: dict[str, list[int]] = {risk: [0] * len(chart.starts) for risk in chart.series}
    start = window_start(now, hours)
    for event in in_window(events, now, hours):
        position = int((event["timestamp"] - start).total_seconds() // 3600) // chart.bin_hours
        expected[event["risk_level"]][position] += 1
    assert chart.series == expected


async def test_history_window_longer_than_any_preset_sums_exactly(engine: AsyncEngine) -> None:
    now = utcnow()
    events = spread_events(now, days=100)
    await store_logs(engine, events)
    start = hour_of(now) - timedelta(days=90, hours=5)
    end = hour_of(now) - timedelta(days=2, hours=7)
    async with new_sessionmaker(engine)() as session:
        sums = await key_sums(session=session, dimension="user", start=start, end=end)
    expected = Counter(e["user_id"] for e in events if start <= e["timestamp"] < end)
    assert sums == ranked(expected, limit=len(USERS))


async def test_rollup_counts_survive_deleting_raw_rows(engine: AsyncEngine) -> None:
    now = utcnow()
    await store_logs(engine, spread_events(now))
    async with new_sessionmaker(engine)() as session:
        before = await load_overview(session=session, window="30d", now=now)
        await session.execute(delete(LogEntry))  # what retention does to old rows
        await session.commit()
        after = await load_overview(session=session, window="30d", now=now)
    assert before.totals[-1].total > 0
    assert (after.totals, after.timeline, after.top_tools, after.top_red_users, after.top_entity_types) == (
        before.totals,
        before.timeline,
        before.top_tools,
        before.top_red_users,
        before.top_entity_types,
    )


def test_split_covers_the_range_once_with_whole_weeks_and_days() -> None:
    start = datetime(2026, 10, 26, 16, tzinfo=UTC)  # a Monday afternoon
    end = datetime(2026, 11, 25, 15, tzinfo=UTC)  # a Wednesday
    pieces = split_by_bucket(start, end)
    assert [(table.__tablename__, a, b) for table, a, b in pieces] == [
        ("log_hourly_counts", start, datetime(2026, 10, 27, tzinfo=UTC)),
        ("log_daily_counts", datetime(2026, 10, 27, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)),
        ("log_weekly_counts", datetime(2026, 11, 2, tzinfo=UTC), datetime(2026, 11, 23, tzinfo=UTC)),
        ("log_daily_counts", datetime(2026, 11, 23, tzinfo=UTC), datetime(2026, 11, 25, tzinfo=UTC)),
        ("log_hourly_counts", datetime(2026, 11, 25, tzinfo=UTC), end),
    ]


# -- the migration's backfill ----------------------------------------------------------------------


async def _upgrade(engine: AsyncEngine, revision: str) -> None:
    def run(connection: Any) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with engine.begin() as connection:
        await connection.run_sync(run)


async def test_migration_backfills_daily_and_weekly_counts_from_the_hourly_ones(fresh_url: str) -> None:
    engine = new_engine(settings_for(fresh_url))
    try:
        await _upgrade(engine, "0006")
        if engine.dialect.name == "postgresql":
            # Days and weeks are UTC ones whatever the session's time zone.
            async with engine.begin() as connection:
                name = engine.url.database
                await connection.execute(text(f"ALTER DATABASE \"{name}\" SET timezone = 'America/New_York'"))
            await engine.dispose()
        sunday_night = datetime(2026, 11, 22, 23, tzinfo=UTC)
        hours = [sunday_night + timedelta(hours=n) for n in range(-30, 30, 7)]
        rows = [
            {
                "bucket_start": hour,
                "organization_id": "default",
                "dimension": "risk",
                "key": "",
                "risk_level": "red",
                "event_count": index + 1,
            }
            for index, hour in enumerate(hours)
        ]
        async with engine.begin() as connection:
            await connection.execute(insert(LogHourlyCount), rows)
        await _upgrade(engine, "head")
        for table in (LogDailyCount, LogWeeklyCount):
            expected = Counter()
            for row in rows:
                expected[BUCKET_OF[table](row["bucket_start"])] += row["event_count"]
            async with engine.connect() as connection:
                stored = dict((await connection.execute(select(table.bucket_start, table.event_count))).all())
            assert stored == dict(expected), table.__tablename__
    finally:
        await engine.dispose()
