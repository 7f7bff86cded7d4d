"""The command palette never switches sections underneath an open dialog: it says to close it first."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.console import add_console_user, press_and_settle, running, sign_in


def notifications(app) -> list[str]:
    return [notification.message for notification in app._notifications]


async def choose(pilot, query: str) -> None:
    await press_and_settle(pilot, "ctrl+p")
    await press_and_settle(pilot, *query, "enter")


async def test_go_to_and_section_commands_do_nothing_while_a_dialog_is_open(
    engine: AsyncEngine, app_factory
) -> None:
    await add_console_user(engine, "alice")
    async with running(app_factory()) as pilot:
        await sign_in(pilot, "alice")
        shell = pilot.app.screen
        await choose(pilot, "Logs: filter")
        dialog = pilot.app.screen
        shown = shell.current.TITLE
        assert type(dialog).__name__ == "LogFilterScreen"
        for query in ("Go to Audit", "Config: test the patterns"):
            await choose(pilot, query)
            assert pilot.app.screen is dialog
            assert shell.current.TITLE == shown
            assert any("Close the dialog first" in message for message in notifications(pilot.app))
        await press_and_settle(pilot, "escape")
        await choose(pilot, "Go to Audit")  # with the dialog closed, the same command works
        assert pilot.app.screen is shell
        assert shell.current.TITLE == "Audit"
