"""Console users: creation with validation and lookup (signing in is db/sign_in.py).

Usernames are unique regardless of case (a unique index on ``lower(username)``)
and looked up regardless of case, so ``Alice`` signs in as ``alice``; the
spelling chosen at creation is the one shown. Every text field is checked
against its column's length here, on both engines, before any SQL runs.
Every change takes an :class:`~db.rights.Actor`, checked as of now and
recorded in the audit trail in the change's own transaction.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy import func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from db.audit import apply_changes, record_change
from db.base import utcnow
from db.engine import take_sqlite_write_lock
from db.field_lengths import length_problem
from db.models import User
from db.rights import Actor, ActorSource, require_admin
from db.security import PasswordError, hash_password

USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,63}$")
EMAIL_PATTERN = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")


class UserError(ValueError):
    """A user cannot be created or changed; ``field`` names the offending field."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UsersExist(UserError):
    """The first administrator can no longer be created: someone created a user meanwhile (sign in)."""


def validate_username(username: str) -> str:
    """Return ``username`` if it is 2–64 safe ASCII characters; UserError (field ``username``) if not."""
    if (problem := length_problem(User.username, username, field="username")) is not None:
        raise UserError(problem, field="username")
    if not USERNAME_PATTERN.match(username):
        raise UserError(
            "username must be 2-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
            field="username",
        )
    return username


def validate_email(email: str) -> str:
    """Return the stripped ``email`` if it is shaped like one and fits its column; UserError otherwise."""
    email = email.strip()
    if (problem := length_problem(User.email, email, field="email")) is not None:
        raise UserError(problem, field="email")
    if not EMAIL_PATTERN.match(email):
        raise UserError(f"{email!r} is not an email address", field="email")
    return email


def validate_full_name(full_name: str | None) -> str | None:
    """The stripped full name (None when empty); UserError (field ``full_name``) if it is too long."""
    full_name = (full_name or "").strip()
    if (problem := length_problem(User.full_name, full_name, field="full_name")) is not None:
        raise UserError(problem, field="full_name")
    return full_name or None


async def _hash_allowed(password: str, *, username: str, email: str, rounds: int) -> str:
    """The bcrypt hash of ``password`` if the rules allow it for this user; UserError (field ``password``)."""
    try:
        return await hash_password(
            password, rounds=rounds, user_inputs=(username, email, email.partition("@")[0])
        )
    except PasswordError as error:
        raise UserError(str(error), field="password") from None


async def get_by_username(*, session: AsyncSession, username: str) -> User | None:
    """The user called ``username``, whatever its case, or None."""
    if not username.isascii():
        # Usernames are ASCII; lowering other text could fold it onto one (the Kelvin sign lowers to "k").
        return None
    return await session.scalar(select(User).where(func.lower(User.username) == username.lower()))


async def count_users(*, session: AsyncSession) -> int:
    """How many users exist (none: the console offers to create the first administrator)."""
    return int(await session.scalar(select(func.count()).select_from(User)) or 0)


async def list_users(*, session: AsyncSession, search: str = "") -> Sequence[User]:
    """Users by username, optionally those whose username, email or full name contains ``search``."""
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


async def _add_user(
    session: AsyncSession,
    *,
    username: str,
    email: str,
    hashed_password: str,
    full_name: str | None,
    is_admin: bool,
) -> User:
    """Insert a user whose fields are validated; UserError if the username or email is taken."""
    existing = await get_by_username(session=session, username=username)
    if existing is not None:
        taken = (
            repr(username) if existing.username == username else f"{username!r} (as {existing.username!r})"
        )
        raise UserError(f"username {taken} is taken", field="username")
    if await session.scalar(select(User.id).where(func.lower(User.email) == email.lower())) is not None:
        raise UserError(f"email {email!r} is already used", field="email")
    user = User(
        username=username,
        email=email,
        hashed_password=hashed_password,
        full_name=full_name,
        is_admin=is_admin,
        is_active=True,
        created_at=utcnow(),
    )
    session.add(user)
    await session.flush()
    return user


async def _record_created(session: AsyncSession, user: User, *, actor: Actor) -> None:
    await record_change(
        session=session,
        actor=actor,
        action="user.create",
        entity_type="user",
        entity_id=user.username,
        changes={
            "email": {"after": user.email},
            "full_name": {"after": user.full_name},
            "is_admin": {"after": user.is_admin},
        },
    )


