"""Logs section: the log browser — keyset pages, filters, count, detail pane, follow mode, export.

All reads go through :mod:`db.logs`; each kind of work has its own worker group
(page, count, follow, export) so a new page cancels the previous page request
without touching a running export. A key press reads at most one page: moving the
cursor, opening the detail or the full record and filtering by a cell use the
rows already shown (a new filter also counts its rows, in its own worker).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.timer import Timer
from textual.widgets import Button, DataTable, Input, Label, ProgressBar, Static

from console.dialogs.export import ExportChoice, ExportScreen
from console.dialogs.log_filters import LogFilterScreen
from console.dialogs.log_record import LogRecordScreen
from console.sections.section import Section, SectionCommand
from console.untrusted import plain
from console.widgets.keyed_table import KeyedTable
from console.widgets.log_detail import LogDetail
from console.widgets.log_table import TIME_COLUMN, LogTable, row_key
from db import logs
from db.base import utcnow
from db.exports import ExportPathError
from db.logs import Cursor, LogCount, LogFilter, Page
from db.models import LogEntry
from db.wording import counted

FOLLOW_SECONDS = 1.0
#: How long quitting waits for a stopped export to discard its file and write its audit row.
STOP_WAIT_SECONDS = 5.0
#: Below this terminal width the detail pane starts hidden (d shows it).
DETAIL_MIN_WIDTH = 110
#: The detail pane takes a quarter of the terminal's width, within these bounds (the table the rest).
DETAIL_WIDTH_MIN = 36
DETAIL_WIDTH_MAX = 80

HELP = f"""\
Every row the agents sent, **newest first**, one page of {logs.PAGE_SIZE} at a time: `n` the next page,
`p` the previous one, `g` the newest page, `G` the oldest. Home/End go to the first and last row of the page.

