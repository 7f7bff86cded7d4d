"""The alert rule form at 80×24: the cursor in its first field, the "more below" hint only when fields are
below the fold, ticked boxes that read ticked, and Esc asking before it throws away a change (never when
nothing changed, though the form filled its fields from the database). Layout: SQLite only."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from textual.widgets import Input

from console.dialogs.alert_rule_form import AlertRuleFormScreen
from console.dialogs.confirm import ConfirmScreen
from console.dialogs.dialog import MORE_BELOW
from console.screens.shell import ShellScreen
from console.sections.config import ConfigSection
from console.sections.config.alert_rules import AlertRulesPane
from console.widgets.tick_box import TickBox
from tests.console_tests.test_alert_rules_pane import rules_of
from tests.support.console import (
    add_console_user,
    add_org,
    open_section,
    press_and_settle,
    running,
    settle,
    sign_in,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def rules_pane(pilot) -> AlertRulesPane:
    section = await open_section(pilot, ConfigSection)
    pane = section.query_one(AlertRulesPane)
    section.show_pane(pane)
    pane.table.focus()
    await settle(pilot)
    return pane


async def test_a_new_rule_opens_in_its_name_with_the_hint_and_asks_before_discarding(
    engine: AsyncEngine, app_factory
) -> None:
    await add_org(engine)
    await add_console_user(engine, "alice", is_admin=True)
    async with running(app_factory(), size=(80, 24)) as pilot:
        await sign_in(pilot, "alice")
        await rules_pane(pilot)
        await press_and_settle(pilot, "a")
        form = pilot.app.screen
        assert isinstance(form, AlertRuleFormScreen)
        assert isinstance(pilot.app.focused, Input)
        assert pilot.app.focused.id == "name"
        assert form.scroll_hint == MORE_BELOW
        enabled = form.query_one("#enabled", TickBox)
        assert "[✓]" in str(enabled.render())
        await pilot.press("Q")
        await press_and_settle(pilot, "escape")
        assert isinstance(pilot.app.screen, ConfirmScreen)
        await press_and_settle(pilot, "n")
        assert pilot.app.screen is form
        assert form.query_one("#name", Input).value == "Q"
        await press_and_settle(pilot, "escape")
        await press_and_settle(pilot, "y")
        assert isinstance(pilot.app.screen, ShellScreen)


async def test_an_edited_rule_closes_without_asking_when_nothing_changed_and_fits_without_a_hint(
    engine: AsyncEngine, app_factory
) -> None:
    await add_org(engine)
    forwarding = (await rules_of(engine))["Forwarding destination failing"]
    await add_console_user(engine, "alice", is_admin=True)
    async with running(app_factory(), size=(80, 24)) as pilot:
        await sign_in(pilot, "alice")
        pane = await rules_pane(pilot)
        pane.table.select_key(str(forwarding.id))
        await pilot.press("enter")  # Enter edits, as e does
        await settle(pilot)
        form = pilot.app.screen
        assert isinstance(form, AlertRuleFormScreen)
        assert pilot.app.focused is form.query_one("#name")
        assert form.scroll_hint == ""  # a forwarding rule has five fields: they fit
        await press_and_settle(pilot, "escape")
        assert isinstance(pilot.app.screen, ShellScreen)


async def test_the_pane_shows_the_selected_rule_whole_and_tells_a_viewer_what_it_is(
    engine: AsyncEngine, app_factory
) -> None:
    await add_org(engine)
    entity = (await rules_of(engine))["Red entity types"]
    await add_console_user(engine, "vera", is_admin=False)
    async with running(app_factory(), size=(80, 24)) as pilot:
        await sign_in(pilot, "vera")
        pane = await rules_pane(pilot)
        pane.table.select_key(str(entity.id))
        await pilot.pause()
        detail = str(pane.query_one("#alert-rule-detail").render())
        assert "Red entity types" in detail
        assert "entity=" + ",".join(entity.filters["entity_types"]) in detail
        hint = str(pane.query_one(".admin-hint").render())
        assert "a add" not in hint
