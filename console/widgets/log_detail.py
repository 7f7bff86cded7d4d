"""The detail pane beside the log table: the selected row as labelled fields (raw JSON only when asked).

It takes focus (Tab from the table), so ↑/↓, PgUp/PgDn and Home/End scroll a long
record; :func:`console.widgets.log_record.record_view` draws it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import RenderableType
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from console.widgets.log_record import as_plain_text, record_view
from db.log_json import entry_to_dict

if TYPE_CHECKING:
    from db.models import LogEntry

NOTHING_SELECTED = "Select a row to see its details."


class LogDetail(VerticalScroll):
    """Shows one row (or a hint when nothing is selected); ``raw`` shows it as JSON instead."""

    can_focus = True

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.entry: LogEntry | None = None
        #: The row shown, as its JSON-ready dict (None when nothing is selected).
        self.record: dict[str, Any] | None = None
        self.raw = False
        self._renderable: RenderableType = NOTHING_SELECTED

    def compose(self) -> ComposeResult:
        yield Static(NOTHING_SELECTED, id="log-detail-body")

    def show(self, entry: LogEntry | None) -> None:
        """Show ``entry`` (None: the hint), from the top."""
        changed = entry is not self.entry
        self.entry = entry
        self.record = entry_to_dict(entry) if entry is not None else None
        self._draw()
        if changed:
            self.scroll_home(animate=False)

    def set_raw(self, raw: bool) -> None:
        """Show the row as raw JSON (``J``) or as labelled fields."""
        self.raw = raw
        self._draw()

    def _draw(self) -> None:
        self._renderable = NOTHING_SELECTED if self.entry is None else record_view(self.entry, raw=self.raw)
        self.query_one("#log-detail-body", Static).update(self._renderable)

    @property
    def renderable(self) -> RenderableType:
        """What the pane shows now (the fields, the raw JSON or the hint)."""
        return self._renderable

    @property
    def text(self) -> str:
        """What the pane reads, without styles, at its width (for tests)."""
        return as_plain_text(self._renderable, self.scrollable_content_region.width or 40)
