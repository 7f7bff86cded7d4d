"""What holds in every section, checked section by section: the footer fits 80 columns, Esc leaves any
box, viewers are not offered an administrator's keys, and ``?`` lists the keys of the section shown.

Layout and keys do not depend on the engine: these run on SQLite only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from textual.widgets import Input

from console.app import FirewallConsole
from console.dialogs.help import HelpScreen
from console.screens.shell import SECTIONS, ShellScreen
from console.sections.section import Section
from tests.support.console import (
    add_console_user,
    footer_keys_cut_off,
    open_section,
    press_and_settle,
    running,
    settle,
    sign_in,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

SECTION_NAMES = [section.TITLE for section in SECTIONS]


def section_type(title: str) -> type[Section]:
    return next(section for section in SECTIONS if section.TITLE == title)


async def shown(pilot: Any, title: str) -> Section:
    section = await open_section(pilot, section_type(title))
    await settle(pilot)
    return section


@pytest.mark.parametrize("is_admin", [True, False], ids=["admin", "viewer"])
async def test_every_section_footer_fits_80_columns(
    app_factory: Callable[..., FirewallConsole], engine: AsyncEngine, is_admin: bool
) -> None:
    await add_console_user(engine, "alice", is_admin=is_admin)
    async with running(app_factory(), size=(80, 24)) as pilot:
        await sign_in(pilot, "alice")
        cut: dict[str, list[str]] = {}
        for title in SECTION_NAMES:
            await shown(pilot, title)
            if missing := footer_keys_cut_off(pilot):
                cut[title] = missing
        assert cut == {}


async def test_viewers_are_not_offered_an_administrators_keys(
    app_factory: Callable[..., FirewallConsole], engine: AsyncEngine
) -> None:
    await add_console_user(engine, "vera", is_admin=False)
    async with running(app_factory(), size=(120, 36)) as pilot:
        await sign_in(pilot, "vera")
        offered: dict[str, list[str]] = {}
        for title in SECTION_NAMES:
            section = await shown(pilot, title)
            admin_only = section.admin_actions()
            in_force = [
                active.binding.action
                for active in pilot.app.screen.active_bindings.values()
                if active.enabled and active.binding.action in admin_only
            ]
            if in_force:
                offered[title] = in_force
        assert offered == {}


async def test_escape_leaves_every_box_of_every_section(
    app_factory: Callable[..., FirewallConsole], engine: AsyncEngine
) -> None:
    await add_console_user(engine, "alice", is_admin=True)
    async with running(app_factory(), size=(120, 36)) as pilot:
        await sign_in(pilot, "alice")
        trapped: list[str] = []
        for title in SECTION_NAMES:
            section = await shown(pilot, title)
            for box in section.query(Input):
                if not box.focusable:
                    continue
                box.focus()
                await pilot.pause()
                before = box.value
                await pilot.press("escape")
                await pilot.pause()
                focused = pilot.app.focused
                if isinstance(focused, Input) or box.value != before:
                    trapped.append(f"{title}: #{box.id}")
        assert trapped == []


@pytest.mark.parametrize(
    ("title", "expected"),
    [("Overview", {"w"}), ("Logs", {"n", "f", "F", "y", "s"}), ("Users", {"n", "F", "y", "s"})],
)
async def test_help_lists_the_keys_of_the_section_shown(
    app_factory: Callable[..., FirewallConsole], engine: AsyncEngine, title: str, expected: set[str]
) -> None:
    await add_console_user(engine, "alice", is_admin=True)
    async with running(app_factory(), size=(120, 36)) as pilot:
        await sign_in(pilot, "alice")
        await shown(pilot, title)
        await press_and_settle(pilot, "question_mark")
        help_screen = pilot.app.screen
        assert isinstance(help_screen, HelpScreen)
        assert help_screen.help_title == title
        assert expected <= set(help_screen.key_names)
        await press_and_settle(pilot, "escape")
        assert isinstance(pilot.app.screen, ShellScreen)
