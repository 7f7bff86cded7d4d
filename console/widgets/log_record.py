"""One log row as people read it: labelled fields, risk in colour and glyph, times in UTC and local time,
entity types as chips, the metadata as a small table; or, when asked (``J``), the raw JSON.

Everything in a row came from an agent: every value reaches the renderable as
:func:`console.untrusted.plain` text, never markup. The pane beside the table
(:class:`console.widgets.log_detail.LogDetail`) and the full-screen view
(:class:`console.dialogs.log_record.LogRecordScreen`) both show :func:`record_view`.
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.highlighter import JSONHighlighter
from rich.table import Table
from rich.text import Text

from console.untrusted import plain
from console.widgets.risk import risk_text
from console.widgets.time_format import local_time, when
from db.log_json import entry_to_dict
from db.wording import counted

if TYPE_CHECKING:
    from db.models import LogEntry

_HIGHLIGHT = JSONHighlighter()
#: How an entity type chip looks: reversed, so it reads as a tag in any theme and without colour.
CHIP_STYLE = "reverse"
LABEL_STYLE = "bold"


def chips(values: list[str]) -> Text:
    """Entity types as chips (`` EMAIL `` reversed), one space apart; "none" when there are none."""
    if not values:
        return Text("none", style="dim", end="")
    shown = Text(end="")
    for index, value in enumerate(values):
        if index:
            shown.append(" ")
        shown.append_text(plain(f" {value} ", style=CHIP_STYLE))
    return shown


def _metadata_value(value: Any) -> Text:
    # A string is shown as it is (controls made visible); anything else as its compact JSON.
    if isinstance(value, str):
        return plain(value)
    return plain(json.dumps(value, ensure_ascii=False, default=str))


def metadata_table(metadata: dict[str, Any]) -> RenderableType:
    """``log_metadata`` as a two-column table (key, value), keys in the order the agent sent them."""
    if not metadata:
        return Text("none", style="dim", end="")
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=False, padding=(0, 1))
    table.add_column("Key", style="bold", overflow="fold")
    table.add_column("Value", overflow="fold")
    for key, value in metadata.items():
        table.add_row(plain(key), _metadata_value(value))
    return table


def raw_json(entry: LogEntry) -> Text:
    """The row as indented, highlighted JSON (``J``); what agents wrote stays text."""
    # json.dumps escapes C0 controls inside strings, so every newline left is the layout's own; each line
    # goes through plain(), which also shows DEL, C1 and bidi characters as escapes.
    dumped = json.dumps(entry_to_dict(entry), indent=2, ensure_ascii=False, default=str)
    text = Text("\n", end="").join(plain(line) for line in dumped.split("\n"))
    _HIGHLIGHT.highlight(text)
    return text


def record_view(entry: LogEntry, *, raw: bool = False) -> RenderableType:
    """The row as labelled fields (or as raw JSON when ``raw``)."""
    if raw:
        return raw_json(entry)
    fields = Table.grid(padding=(0, 1))
    fields.add_column(style=LABEL_STYLE, no_wrap=True)
    fields.add_column(overflow="fold")
    entity_types = list(entry.detected_entity_types or [])
    rows: list[tuple[str, Text]] = [
        ("Time (UTC)", Text(when(entry.timestamp, precision="second"), end="")),
        ("Local time", Text(local_time(entry.timestamp), end="")),
        ("Risk", risk_text(entry.risk_level)),
        ("User", plain(entry.user_id)),
        ("Tool", plain(entry.tool_name)),
        ("Tool type", plain(entry.tool_type)),
        ("Device", plain(entry.device_id)),
        ("Organisation", plain(entry.organization_id)),
        ("Entities", chips(entity_types)),
        ("Entity count", Text(str(entry.entity_count), end="")),
        ("Prompt", Text(counted(entry.prompt_length or 0, "character"), end="")),
        ("Sanitised", Text("yes" if entry.was_sanitized else "no", end="")),
        ("Event id", plain(entry.id)),
        ("Stored (UTC)", Text(when(entry.created_at, precision="second"), end="")),
    ]
    for label, value in rows:
        fields.add_row(Text(label, end=""), value)
    metadata = dict(entry.log_metadata or {})
    heading = Text.assemble(("Metadata", LABEL_STYLE), f" ({counted(len(metadata), 'key')})")
    return Group(fields, Text(""), heading, metadata_table(metadata))


def as_plain_text(renderable: RenderableType, width: int) -> str:
    """What ``renderable`` reads as at ``width`` cells, without styles (for tests and copying)."""
    console = Console(width=max(20, width), file=io.StringIO(), color_system=None, record=True)
    console.print(renderable)
    return console.export_text()


__all__ = ["as_plain_text", "chips", "metadata_table", "raw_json", "record_view"]
