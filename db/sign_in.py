"""Sign-in with throttling: one bcrypt check per attempt, failures counted per username in the database.

Every attempt that is not refused up front costs exactly one bcrypt check: a
username nobody has is checked against :func:`dummy_hash` at the configured
cost, so an unknown name answers as slowly as a wrong password, and an inactive
account is checked once (the "disabled" answer only follows the right password).

Consecutive failures are kept per username (lowercased) in ``sign_in_attempts``,
so the delay they impose outlives the console and holds across consoles: after
the :data:`FREE_ATTEMPTS`-th failure in a row each attempt waits
:data:`BASE_DELAY_SECONDS`, doubling with each further failure up to
:data:`MAX_DELAY_SECONDS`. While a username waits, an attempt is refused before
its password is checked, so guessing in parallel gains nothing. A success resets
the count. Names that no user can have share one row (:data:`INVALID_USERNAME_KEY`),
so a guesser cannot write strings of its choice; unknown names are counted like
known ones, so the table does not tell which exist. From the free attempts on,
each failure adds an audit row (``user.sign_in_failed``) for the administrators.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.audit import record_change
from db.base import as_utc, utcnow
from db.engine import insert_for
from db.models import SignInAttempt, User
from db.rights import Actor, ActorSource
from db.security import verify_password
from db.users import USERNAME_PATTERN, get_by_username

#: Failures in a row allowed before each further attempt has to wait.
FREE_ATTEMPTS = 3
#: The wait after the FREE_ATTEMPTS-th failure in a row, doubled by each further failure, at most the max.
BASE_DELAY_SECONDS = 2.0
MAX_DELAY_SECONDS = 60.0
#: The one row counting names no user can have (not ASCII, not the username pattern, over 64 characters).
INVALID_USERNAME_KEY = "(invalid)"
#: Audit rows of failed sign-ins: the console is the only place one signs in.
AUDIT_SOURCE: ActorSource = "console"
AUDIT_ACTION = "user.sign_in_failed"
AUDIT_ENTITY_TYPE = "sign_in"

#: Salt and digest of a bcrypt hash of a random password nobody knows. Checking a password against
#: them at a given cost takes as long as checking it against a real user's hash of that cost.
_DUMMY_SALT_AND_DIGEST = "SoZf6aDPYuYrGxPhHu9fzOZCiqSCs3tyq4h0RyxqJ04Uv3UjWolNm"


class SignInOutcome(StrEnum):
    """How an attempt ended; only ``ok`` signs a user in."""

    OK = "ok"
    WRONG = "wrong"  # wrong password or unknown username: the two are never told apart
    DISABLED = "disabled"  # the right password of an inactive account
    LOCKED = "locked"  # refused without checking the password: the username must wait


@dataclass(frozen=True)
class SignInResult:
    """The outcome of one attempt; ``user`` only when it is ``ok``.

    ``wait_seconds``: for ``locked``, how long is left; for ``wrong`` and
    ``disabled``, the wait this failure imposed (0 while attempts are free).
    """

    outcome: SignInOutcome
    user: User | None = None
    wait_seconds: float = 0.0


def dummy_hash(bcrypt_rounds: int) -> str:
    """A well-formed bcrypt hash of cost ``bcrypt_rounds`` that no password matches."""
    return f"$2b${bcrypt_rounds:02d}${_DUMMY_SALT_AND_DIGEST}"


def attempt_key(username: str) -> str:
    """The row a username's failures are counted in: lowercased, or the shared invalid-name row."""
    if not username.isascii() or not USERNAME_PATTERN.match(username):
        return INVALID_USERNAME_KEY
    return username.lower()


def delay_after(failures: int) -> float:
    """Seconds to wait after ``failures`` consecutive failures (0 while they are within the free ones)."""
    if failures < FREE_ATTEMPTS:
        return 0.0
    # The exponent is capped so that a huge count cannot overflow a float; 2**16 * 2 s is past the max.
    return min(MAX_DELAY_SECONDS, BASE_DELAY_SECONDS * 2 ** min(failures - FREE_ATTEMPTS, 16))


