"""The overview: figures from the hourly rollups for each window, devices, last cleanup, empty state."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from console.sections.overview import OverviewSection
from db.base import utcnow
from db.engine import new_sessionmaker
from db.models import Device, LogEntry, RetentionRun
from db.overview import OverviewCache, load_overview
from tests.support.console import add_console_user, press_and_settle, running, settle, sign_in
from tests.support.database import make_event, store_logs


async def test_overview_shows_counts_per_window_top_lists_devices_and_last_cleanup(
    engine: AsyncEngine, app_factory
) -> None:
    now = utcnow()
    events = [
        make_event(
            timestamp=now - timedelta(hours=1),
            risk_level="red",
            tool_name="Claude",
            user_id="eve",
            detected_entity_types=["API_KEY"],
        ),
        make_event(
            timestamp=now - timedelta(hours=2),
            risk_level="red",
            tool_name="Claude",
            user_id="eve",
            detected_entity_types=["API_KEY", "EMAIL"],
        ),
        make_event(
            timestamp=now - timedelta(hours=3),
            risk_level="amber",
            tool_name="ChatGPT",
            user_id="bob",
            detected_entity_types=["EMAIL"],
        ),
        make_event(timestamp=now - timedelta(days=3), risk_level="green"),
        make_event(timestamp=now - timedelta(days=20), risk_level="red", user_id="mallory"),
    ]
    await store_logs(engine, events)
    async with new_sessionmaker(engine)() as session:
        session.add(Device(device_id="dev-1", user_id="eve", device_type="browser", last_seen=now))
        session.add(
            Device(device_id="dev-old", user_id="bob", device_type="cli", last_seen=now - timedelta(days=5))
        )
        session.add(
            RetentionRun(
                organization_id="default",
                retention_days=90,
                cutoff=now - timedelta(days=90),
                rows_deleted=12,
                trigger="cli",
                status="succeeded",
                started_at=now - timedelta(hours=5),
            )
        )
        # The overview reads only the rollups: with the raw rows gone, its counts stay.
        await session.execute(delete(LogEntry))
        await session.commit()
    await add_console_user(engine, "alice")
    async with running(app_factory()) as pilot:
        await sign_in(pilot, "alice")
        section = pilot.app.screen.query_one(OverviewSection)
        await settle(pilot)
        overview = section.overview
        assert overview is not None
        counts = {totals.window: totals.counts for totals in overview.totals}
        assert counts["24h"] == {"green": 0, "amber": 1, "red": 2}
        assert counts["7d"] == {"green": 1, "amber": 1, "red": 2}
        assert counts["30d"] == {"green": 1, "amber": 1, "red": 3}
        assert overview.top_tools[0] == ("Claude", 2)
        assert overview.top_red_users == [("eve", 2)]
        assert overview.top_entity_types[0] == ("API_KEY", 2)
        assert sum(overview.timeline.series["red"]) == 2
        assert overview.devices_seen_last_day == 1
        assert overview.last_retention_run is not None
        assert overview.last_retention_run.rows_deleted == 12
        await press_and_settle(pilot, "w")
        assert section.overview.window == "7d"
        assert section.overview.top_red_users == [("eve", 2)]
        await press_and_settle(pilot, "w")
        assert section.overview.top_red_users == [("eve", 2), ("mallory", 1)]


async def test_overview_of_an_empty_database_says_no_events_yet(engine: AsyncEngine, app_factory) -> None:
    await add_console_user(engine, "alice")
    async with running(app_factory()) as pilot:
        await sign_in(pilot, "alice")
        section = pilot.app.screen.query_one(OverviewSection)
        assert section.overview is not None
        assert all(t.total == 0 for t in section.overview.totals)
        assert "no events yet" in str(section.query_one("#overview-status").render())


async def test_cached_top_lists_add_events_of_the_current_hour(engine: AsyncEngine) -> None:
    now = utcnow()
    await store_logs(engine, [make_event(timestamp=now - timedelta(days=2), risk_level="red", user_id="eve")])
    cache = OverviewCache()
    async with new_sessionmaker(engine)() as session:
        first = await load_overview(session=session, window="7d", now=now, cache=cache)
        assert first.top_red_users == [("eve", 1)]
    await store_logs(engine, [make_event(timestamp=now, risk_level="red", user_id="zed") for _ in range(2)])
    async with new_sessionmaker(engine)() as session:
        again = await load_overview(session=session, window="7d", now=now, cache=cache)
        uncached = await load_overview(session=session, window="7d", now=now)
    assert again.top_red_users == [("zed", 2), ("eve", 1)]
    assert again.top_red_users == uncached.top_red_users
