"""Passwords: at least 12 characters, not common, not built from the username; bcrypt off the event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

import bcrypt
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from db.rights import Actor
from db.security import PasswordError, hash_password, validate_password, verify_password
from db.users import UserError, create_user, reset_password


def test_a_password_shorter_than_12_characters_is_refused_saying_how_long_it_is() -> None:
    with pytest.raises(PasswordError, match=r"^password must be at least 12 characters; got 11$"):
        validate_password("Xq7-vbn-Lp2")


@pytest.mark.parametrize("password", ["qwerty123456", "leavemealone", "1qaz2wsx3edc"])
def test_a_password_from_the_most_used_list_is_refused_as_too_common(password: str) -> None:
    with pytest.raises(PasswordError) as error:
        validate_password(password)
    assert str(error.value) == "password is too common: it is in the list of the 10,000 most used passwords"


def test_a_guessable_password_is_refused_with_the_reason() -> None:
    with pytest.raises(PasswordError, match="too easy to guess") as error:
        validate_password("password1234")
    assert "This is a very common password." in str(error.value)


def test_a_password_built_from_the_username_is_refused() -> None:
    assert validate_password("zorblattquux2024") == "zorblattquux2024"
    with pytest.raises(PasswordError, match="too easy to guess"):
        validate_password("zorblattquux2024", user_inputs=["zorblattquux"])


async def test_creating_a_user_refuses_a_common_password_in_the_password_field(session: AsyncSession) -> None:
    with pytest.raises(UserError, match="too common") as error:
        await create_user(
            session=session,
            username="alice",
            email="alice@acme.com",
            password="sonyericsson",
            bcrypt_rounds=4,
            actor=Actor.cli(),
        )
    assert error.value.field == "password"


async def test_a_password_reset_applies_the_same_rules(session: AsyncSession) -> None:
    await create_user(
        session=session,
        username="alice",
        email="alice@acme.com",
        password="correct horse",
        bcrypt_rounds=4,
        actor=Actor.cli(),
    )
    with pytest.raises(UserError, match="at least 12 characters; got 5") as error:
        await reset_password(
            session=session, actor=Actor.cli(), username="alice", password="short", bcrypt_rounds=4
        )
    assert error.value.field == "password"
    with pytest.raises(UserError, match="too easy to guess"):
        await reset_password(
            session=session, actor=Actor.cli(), username="alice", password="alice@acme.com1", bcrypt_rounds=4
        )


async def _longest_pause_while(awaitable: Awaitable[object]) -> float:
    """Run ``awaitable`` while a task ticks every 5 ms; return the longest gap between ticks (seconds)."""
    ticks: list[float] = []
    ticking = asyncio.Event()

    async def tick() -> None:
        while True:
            ticks.append(time.monotonic())
            ticking.set()
            await asyncio.sleep(0.005)  # the tick being measured, not a wait

    ticker = asyncio.create_task(tick())
    await ticking.wait()
    await awaitable
    # The end counts as a tick: a loop blocked until the very end shows as one long pause.
    ticks.append(time.monotonic())
    ticker.cancel()
    return max(later - earlier for earlier, later in zip(ticks, ticks[1:], strict=False))


async def test_hashing_and_verifying_leave_the_event_loop_running() -> None:
    rounds = 13
    started = time.monotonic()
    hashed = bcrypt.hashpw(b"correct horse", bcrypt.gensalt(rounds=rounds)).decode()
    one_hash = time.monotonic() - started
    # Run in the loop, bcrypt would stop every tick for a whole hash; in a thread, ticks go on.
    assert await _longest_pause_while(hash_password("correct horse", rounds=rounds)) < one_hash / 2
    assert await _longest_pause_while(verify_password("correct horse", hashed)) < one_hash / 2
