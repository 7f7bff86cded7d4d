"""Users section: form validation next to fields, the self and last-administrator guards,
password reset, deactivation and deletion — each change audited, never with a password."""

from __future__ import annotations

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from console.dialogs.confirm import ConfirmScreen
from console.dialogs.user_forms import PasswordFormScreen, UserFormScreen
from console.sections.users import UsersSection
from db.engine import new_sessionmaker
from db.models import User
from db.rights import Actor
from db.sign_in import SignInOutcome, sign_in
from db.users import UserError, delete_user, get_by_username, update_user
from tests.support.console import (
    add_console_user,
    audit_rows,
    confirm,
    fill,
    open_section,
    press_and_settle,
    settle,
    signed_in,
    submit,
)
from tests.support.database import PASSWORD


async def select_user(pilot, section: UsersSection, username: str) -> None:
    table = section.query_one("#users-table")
    table.move_cursor(row=table.get_row_index(username))
    await settle(pilot)


async def test_user_form_shows_each_validation_message_next_to_its_field(
    engine: AsyncEngine, app_factory
) -> None:
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, UsersSection)
        section.action_create_user()
        await settle(pilot)
        form = pilot.app.screen
        assert isinstance(form, UserFormScreen)
        fill(pilot, username="-bad", email="not-an-email", password="short", password_again="short")
        await submit(pilot)
        assert "username must be" in form.error_of("username")
        assert "is not an email address" in form.error_of("email")
        assert "at least 12 characters" in form.error_of("password")
        fill(
            pilot, username="carol", email="carol@example.com", password=PASSWORD, password_again="different1"
        )
        await submit(pilot)
        assert form.error_of("username") == ""
        assert form.error_of("email") == ""
        assert "differ" in form.error_of("password_again")
        assert pilot.app.screen is form
    assert await audit_rows(engine, "user.create") == []


async def test_taken_username_and_email_are_refused_next_to_the_field(
    engine: AsyncEngine, app_factory
) -> None:
    await add_console_user(engine, "bob")
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, UsersSection)
        section.action_create_user()
        await settle(pilot)
        form = pilot.app.screen
        fill(pilot, username="bob", email="new@example.com", password=PASSWORD, password_again=PASSWORD)
        await submit(pilot)
        assert "username 'bob' is taken" in form.error_of("username")
        fill(pilot, username="carol", email="BOB@example.com")
        await submit(pilot)
        assert "already used" in form.error_of("email")
        assert pilot.app.screen is form


async def test_created_user_is_listed_and_audited_without_the_password(
    engine: AsyncEngine, app_factory
) -> None:
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, UsersSection)
        section.action_create_user()
        await settle(pilot)
        fill(
            pilot,
            username="carol",
            email="carol@example.com",
            full_name="Carol C",
            password=PASSWORD,
            password_again=PASSWORD,
            is_admin=True,
        )
        await submit(pilot)
        assert not isinstance(pilot.app.screen, UserFormScreen)
        assert "carol" in section.users
        assert section.users["carol"].is_admin
    [row] = await audit_rows(engine, "user.create")
    assert (row.actor, row.source, row.entity_id) == ("alice", "console", "carol")
    assert row.changes["is_admin"] == {"after": True}
    assert PASSWORD not in str(row.changes)
    assert "password" not in row.changes


async def test_an_administrator_cannot_demote_or_deactivate_themselves(
    engine: AsyncEngine, app_factory
) -> None:
    await add_console_user(engine, "bob", is_admin=True)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, UsersSection)
        await select_user(pilot, section, "alice")
        section.action_edit_user()
        await settle(pilot)
        form = pilot.app.screen
        fill(pilot, is_admin=False)
        await submit(pilot)
        assert "cannot demote yourself" in form.error_of("is_admin")
        fill(pilot, is_admin=True, is_active=False)
        await submit(pilot)
        # Refused at once, with the reason: no "are you sure?" first.
        assert pilot.app.screen is form
        assert "cannot deactivate yourself" in form.error_of("is_active")
        form.dismiss(None)
        await settle(pilot)
        section.action_delete_user()
        await settle(pilot)
        assert not isinstance(pilot.app.screen, ConfirmScreen)
        assert any("cannot delete yourself" in n.message for n in pilot.app._notifications)
    async with new_sessionmaker(engine)() as session:
        alice = await get_by_username(session=session, username="alice")
        assert alice is not None
        assert alice.is_admin
        assert alice.is_active
    assert await audit_rows(engine) == []


async def test_an_administrator_demoted_elsewhere_cannot_deactivate_anyone_and_gets_a_viewers_keys(
    engine: AsyncEngine, app_factory
) -> None:
    await add_console_user(engine, "bob", is_admin=True)
    async with signed_in(app_factory(), engine) as pilot:
        # Meanwhile someone removed alice's role elsewhere: the console still shows her an administrator's
        # keys.
        async with new_sessionmaker(engine)() as session:
            await session.execute(update(User).where(User.username == "alice").values(is_admin=False))
            await session.commit()
        section = await open_section(pilot, UsersSection)
        await select_user(pilot, section, "bob")
        section.action_toggle_active()
        await settle(pilot)
        # No question for a change db/ refuses: she is told at once and gets a viewer's keys.
        assert not isinstance(pilot.app.screen, ConfirmScreen)
        assert pilot.app.user is not None
        assert not pilot.app.user.is_admin
        assert any("only administrators can" in n.message for n in pilot.app._notifications)
    async with new_sessionmaker(engine)() as session:
        bob = await get_by_username(session=session, username="bob")
        assert bob is not None
        assert bob.is_active
    assert await audit_rows(engine) == []


