"""The help screen (``?``): every key, the filters, follow mode and export in one page."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# AI Usage Firewall console

**Anywhere**: `1`–`6` switch section (Overview, Logs, Users, Devices, Config, Cleanup) ·
`ctrl+p` command palette (every screen and action, Audit too) · `ctrl+t` light/dark theme ·
`?` this help · `ctrl+r` retry the database · `q` quit (asks first if an export is running).

**Overview** (`1`): events by risk for 24 h / 7 d / 30 d, events over time, top tools, top users by
red events, frequent entity types, devices seen in the last day, last retention run. Refreshes
every 5 s from pre-aggregated hourly counts. `w` window · `r` refresh.

**Logs** (`2`): newest first, 50 rows a page. `n` older page · `p` newer page · `g` newest ·
`f` filters · `c` clear filters · `/` search · `d` detail pane · `t` follow new rows ·
`e` export · `x` stop an export.

*Filters* combine: risk levels (several), tool, user, device, organisation, time (presets or
From/Until in UTC), entity type, sanitised yes/no, and search (a user, device or tool name, or
its start followed by `*`; an organisation; an entity type; an event id). The count is exact up to
10,000 rows; beyond that it is shown as "10,000+" or "≈" (an estimate).

*Follow* (`t`) shows rows newer than the top row as they arrive (on the newest page).
*Export* (`e`) writes the filtered view, as it is when it starts, to CSV or JSON Lines,
streamed (any size) with a progress bar.

Administrators may change things; viewers may only look.
Press `escape` to close.
"""


class HelpScreen(ModalScreen[None]):
    """Keys and concepts; escape or ? closes it."""

    BINDINGS = [Binding("escape", "dismiss", "Close"), Binding("question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="help-dialog", classes="dialog"), VerticalScroll():
            yield Markdown(HELP)