async def seconds_locked(*, session: AsyncSession, username: str, now: datetime | None = None) -> float:
    """Seconds before ``username`` may try again (0 when it may try now)."""
    now = as_utc(now) if now is not None else utcnow()
    row = (
        await session.execute(
            select(SignInAttempt.failures, SignInAttempt.last_failure_at).where(
                SignInAttempt.username == attempt_key(username)
            )
        )
    ).one_or_none()
    if row is None or row.last_failure_at is None:
        return 0.0
    delay = delay_after(row.failures)
    left = (row.last_failure_at + timedelta(seconds=delay) - now).total_seconds()
    # Never more than the delay itself: a console whose clock runs ahead cannot lock a name for longer.
    return max(0.0, min(left, delay))


async def _record_failure(session: AsyncSession, key: str, now: datetime) -> int:
    """Count one more consecutive failure of ``key``; return the count (both of two racing ones count)."""
    insert = insert_for(session)
    statement = insert(SignInAttempt).values(username=key, failures=1, last_failure_at=now)
    upsert = statement.on_conflict_do_update(
        index_elements=[SignInAttempt.username],
        # Incremented in the database, not read-then-written: two consoles failing at once both count.
        set_={"failures": SignInAttempt.failures + 1, "last_failure_at": statement.excluded.last_failure_at},
    ).returning(SignInAttempt.failures)
    return int((await session.execute(upsert)).scalar_one())


async def _record_success(session: AsyncSession, key: str, now: datetime) -> None:
    insert = insert_for(session)
    statement = insert(SignInAttempt).values(username=key, failures=0, last_success_at=now)
    statement = statement.on_conflict_do_update(
        index_elements=[SignInAttempt.username],
        set_={"failures": 0, "last_success_at": statement.excluded.last_success_at},
    )
    await session.execute(statement)


async def sign_in(
    *,
    session: AsyncSession,
    username: str,
    password: str,
    bcrypt_rounds: int,
    now: datetime | None = None,
) -> SignInResult:
    """Check one sign-in attempt, record it, and say how it ended; the caller commits.

    Refused (``locked``) without checking the password while the username waits.
    Otherwise exactly one bcrypt check (against :func:`dummy_hash` of cost
    ``bcrypt_rounds`` when nobody has the name). A success stamps ``last_login``
    and resets the count; a failure adds one, and from :data:`FREE_ATTEMPTS` on
    an audit row. ``now`` is for tests: the time the attempt is made.
    """
    now = as_utc(now) if now is not None else utcnow()
    key = attempt_key(username)
    wait = await seconds_locked(session=session, username=username, now=now)
    if wait > 0:
        return SignInResult(outcome=SignInOutcome.LOCKED, wait_seconds=wait)
    user = await get_by_username(session=session, username=username)
    hashed = user.hashed_password if user is not None else dummy_hash(bcrypt_rounds)
    password_ok = await verify_password(password, hashed) and user is not None
    if user is not None and password_ok and user.is_active:
        user.last_login = now
        await _record_success(session, key, now)
        await session.flush()
        return SignInResult(outcome=SignInOutcome.OK, user=user)
    # A disabled account counts as a failure too: the attempt was refused all the same.
    failures = await _record_failure(session, key, now)
    delay = delay_after(failures)
    if failures >= FREE_ATTEMPTS:
        await record_change(
            session=session,
            actor=Actor(name=key, source=AUDIT_SOURCE),
            action=AUDIT_ACTION,
            entity_type=AUDIT_ENTITY_TYPE,
            entity_id=key,
            changes={
                "failures": {"before": failures - 1, "after": failures},
                "wait_seconds": {"after": delay},
            },
        )
    outcome = SignInOutcome.DISABLED if password_ok else SignInOutcome.WRONG
    return SignInResult(outcome=outcome, wait_seconds=delay)
