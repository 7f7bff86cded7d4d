"""The Textual application: engine lifecycle, sign-in, the shell, bindings, palette, worker errors.

The engine is created in the app's own event loop on mount and disposed on
unmount. Screens run their database work in async workers; a failed worker
arrives here (:class:`~console.messages.WorkerFailed`) and becomes either the
"database unavailable" banner with automatic retry, a sign-out (or the viewer's
keys) when ``db/`` refused a change because a right was taken away since sign-in,
or a one-line notification, with the traceback written to the log file, never to the screen.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import partial
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.command import CommandPalette
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.timer import Timer

from console.context import ConsoleContext, SignedInUser
from console.dialogs.confirm import confirm_then
from console.dialogs.dialog import Dialog
from console.dialogs.help import HelpScreen, keys_in_force
from console.messages import DatabaseReachable, WorkerFailed
from console.screens.login import LoginScreen
from console.screens.shell import SECTIONS, ShellScreen, section_id
from console.sections.section import Section, SectionCommand
from db.cli import EXIT_FAILED, EXIT_OK, fail
from db.engine import check_connectable, check_database, new_engine, new_sessionmaker
from db.errors import DatabaseError, describe_database_error, error_reason, is_connection_error
from db.identifiers import visible
from db.rights import NotAllowed
from db.scheduler import RetentionScheduler, maybe_start_retention_scheduler
from db.settings import Settings, data_dir_of

log = logging.getLogger("console")

RETRY_SECONDS = 3.0
LIGHT_THEME = "textual-light"
DARK_THEME = "textual-dark"


def one_line(error: BaseException) -> str:
    return error_reason(error)[:300]


class FirewallConsole(App[None]):
    """The operators' console."""

    TITLE = "AI Usage Firewall"
    CSS_PATH = "app.tcss"
    BINDINGS = [
        # Always shown in the shell's tab bar, so the footer keeps its room for the section's keys.
        Binding("q", "quit", "Quit", show=False),
        Binding("question_mark", "help", "Help: every key here", show=False),
        Binding("ctrl+t", "toggle_theme", "Theme", show=False),
        Binding("ctrl+r", "retry_database", "Retry DB", show=False),
    ]

    def __init__(self, settings: Settings, *, label: str | None = None) -> None:
        super().__init__()
        self.settings = settings
        if label:
            # A demo (or any non-production run) says so in every screen's title bar.
            self.title = f"{self.TITLE} · {label}"
        self.engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        self.context: ConsoleContext | None = None
        self.database_down = False
        self._retry_timer: Timer | None = None
        self.retention_scheduler: RetentionScheduler | None = None

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        if self._sessions is None:
            raise RuntimeError("the console is not mounted")
        return self._sessions

    @property
    def user(self) -> SignedInUser | None:
        return self.context.user if self.context is not None else None

    # -- lifecycle -------------------------------------------------------------------------------

    async def on_mount(self) -> None:
        self.sub_title = visible(self.settings.describe_database())
        self.theme = DARK_THEME
        self.engine = new_engine(self.settings)
        self._sessions = new_sessionmaker(self.engine)
        # With ENABLE_RETENTION_SCHEDULER=true the cleanup also runs while the console is open; the
        # run lock keeps it from doubling with the ingest server's or cron's.
        self.retention_scheduler = maybe_start_retention_scheduler(self.settings, self._sessions)
        await self.push_screen(LoginScreen())

    async def on_unmount(self) -> None:
        if self.retention_scheduler is not None:
            await self.retention_scheduler.shutdown()
        if self.engine is not None:
            await self.engine.dispose()

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """Show a toast; its text is always plain (``markup`` is ignored), controls made visible.

        Notifications carry names from agents, users and the database (a device
        called ``naughty[/]dev``, a file name, an error quoting a value): parsing
        them as markup would crash the console, so no notification is parsed.
        """
        super().notify(
            visible(message), title=visible(title), severity=severity, timeout=timeout, markup=False
        )

    def signed_in(self, user: SignedInUser) -> None:
        """Called by the login screen: open the shell for ``user``."""
        self.context = ConsoleContext(
            sessions=self.sessions, user=user, settings=self.settings, notify=self.notify
        )
        self.switch_screen(ShellScreen(self.context))

    def action_sign_out(self) -> None:
        self.after_stopping_busy_work("Sign out", self._sign_out)

    def _sign_out(self) -> None:
        self.context = None
        self.switch_screen(LoginScreen())

    # -- errors and the database banner ----------------------------------------------------------

    def on_worker_failed(self, message: WorkerFailed) -> None:
        self.report_failure(message.error)

    def report_failure(self, error: BaseException) -> None:
        """A lost database becomes the banner (with retry); a right taken away since sign-in signs out or
        drops to the viewer's keys; anything else a one-line notification."""
        if isinstance(error, NotAllowed):
            self.rights_lost(error)
            return
        if is_connection_error(error):
            log.warning("database unavailable", exc_info=error)
            self.database_lost(describe_database_error(self.settings, error))
            return
        log.error("worker failed", exc_info=error)
        self.notify(f"Something went wrong: {one_line(error)} (details in the log file)", severity="error")

    def rights_lost(self, refusal: NotAllowed) -> None:
        """``db/`` refused a change: the signed-in user lost a right since sign-in (in another console).

        A deleted or deactivated account is signed out; an administrator made a viewer
        gets the shell again with a viewer's keys. Open forms and dialogs are closed.
        """
        log.info("change refused: %s", refusal)
        if self.context is None:
            return
        if refusal.signed_out:
            self.context = None
            self.notify(f"{refusal}; you have been signed out.", severity="error", timeout=10)
            self.call_later(self._show_afresh, LoginScreen())
        elif self.context.user.is_admin:
            self.notify(f"{refusal}; the console now offers a viewer's keys.", severity="error", timeout=10)
            self.role_changed(is_admin=False)
        else:
            self.notify(str(refusal), severity="error")

    def role_changed(self, *, is_admin: bool) -> None:
        """The signed-in user's role is now ``is_admin``: rebuild the shell so its keys and palette follow."""
        if self.context is None:
            return
        self.context = replace(self.context, user=replace(self.context.user, is_admin=is_admin))
        self.call_later(self._show_afresh, ShellScreen(self.context))

    async def _show_afresh(self, screen: Screen) -> None:
        """Close every form and dialog, then show ``screen`` in place of the shell (or the login screen)."""
        while len(self.screen_stack) > 2:
            await self.pop_screen()
        await self.switch_screen(screen)

    def database_lost(self, reason: str) -> None:
        first = not self.database_down
        self.database_down = True
        shell = self._shell()
        if shell is not None:
            shell.database_lost(reason)
        elif first:
            self.notify(reason, severity="error", timeout=8)
        self._arm_retry()

    def _shell(self) -> ShellScreen | None:
        for screen in reversed(self.screen_stack):
            if isinstance(screen, ShellScreen):
                return screen
        return None

    def _arm_retry(self) -> None:
        # One pending retry at a time: failures arriving meanwhile must not keep postponing it.
        if self._retry_timer is None:
            self._retry_timer = self.set_timer(RETRY_SECONDS, self._retry_due)

    def _retry_due(self) -> None:
        self._retry_timer = None
        self.retry_database()

    def action_retry_database(self) -> None:
        self.retry_database()

    @work(exclusive=True, group="app-retry", exit_on_error=False)
    async def retry_database(self) -> None:
        assert self.engine is not None
        try:
            await check_connectable(self.engine, self.settings)
        except DatabaseError as error:
            if self.database_down:
                shell = self._shell()
                if shell is not None:
                    shell.database_lost(str(error))
                self._arm_retry()
            else:
                self.notify(str(error), severity="error")
            return
        if self.database_down:
            self.database_down = False
            shell = self._shell()
            if shell is not None:
                shell.post_message(DatabaseReachable())
            else:
                self.notify("The database is back.")

    # -- shell actions ---------------------------------------------------------------------------

    def action_help(self) -> None:
        """``?``: the keys of the screen in front (the section shown, or the dialog) and what it is for."""
        screen = self.screen
        if isinstance(screen, HelpScreen):
            return
        shell = self._shell()
        if isinstance(screen, ShellScreen):
            section = screen.current
            title, about = section.TITLE, section.HELP
        elif isinstance(screen, Dialog):
            title, about = screen.HELP_TITLE, screen.HELP
        else:
            title, about = (
                "Sign in",
                "Sign in with your console account (`python -m console create-admin` makes one).",
            )
        keys = keys_in_force(screen, anywhere_from=(self, *([shell] if shell is not None else [])))
        self.push_screen(HelpScreen(title, about, keys))

    def action_toggle_theme(self) -> None:
        self.theme = LIGHT_THEME if self.theme == DARK_THEME else DARK_THEME

    def busy_with(self) -> list[str]:
        """Work that quitting now would interrupt, by description."""
        shell = self._shell()
        if shell is None:
            return []
        return [what for section in shell.query(Section) if (what := section.busy_with())]

    async def action_quit(self) -> None:
        self.after_stopping_busy_work("Quit", self.exit)

    def after_stopping_busy_work(self, verb: str, then: Callable[[], object]) -> None:
        """Do ``then`` (quit, sign out) now; while a section is busy, ask first ("<verb> and stop …?").

        On yes, busy sections stop their work and are waited for (a cleanup finishes its
        batch and its records) before ``then``: leaving the shell would otherwise cancel
        their workers mid-way.
        """
        busy = self.busy_with()
        if not busy:
            then()
            return

        async def stop_then() -> None:
            await self._stop_busy_work()
            then()

        confirm_then(self, f"{verb} and stop {', '.join(busy)}?", stop_then)

    async def _stop_busy_work(self) -> None:
        shell = self._shell()
        if shell is None:
            return
        for section in shell.query(Section):
            if section.busy_with():
                await section.stop_busy_work()

    def _refused_under_dialog(self) -> bool:
        """True (after saying so) if a dialog or form is open over the shell.

        As in k9s, a palette command never changes the section underneath an open dialog: the
        dialog would then edit or filter what is no longer shown. The palette itself does not count.
        """
        shell = self._shell()
        if shell is None:
            return False
        stack = self.screen_stack
        above = stack[stack.index(shell) + 1 :]
        if not any(not isinstance(screen, CommandPalette) for screen in above):
            return False
        self.notify("Close the dialog first (Esc), then choose the command again.", severity="warning")
        return True

    def _go_to_section(self, section_type: type[Section]) -> None:
        shell = self._shell()
        if shell is None or self._refused_under_dialog():
            return
        shell.action_show_section(section_id(section_type))

    async def _run_section_command(self, command: SectionCommand, section_type: type[Section]) -> None:
        shell = self._shell()
        if shell is None or self._refused_under_dialog():
            return
        if command.admin_only and self.context is not None and not self.context.require_admin(command.title):
            return
        shell.action_show_section(section_id(section_type))
        section = await shell.mounted(section_type)
        await section.run_action(command.action)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Help", "The keys of this screen and what it is for", self.action_help)
        yield SystemCommand(
            "Toggle light/dark theme", "Switch between the light and dark themes", self.action_toggle_theme
        )
        yield SystemCommand(
            "Retry the database", "Check the database connection now", self.action_retry_database
        )
        shell = self._shell()
        if shell is None or self.context is None:
            return
        yield SystemCommand("Sign out", f"Sign {self.context.user.username} out", self.action_sign_out)
        for section_type in SECTIONS:
            key = f" (key {section_type.KEY})" if section_type.KEY else ""
            yield SystemCommand(
                f"Go to {section_type.TITLE}",
                f"Show the {section_type.TITLE} section{key}",
                partial(self._go_to_section, section_type),
            )
            for command in section_type.COMMANDS:
                if command.admin_only and not self.context.user.is_admin:
                    continue
                yield SystemCommand(
                    command.title, command.help, partial(self._run_section_command, command, section_type)
                )


def _log_file() -> Path:
    directory = data_dir_of(os.environ)
    directory.mkdir(parents=True, exist_ok=True)
    return directory / "console.log"


def run_console(settings: Settings, *, label: str | None = None) -> int:
    """Check the database, then run the app; a database problem is one line, exit 1.

    ``label`` (e.g. "DEMO") is shown in the title bar of every screen.
    """

    async def preflight() -> None:
        engine = new_engine(settings)
        try:
            await check_database(engine, settings)
        finally:
            await engine.dispose()

    try:
        asyncio.run(preflight())
    except DatabaseError as error:
        return fail(str(error), code=EXIT_FAILED)
    handler: logging.Handler
    try:
        handler = logging.FileHandler(_log_file(), encoding="utf-8")
    except OSError:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    FirewallConsole(settings, label=label).run()
    return EXIT_OK
