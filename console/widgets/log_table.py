"""The table of log rows: one page, newest first, keyed by event id.

A line-API widget rather than a DataTable: a page is turned into one strip of
fixed-width cells per row once, and drawing a screen is slicing those strips,
which keeps key press → rendered page in the low milliseconds. Segments are
never parsed as markup; control characters are made visible
(:func:`console.untrusted.visible`) so an agent's string cannot act on the
terminal, and widths are counted in terminal cells (wide characters, emoji).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from db.base import as_utc
from db.identifiers import visible
from db.models import LogEntry

RISK_STYLES = {
    "green": Style(color="green"),
    "amber": Style(color="yellow"),
    "red": Style(color="red", bold=True),
}
#: Column titles and fixed widths.
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
TOTAL_WIDTH = sum(width + 1 for _, width in COLUMNS)


def _cell(text: str, width: int) -> str:
    if cell_len(text) > width:
        return set_cell_size(text, width - 1) + "… "
    return set_cell_size(text, width) + " "


def _values(entry: LogEntry) -> tuple[str, ...]:
    return (
        as_utc(entry.timestamp).strftime("%Y-%m-%d %H:%M:%S"),
        entry.risk_level,
        visible(entry.user_id),
        visible(entry.tool_name),
        visible(entry.device_id),
        visible(entry.organization_id),
        visible(", ".join(entry.detected_entity_types or [])),
        "yes" if entry.was_sanitized else "",
    )


def row_key(entry: LogEntry) -> str:
    """The table key of a row: an event is identified by its organisation and its id together."""
    return f"{entry.organization_id}/{entry.id}"


class LogTable(ScrollView, can_focus=True):
    """Shows the rows it is given with a row cursor; posts RowHighlighted when the cursor moves."""

    BINDINGS = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "cursor_page(-1)", "Page up", show=False),
        Binding("pagedown", "cursor_page(1)", "Page down", show=False),
        Binding("home", "cursor_to(0)", "First", show=False),
        Binding("end", "cursor_to(-1)", "Last", show=False),
    ]
    COMPONENT_CLASSES = {"log-table--header", "log-table--cursor"}
    DEFAULT_CSS = """
    LogTable > .log-table--header { text-style: bold; background: $panel; }
    LogTable > .log-table--cursor { background: $block-cursor-blurred-background; }
    LogTable:focus > .log-table--cursor { background: $block-cursor-background; color: $block-cursor-foreground; }
    """

    cursor_row: reactive[int] = reactive(0, always_update=True)

    @dataclass
    class RowHighlighted(Message):
        """The cursor is on the row with this key (an event id), or on none."""

        table: LogTable
        key: str | None

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.row_keys: list[str] = []
        self._rows: list[list[Segment]] = []

    @property
    def row_count(self) -> int:
        return len(self.row_keys)

    def show(self, rows: Sequence[LogEntry], *, keep_cursor: bool = False) -> None:
        """Replace the rows (cursor back to the top unless ``keep_cursor``)."""
        self.row_keys = [row_key(entry) for entry in rows]
        self._rows = [
            [
                Segment(_cell(value, width), RISK_STYLES.get(value) if index == 1 else None)
                for index, (value, (_, width)) in enumerate(zip(_values(entry), COLUMNS, strict=True))
            ]
            for entry in rows
        ]
        self.virtual_size = Size(TOTAL_WIDTH, len(rows) + 1)
        row = min(self.cursor_row, len(rows) - 1) if keep_cursor else 0
        if not keep_cursor:
            self.scroll_to(y=0, animate=False)
        self.cursor_row = max(0, row)
        self.refresh()

    def watch_cursor_row(self, row: int) -> None:
        visible = max(1, self.scrollable_content_region.height - 1)
        if row < self.scroll_y:
            self.scroll_to(y=row, animate=False)
        elif row >= self.scroll_y + visible:
            self.scroll_to(y=row - visible + 1, animate=False)
        self.refresh()
        key = self.row_keys[row] if 0 <= row < len(self.row_keys) else None
        self.post_message(self.RowHighlighted(self, key))

    def action_cursor(self, delta: int) -> None:
        if self.row_keys:
            self.cursor_row = max(0, min(len(self.row_keys) - 1, self.cursor_row + delta))

    def action_cursor_page(self, direction: int) -> None:
        self.action_cursor(direction * max(1, self.scrollable_content_region.height - 2))

    def action_cursor_to(self, row: int) -> None:
        if self.row_keys:
            self.cursor_row = row % len(self.row_keys)

    def on_click(self, event: events.Click) -> None:
        row = int(self.scroll_y) + event.y - 1
        if event.y >= 1 and 0 <= row < len(self.row_keys):
            self.cursor_row = row

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        scroll_x = int(self.scroll_x)
        if y == 0:
            header = self.get_component_rich_style("log-table--header")
            segments = [Segment(_cell(title, size), header) for title, size in COLUMNS]
            return Strip(segments).crop_extend(scroll_x, scroll_x + width, header)
        row = int(self.scroll_y) + y - 1
        if row >= len(self._rows):
            return Strip.blank(width, self.rich_style)
        strip = Strip(self._rows[row])
        if row == self.cursor_row:
            strip = strip.apply_style(self.get_component_rich_style("log-table--cursor"))
        return strip.apply_style(self.rich_style).crop_extend(scroll_x, scroll_x + width, self.rich_style)
