"""Helpers of the admin-section tests: sign in as an administrator, open a section, read the audit
trail, and say hello to a real ingest server started in-process on an ephemeral port."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from textual.pilot import Pilot

from console.app import FirewallConsole
from console.screens.section import Section
from console.screens.shell import ShellScreen
from db.engine import new_sessionmaker
from db.models import AuditEvent
from db.settings import Settings
from tests.console_tests.conftest import SETUP, add_user, running, settle, sign_in
from tests.ingest_tests.conftest import RawClient, start_server


@contextlib.asynccontextmanager
async def signed_in(
    app: FirewallConsole, engine: AsyncEngine, username: str = "alice", *, is_admin: bool = True
) -> AsyncIterator[Pilot[Any]]:
    """The app under Pilot with ``username`` created and signed in (an administrator by default)."""
    await add_user(engine, username, is_admin=is_admin)
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


async def confirm(pilot: Pilot[Any], yes: bool = True) -> None:
    """Answer the confirmation dialog on top."""
    await settle(pilot)
    await pilot.press("y" if yes else "n")
    await settle(pilot)


async def submit(pilot: Pilot[Any]) -> None:
    """Save the form on top (ctrl+s) and wait for its worker."""
    await pilot.press("ctrl+s")
    await settle(pilot)


def fill(pilot: Pilot[Any], **values: Any) -> None:
    """Set fields of the screen on top by id (Inputs get text, Checkboxes and Selects their value)."""
    for field, value in values.items():
        pilot.app.screen.query_one(f"#{field}").value = value


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


@contextlib.asynccontextmanager
async def ingest_server(settings: Settings) -> AsyncIterator[int]:
    """A real ingest server on the test database, in this event loop; yields its port."""
    handle = await start_server(settings)
    try:
        yield handle.port
    finally:
        await handle.stop()


async def hello(
    port: int, *, organization_id: str, token: str, device_id: str = "dev-admin"
) -> dict[str, Any]:
    """Say hello as an agent would and return the server's answer (``welcome`` or ``error``)."""
    client = await RawClient.open(port)
    try:
        await client.send(
            {
                "type": "hello",
                "organization_id": organization_id,
                "token": token,
                "device_id": device_id,
                "user_id": "agent@example.com",
                "device_type": "cli",
                "agent_version": "1.0.0",
            }
        )
        return await client.receive()
    finally:
        await client.close()
