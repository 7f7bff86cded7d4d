"""The base class of sections (worker failures go to the app) and their palette commands."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from textual import on
from textual.containers import Vertical
from textual.timer import Timer
from textual.widgets import Input, Select
from textual.worker import Worker

from console.context import ConsoleContext
from console.messages import ForwardsWorkerFailures
from console.widgets.keyed_table import KeyedTable

Shown = TypeVar("Shown")


@dataclass(frozen=True)
class SectionCommand:
    """A command-palette entry of a section: runs ``action_<action>`` on the section."""

    title: str
    help: str
    action: str
    admin_only: bool = False


class Section(ForwardsWorkerFailures, Vertical):
    """Base of every section: holds the context and forwards failed workers to the app."""

    TITLE: ClassVar[str] = ""
    KEY: ClassVar[str | None] = None
    COMMANDS: ClassVar[tuple[SectionCommand, ...]] = ()
    #: Actions only administrators may run: their keys are hidden from viewers (footer and ``?``);
    #: the admin-only COMMANDS' actions are added to these.
    ADMIN_ACTIONS: ClassVar[frozenset[str]] = frozenset()
    #: What ``?`` says about this section above its list of keys (Markdown, the console's own words).
    HELP: ClassVar[str] = ""
    #: A paged section's one sortable column (its time), and the indexes that order its pages by it:
    #: ``s`` there flips the order (:meth:`flip_order`), ``s`` elsewhere says why it does not sort.
    ORDER_COLUMN: ClassVar[str | None] = None
    ORDER_INDEXES: ClassVar[str] = ""

    @classmethod
    def admin_actions(cls) -> frozenset[str]:
        """Every action of this section that only administrators may run."""
        return cls.ADMIN_ACTIONS | {command.action for command in cls.COMMANDS if command.admin_only}

    def __init__(self, context: ConsoleContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_class("section")
        self.context = context
        self._refresh_timer: Timer | None = None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Viewers see only what they can do: an administrator's key is neither shown nor run.
        if action in self.admin_actions() and not self.context.user.is_admin:
            return False
        return super().check_action(action, parameters)

    @on(KeyedTable.FilterRequested)
    def _filter_requested(self, request: KeyedTable.FilterRequested) -> None:
        request.stop()
        self.filter_by_cell(request)

    @on(KeyedTable.SortRequested)
    def _sort_requested(self, request: KeyedTable.SortRequested) -> None:
        request.stop()
        if request.column == self.ORDER_COLUMN:
            self.flip_order()
            return
        titles = {spec.column_key: spec.title for spec in request.table.specs}
        title, by = titles.get(request.column, request.column), titles.get(self.ORDER_COLUMN or "", "time")
        self.context.notify(
            f"{self.TITLE} sort by time only: no index orders every row by {title}, so sorting by it would "
            f"read all the matches ({self.ORDER_INDEXES} order them by time; docs/index-policy.md). "
            f"s on {by} flips the order; F filters by the cell.",
            timeout=6,
        )

    def flip_order(self) -> None:
        """Newest first ⇄ oldest first for the whole view (paged sections with an ``ORDER_COLUMN``)."""

    def filter_by_cell(self, request: KeyedTable.FilterRequested) -> None:
        """Narrow the view to rows whose ``request.column`` is ``request.value`` (``F``).

        By default the value goes into the section's search box (``search_box``), which is
        submitted; a section with filters of its own overrides this.
        """
        box = self.search_box()
        if box is None:
            self.context.notify("This list cannot be filtered by a cell.", severity="warning")
            return
        box.value = request.value
        box.post_message(Input.Submitted(box, box.value))
        self.context.notify(f"Searching for {request.value!r} (an empty search shows all).", timeout=3)

    def search_box(self) -> Input | None:
        """The section's search box (the first Input whose id ends in ``-search``), if it has one."""
        for box in self.query(Input):
            if (box.id or "").endswith("-search"):
                return box
        return None

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

    def is_shown(self) -> bool:
        """Whether the section is on screen: attached, on the current screen, its switcher's current one."""
        return (
            self.is_attached and self.screen.is_current and getattr(self.parent, "current", None) == self.id
        )

    def refresh_while_shown(self, seconds: float, refresh: Callable[[], object]) -> None:
        """Call ``refresh`` in ``seconds`` if the section is shown then; if not, look again as late.

        Call it when the last refresh has finished (in its ``finally``), so slow queries never pile
        up; a hidden section costs nothing.
        """
        if self._refresh_timer is not None:
            self._refresh_timer.stop()

        def due() -> None:
            if self.is_shown():
                refresh()
            else:
                self.refresh_while_shown(seconds, refresh)

        self._refresh_timer = self.set_timer(seconds, due)

    def replace_options(
        self, select: Select[str], options: list[tuple[Any, str]], values: list[str], *, fallback: str
    ) -> None:
        """Give ``select`` new ``options`` (whose values are ``values``, ``fallback`` aside), keeping its
        value if still offered, else ``fallback``; without posting ``Select.Changed``."""
        current = select.value
        with self.prevent(Select.Changed):
            select.set_options(options)
            select.value = current if current in values else fallback

    def selected_row(self, table: KeyedTable, rows: Mapping[str, Shown], what: str) -> Shown | None:
        """The row under ``table``'s cursor, from ``rows`` (by key); if none, say what to select ``what``.

        ``what`` completes "Select … to": "a user to edit", "a device to delete".
        """
        key = table.selected_key
        if key is None or key not in rows:
            self.context.notify(f"Select {what}.", severity="warning")
            return None
        return rows[key]
