"""Sign-in: success, wrong password, inactive account, growing delay, and the first administrator."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from console.screens.login import LoginScreen
from console.screens.shell import ShellScreen
from db.base import utcnow
from db.engine import new_sessionmaker
from db.models import AuditEvent, SignInAttempt, User
from db.sign_in import FREE_ATTEMPTS
from tests.support.console import add_console_user, running, settle, sign_in
from tests.support.database import PASSWORD


def login_message(app) -> str:
    return str(app.screen.query_one("#login-message").render())


async def let_the_wait_pass(engine: AsyncEngine, username: str) -> None:
    """Move the last failure an hour back, as if the user had waited."""
    async with new_sessionmaker(engine)() as session:
        await session.execute(
            update(SignInAttempt)
            .where(SignInAttempt.username == username)
            .values(last_failure_at=utcnow() - timedelta(hours=1))
        )
        await session.commit()


async def test_right_password_opens_the_shell_and_shows_who_is_signed_in(
    engine: AsyncEngine, app_factory
) -> None:
    await add_console_user(engine, "alice", is_admin=True)
    async with running(app_factory()) as pilot:
        await sign_in(pilot, "alice")
        assert isinstance(pilot.app.screen, ShellScreen)
        assert pilot.app.screen.sub_title.startswith("alice (admin)")
        assert pilot.app.user.is_admin
    async with new_sessionmaker(engine)() as session:
        user = await session.scalar(select(User).where(User.username == "alice"))
        assert user is not None
        assert user.last_login is not None


async def test_wrong_password_is_refused_and_stays_on_sign_in(engine: AsyncEngine, app_factory) -> None:
    await add_console_user(engine, "alice")
    async with running(app_factory()) as pilot:
        await sign_in(pilot, "alice", "not-the-password")
        assert isinstance(pilot.app.screen, LoginScreen)
        assert "Wrong username or password" in login_message(pilot.app)


async def test_inactive_user_is_refused_with_its_own_message(engine: AsyncEngine, app_factory) -> None:
    await add_console_user(engine, "bob", active=False)
    async with running(app_factory()) as pilot:
        await sign_in(pilot, "bob")
        assert isinstance(pilot.app.screen, LoginScreen)
        assert "disabled" in login_message(pilot.app)


async def test_repeated_failures_impose_a_growing_delay(engine: AsyncEngine, app_factory) -> None:
    await add_console_user(engine, "alice")
    async with running(app_factory()) as pilot:
        for _ in range(FREE_ATTEMPTS):
            await sign_in(pilot, "alice", "wrong-password")
        assert "Wrong username or password. Too many failures: wait 2 s" in login_message(pilot.app)
        await sign_in(pilot, "alice")  # right password, but still locked
        assert isinstance(pilot.app.screen, LoginScreen)
        assert "Too many failures: wait" in login_message(pilot.app)
        await let_the_wait_pass(engine, "alice")
        await sign_in(pilot, "alice", "wrong-again")
        assert "wait 4 s" in login_message(pilot.app)


async def test_the_delay_outlives_the_console_and_a_success_ends_it(engine: AsyncEngine, app_factory) -> None:
    await add_console_user(engine, "alice")
    async with running(app_factory()) as pilot:
        for _ in range(FREE_ATTEMPTS):
            await sign_in(pilot, "alice", "wrong-password")
    async with running(app_factory()) as pilot:  # a new console on the same database
        await sign_in(pilot, "ALICE")
        assert isinstance(pilot.app.screen, LoginScreen)
        assert "Too many failures: wait" in login_message(pilot.app)
        await let_the_wait_pass(engine, "alice")
        await sign_in(pilot, "alice")
        assert isinstance(pilot.app.screen, ShellScreen)
    async with new_sessionmaker(engine)() as session:
        assert await session.scalar(select(SignInAttempt.failures)) == 0
        failed = select(AuditEvent.entity_id).where(AuditEvent.action == "user.sign_in_failed")
        assert (await session.scalars(failed)).all() == ["alice"]


async def test_with_no_users_the_first_administrator_is_created_and_signed_in(
    engine: AsyncEngine, app_factory
) -> None:
    async with running(app_factory()) as pilot:
        screen = pilot.app.screen
        assert screen.first_admin
        for field, value in {
            "#username": "root-admin",
            "#email": "root@example.com",
            "#password": PASSWORD,
            "#password-again": PASSWORD,
        }.items():
            screen.query_one(field).value = value
        await pilot.click("#sign-in")
        await settle(pilot)
        assert isinstance(pilot.app.screen, ShellScreen)
        assert pilot.app.user.username == "root-admin"
        assert pilot.app.user.is_admin
    async with new_sessionmaker(engine)() as session:
        user = await session.scalar(select(User).where(User.username == "root-admin"))
        assert user is not None
        assert user.is_admin
        assert await session.scalar(select(AuditEvent.action)) == "user.create"
