"""Sign-in: one bcrypt check per attempt whoever is named, and a delay after failures kept in the database."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import bcrypt
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

import db.sign_in
from db.base import utcnow
from db.engine import new_engine, new_sessionmaker
from db.models import AuditEvent, SignInAttempt, User
from db.security import verify_password
from db.settings import Settings
from db.sign_in import (
    FREE_ATTEMPTS,
    INVALID_USERNAME_KEY,
    MAX_DELAY_SECONDS,
    SignInOutcome,
    SignInResult,
    delay_after,
    dummy_hash,
    sign_in,
)

PASSWORD = "correct horse battery"
ROUNDS = 4
START = utcnow().replace(microsecond=0)


async def add_user(session: AsyncSession, username: str, *, active: bool = True) -> User:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=ROUNDS)).decode()
    user = User(username=username, email=f"{username}@acme.com", hashed_password=hashed, is_active=active)
    session.add(user)
    await session.commit()
    return user


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The hashes sign_in checks a password against, one per bcrypt check (bcrypt itself still runs)."""
    hashes: list[str] = []

    async def counting(password: str, hashed: str) -> bool:
        hashes.append(hashed)
        return await verify_password(password, hashed)

    monkeypatch.setattr(db.sign_in, "verify_password", counting)
    return hashes


async def attempt(
    session: AsyncSession, username: str, password: str = PASSWORD, *, at: datetime = START
) -> SignInResult:
    result = await sign_in(
        session=session, username=username, password=password, bcrypt_rounds=ROUNDS, now=at
    )
    await session.commit()
    return result


async def fail(session: AsyncSession, username: str, times: int, *, at: datetime = START) -> SignInResult:
    """``times`` wrong passwords, each made once the previous one's wait is over; the last result."""
    result = SignInResult(outcome=SignInOutcome.WRONG)
    for _ in range(times):
        at += timedelta(seconds=result.wait_seconds)
        result = await attempt(session, username, "wrong password", at=at)
        assert result.outcome is SignInOutcome.WRONG
    return result


async def attempt_row(session: AsyncSession, key: str) -> SignInAttempt | None:
    return await session.scalar(select(SignInAttempt).where(SignInAttempt.username == key))


async def sign_in_audit_rows(session: AsyncSession) -> list[AuditEvent]:
    statement = select(AuditEvent).where(AuditEvent.action == "user.sign_in_failed")
    return list((await session.scalars(statement.order_by(AuditEvent.occurred_at))).all())


async def test_an_unknown_username_costs_one_bcrypt_check_like_a_wrong_password(
    session: AsyncSession, checked: list[str]
) -> None:
    await add_user(session, "alice")
    assert (await attempt(session, "nobody")).outcome is SignInOutcome.WRONG
    assert checked == [dummy_hash(ROUNDS)]
    assert (await attempt(session, "alice", "wrong password")).outcome is SignInOutcome.WRONG
    assert len(checked) == 2


def test_the_dummy_hash_is_a_well_formed_hash_of_the_configured_cost() -> None:
    # A malformed hash would be refused at once, and unknown names would answer fast again.
    for rounds in (4, 5):
        hashed = dummy_hash(rounds)
        assert hashed.startswith(f"$2b${rounds:02d}$")
        assert bcrypt.hashpw(b"any password", hashed.encode()).decode()[:29] == hashed[:29]
        assert not bcrypt.checkpw(PASSWORD.encode(), hashed.encode())


async def test_an_inactive_account_costs_one_check_and_says_disabled_only_to_the_right_password(
    session: AsyncSession, checked: list[str]
) -> None:
    await add_user(session, "bob", active=False)
    wrong = await attempt(session, "bob", "wrong password")
    assert (wrong.outcome, wrong.user) == (SignInOutcome.WRONG, None)
    assert len(checked) == 1
    right = await attempt(session, "bob")
    assert (right.outcome, right.user) == (SignInOutcome.DISABLED, None)
    assert len(checked) == 2


async def test_a_success_costs_one_check_and_stamps_last_login(
    session: AsyncSession, checked: list[str]
) -> None:
    await add_user(session, "Alice")
    result = await attempt(session, "aLICE")
    assert result.outcome is SignInOutcome.OK
    assert result.user is not None
    assert result.user.username == "Alice"
    assert result.user.last_login == START
    assert len(checked) == 1


async def test_failures_are_kept_in_the_database_across_sessions_and_engines(
    session: AsyncSession, settings: Settings
) -> None:
    await add_user(session, "alice")
    await fail(session, "alice", FREE_ATTEMPTS)
    other = new_engine(settings)  # as a new console, or the same one after a restart
    try:
        async with new_sessionmaker(other)() as fresh:
            result = await attempt(fresh, "alice", at=START + timedelta(seconds=1))
    finally:
        await other.dispose()
    assert result.outcome is SignInOutcome.LOCKED
    assert result.wait_seconds > 0


