"""Alerts section: alerts raised by the organisations' rules — filter, page, details, acknowledge, resolve,
and Enter to see the alert's events in the log browser.

Reads and changes go through :mod:`db.alerts`; acknowledging and resolving are
admin-only (checked again in ``db/`` as of now) and audited there; resolving is
confirmed, as it starts the rule's cooldown. The list refreshes itself every few
seconds while shown (armed again only when the last refresh finished) and keeps
the cursor on the same alert. Rule names, group keys and details come from users
and agents: they are shown as :func:`~console.untrusted.plain` text.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import DataTable, Select, Static

from console.dialogs.confirm import confirm_then
from console.sections.logs import LogsSection
from console.sections.section import Section, SectionCommand
from console.untrusted import plain
from console.widgets.keyed_table import KeyedTable, TableColumn
from console.widgets.severity import severity_text
from console.widgets.time_format import when
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

if TYPE_CHECKING:
    from console.screens.shell import ShellScreen

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
COLUMNS = (
    TableColumn("Severity"),
    TableColumn("State"),
    TableColumn("Rule", width=14, stretch=True),
    TableColumn("Org"),
    TableColumn("Group", width=14, stretch=True),
    TableColumn("Count"),
    TableColumn("First–last event (UTC)"),
    TableColumn("Rev"),
)
#: Cursor of a page: the last alert of the page before it (updated_at, id); None for the newest page.
PageCursor = tuple[datetime, uuid.UUID] | None


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
    """Every field of ``alert`` a person needs, compactly, as plain text (names and keys are untrusted)."""
    text = Text.assemble(plain(alert.rule_name, "bold"), " · ")
    text.append_text(severity_text(alert.severity)).append(f" · {alert.state} · {alert.rule_kind} rule · ")
    text.append_text(plain(alert.organization_id)).append(" · group ").append_text(
        plain(alert.group_key or "—", "bold")
    )
    events = f"{alert.event_count:,} event{'' if alert.event_count == 1 else 's'}"
    text.append(
        f"\n{events} from {when(alert.first_event_at, precision='second')} to "
        f"{when(alert.last_event_at, precision='second')} UTC · opened {when(alert.opened_at)} · "
        f"updated {when(alert.updated_at)} · revision {alert.revision}"
    )
    for verb, at, by in (
        ("acknowledged", alert.acknowledged_at, alert.acknowledged_by),
        ("resolved", alert.resolved_at, alert.resolved_by),
    ):
        if at is not None or by:
            text.append(f"\n{verb} {when(at)} UTC by ").append_text(plain(by or "—", "bold"))
    details = alert.details if isinstance(alert.details, dict) else {}
    for key, value in details.items():
        items = value if isinstance(value, list) else [value]
        text.append("\n").append_text(plain(key, "bold")).append(": ")
        text.append_text(Text(", ", end="").join(plain(item) for item in items))
    event_ids = alert.event_ids if isinstance(alert.event_ids, list) else []
    text.append("\nevent ids", style="bold")
    if event_ids:
        text.append(f" (the first {len(event_ids)}): ").append_text(
            Text(", ", end="").join(plain(event_id) for event_id in event_ids)
        )
    else:
        text.append(": none")
    return text


class AlertsSection(Section):
    """Alerts, newest change first: details, their events in the log browser, acknowledge and resolve."""

    TITLE = "Alerts"
    KEY = "7"
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
    )
    BINDINGS = [
        Binding("enter", "open_events", "Events", show=False),
        Binding("a", "acknowledge", "Acknowledge"),
        Binding("r", "resolve", "Resolve"),
        Binding("n", "older_page", "Older"),
        Binding("p", "newer_page", "Newer"),
        Binding("g", "newest_page", "Newest"),
        Binding("d", "toggle_detail", "Detail"),
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filters = AlertFilter(states=STATE_CHOICES[DEFAULT_STATES])
        self.alerts: dict[str, Alert] = {}
        self.rules: dict[str, AlertRule] = {}
        self._organizations: list[str] = []
        #: The cursors of the pages before the one shown (the last is the shown page's own).
        self._pages: list[PageCursor] = [None]
        self.has_older = False

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

    @property
    def table(self) -> KeyedTable:
        return self.query_one("#alerts-table", KeyedTable)

    def focus_first(self) -> None:
        self.table.focus()

    def reload(self) -> None:
        self.load_choices()
        self.load_alerts()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # A viewer is not shown the keys that change alerts (db/ would refuse them anyway).
        if action in ("acknowledge", "resolve") and not self.context.user.is_admin:
            return False
        return True

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
            self._pages = [None]
            self.load_alerts()

    def action_all_states(self) -> None:
        self.query_one("#alerts-state", Select).value = "any state"

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

    # -- the list --------------------------------------------------------------------------------

    @work(exclusive=True, group="alerts-load", exit_on_error=False)
    async def load_alerts(self, select: str | None = None) -> None:
        try:
            async with self.context.sessions() as session:
                rows = list(
                    await list_alerts(
                        session=session,
                        alert_filter=self.filters,
                        limit=ALERT_PAGE_SIZE + 1,
                        before=self._pages[-1],
                    )
                )
        finally:
            self.refresh_while_shown(REFRESH_SECONDS, self.load_alerts)
        self.has_older = len(rows) > ALERT_PAGE_SIZE
        self.show(rows[:ALERT_PAGE_SIZE], select=select)

    def show(self, rows: Sequence[Alert], *, select: str | None = None) -> None:
        self.alerts = {str(alert.id): alert for alert in rows}
        self.table.show(
            (
                (
                    str(alert.id),
                    (
                        severity_text(alert.severity),
                        Text(
                            STATE_LABELS.get(alert.state, alert.state),
                            style=STATE_STYLES.get(alert.state, ""),
                            end="",
                        ),
                        plain(alert.rule_name),
                        plain(alert.organization_id),
                        plain(alert.group_key),
                        f"{alert.event_count:,}",
                        event_span(alert.first_event_at, alert.last_event_at),
                        str(alert.revision),
                    ),
                )
                for alert in rows
            ),
            select=select,
        )
        page = len(self._pages)
        more = " · n older" if self.has_older else ""
        newer = " · p newer" if page > 1 else ""
        actions = " · a acknowledge · r resolve" if self.context.user.is_admin else ""
        empty = "no alert matches · " if not rows else ""
        self.query_one("#alerts-summary", Static).update(
            f"{empty}{len(rows)} alerts · page {page}{more}{newer} · enter events{actions}"
        )
        self._show_detail()

    def action_older_page(self) -> None:
        if not self.has_older or not self.alerts:
            self.context.notify("This is the oldest page.", timeout=2)
            return
        last = list(self.alerts.values())[-1]
        self._pages.append((last.updated_at, last.id))
        self.load_alerts()

    def action_newer_page(self) -> None:
        if len(self._pages) == 1:
            self.context.notify("This is the newest page.", timeout=2)
            return
        self._pages.pop()
        self.load_alerts()

    def action_newest_page(self) -> None:
        self._pages = [None]
        self.load_alerts()

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
        shell: ShellScreen = self.screen  # type: ignore[assignment]
        logs = await shell.mounted(LogsSection)
        assert isinstance(logs, LogsSection)
        shell.action_show_section(logs.id or "")
        logs.apply_filters(filters)
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
