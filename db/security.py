"""Password rules and hashing (bcrypt, off the event loop), ingest-token generation and hashing.

Passwords are slow-hashed with bcrypt. A hash at the default cost takes a
quarter of a second of CPU, so :func:`hash_password` and :func:`verify_password`
are coroutines that run bcrypt in a thread: the console keeps drawing and the
ingest server keeps acking while someone signs in. Ingest tokens are 256-bit
random secrets, so a fast SHA-256 is enough to keep them out of the database
while a hello can still be checked in microseconds.

A password must be at least :data:`MIN_PASSWORD_LENGTH` characters and hard to
guess: zxcvbn (Dropbox's estimator, with its list of the 30,000 most used
passwords, common words, names, keyboard walks, dates and repeats) must put it
at score :data:`MIN_PASSWORD_SCORE` or better.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections.abc import Iterable

import bcrypt
from zxcvbn import zxcvbn

MIN_PASSWORD_LENGTH = 12
#: bcrypt reads at most 72 bytes; longer passwords are refused rather than silently cut.
MAX_PASSWORD_BYTES = 72
#: zxcvbn's scale: 3 means about 10^8 guesses or more, out of reach of an online attacker.
MIN_PASSWORD_SCORE = 3
#: A password ranked this high or higher in zxcvbn's list of used passwords is named as "too common".
COMMON_PASSWORD_RANK = 10_000
TOKEN_PREFIX = "aifw_"


class PasswordError(ValueError):
    """A password is too short, too long or too easy to guess; the message says which and why."""


def _common_rank(password: str, result: dict[str, object]) -> int | None:
    """The rank of ``password`` in zxcvbn's list of used passwords when the whole of it is one entry."""
    sequence = result.get("sequence")
    if not isinstance(sequence, list) or len(sequence) != 1:
        return None
    match = sequence[0]
    if match.get("pattern") == "dictionary" and match.get("dictionary_name") == "passwords":
        return int(match["rank"])
    return None


def validate_password(password: str, *, user_inputs: Iterable[str] = ()) -> str:
    """Return ``password`` if it may be used; PasswordError says why not.

    ``user_inputs`` (the username, the email) count as known words, so a password
    built from them scores low.
    """
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordError(
            f"password must be at least {MIN_PASSWORD_LENGTH} characters; got {len(password)}"
        )
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise PasswordError(
            f"password must be at most {MAX_PASSWORD_BYTES} bytes (bcrypt ignores the rest); "
            f"got {len(password.encode())}"
        )
    result = zxcvbn(password, user_inputs=[value for value in user_inputs if value])
    rank = _common_rank(password, result)
    if rank is not None and rank <= COMMON_PASSWORD_RANK:
        raise PasswordError(
            f"password is too common: it is in the list of the {COMMON_PASSWORD_RANK:,} most used passwords"
        )
    if result["score"] < MIN_PASSWORD_SCORE:
        feedback = result["feedback"]
        reasons = [feedback["warning"]] if feedback["warning"] else []
        reasons.extend(feedback["suggestions"])
        why = " ".join(reasons) or "it follows a pattern guessing tools try first."
        raise PasswordError(
            f"password is too easy to guess (about 10^{result['guesses_log10']:.0f} guesses): {why}"
        )
    return password


def _validate_and_hash(password: str, rounds: int, user_inputs: tuple[str, ...]) -> str:
    validate_password(password, user_inputs=user_inputs)
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=rounds)).decode()


def _check(password: str, hashed: str) -> bool:
    encoded = password.encode()
    if len(encoded) > MAX_PASSWORD_BYTES:
        return False
    try:
        return bcrypt.checkpw(encoded, hashed.encode())
    except ValueError:
        return False


async def hash_password(password: str, *, rounds: int = 12, user_inputs: Iterable[str] = ()) -> str:
    """Validate and bcrypt-hash a password, in a thread so the event loop keeps running.

    Raises PasswordError when :func:`validate_password` refuses it.
    """
    return await asyncio.to_thread(_validate_and_hash, password, rounds, tuple(user_inputs))


async def verify_password(password: str, hashed: str) -> bool:
    """True if password matches the bcrypt hash; never raises on malformed input; runs in a thread."""
    return await asyncio.to_thread(_check, password, hashed)


def generate_token() -> str:
    """A new ingest token, shown once to the operator."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The SHA-256 (hex) kept in place of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, token_hash: str) -> bool:
    """Constant-time comparison of a token with a stored hash."""
    return hmac.compare_digest(hash_token(token), token_hash)
