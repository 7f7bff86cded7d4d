"""The table of log rows: one page, newest first, keyed by event id."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import DataTable

from db.base import as_utc
from db.models import LogEntry

RISK_STYLES = {"green": "green", "amber": "yellow", "red": "bold red"}
COLUMNS = ("Time (UTC)", "Risk", "User", "Tool", "Device", "Org", "Entities", "San.")


def risk_text(level: str) -> Text:
    return Text(level, style=RISK_STYLES.get(level, ""))


class LogTable(DataTable[object]):
    """Shows the rows it is given; the section owns paging and selection handling."""

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        self.add_columns(*COLUMNS)

    def show(self, rows: Sequence[LogEntry], *, keep_cursor: bool = False) -> None:
        """Replace the rows (cursor back to the top unless ``keep_cursor``)."""
        row = self.cursor_row if keep_cursor else 0
        self.clear()
        for entry in rows:
            self.add_row(
                as_utc(entry.timestamp).strftime("%Y-%m-%d %H:%M:%S"),
                risk_text(entry.risk_level),
                entry.user_id,
                entry.tool_name,
                entry.device_id,
                entry.organization_id,
                ", ".join(entry.detected_entity_types or []),
                "yes" if entry.was_sanitized else "",
                key=str(entry.id),
            )
        if rows:
            self.move_cursor(row=min(row, len(rows) - 1), animate=False)
