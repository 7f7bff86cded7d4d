"""The table of log rows: one page, in the order by time the section asked for, keyed by organisation and id.

A :class:`~console.widgets.keyed_table.KeyedTable` with the log columns; what an
agent wrote reaches it as :func:`console.untrusted.plain` text (control
characters made visible, never markup) and the risk level in its colour and glyph.
The rows come in the order the section asked the database for (newest or oldest
first): the table never sorts a page itself (``s`` goes to the section).
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

#: The columns: each as wide as its widest value (up to its cap), never narrower than its floor when room
#: is short (Time, Risk and User stay readable at 80 columns); the user and the entity types take room left.
COLUMNS = (
    TableColumn("Time (UTC)", 19, key="time"),
    TableColumn("Risk", 7, key="risk"),
    TableColumn("User", 10, stretch=True, key="user", max_width=64),
    TableColumn("Tool", 6, key="tool", max_width=40),
    TableColumn("Device", 6, key="device", max_width=64),
    TableColumn("Org", 4, key="org", max_width=40),
    TableColumn("Entities", 6, stretch=True, key="entities", max_width=80),
    TableColumn("San.", 4, key="sanitised"),
)
#: The column the rows are ordered by (the only one an index orders: docs/index-policy.md).
TIME_COLUMN = "time"


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
