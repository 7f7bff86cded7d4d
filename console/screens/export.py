"""The export dialog of the log browser: format and file; returns (path, format) or None.

The filter it describes and the file name are what someone typed: shown as plain text.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select

from console.untrusted import plain
from db.base import utcnow
from db.logs import EXPORT_FORMATS

FORMAT_LABELS = {"csv": "CSV", "jsonl": "JSON Lines"}


def default_export_path(fmt: str) -> str:
    return str(Path.cwd() / f"aifw-logs-{utcnow():%Y%m%d-%H%M%S}.{fmt}")


class ExportScreen(ModalScreen[tuple[Path, str] | None]):
    """Choose where and how to export the current filtered view."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, description: str) -> None:
        super().__init__()
        self.description = description

    def compose(self) -> ComposeResult:
        with Vertical(id="export-dialog", classes="dialog"):
            title = Text.assemble(("Export logs", "bold"), ": ", plain(self.description))
            yield Label(title, id="export-title")
            with Horizontal(classes="form-row"):
                yield Label("Format", classes="form-label")
                yield Select(
                    [(FORMAT_LABELS[fmt], fmt) for fmt in EXPORT_FORMATS], value="csv", allow_blank=False,
                    id="export-format",
                )  # fmt: skip
            with Horizontal(classes="form-row"):
                yield Label("File", classes="form-label")
                yield Input(value=default_export_path("csv"), id="export-path")
            yield Label("", id="export-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Export", variant="primary", id="export-start")
                yield Button("Cancel", id="export-cancel")

    @on(Select.Changed, "#export-format")
    def _format_changed(self, event: Select.Changed) -> None:
        path = self.query_one("#export-path", Input)
        stem, _, suffix = path.value.rpartition(".")
        if stem and suffix in EXPORT_FORMATS:
            path.value = f"{stem}.{event.value}"

    @on(Button.Pressed, "#export-start")
    @on(Input.Submitted)
    def start(self) -> None:
        raw = self.query_one("#export-path", Input).value.strip()
        if not raw:
            self.query_one("#export-error", Label).update("Enter a file name.")
            return
        path = Path(raw).expanduser()
        if not path.parent.is_dir():
            self.query_one("#export-error", Label).update(plain(f"No such folder: {path.parent}"))
            return
        self.dismiss((path, str(self.query_one("#export-format", Select).value)))

    @on(Button.Pressed, "#export-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