async def test_the_delay_grows_and_a_locked_attempt_is_refused_without_a_check(
    session: AsyncSession, checked: list[str]
) -> None:
    await add_user(session, "alice")
    for _ in range(1, FREE_ATTEMPTS):
        assert (await attempt(session, "alice", "wrong password")).wait_seconds == 0
    third = await attempt(session, "alice", "wrong password")
    assert third.wait_seconds == 2
    before = len(checked)
    locked = await attempt(session, "alice", at=START + timedelta(seconds=1.5))  # the right password
    assert (locked.outcome, locked.user) == (SignInOutcome.LOCKED, None)
    assert locked.wait_seconds == pytest.approx(0.5)
    assert len(checked) == before
    fourth = await attempt(session, "alice", "wrong password", at=START + timedelta(seconds=2))
    assert fourth.wait_seconds == 4
    assert len(checked) == before + 1
    delays = [delay_after(count) for count in range(FREE_ATTEMPTS, FREE_ATTEMPTS + 7)]
    assert delays == [2, 4, 8, 16, 32, 60, 60]
    assert delay_after(10**9) == MAX_DELAY_SECONDS


async def test_a_success_resets_the_count(session: AsyncSession) -> None:
    await add_user(session, "alice")
    last = await fail(session, "alice", FREE_ATTEMPTS)
    later = START + timedelta(seconds=last.wait_seconds + 1)
    assert (await attempt(session, "alice", at=later)).outcome is SignInOutcome.OK
    row = await attempt_row(session, "alice")
    assert row is not None
    await session.refresh(row)
    assert (row.failures, row.last_success_at) == (0, later)
    assert (await attempt(session, "alice", "wrong password", at=later)).wait_seconds == 0


async def test_failures_from_the_free_attempts_on_are_audited_under_the_lowercased_name(
    session: AsyncSession,
) -> None:
    await add_user(session, "alice")
    await fail(session, "Alice", FREE_ATTEMPTS - 1)
    assert await sign_in_audit_rows(session) == []
    await fail(session, "ALICE", 3, at=START + timedelta(seconds=1))
    rows = await sign_in_audit_rows(session)
    assert [(row.actor, row.source, row.entity_type, row.entity_id) for row in rows] == [
        ("alice", "console", "sign_in", "alice")
    ] * 3
    assert [row.changes["failures"]["after"] for row in rows] == [3, 4, 5]


async def test_unknown_usernames_are_counted_and_locked_like_known_ones(session: AsyncSession) -> None:
    await fail(session, "Nobody", FREE_ATTEMPTS)
    row = await attempt_row(session, "nobody")
    assert row is not None
    assert row.failures == FREE_ATTEMPTS
    assert (await attempt(session, "nobody", at=START + timedelta(seconds=1))).outcome is SignInOutcome.LOCKED
    assert [row.actor for row in await sign_in_audit_rows(session)] == ["nobody"]


async def test_names_no_user_can_have_share_one_row(session: AsyncSession) -> None:
    names = ["\u212aate", "x" * 65, "two words", "[/]\x1b[31m", "a"]
    for index, name in enumerate(names):
        await attempt(session, name, "wrong password", at=START + timedelta(seconds=100 * index))
    assert await session.scalar(select(func.count()).select_from(SignInAttempt)) == 1
    row = await attempt_row(session, INVALID_USERNAME_KEY)
    assert row is not None
    assert row.failures == len(names)
    assert {row.actor for row in await sign_in_audit_rows(session)} == {INVALID_USERNAME_KEY}


async def test_two_consoles_failing_at_once_both_count(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with new_sessionmaker(engine)() as session:
        await add_user(session, "alice")
    both_checking = asyncio.Barrier(2)

    async def check_together(password: str, hashed: str) -> bool:
        await both_checking.wait()  # each has read the count before either writes it
        return await verify_password(password, hashed)

    monkeypatch.setattr(db.sign_in, "verify_password", check_together)

    async def console() -> SignInResult:
        async with new_sessionmaker(engine)() as session:
            return await attempt(session, "alice", "wrong password")

    results = await asyncio.wait_for(asyncio.gather(console(), console()), timeout=30)
    assert [result.outcome for result in results] == [SignInOutcome.WRONG] * 2
    async with new_sessionmaker(engine)() as session:
        row = await attempt_row(session, "alice")
        assert row is not None
        assert row.failures == 2
