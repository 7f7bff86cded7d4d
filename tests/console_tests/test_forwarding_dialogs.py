"""Forwarding at 80×24: the destination form opens in its first field with the "more below" hint, asks
before throwing a change away, wraps a long refusal under its field; Enter edits (administrators) or
shows the settings (viewers); the dead letters dialog has its table focused, keys that fit, and none
of an administrator's for a viewer; columns sort locally. Layout: SQLite only."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from textual.widgets import DataTable, Input, Label

from console.dialogs.confirm import ConfirmScreen
from console.dialogs.dead_letters import DeadLettersScreen
from console.dialogs.destination_form import DestinationFormScreen
from console.dialogs.dialog import MORE_BELOW
from console.screens.shell import ShellScreen
from console.sections.forwarding import DestinationDetailScreen, ForwardingSection
from db.destinations import OCSF_GREEN_REFUSED
from db.engine import new_sessionmaker
from db.models import DeadLetter
from tests.console_tests.test_forwarding_section import KEY, add_destination
from tests.support.console import (
    add_console_user,
    add_org,
    fill,
    open_section,
    press_and_settle,
    running,
    settle,
    sign_in,
    submit,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def forwarding(pilot: Any, username: str) -> ForwardingSection:
    await sign_in(pilot, username)
    section = await open_section(pilot, ForwardingSection)
    section.table.focus()
    await settle(pilot)
    return section


async def add_dead_letters(engine: AsyncEngine, destination_id: Any, count: int) -> None:
    async with new_sessionmaker(engine)() as session:
        for index in range(count):
            session.add(
                DeadLetter(
                    destination_id=destination_id,
                    organization_id="acme",
                    stream="event",
                    item_id=f"event-{index}",
                    payload="{}",
                    error=f"HEC 400: invalid event {index}",
                )
            )
        await session.commit()


async def test_the_new_destination_form_opens_in_its_name_scrolls_and_asks_before_discarding(
    engine: AsyncEngine, app_factory
) -> None:
    await add_org(engine)
    await add_console_user(engine, "alice", is_admin=True)
    async with running(app_factory(secret_key=KEY.decode()), size=(80, 24)) as pilot:
        await forwarding(pilot, "alice")
        await press_and_settle(pilot, "n")
        form = pilot.app.screen
        assert isinstance(form, DestinationFormScreen)
        assert isinstance(pilot.app.focused, Input)
        assert pilot.app.focused.id == "name"
        assert form.scroll_hint == MORE_BELOW
        await pilot.press("escape")  # nothing typed: it closes
        await settle(pilot)
        assert isinstance(pilot.app.screen, ShellScreen)
        await press_and_settle(pilot, "n")
        await pilot.press("s", "i", "e", "m")
        await press_and_settle(pilot, "escape")
        assert isinstance(pilot.app.screen, ConfirmScreen)
        await press_and_settle(pilot, "n")
        assert isinstance(pilot.app.screen, DestinationFormScreen)
        assert pilot.app.screen.query_one("#name", Input).value == "siem"


async def test_enter_edits_a_destination_whose_form_closes_without_asking_until_changed(
    engine: AsyncEngine, app_factory
) -> None:
    await add_org(engine)
    await add_destination(engine, "splunk", transport="hec", address="https://127.0.0.1:8088", secret="t")
    await add_console_user(engine, "alice", is_admin=True)
    async with running(app_factory(secret_key=KEY.decode()), size=(80, 24)) as pilot:
        await forwarding(pilot, "alice")
        await press_and_settle(pilot, "enter")
        form = pilot.app.screen
        assert isinstance(form, DestinationFormScreen)
        assert form.query_one("#name", Input).value == "splunk"
        await press_and_settle(pilot, "escape")
        assert isinstance(pilot.app.screen, ShellScreen)
        await press_and_settle(pilot, "enter")
        fill(pilot, sourcetype="aifw")
        await press_and_settle(pilot, "escape")
        assert isinstance(pilot.app.screen, ConfirmScreen)


async def test_a_long_refusal_wraps_under_its_field(engine: AsyncEngine, app_factory) -> None:
    await add_org(engine)
    await add_console_user(engine, "alice", is_admin=True)
    async with running(app_factory(secret_key=KEY.decode()), size=(80, 24)) as pilot:
        await forwarding(pilot, "alice")
        await press_and_settle(pilot, "n")
        form = pilot.app.screen
        fill(pilot, name="ocsf", address="127.0.0.1:6514", format="ocsf")
        form.query_one("#risk-green").value = True
        await submit(pilot)
        assert form.error_of("risk_levels") == OCSF_GREEN_REFUSED
        label = form.query_one("#risk_levels-error", Label)
        frame = form.query_one("#destination-form")
        assert label.size.height >= 2  # 81 characters in a 76-column form: wrapped, not cut
        assert label.region.right <= frame.region.right


async def test_a_viewer_gets_the_settings_on_enter_and_no_dead_letter_changes(
    engine: AsyncEngine, app_factory
) -> None:
    await add_org(engine)
    row = await add_destination(engine, "siem", address="siem.example:6514")
    await add_dead_letters(engine, row.id, 2)
    await add_console_user(engine, "vera", is_admin=False)
    async with running(app_factory(secret_key=KEY.decode()), size=(80, 24)) as pilot:
        await forwarding(pilot, "vera")
        await press_and_settle(pilot, "enter")
        detail = pilot.app.screen
        assert isinstance(detail, DestinationDetailScreen)
        text = str(detail.query_one("#destination-detail-text").render())
        assert "siem.example:6514" in text
        assert "Secret       none" in text
        await press_and_settle(pilot, "escape")
        await press_and_settle(pilot, "l")
        letters = pilot.app.screen
        assert isinstance(letters, DeadLettersScreen)
        assert isinstance(pilot.app.focused, DataTable)
        offered = {key for key, active in letters.active_bindings.items() if active.enabled}
        assert not {"r", "R", "delete", "X"} & offered
        assert "retry" not in str(letters.query_one("#dead-letters-keys").render())
        await press_and_settle(pilot, "X")
        assert pilot.app.screen is letters
        assert len(letters.letters) == 2


async def test_the_dead_letters_dialog_focuses_its_table_and_its_keys_fit(
    engine: AsyncEngine, app_factory
) -> None:
    await add_org(engine)
    row = await add_destination(engine, "siem")
    await add_dead_letters(engine, row.id, 3)
    await add_console_user(engine, "alice", is_admin=True)
    async with running(app_factory(secret_key=KEY.decode()), size=(80, 24)) as pilot:
        await forwarding(pilot, "alice")
        await press_and_settle(pilot, "l")
        letters = pilot.app.screen
        assert isinstance(letters, DeadLettersScreen)
        assert pilot.app.focused is letters.table
        keys = letters.query_one("#dead-letters-keys")
        assert keys.size.height == 1  # one line, whole, inside the frame
        assert keys.region.right <= letters.query_one("#dead-letters").region.right
        assert "X discard all" in str(keys.render())
        await press_and_settle(pilot, "R")
        assert isinstance(pilot.app.screen, ConfirmScreen)
        assert "3 dead letters" in str(pilot.app.screen.query_one("#confirm-question").render())
        await press_and_settle(pilot, "y")
        # Every letter waits to be sent again: asking again is refused before any question.
        await press_and_settle(pilot, "R")
        assert pilot.app.screen is letters
        await press_and_settle(pilot, "question_mark")
        assert "X" in pilot.app.screen.key_names  # type: ignore[attr-defined]


async def test_columns_sort_locally_by_value(engine: AsyncEngine, app_factory) -> None:
    await add_org(engine)
    names = ["bravo", "alpha", "charlie"]
    for name in names:
        await add_destination(engine, name)
    await add_console_user(engine, "alice", is_admin=True)
    async with running(app_factory(secret_key=KEY.decode()), size=(80, 24)) as pilot:
        section = await forwarding(pilot, "alice")
        shown = [section.table.cell_value(key, "name") for key in section.table.row_keys]
        await press_and_settle(pilot, "s")
        assert [section.table.cell_value(key, "name") for key in section.table.row_keys] == sorted(names)
        await press_and_settle(pilot, "s")
        assert [section.table.cell_value(key, "name") for key in section.table.row_keys] == sorted(
            names, reverse=True
        )
        await press_and_settle(pilot, "s")
        assert [section.table.cell_value(key, "name") for key in section.table.row_keys] == shown
