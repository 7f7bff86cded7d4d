"""Audit section: the trail of changes made from the console and the CLI — who, when, what, and the
before/after of each changed field (never a password or a token) — newest first, filterable.

Reads go through :func:`db.audit.list_changes` a page at a time (keyset on
``occurred_at``, id); the detail line under the table shows the selected row's changes.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Input, Select, Static

from console.sections.section import Section, SectionCommand
from console.untrusted import plain
from console.widgets.keyed_table import KeyedTable, TableColumn
from console.widgets.time_format import when
from db.audit import AUDIT_ENTITY_TYPES, AUDIT_SOURCES, AuditFilter, AuditPage, describe_changes, list_changes
from db.models import AuditEvent

ANY = "any"
COLUMNS = (
    TableColumn("When (UTC)"),
    TableColumn("Actor"),
    TableColumn("Source"),
    TableColumn("Action"),
    TableColumn("Entity"),
    TableColumn("Id", stretch=True),
)


class AuditSection(Section):
    """The audit trail of changes made from the console and the CLI."""

    TITLE = "Audit"
    KEY = None
    COMMANDS = (
        SectionCommand(
            "Audit: search", "Filter the audit trail by actor, action or entity id", "focus_search"
        ),
        SectionCommand("Audit: older changes", "The next page of older changes", "older_page"),
        SectionCommand("Audit: newest changes", "Back to the newest changes", "newest_page"),
    )
    BINDINGS = [
        Binding("slash", "focus_search", "Search"),
        Binding("n", "older_page", "Older"),
        Binding("g", "newest_page", "Newest"),
        Binding("r", "newest_page", "Reload"),
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filters = AuditFilter()
        self.page = AuditPage(rows=(), has_older=False)
        self.page_number = 1
        self.rows: dict[str, AuditEvent] = {}

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

    def focus_first(self) -> None:
        self.query_one("#audit-table", KeyedTable).focus()

    def reload(self) -> None:
        self.load_page(None, number=1)

    def action_focus_search(self) -> None:
        self.query_one("#audit-search", Input).focus()

    def action_newest_page(self) -> None:
        self.load_page(None, number=1)

    def action_older_page(self) -> None:
        if self.page.has_older and self.page.rows:
            last = self.page.rows[-1]
            self.load_page((last.occurred_at, last.id), number=self.page_number + 1)
        else:
            self.context.notify("These are the oldest changes.", timeout=2)

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
        self.load_page(None, number=1)

    @work(exclusive=True, group="audit-page", exit_on_error=False)
    async def load_page(self, before: tuple[datetime, uuid.UUID] | None, *, number: int) -> None:
        async with self.context.sessions() as session:
            page = await list_changes(session=session, filters=self.filters, before=before)
        self.page = page
        self.page_number = number
        self.rows = {str(row.id): row for row in page.rows}
        self.query_one("#audit-table", KeyedTable).show(
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
        more = " · n older" if page.has_older else ""
        self.query_one("#audit-summary", Static).update(
            f"page {number}: {len(page.rows)} changes{more} · / search · g newest"
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
