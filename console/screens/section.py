"""What the app hands to every section, and the base class that routes worker failures to the app."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from textual.containers import Vertical
from textual.worker import Worker, WorkerState

from console.messages import WorkerFailed
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
    """Everything a section gets from the app (see :mod:`console.screens`)."""

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


@dataclass(frozen=True)
class SectionCommand:
    """A command-palette entry of a section: runs ``action_<action>`` on the section."""

    title: str
    help: str
    action: str
    admin_only: bool = False


class Section(Vertical):
    """Base of every section: holds the context and forwards failed workers to the app."""

    TITLE: ClassVar[str] = ""
    KEY: ClassVar[str | None] = None
    COMMANDS: ClassVar[tuple[SectionCommand, ...]] = ()

    def __init__(self, context: ConsoleContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_class("section")
        self.context = context

    def reload(self) -> None:
        """Fetch what the section shows (start workers); called when shown and after reconnecting."""

    def focus_first(self) -> None:
        """Give focus to the section's first focusable widget (its main view), if any."""
        for widget in self.query("*"):
            if widget.focusable:
                widget.focus()
                return
        self.screen.set_focus(None)

    def busy_with(self) -> str | None:
        """Work that quitting would interrupt (e.g. "an export"), or None."""
        return None

    async def stop_busy_work(self) -> None:
        """Stop what :meth:`busy_with` names and wait until its records are written (quit, sign-out)."""

    def running_workers(self, group: str) -> list[Worker[Any]]:
        """This section's workers of ``group`` that are still running."""
        return [worker for worker in self.workers if worker.group == group and worker.is_running]

    async def stop_and_wait(self, group: str, stop: Callable[[], None], *, seconds: float) -> None:
        """Ask the running workers of ``group`` to stop (``stop``), then wait for them, ``seconds`` at most.

        Past the wait they are cancelled with the shell; the work they call (a cleanup, an
        export) still completes its records on its way out.
        """
        running = self.running_workers(group)
        if not running:
            return
        stop()
        waiting = asyncio.gather(*(worker.wait() for worker in running), return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiting, seconds)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.post_message(WorkerFailed(event.worker.error, event.worker.name))
