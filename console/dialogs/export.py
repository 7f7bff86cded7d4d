"""The export dialog of the log browser: format and file; returns an :class:`ExportChoice` or None.

The path rules are :func:`db.exports.check_export_path`'s: the dialog refuses what the
export would refuse, and asks before replacing an existing file. A bare file name goes
to the export folder (``AIFW_EXPORT_DIR``, else Downloads, else the home folder), never the
current one (the console is often started from the repository).
The filter it describes and the file name are what someone typed: shown as plain text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Select

from console.dialogs.confirm import confirm_then
from console.dialogs.dialog import Dialog
from console.untrusted import plain
from db.exports import (
    ExportFileExists,
    ExportPathError,
    check_export_path,
    default_export_dir,
    default_export_path,
)
from db.logs import EXPORT_FORMATS, ExportFormat
from db.settings import Settings

FORMAT_LABELS = {"csv": "CSV", "jsonl": "JSON Lines"}


@dataclass(frozen=True)
class ExportChoice:
    """What the person chose: the (resolved) file, its format, and whether they agreed to replace it."""

    path: Path
    fmt: ExportFormat
    replace: bool = False


class ExportScreen(Dialog[ExportChoice | None]):
    """Choose where and how to export the current filtered view."""

    BINDINGS = [Binding("ctrl+s", "start", "Export")]
    HELP_TITLE = "Export logs"
    HELP = (
        "Writes the filtered view, as it is when the export starts, to a file readable by you only. "
        "A bare file name goes to the export folder (`AIFW_EXPORT_DIR`, else your Downloads folder, "
        "else your home); type a path to write elsewhere. An existing file is replaced only after you "
        "confirm. Enter or ctrl+s exports; Esc cancels; `x` in Logs stops a running export."
    )

    def __init__(self, description: str, settings: Settings) -> None:
        super().__init__()
        self.description = description
        self.settings = settings

    def compose(self) -> ComposeResult:
        formats = [(FORMAT_LABELS[fmt], fmt) for fmt in EXPORT_FORMATS]
        with Vertical(id="export-dialog", classes="dialog"):
            title = Text.assemble(("Export logs", "bold"), ": ", plain(self.description))
            yield Label(title, id="export-title")
            with Horizontal(classes="form-row"):
                yield Label("File", classes="form-label")
                yield Input(value=str(default_export_path(self.settings, "csv")), id="export-path")
            with Horizontal(classes="form-row"):
                yield Label("Format", classes="form-label")
                yield Select(formats, value="csv", allow_blank=False, id="export-format")
            yield Label(plain(f"A bare name goes to {default_export_dir(self.settings)}"), id="export-folder")
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

    def _error(self, message: str) -> None:
        self.query_one("#export-error", Label).update(plain(message))

    def action_start(self) -> None:
        self.start()

    @on(Button.Pressed, "#export-start")
    @on(Input.Submitted)
    def start(self) -> None:
        raw = self.query_one("#export-path", Input).value.strip()
        if not raw:
            self._error("Enter a file name.")
            return
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = default_export_dir(self.settings) / path
        fmt = cast(ExportFormat, self.query_one("#export-format", Select).value)  # only EXPORT_FORMATS
        try:
            target = check_export_path(path, self.settings, replace=False)
        except ExportFileExists as exists:
            self._ask_to_replace(exists.path, fmt)
            return
        except ExportPathError as error:
            self._error(f"Cannot export there: {error}.")
            return
        self.dismiss(ExportChoice(target, fmt))

    def _ask_to_replace(self, target: Path, fmt: ExportFormat) -> None:
        def replace() -> None:
            try:
                confirmed = check_export_path(target, self.settings, replace=True)
            except ExportPathError as error:
                self._error(f"Cannot export there: {error}.")
                return
            self.dismiss(ExportChoice(confirmed, fmt, replace=True))

        confirm_then(
            self.app,
            f"{target} exists: replace it?",
            replace,
            otherwise=lambda: self._error(f"{target.name} was left as it is: choose another name."),
        )

    @on(Button.Pressed, "#export-cancel")
    def action_cancel(self) -> None:
        self.request_close()
