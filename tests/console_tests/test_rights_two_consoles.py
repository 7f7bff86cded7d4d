"""Two consoles on one database: an administrator demoted and deactivated in one console can no longer
change anything from the console they still have open; they are signed out with the reason."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from textual.pilot import Pilot

from console.dialogs.user_forms import UserFormScreen
from console.screens.login import LoginScreen
from console.screens.shell import ShellScreen
from console.sections.users import UsersSection
from db.engine import new_sessionmaker
from db.users import get_by_username
from tests.support.console import (
    add_console_user,
    audit_rows,
    confirm,
    fill,
    open_section,
    running,
    settle,
    sign_in,
    submit,
)
from tests.support.database import PASSWORD


async def select_user(pilot: Pilot[Any], section: UsersSection, username: str) -> None:
    table = section.query_one("#users-table")
    table.move_cursor(row=table.get_row_index(username))
    await settle(pilot)


async def create_an_administrator(pilot: Pilot[Any], section: UsersSection) -> None:
    section.action_create_user()
    await settle(pilot)
    fill(pilot, username="carol", email="carol@example.com", password=PASSWORD, password_again=PASSWORD)
    fill(pilot, is_admin=True)
    await submit(pilot)


async def demote_admin1(pilot: Pilot[Any], section: UsersSection) -> None:
    await select_user(pilot, section, "admin1")
    section.action_edit_user()
    await settle(pilot)
    fill(pilot, is_admin=False)
    await submit(pilot)


async def restore_themselves(pilot: Pilot[Any], section: UsersSection) -> None:
    # The open console still shows admin2 as an active administrator: saving that form as it is
    # would write both back.
    await select_user(pilot, section, "admin2")
    section.action_edit_user()
    await settle(pilot)
    fill(pilot, is_admin=True, is_active=True, full_name="back again")
    await submit(pilot)


ATTEMPTS = {
    "create an administrator": create_an_administrator,
    "demote admin1": demote_admin1,
    "restore themselves": restore_themselves,
}


@pytest.mark.parametrize("attempt", ATTEMPTS)
async def test_an_administrator_removed_in_another_console_is_refused_and_signed_out(
    engine: AsyncEngine, app_factory, attempt: str
) -> None:
    await add_console_user(engine, "admin1", is_admin=True)
    await add_console_user(engine, "admin2", is_admin=True)
    async with running(app_factory()) as pilot_a:
        await sign_in(pilot_a, "admin2")
        assert isinstance(pilot_a.app.screen, ShellScreen)
        section_a = await open_section(pilot_a, UsersSection)

        async with running(app_factory()) as pilot_b:
            await sign_in(pilot_b, "admin1")
            section_b = await open_section(pilot_b, UsersSection)
            await select_user(pilot_b, section_b, "admin2")
            section_b.action_edit_user()
            await settle(pilot_b)
            fill(pilot_b, is_admin=False, is_active=False)
            await submit(pilot_b)
            await confirm(pilot_b)
            assert not isinstance(pilot_b.app.screen, UserFormScreen)
        removed = [row.id for row in await audit_rows(engine)]
        [demotion] = await audit_rows(engine, "user.update")
        assert (demotion.actor, demotion.entity_id) == ("admin1", "admin2")

        await ATTEMPTS[attempt](pilot_a, section_a)
        await settle(pilot_a)
        assert isinstance(pilot_a.app.screen, LoginScreen)
        assert pilot_a.app.user is None
        messages = [notification.message for notification in pilot_a.app._notifications]
        assert any(
            "'admin2' has been deactivated" in message and "signed out" in message for message in messages
        )

    async with new_sessionmaker(engine)() as session:
        admin1 = await get_by_username(session=session, username="admin1")
        admin2 = await get_by_username(session=session, username="admin2")
        assert admin1 is not None
        assert admin2 is not None
        assert (admin1.is_admin, admin1.is_active) == (True, True)
        assert (admin2.is_admin, admin2.is_active, admin2.full_name) == (False, False, None)
        assert await get_by_username(session=session, username="carol") is None
    assert [row.id for row in await audit_rows(engine)] == removed
