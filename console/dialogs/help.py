"""The help screen (``?``): every key, the filters, follow mode and export in one page."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# AI Usage Firewall console

**Anywhere**: `1`–`8` switch section (Overview, Logs, Users, Devices, Config, Cleanup, Alerts,
Forwarding) ·
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

**Alerts** (`7`): alerts raised by the organisations' rules, newest change first; filter by state
(open and acknowledged by default), organisation and rule. `enter` shows the alert's events in Logs
(its organisation, time range, group and the rule's risk levels) · `a` acknowledge · `r` resolve
(asks first; the rule's cooldown starts) · `n`/`p`/`g` older, newer, newest page · `d` detail pane.
Refreshes every 5 s. The overview lists the open alerts too.

**Forwarding** (`8`): where alerts and events go (syslog over TCP, TLS or UDP, RELP, Splunk HEC,
signed webhooks), each with its state, lag (events and alert changes behind, the oldest undelivered),
delivered count and last error. `n` new · `e` edit · `a` enable/disable · `t` send a test message ·
`l` dead letters (`r` retry, `R` retry all, `del` discard, `X` discard all) · `del` delete.
A secret (HEC token, webhook key, TLS client key) is never shown again: leave it empty to keep it.
OCSF destinations forward red and amber events only (green events are not findings).

**Config → Alert rules**: the organisation's rules (threshold, entity, silent agent, new tool,
forwarding). `a` add · `e` edit · `t` enable/disable · `del` delete. Durations read `90s`, `10m`,
`72h`, `3d`.

Administrators may change things; viewers may only look.
Press `escape` to close.
"""


class HelpScreen(ModalScreen[None]):
    """Keys and concepts; escape or ? closes it."""

    BINDINGS = [Binding("escape", "dismiss", "Close"), Binding("question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="help-dialog", classes="dialog"), VerticalScroll():
            yield Markdown(HELP)
