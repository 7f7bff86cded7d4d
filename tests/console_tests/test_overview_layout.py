"""The overview's layout: every panel on screen at 80×24, 120×36 and 200×50, top lists that fill the
height and always show their counts, counts in words, and the help of the section."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from textual.geometry import Region
from textual.pilot import Pilot
from textual.widget import Widget

from console.dialogs.help import HelpScreen
from console.sections.overview import OverviewSection
from console.widgets.overview_widgets import OpenAlertsView, RankedList
from console.widgets.risk_chart import RiskChart
from db.base import utcnow
from db.engine import new_sessionmaker
from db.models import Device, RetentionRun
from tests.console_tests.naughty_strings import NAUGHTY, WITH_CONTROLS
from tests.console_tests.test_overview_alerts import add_alerts, any_rule
from tests.support.console import add_console_user, add_org, press_and_settle, running, settle, sign_in
from tests.support.database import make_event, store_logs

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

LONG_USER = "someone.with.a.very.long.name@subsidiary.example.com"


def drawn(widget: Widget) -> list[str]:
    """The lines the widget draws now (what an operator sees of it)."""
    width, height = widget.size
    return [
        "".join(segment.text for segment in line) for line in widget.render_lines(Region(0, 0, width, height))
    ]


async def many_keys(engine: AsyncEngine, count: int = 30) -> None:
    """``count`` tools, users (long ids, red) and entity types, key n with n + 1 events."""
    now = utcnow()
    events = [
        make_event(
            timestamp=now - timedelta(minutes=5 + index),
            risk_level="red",
            tool_name=f"tool-{key:02}",
            user_id=f"{key:02}.{LONG_USER}",
            detected_entity_types=[f"ENTITY_{key:02}"],
        )
        for key in range(count)
        for index in range(key + 1)
    ]
    await store_logs(engine, events)


async def overview_at(pilot: Pilot[Any]) -> OverviewSection:
    section = pilot.app.screen.query_one(OverviewSection)
    await settle(pilot)
    return section


@pytest.mark.parametrize("size", [(80, 24), (120, 36), (200, 50)])
async def test_every_panel_of_the_overview_is_on_screen(
    engine: AsyncEngine, app_factory, size: tuple[int, int]
) -> None:
    await many_keys(engine, 12)
    await add_console_user(engine, "alice")
    async with running(app_factory(), size=size) as pilot:
        await sign_in(pilot, "alice")
        section = await overview_at(pilot)
        screen = pilot.app.screen.region
        for selector in (
            "#risk-totals",
            "#overview-status",
            "#overview-facts",
            "#open-alerts",
            "#risk-chart",
        ):
            widget = section.query_one(selector)
            assert widget.region.height > 0, selector
            assert screen.contains_region(widget.region), (selector, widget.region)
        for ranked in section.query(RankedList):
            assert screen.contains_region(ranked.region), ranked.id
            assert len(ranked.rows_shown()) >= 3, ranked.id
        chart = section.query_one(RiskChart)
        assert chart.size.height >= 7
        assert "peak" in chart.text()


async def test_top_lists_fill_the_height_at_200x50(engine: AsyncEngine, app_factory) -> None:
    await many_keys(engine)
    await add_console_user(engine, "alice")
    async with running(app_factory(), size=(200, 50)) as pilot:
        await sign_in(pilot, "alice")
        section = await overview_at(pilot)
        assert section.overview is not None
        assert len(section.overview.top_tools) == 30
        tools = section.query_one("#top-tools", RankedList)
        lines = drawn(tools)
        assert len(tools.rows_shown()) == tools.size.height - 1 >= 12
        assert all(line.strip() for line in lines)  # no blank lines under the list
        assert lines[1].split() == ["tool-29", "30"]


async def test_top_users_by_red_show_their_counts_at_80x24(engine: AsyncEngine, app_factory) -> None:
    await many_keys(engine, 6)
    await add_console_user(engine, "alice")
    async with running(app_factory(), size=(80, 24)) as pilot:
        await sign_in(pilot, "alice")
        section = await overview_at(pilot)
        users = section.query_one("#top-red-users", RankedList)
        shown = users.rows_shown()
        assert shown
        for line, (_, count) in zip(drawn(users)[1:], shown, strict=False):
            assert line.rstrip().endswith(f"… {count}"), line  # the name cut, the count whole


async def test_the_overview_counts_in_words(engine: AsyncEngine, app_factory) -> None:
    now = utcnow()
    await add_org(engine)
    await store_logs(engine, [make_event(timestamp=now - timedelta(minutes=3), risk_level="red")])
    async with new_sessionmaker(engine)() as session:
        session.add(Device(device_id="dev-1", user_id="eve", device_type="browser", last_seen=now))
        session.add(
            RetentionRun(
                organization_id="acme",
                retention_days=90,
                cutoff=now - timedelta(days=90),
                rows_deleted=1,
                trigger="cli",
                status="succeeded",
                started_at=now - timedelta(hours=5),
            )
        )
        await session.commit()
    await add_alerts(engine, await any_rule(engine), [{"event_count": 1}])
    await add_console_user(engine, "alice")
    async with running(app_factory(), size=(120, 36)) as pilot:
        await sign_in(pilot, "alice")
        section = await overview_at(pilot)
        facts = "\n".join(drawn(section.query_one("#overview-facts")))
        assert "1 device seen" in facts
        assert "1 devices" not in facts
        assert "1 row," in facts
        assert "1 rows" not in facts
        alerts = "\n".join(drawn(section.query_one(OpenAlertsView)))
        assert "1 event " in alerts
        assert "1 events" not in alerts


async def test_top_lists_show_every_naughty_string_as_text(engine: AsyncEngine, app_factory) -> None:
    await add_console_user(engine, "alice")
    async with running(app_factory(), size=(120, 36)) as pilot:
        await sign_in(pilot, "alice")
        section = await overview_at(pilot)
        assert section.overview is not None
        ranked = section.query_one("#top-tools", RankedList)
        values = [*NAUGHTY, *WITH_CONTROLS]
        rows = ranked.size.height - 1
        seen = []
        for start in range(0, len(values), rows):
            chunk = values[start : start + rows]
            section.show(replace(section.overview, top_tools=[(value, 1) for value in chunk]))
            await pilot.pause()
            seen += drawn(ranked)[1:]
        shown = "\n".join(seen)
        assert "\x1b" not in shown
        assert "\x07" not in shown
        for value in ("[/]EvilTool", "[B]x", "[$accent]x", "\\[x", "[@click=app.quit]q[/]", "%s%s%s%n"):
            assert value in shown


async def test_help_explains_the_panels_the_scale_and_the_keys(engine: AsyncEngine, app_factory) -> None:
    await add_console_user(engine, "alice")
    async with running(app_factory(), size=(120, 36)) as pilot:
        await sign_in(pilot, "alice")
        await press_and_settle(pilot, "question_mark")
        help_screen = pilot.app.screen
        assert isinstance(help_screen, HelpScreen)
        assert {"w", "l", "r"} <= set(help_screen.key_names)
        for words in ("log scale", "linear", "Top lists", "Open alerts", "UTC"):
            assert words in OverviewSection.HELP