**Filters**: `f` edits them all (risk, tool, user, device, organisation, entity type, time, sanitised,
search; times in UTC); `F` filters by the cell under the cursor (←/→ choose the column: risk, user,
tool, device, organisation, the row's first entity type, sanitised); `c` clears every filter.

**Search** (`/`, Enter applies, Esc leaves the box, ctrl+u empties it): a user, device or tool exactly,
or by prefix with a trailing `*` (`alice*`); an organisation; an entity type (`EMAIL`); an event id.

**Sorting**: logs sort by time only. `s` on the Time column flips newest first / oldest first for the
whole result (the database walks its index the other way). No index orders millions of rows by user,
tool or any other column (docs/index-policy.md), so those columns do not sort.

**The row**: the pane on the right shows the selected row (`d` shows or hides it; it starts
hidden below {DETAIL_MIN_WIDTH} columns; Tab moves into it to scroll). Enter or `z` opens it full
screen; `J` shows the raw JSON instead of the fields. `y` copies the cell.

**Follow** (`t`): new rows appear at the top as they arrive. **Export** (`e`): the filtered view, as it
is when the export starts, to CSV or JSON Lines in the export folder (`AIFW_EXPORT_DIR`, else
Downloads, else your home); `x` stops it.

**The count** is exact up to {logs.COUNT_CAP:,} rows; beyond, it says `{logs.COUNT_CAP:,}+` or the database's
estimate (`≈`).
"""


class LogsSection(Section):
    """Browse ``log_entries`` newest (or oldest) first, a page at a time, under any combination of filters."""

    TITLE = "Logs"
    ORDER_COLUMN = TIME_COLUMN
    ORDER_INDEXES = "ix_log_entries_timestamp_id and the *_timestamp composites"
    KEY = "2"
    HELP = HELP
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
        SectionCommand("Logs: newest page", "Go to the newest rows", "newest_page"),
        SectionCommand("Logs: oldest page", "Go to the oldest rows", "oldest_page"),
        SectionCommand("Logs: oldest or newest first", "Flip the order of the rows by time", "flip_order"),
        SectionCommand("Logs: toggle detail pane", "Show or hide the selected row", "toggle_detail"),
        SectionCommand("Logs: open the row full screen", "Every field of the selected row", "full_record"),
        SectionCommand("Logs: raw JSON", "Show the selected row as raw JSON (toggle)", "toggle_raw"),
    )
    # The footer (80 columns) shows the keys with show=True; ? lists them all.
    BINDINGS = [
        Binding("n", "next_page", "Next page"),
        Binding("p", "previous_page", "Prev page"),
        Binding("f", "edit_filters", "Filter"),
        Binding("slash", "focus_search", "Search"),
        Binding("t", "toggle_follow", "Follow"),
        Binding("e", "export", "Export"),
        Binding("d", "toggle_detail", "Detail"),
        Binding("g", "newest_page", "Newest page", show=False),
        Binding("G", "oldest_page", "Oldest page", show=False),
        Binding("c", "clear_filters", "Clear all filters", show=False),
        Binding("z", "full_record", "Row full screen", show=False),
        Binding("J", "toggle_raw", "Raw JSON of the row (toggle)", show=False),
        Binding("x", "cancel_export", "Stop the export", show=False),
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filters = LogFilter()
        self.page_state = Page(rows=[], has_newer=False, has_older=False)
        #: The page shown, counted from the first page of the order, or from its last (``from_end``).
        self.page_number = 1
        self.from_end = False
        #: The order of the rows: newest first (the default), or oldest first (``s`` on Time).
        self.newest_first = True
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
        width = self.app.size.width
        self.query_one(LogDetail).display = width >= DETAIL_MIN_WIDTH
        self._fit_detail(width)
        table = self.query_one(LogTable)
        table.order_shown = (TIME_COLUMN, True)
        table.label_headers()

    def on_resize(self, event: events.Resize) -> None:
        self._fit_detail(event.size.width)

    def _fit_detail(self, width: int) -> None:
        # The pane follows the terminal: a quarter of it, never too narrow to read nor wider than a record.
        self.query_one(LogDetail).styles.width = max(DETAIL_WIDTH_MIN, min(DETAIL_WIDTH_MAX, width // 4))

    def focus_first(self) -> None:
        self.query_one(LogTable).focus()

    def reload(self) -> None:
        # Coming back to the section keeps a page further on where it was; the first page is refreshed.
        if not self.loaded:
            self.load_suggestions()
        elif not self.on_first_page:
            return
        self.load_page(None)
        self.load_count()

    @property
    def on_first_page(self) -> bool:
        """The first page of the order is shown (the newest rows, when newest first)."""
        return not self.from_end and self.page_number == 1

    def busy_with(self) -> str | None:
        return "an export" if self.running_workers("logs-export") else None

    # -- filters ---------------------------------------------------------------------------------

    def apply_filters(self, filters: LogFilter) -> None:
        """Show the first page of ``filters`` (and count it)."""
        self.filters = filters
        search = self.query_one("#logs-search", Input)
        if search.value != filters.search:
            search.value = filters.search
        self.load_page(None)
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

    # -- paging and order -------------------------------------------------------------------------

    def _end_name(self, *, last: bool) -> str:
        """ "newest" or "oldest": the first (or ``last``) page's rows in the order shown."""
        return "oldest" if last == self.newest_first else "newest"

    def action_next_page(self) -> None:
        if self.page_state.has_next and self.page_state.last is not None:
            number = self.page_number - 1 if self.from_end else self.page_number + 1
            self.load_page(self.page_state.last, number=number, from_end=self.from_end)
        else:
            self.notify(f"This is the {self._end_name(last=True)} page.", timeout=2)

    def action_previous_page(self) -> None:
        if self.page_state.has_previous and self.page_state.first is not None:
            number = self.page_number + 1 if self.from_end else max(1, self.page_number - 1)
            self.load_page(self.page_state.first, forward=False, number=number, from_end=self.from_end)
        else:
            self.notify(f"This is the {self._end_name(last=False)} page.", timeout=2)

    def action_newest_page(self) -> None:
        if self.newest_first:
            self.load_page(None)
        else:
            self.load_page(None, last=True, from_end=True)

    def action_oldest_page(self) -> None:
        if self.newest_first:
            self.load_page(None, last=True, from_end=True)
        else:
            self.load_page(None)

    def flip_order(self) -> None:
        self.action_flip_order()

    def action_flip_order(self) -> None:
        """Newest first ⇄ oldest first, for the whole result: the first page of the new order."""
        if self.following:
            self.notify("Follow mode shows the newest rows first: t stops it.", severity="warning")
            return
        # No toast: the Time header's arrow and the summary ("oldest first") say it, and a toast to draw
        # would slow the key press down.
        self.set_order(newest_first=not self.newest_first)
        self.load_page(None)

    def set_order(self, *, newest_first: bool) -> None:
        """Order the pages by time this way from the next page read; the Time header shows the arrow with
        that page's rows (one redraw of the table, not two)."""
        self.newest_first = newest_first
        self.query_one(LogTable).order_shown = (TIME_COLUMN, newest_first)

    @work(exclusive=True, group="logs-page", exit_on_error=False)
    async def load_page(
        self,
        cursor: Cursor | None,
        *,
        forward: bool = True,
        last: bool = False,
        number: int = 1,
        from_end: bool = False,
    ) -> None:
        """Show a page of the current order: the first (no cursor), the last (``last``), or the one
        after (``forward``) or before ``cursor``; ``number`` counts pages from the start or the end."""
        self._summary(loading=True)
        newest_first = self.newest_first
        async with self.context.sessions() as session:
            if last:
                result = await logs.last_page(
                    session=session, filters=self.filters, newest_first=newest_first
                )
            elif forward:
                result = await logs.page(
                    session=session, filters=self.filters, after=cursor, newest_first=newest_first
                )
            else:
                result = await logs.page(
                    session=session, filters=self.filters, before=cursor, newest_first=newest_first
                )
        self.loaded = True
        if not result.has_previous:
            number, from_end = 1, False
        elif from_end and not result.has_next:
            number = 1
        self.page_number, self.from_end = number, from_end
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

    def page_label(self) -> str:
        """Where the page shown is: "page 3", "oldest page", "page 2 from the end"."""
        if not self.from_end:
            return f"page {self.page_number}"
        if self.page_number == 1:
            return f"{self._end_name(last=True)} page"
        return f"page {self.page_number} from the end"

    def _summary(self, *, loading: bool = False) -> None:
        if self.count_result is None:
            how_many = "counting…"
        elif self.count_result.exact:
            how_many = counted(self.count_result.value, "row")
        else:
            how_many = f"{self.count_result.label()} rows"
        state = "loading…" if loading else self.page_label()
        if self.loaded and not self.page_state.rows and not loading:
            state = "no rows match" if not self.filters.is_empty else "no logs yet"
        elif not self.newest_first:
            state += " · oldest first"
        # The filter quotes what the operator typed ("[/]" is a fine search): plain text, not markup.
        summary = Text.assemble(plain(self.filters.describe()), f" · {how_many} · {state}")
        if self.following:
            summary.append(" · ").append(" FOLLOW ", style="bold reverse")
        self.query_one("#logs-summary", Static).update(summary)

    # -- the row: detail pane, full screen, filter by cell ----------------------------------------

    @on(DataTable.RowHighlighted, "#log-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value
        self.query_one(LogDetail).show(self._rows.get(key) if key is not None else None)

    def selected_entry(self) -> LogEntry | None:
        """The row under the table's cursor, if any."""
        key = self.query_one(LogTable).selected_key
        return self._rows.get(key) if key is not None else None

    def action_toggle_detail(self) -> None:
        detail = self.query_one(LogDetail)
        detail.display = not detail.display
        if not detail.display and detail.has_focus:
            self.focus_first()

    def action_toggle_raw(self) -> None:
        detail = self.query_one(LogDetail)
        detail.set_raw(not detail.raw)
        if not detail.display:
            detail.display = True
        self.notify(
            "The row as raw JSON (J again: its fields)." if detail.raw else "The row's fields.", timeout=2
        )

    @on(DataTable.RowSelected, "#log-table")
    def _row_chosen(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_full_record()

    def action_full_record(self) -> None:
        entry = self.selected_entry()
        if entry is None:
            self.notify("Select a row to open it.", severity="warning", timeout=3)
            return
        self.app.push_screen(LogRecordScreen(entry, raw=self.query_one(LogDetail).raw))

    def filter_by_cell(self, request: KeyedTable.FilterRequested) -> None:
        """``F``: keep the rows whose column holds this row's value (risk, user, tool, device, org,
        first entity type, sanitised); time is a range, set with ``f``."""
        entry = self._rows.get(request.row_key)
        if entry is None:
            return
        column = request.column
        if column == TIME_COLUMN:
            self.notify("To filter by time, press f and fill From and Until (UTC).", timeout=4)
            return
        if column == "entities" and not entry.detected_entity_types:
            self.notify("This row has no entity types to filter by.", severity="warning", timeout=3)
            return
        by_column: dict[str, dict[str, Any]] = {
            "risk": {"risk_levels": frozenset({entry.risk_level})},
            "user": {"user": entry.user_id},
            "tool": {"tool": entry.tool_name},
            "device": {"device": entry.device_id},
            "org": {"organization": entry.organization_id},
            "entities": {"entity_type": (entry.detected_entity_types or [""])[0]},
            "sanitised": {"sanitized": bool(entry.was_sanitized)},
        }
        filters = replace(self.filters, **by_column[column])
        self.apply_filters(filters)
        # Notifications are never parsed as markup (the app's notify): the agent's value is safe here.
        self.notify(f"Showing {filters.describe()} (c clears every filter).", timeout=3)

    # -- follow mode -----------------------------------------------------------------------------

    def action_toggle_follow(self) -> None:
        self.following = not self.following
        if self.following:
            self.notify("Following new rows (t to stop).", timeout=2)
            if not self.newest_first:
                self.set_order(newest_first=True)
            self.load_page(None)
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
            if not (self.on_first_page and self.newest_first) or getattr(self.app, "database_down", False):
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
            label.update(plain(f"Exporting to {name}: {written:,} of {counted(total, 'row')}"))

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
        self.notify(f"Exported {counted(written, 'row')} to {choice.path}")

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
