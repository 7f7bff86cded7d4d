"""Signing in never freezes the console: bcrypt runs in a thread while the screen keeps updating."""

from __future__ import annotations

import asyncio
import time

import bcrypt
from sqlalchemy.ext.asyncio import AsyncEngine

from console.screens.login import LoginScreen
from console.screens.shell import ShellScreen
from db.engine import new_sessionmaker
from db.users import get_by_username
from tests.support.console import add_console_user, running, sign_in
from tests.support.database import PASSWORD


async def test_timers_keep_ticking_while_a_costly_password_is_checked(
    engine: AsyncEngine, app_factory
) -> None:
    await add_console_user(engine, "alice")
    # A costly hash (cost 14, about a second) makes a blocked event loop impossible to miss.
    started = time.monotonic()
    costly = await asyncio.to_thread(
        lambda: bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=14)).decode()
    )
    one_check = time.monotonic() - started
    async with new_sessionmaker(engine)() as session:
        user = await get_by_username(session=session, username="alice")
        assert user is not None
        user.hashed_password = costly
        await session.commit()
    async with running(app_factory()) as pilot:
        ticks: list[float] = []

        def tick() -> None:
            # The stack is empty for a moment while the app shuts down; app.screen raises then.
            stack = pilot.app.screen_stack
            if stack and isinstance(stack[-1], LoginScreen):
                ticks.append(time.monotonic())

        timer = pilot.app.set_interval(0.02, tick)
        await sign_in(pilot, "alice")
        timer.stop()
        assert isinstance(pilot.app.screen, ShellScreen)
    gaps = [later - earlier for earlier, later in zip(ticks, ticks[1:], strict=False)]
    assert len(ticks) > 5
    assert max(gaps) < one_check / 2, (max(gaps), one_check)
