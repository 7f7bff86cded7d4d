"""The admin forms protect the operator: Esc asks before throwing away a change, a new token is shown
read-only and copied with ``y``, a refusal comes before any question, and ticked boxes look ticked.

What is checked here is the console's behaviour, not the engine's: these run on SQLite only.
"""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from console.dialogs.config_forms import TokenShownScreen
from console.dialogs.confirm import ConfirmScreen
from console.dialogs.metadata_keys import MetadataKeysScreen
from console.dialogs.user_forms import UserFormScreen
from console.screens.shell import ShellScreen
from console.sections.config import ConfigSection
from console.sections.users import UsersSection
from console.widgets.tick_box import TickBox
from db.engine import new_sessionmaker
from db.users import get_by_username
from tests.support.console import (
    add_console_user,
    add_org,
    audit_rows,
    fill,
    open_section,
    press_and_settle,
    settle,
    signed_in,
    submit,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def edit_form_of(pilot, username: str) -> UserFormScreen:
    section = await open_section(pilot, UsersSection)
    section.table.select_key(username)
    section.action_edit_user()
    await settle(pilot)
    form = pilot.app.screen
    assert isinstance(form, UserFormScreen)
    return form


async def test_esc_on_a_changed_form_asks_and_no_keeps_it(engine: AsyncEngine, app_factory) -> None:
    await add_console_user(engine, "bob")
    async with signed_in(app_factory(), engine) as pilot:
        form = await edit_form_of(pilot, "bob")
        await pilot.press("x", "y", "z")  # the focus is in the first field: Email
        await press_and_settle(pilot, "escape")
        assert isinstance(pilot.app.screen, ConfirmScreen)
        await press_and_settle(pilot, "n")
        assert pilot.app.screen is form
        assert form.query_one("#email").value.endswith("xyz")


async def test_esc_on_a_changed_form_then_yes_closes_it_unsaved(engine: AsyncEngine, app_factory) -> None:
    await add_console_user(engine, "bob")
    async with signed_in(app_factory(), engine) as pilot:
        await edit_form_of(pilot, "bob")
        fill(pilot, full_name="Robert")
        await press_and_settle(pilot, "escape")
        assert isinstance(pilot.app.screen, ConfirmScreen)
        await press_and_settle(pilot, "y")
        assert isinstance(pilot.app.screen, ShellScreen)
    assert await audit_rows(engine) == []


async def test_esc_on_an_unchanged_form_closes_it_at_once(engine: AsyncEngine, app_factory) -> None:
    await add_console_user(engine, "bob")
    async with signed_in(app_factory(), engine) as pilot:
        await edit_form_of(pilot, "bob")
        await press_and_settle(pilot, "escape")
        assert isinstance(pilot.app.screen, ShellScreen)


async def test_the_edit_form_opens_with_the_cursor_in_its_first_field(
    engine: AsyncEngine, app_factory
) -> None:
    await add_console_user(engine, "bob")
    async with signed_in(app_factory(), engine) as pilot:
        await edit_form_of(pilot, "bob")
        assert pilot.app.focused is not None
        assert pilot.app.focused.id == "email"  # the username cannot be edited


async def test_tick_boxes_of_the_user_form_look_ticked_or_not(engine: AsyncEngine, app_factory) -> None:
    await add_console_user(engine, "bob", is_admin=False)
    async with signed_in(app_factory(), engine) as pilot:
        form = await edit_form_of(pilot, "bob")
        admin, active = form.query_one("#is_admin", TickBox), form.query_one("#is_active", TickBox)
        assert str(admin.render()).startswith("[ ]")
        assert str(active.render()).startswith("[✓]")
        admin.focus()
        await press_and_settle(pilot, "space")
        assert str(admin.render()).startswith("[✓]")


async def test_a_new_token_is_shown_read_only_and_y_copies_it(engine: AsyncEngine, app_factory) -> None:
    await add_org(engine)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, ConfigSection)
        section.action_create_token()
        await settle(pilot)
        fill(pilot, name="laptops")
        await submit(pilot)
        shown = pilot.app.screen
        assert isinstance(shown, TokenShownScreen)
        token = shown.token
        assert token
        assert shown.shown_token == token
        await press_and_settle(pilot, "a", "b", "backspace", "delete", "ctrl+u")
        assert pilot.app.screen is shown
        assert shown.shown_token == token
        await press_and_settle(pilot, "y")
        assert pilot.app.clipboard == token
        assert any("terminal's clipboard" in n.message for n in pilot.app._notifications)
        await press_and_settle(pilot, "escape")
        assert isinstance(pilot.app.screen, ShellScreen)
        assert shown.token == ""


async def test_deleting_yourself_is_refused_before_any_question(engine: AsyncEngine, app_factory) -> None:
    await add_console_user(engine, "bob", is_admin=True)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, UsersSection)
        section.table.select_key("alice")
        await settle(pilot)
        section.table.focus()
        await press_and_settle(pilot, "delete")
        assert isinstance(pilot.app.screen, ShellScreen)
        messages = [n.message for n in pilot.app._notifications]
        assert any("cannot delete yourself" in message for message in messages)
        await press_and_settle(pilot, "a")
        assert isinstance(pilot.app.screen, ShellScreen)
        assert any("cannot deactivate yourself" in n.message for n in pilot.app._notifications)
    async with new_sessionmaker(engine)() as session:
        assert await get_by_username(session=session, username="alice") is not None
    assert await audit_rows(engine) == []


async def test_deleting_someone_else_is_still_confirmed(engine: AsyncEngine, app_factory) -> None:
    await add_console_user(engine, "bob")
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, UsersSection)
        section.table.select_key("bob")
        section.table.focus()
        await press_and_settle(pilot, "delete")
        assert isinstance(pilot.app.screen, ConfirmScreen)
        await press_and_settle(pilot, "n")
    assert await audit_rows(engine) == []


async def test_the_metadata_keys_list_is_a_dialog_that_esc_closes(engine: AsyncEngine, app_factory) -> None:
    await add_org(engine)
    async with signed_in(app_factory(), engine, "vera", is_admin=False) as pilot:
        await open_section(pilot, ConfigSection)
        await press_and_settle(pilot, "m")
        listing = pilot.app.screen
        assert isinstance(listing, MetadataKeysScreen)
        assert pilot.app.focused is listing.query_one("#metadata-keys-table")
        in_force = {active.binding.action for active in listing.active_bindings.values() if active.enabled}
        assert not {"add", "remove_key"} & in_force
        await press_and_settle(pilot, "escape")
        assert isinstance(pilot.app.screen, ShellScreen)
