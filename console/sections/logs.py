"""Logs section: the log browser — keyset pages, filters, count, detail pane, follow mode, export.

All reads go through :mod:`db.logs`; each kind of work has its own worker group
(page, count, follow, export) so a new page cancels the previous page request
without touching a running export.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.timer import Timer
from textual.widgets import Button, DataTable, Input, Label, ProgressBar, Static

from console.dialogs.export import ExportChoice, ExportScreen
from console.dialogs.log_filters import LogFilterScreen
from console.sections.section import Section, SectionCommand
from console.untrusted import plain
from console.widgets.log_detail import LogDetail
from console.widgets.log_table import LogTable, row_key
from db import logs
from db.base import utcnow
from db.exports import ExportPathError
from db.logs import Cursor, LogCount, LogFilter, Page
from db.models import LogEntry

FOLLOW_SECONDS = 1.0
#: How long quitting waits for a stopped export to discard its file and write its audit row.
STOP_WAIT_SECONDS = 5.0
#: Below this terminal width the detail pane starts hidden (d shows it).
DETAIL_MIN_WIDTH = 110


class LogsSection(Section):
    """Browse ``log_entries`` newest first, a page at a time, under any combination of filters."""

    TITLE = "Logs"
    KEY = "2"
    COMMANDS = (
        SectionCommand(
            "Logs: filter",
            "Edit risk, tool, user, device, organisation, time, entity, sanitised",
            "edit_filters",
        ),
        SectionCommand("Logs: clear filters", "Show every row again", "clear_filters"),
        SectionCommand("Logs: search", "Focus the search box", "focus_search"),
        SectionCommand("Logs: follow new rows", "Tail rows as they arrive (toggle)", "toggle_follow"),
        SectionCommand("Logs: export", "Export the filtered view to CSV or JSON Lines", "export"),
        SectionCommand("Logs: newest page", "Go back to the newest rows", "newest_page"),
        SectionCommand(
            "Logs: toggle detail pane", "Show or hide the selected row's metadata", "toggle_detail"
        ),
    )
    BINDINGS = [
        Binding("n", "older_page", "Older"),
        Binding("p", "newer_page", "Newer"),
        Binding("g", "newest_page", "Newest"),
        Binding("f", "edit_filters", "Filter"),
        Binding("c", "clear_filters", "Clear"),
        Binding("slash", "focus_search", "Search"),
        Binding("t", "toggle_follow", "Follow"),
        Binding("e", "export", "Export"),
        Binding("d", "toggle_detail", "Detail"),
        Binding("x", "cancel_export", "Stop export", show=False),
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filters = LogFilter()
        self.page_state = Page(rows=[], has_newer=False, has_older=False)
        self.page_number = 1
        self.count_result: LogCount | None = None
        self.following = False
        self.loaded = False
        self.last_export: tuple[Path, int] | None = None
        #: (written, total) of the running or last export, as its progress bar shows it.
        self.export_progress: tuple[int, int] | None = None
        self._follow_timer: Timer | None = None
        self._rows: dict[str, LogEntry] = {}
        self._suggestions: dict[str, list[str]] = {}

    def compose(self) -> ComposeResult:
        with Horizontal(id="logs-bar"):
            yield Input(
                placeholder="/ search: user, device, tool (prefix*), org, entity type, event id",
                id="logs-search",
            )
            yield Static("", id="logs-summary")
        with Horizontal(id="logs-body"):
            yield LogTable(id="log-table")
            yield LogDetail(id="log-detail")
        with Horizontal(id="export-bar"):
            yield Label("", id="export-label")
            yield ProgressBar(id="export-progress", show_eta=False)
            yield Button("Stop (x)", id="export-stop")

    def on_mount(self) -> None:
        self.query_one("#export-bar").display = False
        self.query_one(LogDetail).display = self.app.size.width >= DETAIL_MIN_WIDTH

    def focus_first(self) -> None:
        self.query_one(LogTable).focus()

    def reload(self) -> None:
        # Coming back to the section keeps an older page where it was; the newest page is refreshed.
        if not self.loaded:
            self.load_suggestions()
        elif self.page_number != 1:
            return
        self.load_page(None, older=True, number=1)
        self.load_count()

    def busy_with(self) -> str | None:
        return "an export" if self.running_workers("logs-export") else None

    # -- filters ---------------------------------------------------------------------------------

    def apply_filters(self, filters: LogFilter) -> None:
        """Show the first page of ``filters`` (and count it)."""
        self.filters = filters
        search = self.query_one("#logs-search", Input)
        if search.value != filters.search:
            search.value = filters.search
        self.load_page(None, older=True, number=1)
        self.load_count()

    def action_edit_filters(self) -> None:
        def done(result: LogFilter | None) -> None:
            if result is not None:
                self.apply_filters(result)

        self.app.push_screen(LogFilterScreen(self.filters, self._suggestions), done)

    def action_clear_filters(self) -> None:
        self.apply_filters(LogFilter())

    def action_focus_search(self) -> None:
        self.query_one("#logs-search", Input).focus()

    @on(Input.Submitted, "#logs-search")
    def _search(self, event: Input.Submitted) -> None:
        self.apply_filters(replace(self.filters, search=event.value))
        self.query_one(LogTable).focus()

    # -- paging ----------------------------------------------------------------------------------

    def action_older_page(self) -> None:
        if self.page_state.has_older and self.page_state.last is not None:
            self.load_page(self.page_state.last, older=True, number=self.page_number + 1)
        else:
            self.notify("This is the oldest page.", timeout=2)

    def action_newer_page(self) -> None:
        if self.page_state.has_newer and self.page_state.first is not None:
            self.load_page(self.page_state.first, older=False, number=max(1, self.page_number - 1))
        else:
            self.notify("This is the newest page.", timeout=2)

    def action_newest_page(self) -> None:
        self.load_page(None, older=True, number=1)

    @work(exclusive=True, group="logs-page", exit_on_error=False)
    async def load_page(self, cursor: Cursor | None, *, older: bool, number: int) -> None:
        self._summary(loading=True)
        async with self.context.sessions() as session:
            if older:
                result = await logs.page(session=session, filters=self.filters, after=cursor)
            else:
                result = await logs.page(session=session, filters=self.filters, before=cursor)
        self.loaded = True
        self.page_number = 1 if not result.has_newer else number
        self._show(result)

    def _show(self, result: Page) -> None:
        self.page_state = result
        self._rows = {row_key(entry): entry for entry in result.rows}
        self.query_one(LogTable).show_entries(result.rows)
        if not result.rows:
            self.query_one(LogDetail).show(None)
        self._summary()

    @work(exclusive=True, group="logs-count", exit_on_error=False)
    async def load_count(self) -> None:
        self.count_result = None
        self._summary()
        async with self.context.sessions() as session:
            self.count_result = await logs.count(session=session, filters=self.filters)
        self._summary()

    @work(exclusive=True, group="logs-suggest", exit_on_error=False)
    async def load_suggestions(self) -> None:
        since = utcnow() - timedelta(days=30)
        async with self.context.sessions() as session:
            for name, dimension in (("tool", "tool"), ("entity_type", "entity")):
                self._suggestions[name] = await logs.known_values(
                    session=session, dimension=dimension, since=since
                )

    def _summary(self, *, loading: bool = False) -> None:
        if self.count_result is None:
            counted = "counting…"
        else:
            counted = f"{self.count_result.label()} rows"
        state = "loading…" if loading else f"page {self.page_number}"
        if self.loaded and not self.page_state.rows and not loading:
            state = "no rows match" if not self.filters.is_empty else "no logs yet"
        # The filter quotes what the operator typed ("[/]" is a fine search): plain text, not markup.
        summary = Text.assemble(plain(self.filters.describe()), f" · {counted} · {state}")
        if self.following:
            summary.append(" · ").append(" FOLLOW ", style="bold reverse")
        self.query_one("#logs-summary", Static).update(summary)

    # -- detail pane -----------------------------------------------------------------------------

    @on(DataTable.RowHighlighted, "#log-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value
        entry = self._rows.get(key) if key is not None else None
        self.query_one(LogDetail).show(logs.entry_to_dict(entry) if entry is not None else None)

    def action_toggle_detail(self) -> None:
        detail = self.query_one(LogDetail)
        detail.display = not detail.display

    # -- follow mode -----------------------------------------------------------------------------

    def action_toggle_follow(self) -> None:
        self.following = not self.following
        if self.following:
            self.notify("Following new rows (t to stop).", timeout=2)
            self.load_page(None, older=True, number=1)
            self._arm_follow()
        elif self._follow_timer is not None:
            self._follow_timer.stop()
        self._summary()

    def _arm_follow(self) -> None:
        if self._follow_timer is not None:
            self._follow_timer.stop()
        if self.following:
            self._follow_timer = self.set_timer(FOLLOW_SECONDS, self.poll_new_rows)

    @work(exclusive=True, group="logs-follow", exit_on_error=False)
    async def poll_new_rows(self) -> None:
        try:
            if self.page_number != 1 or getattr(self.app, "database_down", False):
                return
            async with self.context.sessions() as session:
                fresh = await logs.rows_after(
                    session=session, filters=self.filters, cursor=self.page_state.first
                )
            if fresh and self.following:
                rows = [*fresh, *self.page_state.rows][: logs.PAGE_SIZE]
                has_older = (
                    self.page_state.has_older or len(fresh) + len(self.page_state.rows) > logs.PAGE_SIZE
                )
                self._show(Page(rows=rows, has_newer=False, has_older=has_older))
                if self.count_result is not None and self.count_result.exact:
                    self.count_result = LogCount(self.count_result.value + len(fresh))
                    self._summary()
        finally:
            self._arm_follow()

    # -- export ----------------------------------------------------------------------------------

    def action_export(self) -> None:
        if self.busy_with():
            self.notify("An export is already running (x stops it).", severity="warning")
            return

        def chosen(choice: ExportChoice | None) -> None:
            if choice is not None:
                self.export_to(choice)

        self.app.push_screen(ExportScreen(self.filters.describe(), self.context.settings), chosen)

    @work(exclusive=True, group="logs-export", exit_on_error=False)
    async def export_to(self, choice: ExportChoice) -> None:
        """Export the current filtered view (as it is now) to the chosen file."""
        filters = self.filters
        name = choice.path.name
        bar = self.query_one("#export-bar")
        progress = self.query_one("#export-progress", ProgressBar)
        label = self.query_one("#export-label", Label)
        progress.update(total=None, progress=0)
        bar.display = True
        label.update(plain(f"Exporting to {name}: counting rows…"))

        def advance(written: int, total: int) -> None:
            self.export_progress = (written, total)
            progress.update(total=max(1, total), progress=written)
            label.update(plain(f"Exporting to {name}: {written:,} of {total:,} rows"))

        try:
            async with self.context.sessions() as session:
                written = await logs.export(
                    session=session,
                    filters=filters,
                    path=choice.path,
                    fmt=choice.fmt,
                    settings=self.context.settings,
                    actor=self.context.actor,
                    replace=choice.replace,
                    progress=advance,
                )
        except ExportPathError as error:
            self.notify(f"Nothing exported: {error}.", severity="error", timeout=8)
            return
        # NotAllowed (the account deactivated since sign-in) goes on to the app, which signs out.
        finally:
            bar.display = False
        self.last_export = (choice.path, written)
        self.notify(f"Exported {written:,} rows to {choice.path}")

    async def stop_busy_work(self) -> None:
        """Stop a running export and wait (briefly) until it is discarded and its audit row written.

        Called once quitting or signing out is confirmed, so the audit trail says "cancelled".
        """
        await self.stop_and_wait("logs-export", self.action_cancel_export, seconds=STOP_WAIT_SECONDS)

    @on(Button.Pressed, "#export-stop")
    def action_cancel_export(self) -> None:
        for worker in self.running_workers("logs-export"):
            worker.cancel()
            self.query_one("#export-bar").display = False
            self.notify("Export stopped; no file was written.", severity="warning")
