"""The table of log rows: one page, newest first, keyed by organisation and event id.

A :class:`~console.widgets.keyed_table.KeyedTable` with the log columns; what an
agent wrote reaches it as :func:`console.untrusted.plain` text (control
characters made visible, never markup) and the risk level in its colour.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from console.untrusted import plain
from console.widgets.keyed_table import KeyedTable, TableColumn
from console.widgets.risk import risk_text
from console.widgets.time_format import when

if TYPE_CHECKING:
    from db.models import LogEntry

#: The columns, each as wide as its values usually are; the user and the entity types take any room left.
COLUMNS = (
    TableColumn("Time (UTC)", 19),
    TableColumn("Risk", 5),
    TableColumn("User", 24, stretch=True),
    TableColumn("Tool", 14),
    TableColumn("Device", 12),
    TableColumn("Org", 8),
    TableColumn("Entities", 18, stretch=True),
    TableColumn("San.", 4),
)


def row_key(entry: LogEntry) -> str:
    """The table key of a row: an event is identified by its organisation and its id together."""
    return f"{entry.organization_id}/{entry.id}"


class LogTable(KeyedTable):
    """Shows a page of log rows with a row cursor (DataTable.RowHighlighted carries the row's key)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(*COLUMNS, id=id, paged=True)

    def show_entries(self, entries: Sequence[LogEntry]) -> None:
        """Replace the rows; the cursor goes back to the top (a new page starts at its first row)."""
        self.show(
            (
                (
                    row_key(entry),
                    (
                        when(entry.timestamp, precision="second"),
                        risk_text(entry.risk_level),
                        plain(entry.user_id),
                        plain(entry.tool_name),
                        plain(entry.device_id),
                        plain(entry.organization_id),
                        plain(", ".join(entry.detected_entity_types or [])),
                        "yes" if entry.was_sanitized else "",
                    ),
                )
                for entry in entries
            ),
            keep="top",
        )
