"""Console test helpers: the app under Pilot, signing in, opening sections, answering dialogs, filling
forms, waiting for the app (never a fixed sleep), and the audit trail the admin tests check.

Rows come from :mod:`tests.support.database` (``make_event``, ``store_logs``); the ``app_factory``
fixture is in ``tests/console_tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from textual.pilot import Pilot

from console.app import FirewallConsole
from console.screens.shell import ShellScreen
from console.sections.logs import LogsSection
from console.sections.section import Section
from db.configs import create_organization
from db.engine import new_sessionmaker
from db.models import AuditEvent, User
from tests.support import database, waiting
from tests.support.database import PASSWORD, SETUP

# -- users and organisations -----------------------------------------------------------------------


async def add_console_user(
    engine: AsyncEngine, username: str, *, is_admin: bool = False, active: bool = True
) -> User:
    """A console user who existed before the test (their creation is no change the test made)."""
    async with new_sessionmaker(engine)() as session:
        return await database.add_user(session, username, is_admin=is_admin, active=active, forget_audit=True)


async def add_org(engine: AsyncEngine, organization_id: str = "acme", patterns: list | None = None) -> None:
    """An organisation (no token) the admin tests start from, with ``patterns`` as its custom patterns."""
    async with new_sessionmaker(engine)() as session:
        row = await create_organization(session=session, organization_id=organization_id, actor=SETUP)
        if patterns:
            row.custom_patterns = patterns
        await session.commit()


# -- the app under Pilot ---------------------------------------------------------------------------


async def settle(pilot: Pilot[Any]) -> None:
    """Let every worker finish and the screen catch up."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def press_and_settle(pilot: Pilot[Any], *keys: str) -> None:
    """Press ``keys``, then :func:`settle`."""
    await pilot.press(*keys)
    await settle(pilot)


async def pump_until(pilot: Pilot[Any], condition: Callable[[], bool], within: float = 5.0) -> None:
    """Pump the app (its screen timers too, as ``pilot.pause`` does) until ``condition`` holds; fail after
    ``within`` s. Without a pilot to pump, use :func:`tests.support.waiting.wait_until`."""

    async def pumped() -> bool:
        if not condition():
            await pilot.pause(0)
        return condition()

    await waiting.wait_until(pumped, timeout=within)


@contextlib.asynccontextmanager
async def running(app: FirewallConsole, size: tuple[int, int] = (120, 36)) -> AsyncIterator[Pilot[Any]]:
    """``app`` under Pilot, settled on its first screen."""
    app.animation_level = "none"  # no tab underline animation to wait for
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        yield pilot


async def sign_in(pilot: Pilot[Any], username: str, password: str = PASSWORD) -> None:
    """Type a username and password into the sign-in screen and submit them."""
    await settle(pilot)
    screen = pilot.app.screen
    screen.query_one("#username").value = username
    screen.query_one("#password").value = password
    screen.query_one("#password").focus()
    await press_and_settle(pilot, "enter")


@contextlib.asynccontextmanager
async def signed_in(
    app: FirewallConsole, engine: AsyncEngine, username: str = "alice", *, is_admin: bool = True
) -> AsyncIterator[Pilot[Any]]:
    """The app under Pilot with ``username`` created and signed in (an administrator by default)."""
    await add_console_user(engine, username, is_admin=is_admin)
    async with running(app) as pilot:
        await sign_in(pilot, username)
        assert isinstance(pilot.app.screen, ShellScreen)
        yield pilot


async def open_section(pilot: Pilot[Any], section_type: type[Section]) -> Any:
    """Show a section as its key (or the palette) would, and wait for its workers."""
    shell = pilot.app.screen
    assert isinstance(shell, ShellScreen)
    shell.action_show_section("section-" + section_type.TITLE.lower())
    await settle(pilot)
    return shell.section(section_type)


async def open_logs(pilot: Pilot[Any]) -> LogsSection:
    """The Logs section, opened with its key."""
    await press_and_settle(pilot, "2")
    assert isinstance(pilot.app.screen, ShellScreen)
    return pilot.app.screen.query_one(LogsSection)


# -- dialogs and forms -----------------------------------------------------------------------------


async def confirm(pilot: Pilot[Any], yes: bool = True) -> None:
    """Answer the confirmation dialog on top."""
    await settle(pilot)
    await press_and_settle(pilot, "y" if yes else "n")


async def submit(pilot: Pilot[Any]) -> None:
    """Save the form on top (ctrl+s) and wait for its worker."""
    await press_and_settle(pilot, "ctrl+s")


def fill(pilot: Pilot[Any], **values: Any) -> None:
    """Set fields of the screen on top by id (Inputs get text, Checkboxes and Selects their value)."""
    for field, value in values.items():
        pilot.app.screen.query_one(f"#{field}").value = value


# -- what the Logs section shows -------------------------------------------------------------------


def shown_ids(section: LogsSection) -> list[uuid.UUID]:
    """The event ids of the page shown, top to bottom."""
    return [entry.id for entry in section.page_state.rows]


def table_keys(section: LogsSection) -> list[str]:
    """The keys of the log table's rows, top to bottom."""
    return list(section.query_one("#log-table").row_keys)


def newest_first(events: Sequence[dict[str, Any]]) -> list[uuid.UUID]:
    """The ids of ``events`` in the order the log browser shows them."""
    return [e["id"] for e in sorted(events, key=lambda e: (e["timestamp"], e["id"]), reverse=True)]


# -- the audit trail -------------------------------------------------------------------------------


async def audit_rows(engine: AsyncEngine, action: str | None = None) -> Sequence[AuditEvent]:
    """The audit trail, oldest first, optionally of one action (without what the test set up)."""
    async with new_sessionmaker(engine)() as session:
        statement = (
            select(AuditEvent)
            .where(AuditEvent.actor != SETUP.name)
            .order_by(AuditEvent.occurred_at, AuditEvent.id)
        )
        if action is not None:
            statement = statement.where(AuditEvent.action == action)
        return (await session.scalars(statement)).all()


# -- the footer ------------------------------------------------------------------------------------


def footer_keys_cut_off(pilot: Pilot[Any]) -> list[str]:
    """The footer's keys that do not fit its width whole (beside the palette key): [] when all fit."""
    from textual.widgets import Footer
    from textual.widgets._footer import FooterKey

    footer = pilot.app.screen.query_one(Footer)
    keys = list(footer.query(FooterKey))
    palette = [key for key in keys if key.has_class("-command-palette")]
    right = palette[0].region.x if palette else footer.region.right
    return [
        f"{key.key_display} {key.description}"
        for key in keys
        if key not in palette and (key.region.right > right or key.region.width == 0)
    ]
