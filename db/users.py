"""Console users: creation with validation, lookup and sign-in."""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.base import utcnow
from db.models import User
from db.security import hash_password, validate_password, verify_password

USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,63}$")
EMAIL_PATTERN = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")


class UserError(ValueError):
    """A user cannot be created or changed; ``field`` names the offending field."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def validate_username(username: str) -> str:
    if not USERNAME_PATTERN.match(username):
        raise UserError(
            "username must be 2-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
            field="username",
        )
    return username


def validate_email(email: str) -> str:
    email = email.strip()
    if len(email) > 255 or not EMAIL_PATTERN.match(email):
        raise UserError(f"{email!r} is not an email address", field="email")
    return email


async def get_by_username(*, session: AsyncSession, username: str) -> User | None:
    return await session.scalar(select(User).where(User.username == username))


async def count_users(*, session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(User)) or 0)


async def list_users(*, session: AsyncSession, search: str = "") -> Sequence[User]:
    statement = select(User).order_by(User.username)
    if search:
        like = f"%{search.lower()}%"
        statement = statement.where(
            or_(
                func.lower(User.username).like(like),
                func.lower(User.email).like(like),
                func.lower(func.coalesce(User.full_name, "")).like(like),
            )
        )
    return (await session.scalars(statement)).all()


async def create_user(
    *,
    session: AsyncSession,
    username: str,
    email: str,
    password: str,
    full_name: str | None = None,
    is_admin: bool = False,
    bcrypt_rounds: int = 12,
) -> User:
    """Validate and add a user; raise UserError on a duplicate or a bad field."""
    username = validate_username(username.strip())
    email = validate_email(email)
    try:
        validate_password(password)
    except ValueError as error:
        raise UserError(str(error), field="password") from None
    if await get_by_username(session=session, username=username) is not None:
        raise UserError(f"username {username!r} is taken", field="username")
    if await session.scalar(select(User.id).where(func.lower(User.email) == email.lower())) is not None:
        raise UserError(f"email {email!r} is already used", field="email")
    user = User(
        username=username,
        email=email,
        hashed_password=hash_password(password, rounds=bcrypt_rounds),
        full_name=(full_name or "").strip() or None,
        is_admin=is_admin,
        is_active=True,
        created_at=utcnow(),
    )
    session.add(user)
    await session.flush()
    return user


async def authenticate(*, session: AsyncSession, username: str, password: str) -> User | None:
    """The active user with these credentials, with ``last_login`` stamped; None otherwise.

    An inactive user with the right password is also refused (None); callers
    that want to say why can check ``is_active`` on :func:`get_by_username`.
    """
    user = await get_by_username(session=session, username=username)
    if user is None or not verify_password(password, user.hashed_password) or not user.is_active:
        return None
    user.last_login = utcnow()
    await session.flush()
    return user
