"""The detail pane: every field of the selected log row, as pretty JSON."""

from __future__ import annotations

import json
from typing import Any

from rich.highlighter import JSONHighlighter
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from console.untrusted import plain

_HIGHLIGHT = JSONHighlighter()


def detail_text(record: dict[str, Any]) -> Text:
    """``record`` as indented, highlighted JSON; what agents wrote stays text (:mod:`console.untrusted`)."""
    # json.dumps escapes C0 controls inside strings, so every newline left is the layout's own; each line
    # goes through plain(), which also shows DEL, C1 and bidi characters as escapes.
    dumped = json.dumps(record, indent=2, ensure_ascii=False, default=str)
    text = Text("\n").join(plain(line) for line in dumped.split("\n"))
    _HIGHLIGHT.highlight(text)
    return text


class LogDetail(VerticalScroll):
    """Shows one row's metadata (or a hint when nothing is selected)."""

    can_focus = False

    def compose(self) -> ComposeResult:
        yield Static("Select a row to see its details.", id="log-detail-body")

    def show(self, record: dict[str, Any] | None) -> None:
        body = self.query_one("#log-detail-body", Static)
        self.record = record
        if record is None:
            body.update("Select a row to see its details.")
            return
        body.update(detail_text(record))
