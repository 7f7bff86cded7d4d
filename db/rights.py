"""Who may change what: the actor of a change, checked in the change's own transaction.

Every change function in ``db/`` takes an :class:`Actor` and calls
:func:`require_admin` (or :func:`require_active` for what viewers may do, such
as exporting) *first* in its transaction, so a role taken away in another
console a moment ago is already in force: the console's copy of the role,
cached at sign-in, decides only which keys it shows.

Two kinds of actor:

- a console user (``source="console"``) is checked against the ``users`` row as
  of now: it must exist, be active and, for changes, be an administrator;
- the command line (``source="cli"``) acts with the database's own rights:
  whoever can run it holds ``DATABASE_URL`` and could change the rows by hand,
  so it is not checked; its name is the operating-system user, for the audit trail.

How "as of now" holds against a change committed at the same moment:

- PostgreSQL reads the actor's row ``FOR SHARE``: a concurrent demotion either
  committed before (the check sees it and refuses) or waits until this
  transaction ends (the change was made while the actor still held the role);
- SQLite first takes the database's single write lock
  (:func:`db.engine.take_sqlite_write_lock`), so nothing can commit between the check
  and the change. Being the first statement of the transaction matters here: a
  read before it would pin an older snapshot.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.engine import take_sqlite_write_lock
from db.models import User

ActorSource = Literal["console", "cli"]
#: The longest actor name kept (the audit trail's ``actor`` and ``updated_by`` columns hold 64).
MAX_ACTOR_CHARS = 64


class NotAllowed(Exception):
    """The actor may not make this change now; the message says why.

    Not a ``PermissionError``: that is an ``OSError``, which callers read as a lost
    database or a file problem.

    ``signed_out`` is true when the actor may no longer use the console at all (deleted or
    deactivated): the console then signs the person out instead of only refusing.
    """

    def __init__(self, message: str, *, signed_out: bool) -> None:
        super().__init__(message)
        self.signed_out = signed_out


@dataclass(frozen=True)
class Actor:
    """Who makes a change: a console user (checked against ``users``) or the command line (not checked)."""

    name: str
    source: ActorSource

    @classmethod
    def console(cls, username: str) -> Actor:
        """The signed-in console user ``username``."""
        return cls(name=username, source="console")

    @classmethod
    def cli(cls) -> Actor:
        """The operating-system user running a command: ``$USER``, else the login name, else ``cli``."""
        name = os.environ.get("USER")
        if not name:
            try:
                name = getpass.getuser()
            except (KeyError, OSError):
                name = ""
        return cls(name=(name or "cli")[:MAX_ACTOR_CHARS], source="cli")

    @property
    def checked(self) -> bool:
        """Whether this actor's rights are checked (console users) or are the database's own (the CLI)."""
        return self.source == "console"


async def _current_user(session: AsyncSession, actor: Actor) -> User | None:
    """The actor's row as of now, held against concurrent change until the transaction ends."""
    if not actor.name.isascii():
        # Usernames are ASCII; lowering other text could fold it onto one (the Kelvin sign lowers to "k").
        return None
    match = func.lower(User.username) == actor.name.lower()
    if session.get_bind().dialect.name == "postgresql":
        return await session.scalar(select(User).where(match).with_for_update(read=True))
    await take_sqlite_write_lock(session, User)
    return await session.scalar(select(User).where(match).execution_options(populate_existing=True))


async def require_active(*, session: AsyncSession, actor: Actor, what: str) -> User | None:
    """Refuse (:class:`NotAllowed`) unless a console actor exists and is active; the CLI passes.

    ``what`` completes "you can no longer …" (for example "export logs"). Returns the
    actor's row (None for the CLI). Call it first in the transaction.
    """
    if not actor.checked:
        return None
    user = await _current_user(session, actor)
    if user is None:
        raise NotAllowed(f"cannot {what}: the account {actor.name!r} no longer exists", signed_out=True)
    if not user.is_active:
        raise NotAllowed(f"cannot {what}: the account {actor.name!r} has been deactivated", signed_out=True)
    return user


async def require_admin(*, session: AsyncSession, actor: Actor, what: str) -> User | None:
    """Refuse (:class:`NotAllowed`) unless a console actor is an active administrator now; the CLI passes.

    ``what`` completes "only administrators can …" (for example "create users").
    Returns the actor's row (None for the CLI). Call it first in the transaction.
    """
    user = await require_active(session=session, actor=actor, what=what)
    if user is not None and not user.is_admin:
        raise NotAllowed(f"only administrators can {what}; {actor.name!r} is a viewer now", signed_out=False)
    return user
