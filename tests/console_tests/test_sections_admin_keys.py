"""The admin sections as an operator lives in them: Enter opens the row, ``F`` filters by a cell, ``s``
sorts the small tables locally, plurals read right, and Config's tab keys fit 80 columns on every tab.

Layout and keys do not depend on the engine: these run on SQLite only.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from textual.widgets import Footer, Select
from textual.widgets._footer import FooterKey

from console.dialogs.confirm import ConfirmScreen
from console.dialogs.user_forms import UserFormScreen
from console.screens.shell import ShellScreen
from console.sections.config import ConfigSection
from console.sections.devices import DevicesSection
from console.sections.logs import LogsSection
from console.sections.users import UsersSection
from console.widgets.keyed_table import KeyedTable
from tests.console_tests.test_admin_devices import add_devices
from tests.support.console import (
    add_console_user,
    add_org,
    footer_keys_cut_off,
    open_section,
    press_and_settle,
    running,
    settle,
    sign_in,
    signed_in,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def cursor_on(pilot: Any, table: KeyedTable, key: str, column: str | None = None) -> None:
    table.focus()
    table.move_cursor(row=table.get_row_index(key))
    if column is not None:
        table.column_cursor = next(i for i, spec in enumerate(table.specs) if spec.column_key == column)
    await settle(pilot)


def footer_keys(pilot: Any) -> list[str]:
    return [key.key_display for key in pilot.app.screen.query_one(Footer).query(FooterKey)]


async def test_enter_on_a_user_opens_the_edit_form(engine: AsyncEngine, app_factory) -> None:
    await add_console_user(engine, "bob")
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, UsersSection)
        await cursor_on(pilot, section.table, "bob")
        await press_and_settle(pilot, "enter")
        form = pilot.app.screen
        assert isinstance(form, UserFormScreen)
        assert form.user is not None
        assert form.user.username == "bob"


async def test_enter_on_a_user_opens_nothing_for_a_viewer(engine: AsyncEngine, app_factory) -> None:
    await add_console_user(engine, "bob")
    async with signed_in(app_factory(), engine, "vera", is_admin=False) as pilot:
        section = await open_section(pilot, UsersSection)
        await cursor_on(pilot, section.table, "bob")
        await press_and_settle(pilot, "enter")
        assert isinstance(pilot.app.screen, ShellScreen)


async def test_one_user_is_counted_as_one_user(engine: AsyncEngine, app_factory) -> None:
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, UsersSection)
        assert str(section.query_one("#users-summary").render()) == "1 user"


async def test_f_on_a_users_cell_searches_for_its_value(engine: AsyncEngine, app_factory) -> None:
    await add_console_user(engine, "bob")
    await add_console_user(engine, "carol")
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, UsersSection)
        await cursor_on(pilot, section.table, "carol", "Username")
        await press_and_settle(pilot, "F")
        assert section.search == "carol"
        assert section.table.row_keys == ["carol"]


async def test_s_sorts_the_users_by_the_cursors_column_then_reverses(
    engine: AsyncEngine, app_factory
) -> None:
    for name in ("mallory", "bob", "zed"):
        await add_console_user(engine, name)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, UsersSection)
        await cursor_on(pilot, section.table, "bob", "Username")
        await press_and_settle(pilot, "s")
        assert section.table.row_keys == ["alice", "bob", "mallory", "zed"]
        await press_and_settle(pilot, "s")
        assert section.table.row_keys == ["zed", "mallory", "bob", "alice"]


async def test_f_on_a_devices_type_sets_the_type_box(engine: AsyncEngine, app_factory) -> None:
    await add_devices(engine)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, DevicesSection)
        await cursor_on(pilot, section.table, "browser-2", "Type")
        await press_and_settle(pilot, "F")
        assert section.query_one("#devices-type", Select).value == "browser"
        assert set(section.devices) == {"browser-2"}


async def test_f_on_a_devices_user_searches_for_it(engine: AsyncEngine, app_factory) -> None:
    await add_devices(engine)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, DevicesSection)
        await cursor_on(pilot, section.table, "cli-3", "Device")
        await press_and_settle(pilot, "F")
        assert section.filters.search == "cli-3"
        assert set(section.devices) == {"cli-3"}


async def test_enter_on_a_device_shows_its_logs(engine: AsyncEngine, app_factory) -> None:
    await add_devices(engine)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, DevicesSection)
        await cursor_on(pilot, section.table, "laptop-1")
        await press_and_settle(pilot, "enter")
        shell = pilot.app.screen
        assert isinstance(shell, ShellScreen)
        logs = shell.current
        assert isinstance(logs, LogsSection)
        assert logs.filters.device == "laptop-1"
        assert len(logs.page_state.rows) == 4


async def test_s_sorts_the_devices_locally(engine: AsyncEngine, app_factory) -> None:
    await add_devices(engine)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, DevicesSection)
        await cursor_on(pilot, section.table, "laptop-1", "Device")
        await press_and_settle(pilot, "s")
        assert section.table.row_keys == ["browser-2", "cli-3", "laptop-1"]


@pytest.mark.parametrize("is_admin", [True, False], ids=["admin", "viewer"])
async def test_config_tab_keys_fit_80_columns_on_every_tab(
    engine: AsyncEngine, app_factory, is_admin: bool
) -> None:
    await add_org(engine)
    await add_console_user(engine, "alice", is_admin=is_admin)
    async with running(app_factory(), size=(80, 24)) as pilot:
        await sign_in(pilot, "alice")
        section = await open_section(pilot, ConfigSection)
        seen: list[str] = []
        cut: dict[str, list[str]] = {}
        for _ in section.panes:
            section.action_next_tab(1)
            await settle(pilot)
            pane = section.active_pane.id or ""
            seen.append(pane)
            keys = footer_keys(pilot)
            if missing := footer_keys_cut_off(pilot):
                cut[pane] = missing
            elif not {"[", "]"} <= set(keys):
                cut[pane] = ["[ or ] not shown", *keys]
            if not is_admin:
                assert not {"a", "e", "t", "del"} & set(keys), pane
        assert len(seen) == len(section.panes)
        assert cut == {}


async def test_enter_on_a_tool_opens_its_form_and_esc_closes_it_unchanged(
    engine: AsyncEngine, app_factory
) -> None:
    await add_org(engine)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, ConfigSection)
        section.action_edit_config()
        await settle(pilot)
        table = section.query_one("#tools-table", KeyedTable)
        first = table.row_keys[0]
        await cursor_on(pilot, table, first)
        await press_and_settle(pilot, "enter")
        form = pilot.app.screen
        assert form.query_one("#name").value == first
        await press_and_settle(pilot, "escape")
        assert not isinstance(pilot.app.screen, ConfirmScreen)
        assert isinstance(pilot.app.screen, ShellScreen)
