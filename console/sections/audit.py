"""Audit section: the trail of changes made from the console and the CLI — who, when, what, and the
before/after of each changed field (never a password or a token) — newest first, filterable.

Reads go through :func:`db.audit.list_changes` a page at a time (keyset on
``occurred_at``, id, newest or oldest first: the occurred-at index serves both); the
detail line under the table shows the selected row's changes, Enter all of them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, DataTable, Input, Select, Static

from console.dialogs.dialog import Dialog
from console.sections.section import Section, SectionCommand
from console.untrusted import plain
from console.widgets.keyed_table import KeyedTable, TableColumn
from console.widgets.time_format import when
from db.audit import AUDIT_ENTITY_TYPES, AUDIT_SOURCES, AuditFilter, AuditPage, describe_changes, list_changes
from db.models import AuditEvent
from db.wording import counted

ANY = "any"
#: The one column an index serves an order for (``ix_audit_events_occurred_at``): the time.
TIME_COLUMN = "When (UTC)"
COLUMNS = (
    TableColumn(TIME_COLUMN, width=19),
    TableColumn("Actor", width=8, max_width=32),
    TableColumn("Source", width=7),
    TableColumn("Action", width=12, max_width=40),
    TableColumn("Entity", width=8),
    TableColumn("Id", width=8, stretch=True),
)


class AuditSection(Section):
    """The audit trail of changes made from the console and the CLI."""

    TITLE = "Audit"
    ORDER_COLUMN = TIME_COLUMN
    ORDER_INDEXES = "ix_audit_events_occurred_at"
    KEY = None
    COMMANDS = (
        SectionCommand(
            "Audit: search", "Filter the audit trail by actor, action or entity id", "focus_search"
        ),
        SectionCommand("Audit: next page", "The next page in the order shown", "next_page"),
        SectionCommand("Audit: newest changes", "Back to the newest changes", "newest_page"),
        SectionCommand("Audit: oldest changes", "The oldest changes first", "oldest_page"),
    )
    BINDINGS = [
        Binding("n", "next_page", "Next page"),
        Binding("g", "newest_page", "Newest"),
        Binding("G", "oldest_page", "Oldest"),
        Binding("slash", "focus_search", "Search"),
        Binding("r", "reload", "Reload", show=False),
    ]
    HELP = """\
