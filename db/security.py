"""Password hashing (bcrypt) and ingest-token generation and hashing.

Passwords are slow-hashed with bcrypt. Ingest tokens are 256-bit random
secrets, so a fast SHA-256 is enough to keep them out of the database while a
hello can still be checked in microseconds.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import bcrypt

MIN_PASSWORD_LENGTH = 8
#: bcrypt reads at most 72 bytes; longer passwords are refused rather than silently cut.
MAX_PASSWORD_BYTES = 72
TOKEN_PREFIX = "aifw_"


class PasswordError(ValueError):
    """A password is too short or too long; the message says which."""


def validate_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise PasswordError(f"password must be at most {MAX_PASSWORD_BYTES} bytes")
    return password


def hash_password(password: str, *, rounds: int = 12) -> str:
    """Validate and bcrypt-hash a password."""
    validate_password(password)
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=rounds)).decode()


def verify_password(password: str, hashed: str) -> bool:
    """True if password matches the bcrypt hash; never raises on malformed input."""
    encoded = password.encode()
    if len(encoded) > MAX_PASSWORD_BYTES:
        return False
    try:
        return bcrypt.checkpw(encoded, hashed.encode())
    except ValueError:
        return False


def generate_token() -> str:
    """A new ingest token, shown once to the operator."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, token_hash: str) -> bool:
    return hmac.compare_digest(hash_token(token), token_hash)