async def test_unticking_active_in_the_edit_form_asks_first(engine: AsyncEngine, app_factory) -> None:
    await add_console_user(engine, "bob")
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, UsersSection)
        await select_user(pilot, section, "bob")
        section.action_edit_user()
        await settle(pilot)
        form = pilot.app.screen
        fill(pilot, is_active=False)
        await submit(pilot)
        assert isinstance(pilot.app.screen, ConfirmScreen)
        await confirm(pilot, yes=False)
        assert pilot.app.screen is form
        assert await audit_rows(engine) == []
        await submit(pilot)
        await confirm(pilot)
        assert not isinstance(pilot.app.screen, UserFormScreen)
        assert not section.users["bob"].is_active
    [row] = await audit_rows(engine, "user.deactivate")
    assert (row.actor, row.entity_id) == ("alice", "bob")


async def test_the_last_active_administrator_cannot_be_demoted_or_deleted_by_anyone(session) -> None:
    from db.users import create_user

    await create_user(
        session=session,
        username="root",
        email="root@example.com",
        password=PASSWORD,
        is_admin=True,
        bcrypt_rounds=4,
        actor=Actor.cli(),
    )
    for change in ({"is_admin": False}, {"is_active": False}):
        with pytest.raises(UserError, match="last active administrator") as refused:
            await update_user(session=session, username="root", actor=Actor.cli(), **change)
        assert refused.value.field == next(iter(change))
    with pytest.raises(UserError, match="last active administrator"):
        await delete_user(session=session, username="root", actor=Actor.cli())


async def test_password_reset_lets_the_user_sign_in_with_the_new_password_only(
    engine: AsyncEngine, app_factory
) -> None:
    await add_console_user(engine, "bob")
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, UsersSection)
        await select_user(pilot, section, "bob")
        section.action_reset_password()
        await settle(pilot)
        form = pilot.app.screen
        assert isinstance(form, PasswordFormScreen)
        fill(pilot, password="short", password_again="short")
        await submit(pilot)
        assert "at least 12 characters" in form.error_of("password")
        fill(pilot, password="brand-new-secret", password_again="brand-new-secret")
        await submit(pilot)
        assert not isinstance(pilot.app.screen, PasswordFormScreen)
    async with new_sessionmaker(engine)() as session:
        old = await sign_in(session=session, username="bob", password=PASSWORD, bcrypt_rounds=4)
        assert old.outcome is SignInOutcome.WRONG
        new = await sign_in(session=session, username="bob", password="brand-new-secret", bcrypt_rounds=4)
        assert new.outcome is SignInOutcome.OK
    [row] = await audit_rows(engine, "user.reset_password")
    assert row.changes == {"password": {"changed": True}}
    assert "brand-new-secret" not in str(row.changes)


async def test_deactivation_and_deletion_are_confirmed_and_audited(engine: AsyncEngine, app_factory) -> None:
    await add_console_user(engine, "bob")
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, UsersSection)
        await select_user(pilot, section, "bob")
        section.action_toggle_active()
        await settle(pilot)
        assert isinstance(pilot.app.screen, ConfirmScreen)
        await confirm(pilot, yes=False)
        assert section.users["bob"].is_active
        section.action_toggle_active()
        await confirm(pilot)
        assert not section.users["bob"].is_active
        section.action_delete_user()
        await confirm(pilot)
        assert "bob" not in section.users
    [deactivated] = await audit_rows(engine, "user.deactivate")
    assert deactivated.changes == {"is_active": {"before": True, "after": False}}
    [deleted] = await audit_rows(engine, "user.delete")
    assert deleted.entity_id == "bob"
    assert deleted.changes["email"] == {"before": "bob@example.com"}


async def test_a_viewer_cannot_open_the_user_forms(engine: AsyncEngine, app_factory) -> None:
    await add_console_user(engine, "bob")
    async with signed_in(app_factory(), engine, "victor", is_admin=False) as pilot:
        section = await open_section(pilot, UsersSection)
        section.action_create_user()
        await settle(pilot)
        assert not isinstance(pilot.app.screen, UserFormScreen)
        await press_and_settle(pilot, "n")
        assert not isinstance(pilot.app.screen, UserFormScreen)


async def test_form_buttons_save_and_cancel_with_the_mouse(engine: AsyncEngine, app_factory) -> None:
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, UsersSection)
        section.action_create_user()
        await settle(pilot)
        assert isinstance(pilot.app.screen, UserFormScreen)
        await pilot.click("#form-cancel")
        await settle(pilot)
        assert not isinstance(pilot.app.screen, UserFormScreen)
        section.action_create_user()
        await settle(pilot)
        fill(pilot, username="carol", email="carol@example.com", password=PASSWORD, password_again=PASSWORD)
        await pilot.click("#form-save")
        await settle(pilot)
        assert not isinstance(pilot.app.screen, UserFormScreen)
    assert [row.entity_id for row in await audit_rows(engine, "user.create")] == ["carol"]