async def create_user(
    *,
    session: AsyncSession,
    actor: Actor,
    username: str,
    email: str,
    password: str,
    full_name: str | None = None,
    is_admin: bool = False,
    bcrypt_rounds: int = 12,
) -> User:
    """Validate and add a user on behalf of ``actor`` (an administrator now), with its audit row.

    Raises NotAllowed if the actor may not create users, UserError on a duplicate or a bad field.
    """
    username = validate_username(username.strip())
    email = validate_email(email)
    full_name = validate_full_name(full_name)
    # Hashed before the rights check: on SQLite the check takes the write lock, which the
    # slow bcrypt round would otherwise hold (it needs nothing from the database).
    hashed = await _hash_allowed(password, username=username, email=email, rounds=bcrypt_rounds)
    await require_admin(session=session, actor=actor, what="create users")
    user = await _add_user(
        session,
        username=username,
        email=email,
        hashed_password=hashed,
        full_name=full_name,
        is_admin=is_admin,
    )
    await _record_created(session, user, actor=actor)
    return user


# --- console administration: edit, activate/deactivate, reset password, delete -------------------
#
# Rights and guards live here, not in the screens: each change checks its actor
# first in its transaction (db.rights), nobody deactivates, demotes or deletes
# themselves, and the last active administrator cannot be deactivated, demoted
# or deleted by anyone. Each change writes its own audit row, with what it changed
# as ``{field: {"before": ..., "after": ...}}`` (never a password).


async def get_user(*, session: AsyncSession, username: str) -> User:
    """The user called ``username``; UserError (field ``username``) if there is none."""
    user = await get_by_username(session=session, username=username)
    if user is None:
        raise UserError(f"there is no user {username!r}", field="username")
    return user


async def _other_active_admins(session: AsyncSession, user: User) -> int:
    """How many active administrators there are besides ``user`` (rows locked on PostgreSQL)."""
    statement = select(User.id).where(User.is_admin.is_(True), User.is_active.is_(True), User.id != user.id)
    if session.get_bind().dialect.name == "postgresql":
        # Two admins demoting each other at once must not leave none: lock the rows we count.
        statement = statement.with_for_update()
    return len((await session.scalars(statement)).all())


async def _guard_admin_loss(
    session: AsyncSession, *, user: User, actor: Actor, field: str, what: str
) -> None:
    """Refuse ``what`` (demote, deactivate, delete) on oneself or on the last active administrator."""
    # The command line's actor is an operating-system user, not a console account: no "yourself" there.
    if actor.checked and user.username.lower() == actor.name.lower():
        raise UserError(f"you cannot {what} yourself; ask another administrator", field=field)
    if user.is_admin and user.is_active and await _other_active_admins(session, user) == 0:
        raise UserError(
            f"{user.username!r} is the last active administrator: make someone else an administrator first",
            field=field,
        )


async def update_user(
    *,
    session: AsyncSession,
    username: str,
    actor: Actor,
    email: str | None = None,
    full_name: str | None = None,
    is_admin: bool | None = None,
    is_active: bool | None = None,
) -> tuple[User, dict[str, dict[str, object]]]:
    """Change the given fields of ``username`` on behalf of ``actor``; return the user and the changes.

    Raises NotAllowed unless the actor is an administrator now; UserError (with ``field``)
    for a bad or taken email, or when the change would deactivate or demote the actor or
    the last active administrator. A change is audited as ``user.activate`` /
    ``user.deactivate`` when only the state changed, else ``user.update``.
    """
    await require_admin(session=session, actor=actor, what="change users")
    user = await get_user(session=session, username=username)
    new_values: dict[str, object] = {}
    if email is not None:
        email = validate_email(email)
        if email.lower() != user.email.lower():
            taken = await session.scalar(
                select(User.id).where(func.lower(User.email) == email.lower(), User.id != user.id)
            )
            if taken is not None:
                raise UserError(f"email {email!r} is already used", field="email")
        new_values["email"] = email
    if full_name is not None:
        new_values["full_name"] = validate_full_name(full_name)
    if is_admin is not None:
        if user.is_admin and not is_admin:
            await _guard_admin_loss(session, user=user, actor=actor, field="is_admin", what="demote")
        new_values["is_admin"] = is_admin
    if is_active is not None:
        if user.is_active and not is_active:
            await _guard_admin_loss(session, user=user, actor=actor, field="is_active", what="deactivate")
        new_values["is_active"] = is_active
    changes = apply_changes(user, new_values)
    if changes:
        await session.flush()
        if set(changes) == {"is_active"}:
            action = "user.activate" if user.is_active else "user.deactivate"
        else:
            action = "user.update"
        await record_change(
            session=session,
            actor=actor,
            action=action,
            entity_type="user",
            entity_id=user.username,
            changes=changes,
        )
    return user, changes


