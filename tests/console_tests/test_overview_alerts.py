"""The overview's open alerts: counted by severity, the newest few listed, refreshed with the rest, and
hostile rule names and group keys shown as text."""

from __future__ import annotations

import io
import uuid
from datetime import timedelta
from typing import Any

from rich.console import Console
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from console.sections.overview import NEWEST_ALERTS, OverviewSection
from console.widgets.overview_widgets import OpenAlertsView
from db.alerts import list_rules
from db.base import utcnow
from db.engine import new_sessionmaker
from db.identifiers import visible
from db.models import Alert, AlertRule
from tests.console_tests.naughty_strings import NAUGHTY, WITH_CONTROLS
from tests.support.console import add_org, open_section, press_and_settle, pump_until, signed_in


async def any_rule(engine: AsyncEngine) -> AlertRule:
    async with new_sessionmaker(engine)() as session:
        return (await list_rules(session=session, organization_id="acme"))[0]


async def add_alerts(engine: AsyncEngine, rule: AlertRule, rows: list[dict[str, Any]]) -> list[Alert]:
    now = utcnow()
    made = []
    async with new_sessionmaker(engine)() as session:
        for index, fields in enumerate(rows):
            values: dict[str, Any] = {
                "organization_id": "acme",
                "rule_id": rule.id,
                "rule_name": rule.name,
                "rule_kind": rule.kind,
                "severity": "high",
                "group_key": f"user{index}",
                "state": "open",
                "first_event_at": now - timedelta(minutes=10),
                "last_event_at": now - timedelta(minutes=index),
                "event_count": 3,
                "updated_at": now - timedelta(minutes=index),
            }
            values.update(fields)
            alert = Alert(**values)
            session.add(alert)
            made.append(alert)
        await session.commit()
    return made


def shown(section: OverviewSection, width: int = 160) -> str:
    """The open alerts as the widget draws them, as text."""
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(section.query_one(OpenAlertsView).table)
    return console.export_text()


async def test_the_overview_counts_open_alerts_by_severity_and_lists_the_newest(
    engine: AsyncEngine, app_factory
) -> None:
    await add_org(engine)
    rule = await any_rule(engine)
    made = await add_alerts(
        engine,
        rule,
        [
            {"severity": "critical", "group_key": "newest-one"},
            *({"severity": "high"} for _ in range(5)),
            {"severity": "medium", "state": "acknowledged"},
            {"severity": "low", "state": "resolved", "group_key": "long-gone"},
        ],
    )
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, OverviewSection)
        alerts = section.open_alerts
        assert alerts is not None
        assert alerts.by_severity == {"critical": 1, "high": 5, "medium": 1}
        assert [alert.id for alert in alerts.newest] == [alert.id for alert in made[:NEWEST_ALERTS]]
        text = shown(section)
        assert "Open alerts (7: 1 critical · 5 high · 1 medium)" in text
        assert "newest-one" in text
        assert "long-gone" not in text


async def test_the_open_alerts_follow_the_refresh(engine: AsyncEngine, app_factory) -> None:
    await add_org(engine)
    rule = await any_rule(engine)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, OverviewSection)
        assert "Open alerts (0)" in shown(section)
        [alert] = await add_alerts(engine, rule, [{"severity": "medium", "group_key": "mallory"}])
        await press_and_settle(pilot, "r")
        assert "1 medium" in shown(section)
        assert "mallory" in shown(section)
        async with new_sessionmaker(engine)() as session:
            await session.execute(update(Alert).where(Alert.id == alert.id).values(state="resolved"))
            await session.commit()
        section.refresh_overview()
        await pump_until(pilot, lambda: "Open alerts (0)" in shown(section))


async def test_hostile_rule_names_and_group_keys_stay_text_on_the_overview(
    engine: AsyncEngine, app_factory
) -> None:
    await add_org(engine)
    rule = await any_rule(engine)
    values = ["[/]EvilTool", "[b]x", WITH_CONTROLS[0], WITH_CONTROLS[1], NAUGHTY[5]]
    await add_alerts(
        engine,
        rule,
        [
            {"rule_name": value, "group_key": values[-1 - index], "id": uuid.uuid4()}
            for index, value in enumerate(values[:NEWEST_ALERTS])
        ],
    )
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, OverviewSection)
        assert pilot.app.is_running
        newest = section.open_alerts.newest if section.open_alerts else []
        assert [alert.rule_name for alert in newest] == values[:NEWEST_ALERTS]
        text = shown(section, width=400)
        for value in values[:NEWEST_ALERTS]:
            assert visible(value) in text
