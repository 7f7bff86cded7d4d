"""Alerts section: the list and its state filter, pages, acknowledge and resolve (audited), a viewer's
keys and db's refusal, Enter opening the alert's events in Logs, and hostile names shown as text."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from console.dialogs.confirm import ConfirmScreen
from console.sections import alerts as alerts_module
from console.sections.alerts import AlertsSection
from console.sections.logs import LogsSection
from db.alerts import acknowledge_alert, list_rules
from db.base import utcnow
from db.engine import new_sessionmaker
from db.identifiers import visible
from db.models import Alert, AlertRule
from db.rights import Actor, NotAllowed
from tests.console_tests.naughty_strings import NAUGHTY, WITH_CONTROLS
from tests.support.console import (
    add_org,
    audit_rows,
    confirm,
    open_section,
    press_and_settle,
    settle,
    signed_in,
)
from tests.support.database import BASE_TIME, make_event, store_logs


async def rule_named(engine: AsyncEngine, name: str, organization_id: str = "acme") -> AlertRule:
    async with new_sessionmaker(engine)() as session:
        rules = await list_rules(session=session, organization_id=organization_id)
    return next(rule for rule in rules if rule.name == name)


async def add_alert(engine: AsyncEngine, rule: AlertRule, **fields: Any) -> Alert:
    """An alert row as the evaluator stores it (the evaluator's own tests cover how it gets there)."""
    now = utcnow()
    values: dict[str, Any] = {
        "organization_id": rule.organization_id,
        "rule_id": rule.id,
        "rule_name": rule.name,
        "rule_kind": rule.kind,
        "severity": rule.severity,
        "group_key": "eve@example.com",
        "state": "open",
        "first_event_at": now - timedelta(minutes=5),
        "last_event_at": now - timedelta(minutes=1),
        "event_count": 5,
        "event_ids": [str(uuid.uuid4())],
        "details": {},
        "opened_at": now - timedelta(minutes=4),
        "updated_at": now - timedelta(minutes=1),
    }
    values.update(fields)
    async with new_sessionmaker(engine)() as session:
        alert = Alert(**values)
        session.add(alert)
        await session.commit()
        return alert


async def alert_state(engine: AsyncEngine, alert_id: uuid.UUID) -> Alert:
    async with new_sessionmaker(engine)() as session:
        alert = await session.get(Alert, alert_id)
        assert alert is not None
        return alert


async def test_the_list_shows_live_alerts_newest_change_first_and_filters_by_state(
    engine: AsyncEngine, app_factory
) -> None:
    await add_org(engine)
    rule = await rule_named(engine, "Red burst per user")
    now = utcnow()
    older = await add_alert(engine, rule, group_key="bob", updated_at=now - timedelta(minutes=9))
    newer = await add_alert(engine, rule, group_key="eve", state="acknowledged", acknowledged_by="ada")
    resolved = await add_alert(engine, rule, group_key="mallory", state="resolved", resolved_by="ada")
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, AlertsSection)
        assert section.table.row_keys == [str(newer.id), str(older.id)]
        cells = section.table.get_row(str(newer.id))
        assert [str(cell) for cell in cells[:6]] == ["high", "ack'd", rule.name, "acme", "eve", "5"]
        detail = str(section.query_one("#alert-detail-text").render())
        assert "acknowledged" in detail
        assert "by ada" in detail
        section.query_one("#alerts-state").value = "resolved"
        await settle(pilot)
        assert section.table.row_keys == [str(resolved.id)]
        section.query_one("#alerts-state").value = "any state"
        await settle(pilot)
        assert set(section.table.row_keys) == {str(older.id), str(newer.id), str(resolved.id)}


async def test_pages_go_older_and_back_newer(engine: AsyncEngine, app_factory, monkeypatch) -> None:
    monkeypatch.setattr(alerts_module, "ALERT_PAGE_SIZE", 2)
    await add_org(engine)
    rule = await rule_named(engine, "Red burst per user")
    now = utcnow()
    made = [
        await add_alert(engine, rule, group_key=f"user{i}", updated_at=now - timedelta(minutes=i))
        for i in range(5)
    ]
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, AlertsSection)
        pages = [section.table.row_keys]
        for _ in range(2):
            await press_and_settle(pilot, "n")
            pages.append(section.table.row_keys)
        assert pages == [[str(a.id) for a in made[i : i + 2]] for i in (0, 2, 4)]
        assert section.has_older is False
        await press_and_settle(pilot, "p")
        assert section.table.row_keys == pages[1]