Every change made from the console or the command line: who, when, where, what, and below the
table the before and after of each field (never a password or a token). Enter shows a change
in full. `/` searches actors, actions and entity ids (`F` on a cell searches for its value);
the boxes filter by entity and source. The trail is read a page at a time: `n` the next page,
`g` the newest changes, `G` the oldest first. `s` on the time column flips the order (the
occurred-at index serves both); the other columns have no index to sort the whole trail by.
"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filters = AuditFilter()
        self.page = AuditPage(rows=(), has_more=False)
        self.page_number = 1
        self.rows: dict[str, AuditEvent] = {}

    @property
    def oldest_first(self) -> bool:
        """The order of the pages shown: oldest first (``G``) or newest first (``g``, the default)."""
        return self.page.oldest_first

    def compose(self) -> ComposeResult:
        with Horizontal(classes="admin-bar"):
            yield Input(placeholder="/ search: actor, action or entity id", id="audit-search")
            yield Select(
                [(kind, kind) for kind in (ANY, *AUDIT_ENTITY_TYPES)],
                value=ANY,
                allow_blank=False,
                id="audit-entity",
            )
            yield Select(
                [(kind, kind) for kind in (ANY, *AUDIT_SOURCES)],
                value=ANY,
                allow_blank=False,
                id="audit-source",
            )
        yield Static("", id="audit-summary", classes="admin-summary")
        yield KeyedTable(*COLUMNS, id="audit-table", paged=True)
        yield Static("", id="audit-detail", classes="admin-detail-line")

    @property
    def table(self) -> KeyedTable:
        return self.query_one("#audit-table", KeyedTable)

    def focus_first(self) -> None:
        self.table.focus()

    def reload(self) -> None:
        self.load_page(None, number=1, oldest_first=self.oldest_first)

    def action_reload(self) -> None:
        self.reload()

    def action_focus_search(self) -> None:
        self.query_one("#audit-search", Input).focus()

    def action_newest_page(self) -> None:
        self.load_page(None, number=1, oldest_first=False)

    def action_oldest_page(self) -> None:
        self.load_page(None, number=1, oldest_first=True)

    def action_next_page(self) -> None:
        if self.page.has_more and self.page.rows:
            last = self.page.rows[-1]
            self.load_page(
                (last.occurred_at, last.id), number=self.page_number + 1, oldest_first=self.oldest_first
            )
        else:
            edge = "newest" if self.oldest_first else "oldest"
            self.context.notify(f"These are the {edge} changes.", timeout=2)

    def flip_order(self) -> None:
        self.load_page(None, number=1, oldest_first=not self.oldest_first)

    @on(DataTable.RowSelected, "#audit-table")
    def _row_opened(self, event: DataTable.RowSelected) -> None:
        """Enter shows the change in full (every field's before and after)."""
        event.stop()
        row = self.rows.get(str(event.row_key.value)) if event.row_key is not None else None
        if row is not None:
            self.app.push_screen(AuditDetailScreen(row))

    @on(Input.Submitted, "#audit-search")
    @on(Select.Changed)
    def _filters_changed(self) -> None:
        entity = self.query_one("#audit-entity", Select).value
        source = self.query_one("#audit-source", Select).value
        self.filters = AuditFilter(
            search=self.query_one("#audit-search", Input).value.strip(),
            entity_type=None if entity in (ANY, Select.BLANK) else str(entity),
            source=None if source in (ANY, Select.BLANK) else str(source),
        )
        self.load_page(None, number=1, oldest_first=self.oldest_first)

    @work(exclusive=True, group="audit-page", exit_on_error=False)
    async def load_page(
        self, past: tuple[datetime, uuid.UUID] | None, *, number: int, oldest_first: bool = False
    ) -> None:
        async with self.context.sessions() as session:
            page = await list_changes(
                session=session, filters=self.filters, past=past, oldest_first=oldest_first
            )
        self.page = page
        self.page_number = number
        self.rows = {str(row.id): row for row in page.rows}
        table = self.table
        table.order_shown = (TIME_COLUMN, not oldest_first)
        table.show(
            (
                (
                    str(row.id),
                    (
                        when(row.occurred_at, precision="second"),
                        plain(row.actor),
                        plain(row.source),
                        plain(row.action),
                        plain(row.entity_type),
                        plain(row.entity_id),
                    ),
                )
                for row in page.rows
            ),
            keep="top",
        )
        table.label_headers()
        order = "oldest first" if oldest_first else "newest first"
        more = " · n next page" if page.has_more else " · the last page"
        self.query_one("#audit-summary", Static).update(
            f"page {number}, {order}: {counted(len(page.rows), 'change')}{more}"
        )
        if not page.rows:
            self.query_one("#audit-detail", Static).update("No change recorded matches.")

    @on(DataTable.RowHighlighted, "#audit-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        row = self.rows.get(str(event.row_key.value)) if event.row_key is not None else None
        if row is not None:
            lines = describe_changes(row.changes or {}) or ["(no field changes recorded)"]
            self.query_one("#audit-detail", Static).update(
                plain(f"{row.action} {row.entity_type} {row.entity_id} by {row.actor}: " + " · ".join(lines))
            )


class AuditDetailScreen(Dialog[None]):
    """One audit row in full: who, when, where, what, and each field's before and after."""

    HELP = "One change of the audit trail in full. Esc closes."
    HELP_TITLE = "an audit change"

    def __init__(self, row: AuditEvent) -> None:
        super().__init__()
        self.row = row

    def compose(self) -> ComposeResult:
        row = self.row
        text = Text()
        for label, value in (
            ("When", f"{when(row.occurred_at, precision='second')} UTC"),
            ("Actor", row.actor),
            ("Source", row.source),
            ("Action", row.action),
            ("Entity", f"{row.entity_type} {row.entity_id}"),
        ):
            text.append(f"{label:<8}", style="bold").append(plain(value)).append("\n")
        text.append("\nChanges\n", style="bold")
        for line in describe_changes(row.changes or {}) or ["(no field changes recorded)"]:
            text.append("  ").append(plain(line)).append("\n")
        with VerticalScroll(id="audit-detail-dialog", classes="dialog"):
            yield Static(text, id="audit-detail-text")
            with Horizontal(classes="buttons"):
                yield Button("Close", variant="primary", id="audit-detail-close")

    @on(Button.Pressed, "#audit-detail-close")
    def _close_pressed(self) -> None:
        self.dismiss(None)
