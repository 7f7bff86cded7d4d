"""The detail pane: every field of the selected log row, as pretty JSON."""

from __future__ import annotations

from typing import Any

from rich.json import JSON
from textual.containers import VerticalScroll
from textual.widgets import Static


class LogDetail(VerticalScroll):
    """Shows one row's metadata (or a hint when nothing is selected)."""

    can_focus = False

    def compose(self):  # type: ignore[no-untyped-def]
        yield Static("Select a row to see its details.", id="log-detail-body")

    def show(self, record: dict[str, Any] | None) -> None:
        body = self.query_one("#log-detail-body", Static)
        self.record = record
        if record is None:
            body.update("Select a row to see its details.")
            return
        body.update(JSON.from_data(record, indent=2, sort_keys=False))
