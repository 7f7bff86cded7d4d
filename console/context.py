"""What the app hands to every section and dialog: the session factory, who is signed in, the settings.

It sits below sections and dialogs alike (both are handed one), so neither imports the other for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.rights import Actor
from db.settings import Settings


@dataclass(frozen=True)
class SignedInUser:
    """Who is signed in, and whether they were an administrator at sign-in (the keys shown follow it)."""

    username: str
    is_admin: bool
    full_name: str | None = None

    @property
    def role(self) -> str:
        return "admin" if self.is_admin else "viewer"


@dataclass(frozen=True)
class ConsoleContext:
    """Everything a section gets from the app (see :mod:`console.sections`)."""

    sessions: async_sessionmaker[AsyncSession]
    user: SignedInUser
    settings: Settings
    notify: Callable[..., None]

    @property
    def actor(self) -> Actor:
        """The signed-in user as the actor of a change: ``db/`` checks their rights as of now."""
        return Actor.console(self.user.username)

    def require_admin(self, what: str) -> bool:
        """True for an administrator as of sign-in; otherwise tell the viewer they may not ``what``.

        Only decides what the console offers: every change is checked again in ``db/``
        (:mod:`db.rights`), where a role taken away since sign-in is already in force.
        """
        if self.user.is_admin:
            return True
        self.notify(f"Only administrators can {what}; you are signed in as a viewer.", severity="warning")
        return False