async def reset_password(
    *, session: AsyncSession, username: str, password: str, actor: Actor, bcrypt_rounds: int = 12
) -> User:
    """Give ``username`` a new password (bcrypt) on behalf of ``actor``, audited (never the password).

    Raises NotAllowed unless the actor is an administrator now; UserError (field
    ``password``) if the rules refuse the password.
    """
    await require_admin(session=session, actor=actor, what="reset passwords")
    user = await get_user(session=session, username=username)
    user.hashed_password = await _hash_allowed(
        password, username=user.username, email=user.email, rounds=bcrypt_rounds
    )
    await session.flush()
    await record_change(
        session=session,
        actor=actor,
        action="user.reset_password",
        entity_type="user",
        entity_id=user.username,
        changes={"password": {"changed": True}},
    )
    return user


async def delete_user(*, session: AsyncSession, username: str, actor: Actor) -> User:
    """Delete ``username`` on behalf of ``actor``, audited.

    Raises NotAllowed unless the actor is an administrator now; UserError if
    ``username`` is the actor or the last active administrator.
    """
    await require_admin(session=session, actor=actor, what="delete users")
    user = await get_user(session=session, username=username)
    await _guard_admin_loss(session, user=user, actor=actor, field="username", what="delete")
    await session.delete(user)
    await session.flush()
    await record_change(
        session=session,
        actor=actor,
        action="user.delete",
        entity_type="user",
        entity_id=user.username,
        changes={
            "email": {"before": user.email},
            "is_admin": {"before": user.is_admin},
            "is_active": {"before": user.is_active},
        },
    )
    return user


async def _lock_users(session: AsyncSession) -> None:
    """Hold off every other change of ``users`` until this transaction ends (first administrator only)."""
    if session.get_bind().dialect.name == "postgresql":
        # EXCLUSIVE still lets sign-ins read; two first administrators created at once serialise here.
        await session.execute(text("LOCK TABLE users IN EXCLUSIVE MODE"))
    else:
        await take_sqlite_write_lock(session, User)


async def create_administrator(
    *,
    session: AsyncSession,
    username: str,
    email: str,
    password: str,
    full_name: str | None,
    bcrypt_rounds: int,
    actor: Actor | None,
    source: ActorSource = "console",
) -> User:
    """Create an active administrator, with its audit row.

    With an ``actor`` (the CLI's ``create-admin``, the demo, an administrator) this is
    :func:`create_user` with ``is_admin``: the actor is checked and recorded. With
    ``actor`` None it creates the *first* administrator, whom nobody could have created:
    refused (:class:`UsersExist`, checked under a lock on ``users``) once any user exists;
    the new administrator is recorded as its own creator, from ``source``.
    """
    if actor is not None:
        return await create_user(
            session=session,
            actor=actor,
            username=username,
            email=email,
            password=password,
            full_name=full_name,
            is_admin=True,
            bcrypt_rounds=bcrypt_rounds,
        )
    username = validate_username(username.strip())
    email = validate_email(email)
    full_name = validate_full_name(full_name)
    hashed = await _hash_allowed(password, username=username, email=email, rounds=bcrypt_rounds)
    await _lock_users(session)
    if await count_users(session=session) != 0:
        raise UsersExist("users exist already: sign in, or ask an administrator to create your account")
    user = await _add_user(
        session,
        username=username,
        email=email,
        hashed_password=hashed,
        full_name=full_name,
        is_admin=True,
    )
    # Nobody was signed in to create the first administrator: it is recorded as its own creator.
    await _record_created(session, user, actor=Actor(name=user.username, source=source))
    return user
