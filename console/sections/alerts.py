"""Alerts section: alerts raised by the organisations' rules — filter, page, details, acknowledge, resolve,
and Enter to see the alert's events in the log browser.

Reads and changes go through :mod:`db.alerts`; acknowledging and resolving are
admin-only (checked again in ``db/`` as of now) and audited there; resolving is
confirmed, as it starts the rule's cooldown. The list refreshes itself every few
seconds while shown (armed again only when the last refresh finished) and keeps
the cursor on the same alert. Pages are keyset pages of the alerts' last change
(``updated_at``), walked either way: ``g``/``G`` the newest and oldest page, ``s`` on
the Updated column flips the order. Rule names, group keys and details come from
users and agents: they are shown as :func:`~console.untrusted.plain` text.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import DataTable, Select, Static

from console.dialogs.confirm import confirm_then
from console.messages import ShowLogs
from console.sections.section import Section, SectionCommand
from console.untrusted import plain
from console.widgets.detail_lines import LABEL_WIDTH, add_line
from console.widgets.keyed_table import KeyedTable, TableColumn
from console.widgets.severity import severity_text
from console.widgets.time_format import utc_and_local, when
from db.alerts import (
    ALERT_PAGE_SIZE,
    AlertError,
    AlertFilter,
    acknowledge_alert,
    get_rule,
    list_alerts,
    list_rules,
    resolve_alert,
)
from db.configs import list_configs
from db.logs import LogFilter
from db.models import Alert, AlertRule
from db.vocabulary import RISK_LEVELS
from db.wording import counted

REFRESH_SECONDS = 5.0
#: Below this terminal height the detail pane starts hidden (d shows it).
DETAIL_MIN_HEIGHT = 30
ANY = "any"
#: The state filter: label → the states listed (empty: every state).
STATE_CHOICES: dict[str, frozenset[str]] = {
    "open + ack'd": frozenset({"open", "acknowledged"}),
    "open": frozenset({"open"}),
    "acknowledged": frozenset({"acknowledged"}),
    "resolved": frozenset({"resolved"}),
    "any state": frozenset(),
}
DEFAULT_STATES = "open + ack'd"
STATE_STYLES: dict[str, str] = {"open": "bold", "acknowledged": "", "resolved": "dim"}
#: States as the table shows them (narrow).
STATE_LABELS: dict[str, str] = {"acknowledged": "ack'd"}
#: Which log filter field an alert's group key fills, by its rule's ``group_by``.
GROUP_FILTER_FIELDS: dict[str, str] = {"user": "user", "device": "device", "tool": "tool"}
#: The column the pages are ordered by (the alert's last change), the only one ``s`` sorts.
TIME_COLUMN = "updated"
COLUMNS = (
    TableColumn("Sev", key="severity"),
    TableColumn("State", key="state"),
    TableColumn("Rule", width=10, stretch=True, key="rule"),
    TableColumn("Org", key="org"),
    TableColumn("Group", width=10, stretch=True, key="group"),
    TableColumn("Events", key="count"),
    TableColumn("Updated", width=11, key=TIME_COLUMN),
)
#: What ``F`` says on the columns that are not filters.
NOT_A_FILTER = (
    "F filters by the State, Rule or Org column (the boxes above the table); "
    "move to one with ←/→. c clears the filters."
)

HELP = """\
Alerts raised by the organisations' rules (Config → Alert rules), **newest change first**, 200 a
page: `n` the next page, `p` the previous one, `g` the newest page, `G` the oldest. Home/End go to the
first and last row of the page. The list refreshes itself every 5 s and keeps the cursor on its alert.

**States**: *open* (raised, nobody has looked), *ack'd* (acknowledged: someone is on it; it still
counts matches), *resolved* (closed; the rule raises nothing more for that group until its
**cooldown** has passed). The box at the top shows open and acknowledged alerts; choose *any state*
to see resolved ones too.

**Filters**: the three boxes (state, organisation, rule); `F` on the State, Rule or Org column filters
by that cell; `c` clears the filters.

