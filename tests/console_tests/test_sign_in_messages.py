"""The sign-in screen at 80×24: its messages are read whole, its keys fit the footer, ``?`` and F1 explain
it, ``?`` is still typed where a password may hold one, and Esc leaves a field.

Layout and keys do not depend on the engine: these run on SQLite only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from textual.widgets import Button, Input

from console.app import FirewallConsole
from console.dialogs.help import HelpScreen
from console.screens.login import LoginScreen
from db.sign_in import FREE_ATTEMPTS
from tests.console_tests.test_sign_in import let_the_wait_pass
from tests.support.console import (
    add_console_user,
    footer_keys_cut_off,
    press_and_settle,
    running,
    settle,
    sign_in,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

SMALLEST = (80, 24)


def box_text(pilot: Any) -> str:
    """What the sign-in box shows on the terminal, its lines joined and spaces collapsed."""
    strips = pilot.app.screen._compositor.render_strips()
    rows = ["".join(segment.text for segment in strip) for strip in strips]
    inside = [row.split("│")[1] for row in rows if row.count("│") >= 2]
    return " ".join(" ".join(inside).split())


def message(pilot: Any) -> str:
    return str(pilot.app.screen.query_one("#login-message").render())


def footer_keys(pilot: Any) -> list[str]:
    from textual.widgets._footer import FooterKey

    return [f"{key.key_display} {key.description}" for key in pilot.app.screen.query(FooterKey)]


async def test_the_growing_wait_is_read_whole_at_80x24(
    engine: AsyncEngine, app_factory: Callable[..., FirewallConsole]
) -> None:
    await add_console_user(engine, "alice")
    async with running(app_factory(), size=SMALLEST) as pilot:
        for _ in range(FREE_ATTEMPTS):
            await sign_in(pilot, "alice", "wrong-password")
        await let_the_wait_pass(engine, "alice")
        await sign_in(pilot, "alice", "wrong-again")

        assert message(pilot) == (
            "Wrong username or password. Too many failures: wait 4 s before trying again."
        )
        assert message(pilot) in box_text(pilot)


async def test_a_refused_first_administrator_is_told_why_at_80x24(
    engine: AsyncEngine, app_factory: Callable[..., FirewallConsole]
) -> None:
    async with running(app_factory(), size=SMALLEST) as pilot:
        screen = pilot.app.screen
        assert isinstance(screen, LoginScreen)
        assert screen.first_admin
        for field, value in {
            "#username": "root-admin",
            "#email": "root@example.com",
            "#password": "short",
            "#password-again": "short",
        }.items():
            screen.query_one(field, Input).value = value
        screen.submit()
        await settle(pilot)

        assert "12 characters" in message(pilot)
        assert message(pilot) in box_text(pilot)
        assert "Create administrator" in box_text(pilot)


async def test_the_sign_in_keys_fit_80_columns_and_question_mark_explains_the_screen(
    engine: AsyncEngine, app_factory: Callable[..., FirewallConsole]
) -> None:
    await add_console_user(engine, "alice")
    async with running(app_factory(), size=SMALLEST) as pilot:
        username = pilot.app.screen.query_one("#username", Input)
        assert pilot.app.screen.focused is username
        assert footer_keys_cut_off(pilot) == []
        assert {"^q Quit", "? Help"} <= set(footer_keys(pilot))

        await press_and_settle(pilot, "?")

        help_screen = pilot.app.screen
        assert isinstance(help_screen, HelpScreen)
        assert help_screen.help_title == "Sign in"
        assert "create-admin" in help_screen.about
        assert {"^q", "?", "f1", "esc"} <= {key.lower() for key in help_screen.key_names}
        await press_and_settle(pilot, "escape")
        assert isinstance(pilot.app.screen, LoginScreen)
        assert username.value == ""


async def test_question_mark_is_typed_in_the_password_and_f1_still_opens_the_help(
    engine: AsyncEngine, app_factory: Callable[..., FirewallConsole]
) -> None:
    await add_console_user(engine, "alice")
    async with running(app_factory(), size=SMALLEST) as pilot:
        password = pilot.app.screen.query_one("#password", Input)
        password.focus()
        await press_and_settle(pilot, "a", "?", "b")
        assert password.value == "a?b"
        assert isinstance(pilot.app.screen, LoginScreen)
        assert "? Help" not in footer_keys(pilot)

        await press_and_settle(pilot, "f1")

        assert isinstance(pilot.app.screen, HelpScreen)
        await press_and_settle(pilot, "escape")
        assert password.value == "a?b"


async def test_escape_leaves_a_field_for_the_button_keeping_what_was_typed(
    engine: AsyncEngine, app_factory: Callable[..., FirewallConsole]
) -> None:
    await add_console_user(engine, "alice")
    async with running(app_factory(), size=SMALLEST) as pilot:
        password = pilot.app.screen.query_one("#password", Input)
        password.focus()
        await press_and_settle(pilot, "x", "y", "escape")

        assert pilot.app.screen.focused is pilot.app.screen.query_one("#sign-in", Button)
        assert password.value == "xy"
        await press_and_settle(pilot, "?")
        assert isinstance(pilot.app.screen, HelpScreen)
