"""The table of log rows: one page, newest first, keyed by event id."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import DataTable

from db.base import as_utc
from db.models import LogEntry

RISK_STYLES = {"green": "green", "amber": "yellow", "red": "bold red"}
#: Column titles and fixed widths: fixed widths spare measuring every cell of every page.
COLUMNS = (
    ("Time (UTC)", 19),
    ("Risk", 5),
    ("User", 24),
    ("Tool", 14),
    ("Device", 12),
    ("Org", 8),
    ("Entities", 18),
    ("San.", 4),
)


def risk_text(level: str) -> Text:
    return Text(level, style=RISK_STYLES.get(level, ""))


def _cells(entry: LogEntry) -> tuple[Text, ...]:
    # Text cells are not parsed as markup (faster, and a user id can hold "[").
    return (
        Text(as_utc(entry.timestamp).strftime("%Y-%m-%d %H:%M:%S")),
        risk_text(entry.risk_level),
        Text(entry.user_id),
        Text(entry.tool_name),
        Text(entry.device_id),
        Text(entry.organization_id),
        Text(", ".join(entry.detected_entity_types or [])),
        Text("yes" if entry.was_sanitized else ""),
    )


class LogTable(DataTable[Text]):
    """Shows the rows it is given; the section owns paging and selection handling."""

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        for title, width in COLUMNS:
            self.add_column(title, width=width)

    def show(self, rows: Sequence[LogEntry], *, keep_cursor: bool = False) -> None:
        """Replace the rows (cursor back to the top unless ``keep_cursor``)."""
        row = self.cursor_row if keep_cursor else 0
        self.clear()
        for entry in rows:
            self.add_row(*_cells(entry), key=str(entry.id))
        if rows:
            self.move_cursor(row=min(row, len(rows) - 1), animate=False)
