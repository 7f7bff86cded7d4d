"""The overview's timeline: bins of whole hours on UTC multiples of their length, every event of the
window in exactly one bin, on both engines."""

from __future__ import annotations

from collections import Counter

from sqlalchemy.ext.asyncio import AsyncEngine

from db.base import utcnow
from db.engine import new_sessionmaker
from db.overview import WINDOWS, timeline, window_start
from tests.console_tests.test_overview_rollups import in_window, spread_events
from tests.support.database import store_logs


async def test_the_30_day_timeline_has_4_hour_bins_on_round_hours_holding_every_event(
    engine: AsyncEngine,
) -> None:
    now = utcnow()
    events = spread_events(now, days=35)
    await store_logs(engine, events)
    hours = WINDOWS["30d"]
    async with new_sessionmaker(engine)() as session:
        chart = await timeline(session=session, now=now, hours=hours)
    assert chart.bin_hours == 4
    assert all(start.hour % 4 == 0 and start.minute == 0 for start in chart.starts)
    assert chart.starts[0] <= window_start(now, hours) < chart.starts[0] + (chart.starts[1] - chart.starts[0])
    assert chart.starts[-1] <= now
    expected: dict[str, list[int]] = {risk: [0] * len(chart.starts) for risk in chart.series}
    for event in in_window(events, now, hours):
        position = int((event["timestamp"] - chart.starts[0]).total_seconds() // (4 * 3600))
        expected[event["risk_level"]][position] += 1
    assert chart.series == expected
    seen = Counter(event["risk_level"] for event in in_window(events, now, hours))
    assert {risk: sum(values) for risk, values in chart.series.items() if sum(values)} == dict(seen)


async def test_the_day_and_week_timelines_are_hourly(engine: AsyncEngine) -> None:
    now = utcnow()
    async with new_sessionmaker(engine)() as session:
        for window in ("24h", "7d"):
            chart = await timeline(session=session, now=now, hours=WINDOWS[window])
            assert chart.bin_hours == 1
            assert len(chart.starts) == WINDOWS[window]
