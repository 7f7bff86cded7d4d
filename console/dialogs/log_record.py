"""One log row full screen (Enter or ``z`` in the Logs section): the detail pane's view with all the room,
scrolled by keyboard; ``J`` switches to the raw JSON and back, Esc closes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Static

from console.dialogs.dialog import Dialog
from console.untrusted import plain
from console.widgets.log_record import as_plain_text, record_view

if TYPE_CHECKING:
    from db.models import LogEntry


class LogRecordScreen(Dialog[None]):
    """The full record of one row; Esc (or ``z``) closes it."""

    BINDINGS = [
        Binding("escape", "close_dialog", "Close"),
        Binding("z", "close_dialog", "Close", show=False),
        Binding("J", "toggle_raw", "Raw JSON"),
    ]
    HELP_TITLE = "Log record"
    HELP = (
        "One log row with all the room the terminal has. ↑/↓, PgUp/PgDn and Home/End scroll; "
        "`J` shows the raw JSON (and back); Esc closes. Everything shown was sent by an agent: "
        "it is shown as text, never interpreted."
    )

    def __init__(self, entry: LogEntry, *, raw: bool = False) -> None:
        super().__init__()
        self.entry = entry
        self.raw = raw

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="log-record", classes="dialog") as frame:
            frame.border_title = Text.assemble("Log record ", plain(self.entry.id))
            yield Static(record_view(self.entry, raw=self.raw), id="log-record-body")

    def focus_first_field(self) -> None:
        self.query_one("#log-record").focus()

    def action_toggle_raw(self) -> None:
        self.raw = not self.raw
        self.query_one("#log-record-body", Static).update(record_view(self.entry, raw=self.raw))

    @property
    def text(self) -> str:
        """What the record reads, without styles (for tests)."""
        frame = self.query_one("#log-record")
        return as_plain_text(record_view(self.entry, raw=self.raw), frame.scrollable_content_region.width)