**Sorting**: pages walk the alerts by their last change (the Updated column, UTC) along an index:
`ix_alerts_state_updated_at`, once per state chosen (merged), or `ix_alerts_organization_updated_at`
for one organisation (`ix_alerts_organization_state` with states too); only *any state* of every
organisation reads them all. `s` on Updated flips newest first / oldest first; no index orders alerts
by another column, so the others do not sort.

**The alert**: the pane below shows the selected alert (`d` shows or hides it, `z` gives it the whole
section; Tab moves into it to scroll): severity, state and who changed it, times in UTC and local
time, the first event ids. Enter opens the alert's events in Logs.

**Changes** (administrators): `a` acknowledges an open alert, `r` resolves one (confirmed). Both
are audited and forwarded to the SIEM destinations as updates.
"""


@dataclass(frozen=True)
class PageRequest:
    """Which page to read: the rows after ``anchor`` in the order shown (``forward``) or before it.

    ``anchor`` None is an end of the list: forward from it is the first page, backward the last.
    """

    anchor: tuple[datetime, uuid.UUID] | None = None
    forward: bool = True


def alert_filter_for_logs(alert: Alert, rule: AlertRule | None) -> LogFilter:
    """The log browser's filter that shows ``alert``'s events: its organisation, its time range (the last
    event included), its group (by the rule's ``group_by``), and the rule's risk levels if it has any.

    ``rule`` None (deleted since) keeps the organisation and the time range; a new-tool alert's group
    is its tool whatever the rule says.
    """
    fields: dict[str, Any] = {
        "organization": alert.organization_id,
        "since": alert.first_event_at,
        "until": alert.last_event_at + timedelta(microseconds=1),
    }
    group_by = "tool" if alert.rule_kind == "new_tool" else (rule.group_by if rule is not None else None)
    field = GROUP_FILTER_FIELDS.get(group_by or "")
    if field is not None and alert.group_key:
        fields[field] = alert.group_key
    filters = rule.filters if rule is not None and isinstance(rule.filters, dict) else {}
    levels = filters.get("risk_levels")
    if isinstance(levels, list):
        fields["risk_levels"] = frozenset(level for level in levels if level in RISK_LEVELS)
    entity_types = filters.get("entity_types")
    if isinstance(entity_types, list) and len(entity_types) == 1 and isinstance(entity_types[0], str):
        fields["entity_type"] = entity_types[0]
    return LogFilter(**fields)


def event_span(first: datetime, last: datetime) -> str:
    """``MM-DD HH:MM–HH:MM`` (the same day) or ``MM-DD HH:MM–MM-DD HH:MM``, in UTC."""
    start, end = when(first, precision="second"), when(last, precision="second")
    if start[:10] == end[:10]:
        return f"{start[5:16]}–{end[11:16]}"
    return f"{start[5:16]}–{end[5:16]}"


def alert_detail(alert: Alert) -> Text:
    """Every field of ``alert`` a person needs, one per line, as plain text (names and keys are untrusted)."""
    text = Text(end="")
    add_line(text, "Rule", Text.assemble(plain(alert.rule_name, "bold"), f"  ({alert.rule_kind} rule)"))
    add_line(text, "Severity", severity_text(alert.severity))
    add_line(text, "State", Text(alert.state, style=STATE_STYLES.get(alert.state, "")))
    add_line(text, "Org", plain(alert.organization_id))
    add_line(text, "Group", plain(alert.group_key or "—", "bold"))
    add_line(text, "Events", counted(alert.event_count, "event"))
    add_line(text, "First event", utc_and_local(alert.first_event_at))
    add_line(text, "Last event", utc_and_local(alert.last_event_at))
    add_line(text, "Opened", utc_and_local(alert.opened_at))
    add_line(text, "Updated", f"{utc_and_local(alert.updated_at)} · revision {alert.revision}")
    for label, at, by in (
        ("Acknowledged", alert.acknowledged_at, alert.acknowledged_by),
        ("Resolved", alert.resolved_at, alert.resolved_by),
    ):
        if at is not None or by:
            add_line(text, label, Text.assemble(f"{utc_and_local(at)} by ", plain(by or "—", "bold")))
    details = alert.details if isinstance(alert.details, dict) else {}
    for key, value in details.items():
        items = value if isinstance(value, list) else [value]
        name = plain(key, "bold")
        name.append(" " * max(1, LABEL_WIDTH - name.cell_len))
        text.append("\n").append_text(name)
        text.append_text(Text(", ", end="").join(plain(item) for item in items))
    event_ids = alert.event_ids if isinstance(alert.event_ids, list) else []
    if event_ids:
        add_line(text, "Event ids", f"the first {len(event_ids)} (Enter shows every event in Logs)")
        for event_id in event_ids:
            text.append("\n" + " " * LABEL_WIDTH).append_text(plain(event_id))
    else:
        add_line(text, "Event ids", "none")
    return text


class AlertsSection(Section):
    """Alerts, newest change first: details, their events in the log browser, acknowledge and resolve."""

    TITLE = "Alerts"
    ORDER_COLUMN = TIME_COLUMN
    ORDER_INDEXES = "ix_alerts_state_updated_at and ix_alerts_organization_updated_at"
    KEY = "7"
    HELP = HELP
    COMMANDS = (
        SectionCommand(
            "Alerts: acknowledge the selected alert",
            "Mark it seen; it stays live (administrators only)",
            "acknowledge",
            admin_only=True,
        ),
        SectionCommand(
            "Alerts: resolve the selected alert",
            "Close it; its rule's cooldown starts (administrators only, confirmed)",
            "resolve",
            admin_only=True,
        ),
        SectionCommand("Alerts: open the events", "Show the selected alert's events in Logs", "open_events"),
        SectionCommand("Alerts: show resolved alerts too", "List alerts in every state", "all_states"),
        SectionCommand(
            "Alerts: clear the filters", "Open and acknowledged alerts of every rule", "clear_filters"
        ),
        SectionCommand("Alerts: newest page", "Go to the alerts changed last", "newest_page"),
        SectionCommand("Alerts: oldest page", "Go to the alerts changed first", "oldest_page"),
        SectionCommand("Alerts: oldest or newest first", "Flip the order of the alerts", "flip_order"),
    )
    ADMIN_ACTIONS = frozenset({"acknowledge", "resolve"})
    BINDINGS = [
        Binding("a", "acknowledge", "Ack"),
        Binding("r", "resolve", "Resolve"),
        Binding("n", "next_page", "Next page"),
        Binding("p", "previous_page", "Prev page"),
        Binding("g", "newest_page", "Newest"),
        Binding("G", "oldest_page", "Oldest"),
        Binding("d", "toggle_detail", "Detail"),
        Binding("enter", "open_events", "Events in Logs", show=False),
        Binding("z", "zoom_detail", "Detail: whole section (again: back)", show=False),
        Binding("c", "clear_filters", "Clear the filters", show=False),
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filters = AlertFilter(states=STATE_CHOICES[DEFAULT_STATES])
        self.alerts: dict[str, Alert] = {}
        self.rules: dict[str, AlertRule] = {}
        self._organizations: list[str] = []
        #: The order shown: newest change first (else oldest first).
        self.newest_first = True
        #: The page shown, as it is read again on each refresh.
        self.page_request = PageRequest()
        #: Where the page shown is: its number counted from the top of the order shown, or the bottom.
        self.page_number = 1
        self.page_from_top = True
        #: Whether there are rows after the page (in the order shown) and before it.
        self.has_next = False
        self.has_previous = False

    def compose(self) -> ComposeResult:
        with Horizontal(classes="admin-bar"):
            yield Select(
                [(label, label) for label in STATE_CHOICES],
                value=DEFAULT_STATES,
                allow_blank=False,
                id="alerts-state",
            )
            yield Select([(ANY, ANY)], value=ANY, allow_blank=False, id="alerts-org")
            yield Select([(ANY, ANY)], value=ANY, allow_blank=False, id="alerts-rule")
        yield Static("", id="alerts-summary", classes="admin-summary")
        yield KeyedTable(*COLUMNS, id="alerts-table", paged=True)
        with VerticalScroll(id="alert-detail"):
            yield Static("Select an alert to see its details.", id="alert-detail-text")

    def on_mount(self) -> None:
        self.query_one("#alert-detail").display = self.app.size.height >= DETAIL_MIN_HEIGHT
        self.table.order_shown = (TIME_COLUMN, True)
        self.table.label_headers()

    @property
    def table(self) -> KeyedTable:
        return self.query_one("#alerts-table", KeyedTable)

    @property
    def has_older(self) -> bool:
        """Whether older alerts than the page's exist (for the tests and the tmux eye)."""
        return self.has_next if self.newest_first else self.has_previous

    def focus_first(self) -> None:
        self.table.focus()

    def reload(self) -> None:
        self.load_choices()
        self.load_alerts()

    # -- filters ---------------------------------------------------------------------------------

    def read_filters(self) -> AlertFilter:
        """The filter the bar describes."""
        state = str(self.query_one("#alerts-state", Select).value)
        org = self.query_one("#alerts-org", Select).value
        rule = self.query_one("#alerts-rule", Select).value
        return AlertFilter(
            states=STATE_CHOICES.get(state, frozenset()),
            organization_id=None if org in (ANY, Select.BLANK) else str(org),
            rule_id=None if rule in (ANY, Select.BLANK) else uuid.UUID(str(rule)),
        )

    @on(Select.Changed)
    def _filters_changed(self) -> None:
        filters = self.read_filters()
        if filters != self.filters:
            self.filters = filters
            self._go_to(PageRequest(), page_from_top=True)

    def action_all_states(self) -> None:
        self.query_one("#alerts-state", Select).value = "any state"

    def action_clear_filters(self) -> None:
        self.query_one("#alerts-state", Select).value = DEFAULT_STATES
        self.query_one("#alerts-org", Select).value = ANY
        self.query_one("#alerts-rule", Select).value = ANY

    def filter_by_cell(self, request: KeyedTable.FilterRequested) -> None:
        """``F``: the State, Rule and Org columns set their box above the table; the others say so."""
        alert = self.alerts.get(request.row_key)
        if alert is None:
            return
        if request.column == "state":
            label = alert.state if alert.state in STATE_CHOICES else "any state"
            self.query_one("#alerts-state", Select).value = label
            self.context.notify(f"Showing {label} alerts (c clears the filters).", timeout=3)
        elif request.column == "org":
            if alert.organization_id not in self._organizations:
                self.context.notify("That organisation is not listed (deleted?).", severity="warning")
                return
            self.query_one("#alerts-org", Select).value = alert.organization_id
            self.context.notify(
                f"Showing the alerts of {alert.organization_id} (c clears the filters).", timeout=3
            )
        elif request.column == "rule":
            if str(alert.rule_id) not in self.rules:
                self.context.notify(
                    "That alert's rule was deleted: its alerts cannot be chosen by rule.", severity="warning"
                )
                return
            self.query_one("#alerts-rule", Select).value = str(alert.rule_id)
            self.context.notify(
                f"Showing the alerts of the rule {alert.rule_name!r} (c clears the filters).", timeout=3
            )
        else:
            self.context.notify(NOT_A_FILTER, timeout=5)

    @work(exclusive=True, group="alerts-choices", exit_on_error=False)
    async def load_choices(self) -> None:
        async with self.context.sessions() as session:
            organizations = [row.organization_id for row in await list_configs(session=session)]
            rules = list(await list_rules(session=session))
        if organizations != self._organizations:
            self._organizations = organizations
            self._set_options(
                "#alerts-org", [(ANY, ANY), *((plain(org), org) for org in organizations)], organizations
            )
        shown = {str(rule.id): rule for rule in rules}
        if shown.keys() != self.rules.keys() or any(
            (rule.name, rule.organization_id) != (self.rules[key].name, self.rules[key].organization_id)
            for key, rule in shown.items()
        ):
            self.rules = shown
            self._set_options(
                "#alerts-rule",
                [
                    (ANY, ANY),
                    *((plain(f"{rule.name} ({rule.organization_id})"), key) for key, rule in shown.items()),
                ],
                list(shown),
            )

    def _set_options(self, selector: str, options: list[tuple[Any, str]], values: list[str]) -> None:
        self.replace_options(self.query_one(selector, Select), options, values, fallback=ANY)

    # -- pages and order -------------------------------------------------------------------------

    @work(exclusive=True, group="alerts-load", exit_on_error=False)
    async def load_alerts(self, select: str | None = None) -> None:
        request = self.page_request
        # Walking toward older rows reads newest first from the anchor; toward newer, oldest first.
        toward_older = request.forward == self.newest_first
        anchor = request.anchor
        try:
            async with self.context.sessions() as session:
                rows = list(
                    await list_alerts(
                        session=session,
                        alert_filter=self.filters,
                        limit=ALERT_PAGE_SIZE + 1,
                        before=anchor if toward_older else None,
                        after=None if toward_older else anchor,
                        oldest_first=not toward_older,
                    )
                )
        finally:
            self.refresh_while_shown(REFRESH_SECONDS, self.load_alerts)
        more = len(rows) > ALERT_PAGE_SIZE
        rows = rows[:ALERT_PAGE_SIZE]
        if not request.forward:
            rows.reverse()
        self.has_next = more if request.forward else anchor is not None
        self.has_previous = anchor is not None if request.forward else more
        self.show(rows, select=select)

    def _go_to(self, request: PageRequest, *, page_from_top: bool, page_number: int = 1) -> None:
        self.page_request = request
        self.page_from_top = page_from_top
        self.page_number = page_number
        self.load_alerts()

    def show(self, rows: Sequence[Alert], *, select: str | None = None) -> None:
        self.alerts = {str(alert.id): alert for alert in rows}
        self.table.show(
            (
                (
                    str(alert.id),
                    (
                        severity_text(alert.severity, short=True),
                        Text(
                            STATE_LABELS.get(alert.state, alert.state),
                            style=STATE_STYLES.get(alert.state, ""),
                            end="",
                        ),
                        plain(alert.rule_name),
                        plain(alert.organization_id),
                        plain(alert.group_key),
                        f"{alert.event_count:,}",
                        when(alert.updated_at, precision="short"),
                    ),
                )
                for alert in rows
            ),
            select=select,
        )
        self._summary(len(rows))
        self._show_detail()

    def _summary(self, count: int) -> None:
        order = "newest first" if self.newest_first else "oldest first"
        if self.page_number == 1 and not self.page_from_top:
            page = "the last page"
        elif self.page_from_top:
            page = f"page {self.page_number}"
        else:
            page = f"page {self.page_number} from the end"
        if count == 0:
            summary = f"No alert matches these filters · {order} · c clears the filters"
        else:
            moves = [
                key for key, more in (("n next", self.has_next), ("p previous", self.has_previous)) if more
            ]
            summary = " · ".join([counted(count, "alert"), order, page, *moves, "enter events in Logs"])
        self.query_one("#alerts-summary", Static).update(summary)

    def action_next_page(self) -> None:
        if not self.has_next or not self.alerts:
            self.context.notify("This is the last page.", timeout=2)
            return
        last = list(self.alerts.values())[-1]
        number = self.page_number + 1 if self.page_from_top else max(1, self.page_number - 1)
        self._go_to(
            PageRequest((last.updated_at, last.id), forward=True),
            page_from_top=self.page_from_top,
            page_number=number,
        )

    def action_previous_page(self) -> None:
        if not self.has_previous or not self.alerts:
            self.context.notify("This is the first page.", timeout=2)
            return
        first = next(iter(self.alerts.values()))
        number = max(1, self.page_number - 1) if self.page_from_top else self.page_number + 1
        self._go_to(
            PageRequest((first.updated_at, first.id), forward=False),
            page_from_top=self.page_from_top,
            page_number=number,
        )

    def action_newest_page(self) -> None:
        self._go_to(PageRequest(forward=self.newest_first), page_from_top=self.newest_first)

    def action_oldest_page(self) -> None:
        self._go_to(PageRequest(forward=not self.newest_first), page_from_top=not self.newest_first)

    def flip_order(self) -> None:
        self.action_flip_order()

    def action_flip_order(self) -> None:
        """Newest first ↔ oldest first, from the top of the new order."""
        self.newest_first = not self.newest_first
        self.table.order_shown = (TIME_COLUMN, self.newest_first)
        self.table.label_headers()
        self._go_to(PageRequest(), page_from_top=True)
        self.context.notify(
            f"Alerts {'newest' if self.newest_first else 'oldest'} first (s again flips it).", timeout=2
        )

    # -- details and events ----------------------------------------------------------------------

    @on(DataTable.RowHighlighted, "#alerts-table")
    def _highlighted(self) -> None:
        self._show_detail()

    def _show_detail(self) -> None:
        key = self.table.selected_key
        alert = self.alerts.get(key) if key is not None else None
        body = self.query_one("#alert-detail-text", Static)
        body.update(alert_detail(alert) if alert is not None else "Select an alert to see its details.")

    def action_toggle_detail(self) -> None:
        detail = self.query_one("#alert-detail")
        detail.display = not detail.display
        if not detail.display:
            self._zoom(False)

    def action_zoom_detail(self) -> None:
        detail = self.query_one("#alert-detail")
        self._zoom(not detail.has_class("-whole"))

    def _zoom(self, whole: bool) -> None:
        """The detail takes the whole section (the table hidden; focus in the detail to scroll) or not."""
        detail = self.query_one("#alert-detail")
        detail.set_class(whole, "-whole")
        self.table.display = not whole
        if whole:
            detail.display = True
            detail.focus()
        else:
            self.table.focus()

    def _selected(self, what: str) -> Alert | None:
        return self.selected_row(self.table, self.alerts, f"an alert to {what}")

    @on(DataTable.RowSelected, "#alerts-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open_events()

    def action_open_events(self) -> None:
        alert = self._selected("see the events of")
        if alert is not None:
            self.open_events(alert)

    @work(exclusive=True, group="alerts-events", exit_on_error=False)
    async def open_events(self, alert: Alert) -> None:
        """Switch to Logs, filtered to ``alert``'s events (the rule read now for its group and levels)."""
        async with self.context.sessions() as session:
            try:
                rule: AlertRule | None = await get_rule(session=session, rule_id=alert.rule_id)
            except AlertError:
                rule = None
        filters = alert_filter_for_logs(alert, rule)
        self.post_message(ShowLogs(filters))
        if alert.rule_kind == "silent_agent":
            self.context.notify("A silent-agent alert has no events: its details list the silent devices.")

    # -- changes ---------------------------------------------------------------------------------

    def action_acknowledge(self) -> None:
        if not self.context.require_admin("acknowledge alerts"):
            return
        alert = self._selected("acknowledge")
        if alert is None:
            return
        if alert.state != "open":
            self.context.notify(f"That alert is {alert.state}, not open.", severity="warning")
            return
        self.acknowledge(alert.id)

    def action_resolve(self) -> None:
        if not self.context.require_admin("resolve alerts"):
            return
        alert = self._selected("resolve")
        if alert is None:
            return
        if alert.state == "resolved":
            self.context.notify("That alert is already resolved.", severity="warning")
            return
        question = (
            f"Resolve the alert {alert.rule_name!r} for {alert.group_key or alert.organization_id!r}? "
            "Its rule raises nothing more for this group until the cooldown has passed."
        )
        confirm_then(self.app, question, lambda: self.resolve(alert.id))

    @work(exclusive=True, group="alerts-change", exit_on_error=False)
    async def acknowledge(self, alert_id: uuid.UUID) -> None:
        async with self.context.sessions() as session:
            try:
                await acknowledge_alert(session=session, alert_id=alert_id, actor=self.context.actor)
            except AlertError as error:
                self.context.notify(str(error), severity="error")
                return
            await session.commit()
        self.context.notify("Alert acknowledged.")
        self.load_alerts(select=str(alert_id))

    @work(exclusive=True, group="alerts-change", exit_on_error=False)
    async def resolve(self, alert_id: uuid.UUID) -> None:
        async with self.context.sessions() as session:
            try:
                await resolve_alert(session=session, alert_id=alert_id, actor=self.context.actor)
            except AlertError as error:
                self.context.notify(str(error), severity="error")
                return
            await session.commit()
        self.context.notify("Alert resolved.")
        self.load_alerts(select=str(alert_id))
