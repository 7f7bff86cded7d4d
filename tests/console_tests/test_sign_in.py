"""Sign-in: success, wrong password, inactive account, growing delay, and the first administrator."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from console.screens.login import LoginScreen
from console.screens.shell import ShellScreen
from db.engine import new_sessionmaker
from db.models import AuditEvent, User
from tests.console_tests.conftest import PASSWORD, add_user, running, settle, sign_in


def login_message(app) -> str:
    return str(app.screen.query_one("#login-message").render())


async def test_right_password_opens_the_shell_and_shows_who_is_signed_in(
    engine: AsyncEngine, app_factory
) -> None:
    await add_user(engine, "alice", is_admin=True)
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
    await add_user(engine, "alice")
    async with running(app_factory()) as pilot:
        await sign_in(pilot, "alice", "not-the-password")
        assert isinstance(pilot.app.screen, LoginScreen)
        assert "Wrong username or password" in login_message(pilot.app)


async def test_inactive_user_is_refused_with_its_own_message(engine: AsyncEngine, app_factory) -> None:
    await add_user(engine, "bob", active=False)
    async with running(app_factory()) as pilot:
        await sign_in(pilot, "bob")
        assert isinstance(pilot.app.screen, LoginScreen)
        assert "disabled" in login_message(pilot.app)


async def test_repeated_failures_impose_a_growing_delay(engine: AsyncEngine, app_factory) -> None:
    await add_user(engine, "alice")
    async with running(app_factory()) as pilot:
        screen = pilot.app.screen
        for _ in range(LoginScreen.FREE_ATTEMPTS):
            await sign_in(pilot, "alice", "wrong-password")
        first_delay = screen.seconds_locked()
        assert first_delay > 0
        await sign_in(pilot, "alice")  # right password, but still locked
        assert isinstance(pilot.app.screen, LoginScreen)
        assert "wait" in login_message(pilot.app)
        screen.locked_until = 0.0  # as if the delay had passed
        await sign_in(pilot, "alice", "wrong-again")
        assert screen.seconds_locked() > first_delay


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
