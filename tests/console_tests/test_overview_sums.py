"""The overview's sums of closed hours, made once an hour for every console: the same top lists as
summing the rollups, read instead of them, never used for another hour, forgotten when the rollups
change; on both engines."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import orjson
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from db import rollups
from db.base import utcnow
from db.engine import new_sessionmaker
from db.models import OverviewKeySums
from db.overview import (
    STORED_PARTS,
    TIMELINE,
    WINDOWS,
    OverviewCache,
    hour_of,
    load_overview,
    store_closed_sums,
    stored_closed_hours,
    timeline,
)
from db.rights import Actor
from db.scheduler import run_overview_sums_keeper
from tests.console_tests.test_overview_rollups import in_window, ranked, spread_events
from tests.support.database import make_event, store_logs


async def stored_hours(engine: AsyncEngine) -> Counter[object]:
    async with new_sessionmaker(engine)() as session:
        return Counter((await session.scalars(select(OverviewKeySums.closed_before))).all())


@pytest.mark.parametrize("window", list(WINDOWS))
async def test_stored_sums_give_the_top_lists_of_counting_raw_rows(engine: AsyncEngine, window: str) -> None:
    now = utcnow()
    events = spread_events(now)
    await store_logs(engine, events)
    sessions = new_sessionmaker(engine)
    assert await store_closed_sums(sessions, now=now)
    assert await stored_hours(engine) == {hour_of(now): len(WINDOWS) * len(STORED_PARTS)}
    assert not await store_closed_sums(sessions, now=now), "made twice in one hour"
    async with sessions() as session:
        shown = await load_overview(session=session, window=window, now=now)
        whole = await timeline(session=session, now=now, hours=WINDOWS[window])
    # The current hour's events (spread_events puts one there) are added to the stored closed hours.
    assert shown.timeline == whole
    seen = in_window(events, now, WINDOWS[window])
    assert shown.top_tools == ranked(Counter(e["tool_name"] for e in seen))
    assert shown.top_red_users == ranked(Counter(e["user_id"] for e in seen if e["risk_level"] == "red"))
    assert shown.top_entity_types == ranked(Counter(t for e in seen for t in e["detected_entity_types"]))


async def set_stored(engine: AsyncEngine, dimension: str, stored: object) -> None:
    async with new_sessionmaker(engine).begin() as session:
        await session.execute(
            update(OverviewKeySums)
            .where(OverviewKeySums.dimension == dimension, OverviewKeySums.window_hours == WINDOWS["24h"])
            .values(sums=orjson.dumps(stored).decode())
        )


async def test_the_overview_reads_the_stored_closed_hours_of_its_hour_only(engine: AsyncEngine) -> None:
    now = utcnow()
    await store_logs(engine, spread_events(now, days=2))
    sessions = new_sessionmaker(engine)
    await store_closed_sums(sessions, now=now)
    await set_stored(engine, "user", {"zed": 999})
    # Every closed hour's events moved into the first bin: the same totals, so the chart trusts them.
    async with sessions() as session:
        stored = await stored_closed_hours(session=session, part=TIMELINE, hours=24, current=hour_of(now))
    moved = {level: [sum(bins)] + [0] * (len(bins) - 1) for level, bins in stored.items()}
    await set_stored(engine, "timeline", moved)
    async with sessions() as session:
        fleet = await load_overview(session=session, window="24h", now=now)
        one_organisation = await load_overview(session=session, window="24h", now=now, organization="acme")
        next_hour = await load_overview(session=session, window="24h", now=now + timedelta(hours=1))
    assert fleet.top_red_users[0] == ("zed", 999)
    assert fleet.timeline.series["green"][0] == moved["green"][0] > 0
    assert all(user != "zed" for user, _ in one_organisation.top_red_users), "sums are the fleet's only"
    assert all(user != "zed" for user, _ in next_hour.top_red_users), "sums of another hour were used"
    assert one_organisation.timeline.series["green"][0] != moved["green"][0]


async def test_sums_of_a_new_hour_replace_the_older_ones(engine: AsyncEngine) -> None:
    now = utcnow()
    sessions = new_sessionmaker(engine)
    await store_closed_sums(sessions, now=now - timedelta(hours=1))
    assert await store_closed_sums(sessions, now=now)
    assert set(await stored_hours(engine)) == {hour_of(now)}


async def test_a_rebuild_of_the_rollups_forgets_the_sums(engine: AsyncEngine) -> None:
    now = utcnow()
    await store_logs(engine, spread_events(now, days=2))
    sessions = new_sessionmaker(engine)
    await store_closed_sums(sessions, now=now)
    async with sessions() as session:
        await rollups.rebuild(session=session, actor=Actor(name="carol", source="cli"))
    assert not await stored_hours(engine)


async def test_the_keeper_makes_the_sums_after_its_first_delay_and_stops_when_told(
    engine: AsyncEngine,
) -> None:
    stop = asyncio.Event()
    keeper = asyncio.create_task(run_overview_sums_keeper(new_sessionmaker(engine), stop, first_delay=0.2))
    await asyncio.sleep(0.1)
    assert not await stored_hours(engine), "made before the first delay"
    for _ in range(100):
        if await stored_hours(engine):
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(keeper, 5)
    assert sum((await stored_hours(engine)).values()) == len(WINDOWS) * len(STORED_PARTS)


async def test_an_event_arriving_late_for_a_closed_hour_shows_at_once_in_the_totals_and_the_chart(
    engine: AsyncEngine,
) -> None:
    now = utcnow()
    await store_logs(engine, spread_events(now, days=2))
    sessions = new_sessionmaker(engine)
    await store_closed_sums(sessions, now=now)
    cache = OverviewCache()
    async with sessions() as session:
        before = await load_overview(session=session, window="24h", now=now, cache=cache)
    # An agent's backlog: an event of three hours ago, after the closed hours were read and stored.
    await store_logs(engine, [make_event(timestamp=hour_of(now) - timedelta(hours=3), risk_level="red")])
    async with sessions() as session:
        cached = await load_overview(session=session, window="24h", now=now, cache=cache)
        stored = await load_overview(session=session, window="24h", now=now)
        whole = await timeline(session=session, now=now, hours=WINDOWS["24h"])
    red_before = before.totals[0].counts["red"]
    for shown in (cached, stored):
        assert shown.totals[0].counts["red"] == red_before + 1
        assert shown.timeline == whole
