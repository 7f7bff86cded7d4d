"""Roles, the command palette, quitting, and themes."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncEngine

from console.dialogs.confirm import ConfirmScreen
from console.screens.shell import SECTIONS, ShellScreen
from tests.support.console import add_console_user, open_logs, press_and_settle, running, sign_in


def palette_titles(app) -> set[str]:
    return {command.title for command in app.get_system_commands(app.screen)}


def notifications(app) -> list[str]:
    return [notification.message for notification in app._notifications]


ADMIN_COMMANDS = {command.title for section in SECTIONS for command in section.COMMANDS if command.admin_only}


async def test_a_viewer_sees_no_admin_commands_and_is_refused_changes(
    engine: AsyncEngine, app_factory
) -> None:
    await add_console_user(engine, "victor")
    async with running(app_factory()) as pilot:
        await sign_in(pilot, "victor")
        assert pilot.app.screen.sub_title.startswith("victor (viewer)")
        titles = palette_titles(pilot.app)
        assert "Go to Cleanup" in titles
        assert "Logs: export" in titles
        assert ADMIN_COMMANDS
        assert not (ADMIN_COMMANDS & titles)
        assert pilot.app.context.require_admin("run a cleanup") is False
        await pilot.pause()
        assert any("Only administrators can run a cleanup" in message for message in notifications(pilot.app))


async def test_an_admin_gets_every_section_and_admin_command_in_the_palette(
    engine: AsyncEngine, app_factory
) -> None:
    await add_console_user(engine, "alice", is_admin=True)
    async with running(app_factory()) as pilot:
        await sign_in(pilot, "alice")
        titles = palette_titles(pilot.app)
        for section in SECTIONS:
            assert f"Go to {section.TITLE}" in titles
        assert ADMIN_COMMANDS <= titles
        assert pilot.app.context.require_admin("run a cleanup") is True


async def test_number_keys_switch_sections(engine: AsyncEngine, app_factory) -> None:
    await add_console_user(engine, "alice")
    async with running(app_factory()) as pilot:
        await sign_in(pilot, "alice")
        shell = pilot.app.screen
        assert isinstance(shell, ShellScreen)
        for key, title in (("2", "Logs"), ("5", "Config"), ("1", "Overview")):
            await press_and_settle(pilot, key)
            assert shell.current.TITLE == title


async def test_quit_asks_first_while_an_export_runs(engine: AsyncEngine, app_factory) -> None:
    await add_console_user(engine, "alice")
    async with running(app_factory()) as pilot:
        await sign_in(pilot, "alice")
        section = await open_logs(pilot)
        never = asyncio.Event()
        section.run_worker(never.wait(), group="logs-export")  # stands in for a long export
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(pilot.app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause()
        assert pilot.app.is_running
        assert isinstance(pilot.app.screen, ShellScreen)
        await pilot.press("q")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert not pilot.app.is_running


async def test_quit_without_running_work_exits_at_once(engine: AsyncEngine, app_factory) -> None:
    await add_console_user(engine, "alice")
    async with running(app_factory()) as pilot:
        await sign_in(pilot, "alice")
        await pilot.press("q")
        await pilot.pause()
        assert not pilot.app.is_running


async def test_ctrl_t_switches_between_light_and_dark(engine: AsyncEngine, app_factory) -> None:
    await add_console_user(engine, "alice")
    async with running(app_factory()) as pilot:
        await sign_in(pilot, "alice")
        before = pilot.app.theme
        await pilot.press("ctrl+t")
        assert pilot.app.theme != before
        assert (
            pilot.app.current_theme.dark != (before == "textual-dark") or pilot.app.theme == "textual-light"
        )


async def test_palette_commands_open_sections_never_shown_and_run_their_action(
    engine: AsyncEngine, app_factory
) -> None:
    await add_console_user(engine, "alice")
    async with running(app_factory()) as pilot:
        await sign_in(pilot, "alice")
        for query, expected_screen in (("Logs: filter", "LogFilterScreen"), ("Go to Audit", "ShellScreen")):
            await press_and_settle(pilot, "ctrl+p")
            await press_and_settle(pilot, *query, "enter")
            assert type(pilot.app.screen).__name__ == expected_screen
            if expected_screen != "ShellScreen":
                await press_and_settle(pilot, "escape")
        assert pilot.app.screen.current.TITLE == "Audit"


async def test_a_labelled_console_says_so_in_the_title_of_every_screen(engine: AsyncEngine, settings) -> None:
    from console.app import FirewallConsole

    await add_console_user(engine, "ada", is_admin=True)
    async with running(FirewallConsole(settings, label="DEMO")) as pilot:
        assert "DEMO" in str(pilot.app.screen.query_one("HeaderTitle").render())
        await sign_in(pilot, "ada")
        assert isinstance(pilot.app.screen, ShellScreen)
        assert "DEMO" in str(pilot.app.screen.query_one("HeaderTitle").render())