async def test_an_admin_acknowledges_then_resolves_after_confirming_both_audited(
    engine: AsyncEngine, app_factory
) -> None:
    await add_org(engine)
    alert = await add_alert(engine, await rule_named(engine, "Red burst per user"))
    async with signed_in(app_factory(), engine, "ada") as pilot:
        section = await open_section(pilot, AlertsSection)
        section.table.focus()
        await press_and_settle(pilot, "a")
        acknowledged = await alert_state(engine, alert.id)
        assert (acknowledged.state, acknowledged.acknowledged_by) == ("acknowledged", "ada")
        assert "acknowledged" in str(section.query_one("#alert-detail-text").render())
        await press_and_settle(pilot, "r")
        assert isinstance(pilot.app.screen, ConfirmScreen)
        await confirm(pilot, yes=False)
        assert (await alert_state(engine, alert.id)).state == "acknowledged"
        await pilot.press("r")
        await confirm(pilot)
        resolved = await alert_state(engine, alert.id)
        assert (resolved.state, resolved.resolved_by, resolved.revision) == ("resolved", "ada", 3)
        assert section.table.row_keys == []  # the default filter lists live alerts only
        actions = [(row.action, row.actor) for row in await audit_rows(engine)]
        assert actions == [("alert.acknowledge", "ada"), ("alert.resolve", "ada")]


async def test_a_viewer_has_no_action_keys_and_db_refuses_their_changes(
    engine: AsyncEngine, app_factory
) -> None:
    await add_org(engine)
    alert = await add_alert(engine, await rule_named(engine, "Red burst per user"))
    async with signed_in(app_factory(), engine, "victor", is_admin=False) as pilot:
        section = await open_section(pilot, AlertsSection)
        section.table.focus()
        await settle(pilot)
        keys = set(pilot.app.screen.active_bindings)
        assert "n" in keys
        assert not {"a", "r"} & keys
        await pilot.press("a")
        await press_and_settle(pilot, "r")
        assert (await alert_state(engine, alert.id)).state == "open"
    async with new_sessionmaker(engine)() as session:
        with pytest.raises(NotAllowed):
            await acknowledge_alert(session=session, alert_id=alert.id, actor=Actor.console("victor"))
    assert await audit_rows(engine) == []


async def test_enter_opens_the_alerts_events_in_logs(engine: AsyncEngine, app_factory) -> None:
    await add_org(engine)
    rule = await rule_named(engine, "Red burst per user")
    first, last = BASE_TIME + timedelta(seconds=10), BASE_TIME + timedelta(seconds=14)
    events = [make_event(i, organization_id="acme", user_id="eve", risk_level="red") for i in range(10, 15)]
    outside = [
        make_event(9, organization_id="acme", user_id="eve", risk_level="red"),  # before the alert
        make_event(15, organization_id="acme", user_id="eve", risk_level="red"),  # after it
        make_event(12, organization_id="acme", user_id="bob", risk_level="red"),  # another user
        make_event(13, organization_id="acme", user_id="eve", risk_level="amber"),  # another level
        make_event(11, organization_id="other", user_id="eve", risk_level="red"),  # another org
    ]
    await store_logs(engine, [*events, *outside])
    alert = await add_alert(engine, rule, group_key="eve", first_event_at=first, last_event_at=last)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, AlertsSection)
        section.table.focus()
        section.table.select_key(str(alert.id))
        await press_and_settle(pilot, "enter")
        shell = pilot.app.screen
        assert shell.current.TITLE == "Logs"
        logs = shell.query_one(LogsSection)
        filters = logs.filters
        assert (filters.organization, filters.user, filters.risk_levels) == ("acme", "eve", {"red"})
        assert filters.since == first
        assert filters.until == last + timedelta(microseconds=1)
        assert {row.id for row in logs.page_state.rows} == {event["id"] for event in events}


async def test_hostile_rule_names_group_keys_and_details_stay_text(engine: AsyncEngine, app_factory) -> None:
    await add_org(engine)
    rule = await rule_named(engine, "Silent agents")
    names = [*NAUGHTY[:12], *WITH_CONTROLS]
    made = []
    for index, name in enumerate(names):
        made.append(
            await add_alert(
                engine,
                rule,
                rule_name=name,
                group_key=names[-1 - index],
                details={"silent_devices": [name, "[/]"], name: "[b]x"},
                updated_at=utcnow() - timedelta(seconds=index),
            )
        )
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, AlertsSection)
        assert pilot.app.is_running
        for alert, name in zip(made, names, strict=True):
            cells = section.table.get_row(str(alert.id))
            assert cells[2].plain == visible(name)
            section.table.select_key(str(alert.id))
            await pilot.pause()
            detail = section.query_one("#alert-detail-text").render()
            assert visible(name) in str(detail)
        section.query_one("#alerts-state").value = "any state"
        await settle(pilot)
        assert pilot.app.is_running


async def test_rows_of_every_page_keep_the_cursor_across_refreshes(engine: AsyncEngine, app_factory) -> None:
    await add_org(engine)
    rule = await rule_named(engine, "Red burst per user")
    made = [await add_alert(engine, rule, group_key=f"u{i}") for i in range(3)]
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, AlertsSection)
        section.table.select_key(str(made[1].id))
        await add_alert(engine, rule, group_key="new", updated_at=utcnow())
        section.load_alerts()
        await settle(pilot)
        assert len(section.table.row_keys) == 4
        assert section.table.selected_key == str(made[1].id)
    async with new_sessionmaker(engine)() as session:
        assert len((await session.scalars(select(Alert))).all()) == 4
