"""Forwarding section: where each organisation's alerts and events go (syslog, RELP, Splunk HEC, webhooks)
— state, lag, last error, add/edit/delete, enable/disable, a test message, and the dead letters.

Reads and changes go through :mod:`db.destinations` (admin-only, checked again there and audited);
the test message through :func:`forwarding.test_message.send_test_message`, which sends one
message with the destination's transport and says what the receiver answered. Names, addresses
and the receivers' errors are untrusted text. The list refreshes itself while shown, like the
alerts, keeping the cursor on the same destination.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import DataTable, Label, Select, Static

from console.dialogs.confirm import confirm_then
from console.dialogs.dead_letters import DeadLettersScreen
from console.dialogs.destination_form import DestinationFormScreen, spec_of
from console.dialogs.dialog import Dialog
from console.sections.section import Section, SectionCommand
from console.untrusted import plain
from console.widgets.detail_lines import add_line
from console.widgets.keyed_table import KeyedTable, TableColumn, cell_text
from console.widgets.time_format import when
from db.configs import list_configs
from db.destinations import (
    DestinationError,
    DestinationLag,
    delete_destination,
    destination_lag,
    get_destination,
    list_destinations,
    update_destination,
)
from db.models import ForwardDestination
from db.secrets import SecretKeyError, SecretUnreadable, secret_box_for
from db.vocabulary import RISK_LEVELS
from db.wording import counted
from forwarding.transport import DestinationDown, RetryLater

REFRESH_SECONDS = 5.0
#: How long the console waits for a test message before saying the destination does not answer.
TEST_MESSAGE_SECONDS = 30.0
ANY = "any"
STATE_STYLES: dict[str, str] = {
    "active": "green",
    "retrying": "yellow",
    "paused": "bold red",
    "disabled": "dim",
}
COLUMNS = (
    TableColumn("Name", width=10, stretch=True, key="name"),
    TableColumn("Org", key="org"),
    TableColumn("State", width=8, key="state"),
    TableColumn("Behind", key="behind"),
    TableColumn("Unsent since", width=6, key="oldest"),
    TableColumn("Via", key="via"),
    TableColumn("Address", width=10, stretch=True, key="address"),
    TableColumn("Last error", width=10, stretch=True, key="error"),
)
#: Each column's place in a row, by key.
COLUMN_INDEX = {spec.column_key: index for index, spec in enumerate(COLUMNS)}

HELP = """\
Where each organisation's alerts and events are forwarded (syslog over TCP, TLS or UDP, RELP, Splunk
HEC, signed webhooks), one destination a row. The list refreshes itself every 5 s.

**States**: *active* (sending as events arrive), *retrying* (a passing fault: a timeout, 429 or 5xx;
tried again with a growing delay), *paused* (the receiver refused the destination itself: connection
refused, TLS, a rejected token; an alert is raised and delivery is tried again, slower), *disabled*
(switched off with `a`; nothing is sent until it is enabled again).

**Lag**: *Behind* counts the events (ev) and alert changes (al) not delivered yet, *Unsent since* the
oldest of them (UTC). What a destination has not received is held back from the cleanup up to the
retention hold. `i` shows a destination's every setting, its lag and how many messages it took.

**Dead letters** (`l`): messages the receiver refused one by one (a HEC 400, a 413 for one event),
with its reason. Administrators send them again (`r`, `R` all) or discard them (`del`, `X` all).

**Changes** (administrators): `n` adds a destination, Enter or `e` edits it, `a` disables (asked
first) or enables it, `t` sends a test message and shows the answer, `del` deletes it (asked first).
A secret (HEC token, webhook signing key, TLS client key) is stored encrypted and **never shown
again**: leave it empty on an edit to keep it. For a viewer, Enter shows the settings (as `i`).
`F` on the Org column shows one organisation's destinations; `s` sorts by the cursor's column.
"""


@dataclass(frozen=True)
class ShownDestination:
    """A destination as listed: its row and how far behind it is."""

    row: ForwardDestination
    lag: DestinationLag


def one_line(value: str | None) -> str:
    return " ".join((value or "").split())


def behind(lag: DestinationLag) -> str:
    """``12 ev + 1 al``: the events and alert changes a destination has not received."""
    shown = f"{lag.events_behind:,} ev"
    if lag.alerts_behind:
        shown += f" + {lag.alerts_behind:,} al"
    return shown


def destination_detail(item: ShownDestination) -> Text:
    """Every setting and the state of a destination, one per line (the secret only as stored or not)."""
    row, lag = item.row, item.lag
    levels = [level for level in RISK_LEVELS if level in (row.event_risk_levels or ())]
    text = Text(end="")
    add_line(text, "Name", plain(row.name, "bold"))
    add_line(text, "Organisation", plain(row.organization_id))
    add_line(text, "State", Text(row.state, style=STATE_STYLES.get(row.state, "")))
    add_line(text, "Enabled", "yes" if row.enabled else "no (a enables it)")
    add_line(text, "Transport", plain(f"{row.transport}, {row.format} format"))
    add_line(text, "Address", plain(row.address))
    add_line(
        text,
        "Forwards",
        f"alerts {'yes' if row.forward_alerts else 'no'} · events {', '.join(levels) or 'none'}",
    )
    add_line(text, "Secret", "stored (never shown)" if row.secret_ciphertext else "none")
    for key, value in sorted((row.options or {}).items()):
        add_line(text, "Option", Text.assemble(plain(key, "bold"), " = ", plain(value)))
    add_line(text, "Behind", behind(lag))
    add_line(
        text, "Unsent since", f"{when(lag.oldest_undelivered_at)} UTC" if lag.oldest_undelivered_at else "—"
    )
    delivered = row.last_delivered_at
    add_line(
        text,
        "Delivered",
        f"{row.delivered_count:,} · last {when(delivered) + ' UTC' if delivered else 'never'}",
    )
    if row.last_error:
        add_line(
            text,
            "Last error",
            Text.assemble(f"{when(row.last_error_at)} UTC: ", plain(one_line(row.last_error), "red")),
        )
    return text


class DestinationDetailScreen(Dialog[None]):
    """One destination's settings and state, read-only (Enter for a viewer)."""

    HELP = "A forwarding destination as stored: its settings, state and lag. The secret is never shown."
    HELP_TITLE = "Destination"
    BINDINGS: ClassVar[list[BindingType]] = [
        # A modal screen does not see the app's keys: ? is bound here to the app's help.
        Binding("question_mark", "app.help", "Help: these keys", show=False),
    ]

    def __init__(self, item: ShownDestination) -> None:
        super().__init__()
        self.item = item

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="destination-detail", classes="dialog"):
            yield Label(
                Text.assemble(plain(self.item.row.name, "bold"), "  (escape closes)"),
                id="destination-detail-title",
            )
            yield Static(destination_detail(self.item), id="destination-detail-text")


class ForwardingSection(Section):
    """Forwarding destinations: state, lag, errors; add, edit, delete, enable, test; dead letters."""

    TITLE = "Forwarding"
    KEY = "8"
    HELP = HELP
    COMMANDS = (
        SectionCommand(
            "Forwarding: add a destination",
            "Forward an organisation's alerts and events to a SIEM (administrators only)",
            "new_destination",
            admin_only=True,
        ),
        SectionCommand(
            "Forwarding: edit the selected destination",
            "Transport, format, address, secret, what is forwarded",
            "edit_destination",
            admin_only=True,
        ),
        SectionCommand(
            "Forwarding: enable / disable",
            "Pause or resume the selected destination",
            "toggle_enabled",
            admin_only=True,
        ),
        SectionCommand(
            "Forwarding: send a test message",
            "Send one message to the selected destination and show the answer",
            "send_test",
            admin_only=True,
        ),
        SectionCommand(
            "Forwarding: delete the selected destination",
            "Forget it, its position and its dead letters (confirmed)",
            "delete_destination",
            admin_only=True,
        ),
        SectionCommand(
            "Forwarding: dead letters", "Messages the selected destination refused", "dead_letters"
        ),
        SectionCommand(
            "Forwarding: the destination's settings", "Every setting and the state, read-only", "show_detail"
        ),
    )
    ADMIN_ACTIONS = frozenset(
        {"new_destination", "edit_destination", "delete_destination", "toggle_enabled", "send_test"}
    )
    BINDINGS = [
        Binding("n", "new_destination", "New"),
        Binding("e", "edit_destination", "Edit"),
        Binding("a", "toggle_enabled", "On/off"),
        Binding("t", "send_test", "Test"),
        Binding("l", "dead_letters", "Dead letters"),
        Binding("delete", "delete_destination", "Delete"),
        Binding("i", "show_detail", "Settings (read-only)", show=False),
        Binding("r", "reload", "Reload", show=False),
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.organization_id: str | None = None
        self.organizations: list[str] = []
        self.destinations: dict[str, ShownDestination] = {}
        #: The last test message's outcome, as notified (for the tmux eye and the tests).
        self.last_test_result: str | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(classes="admin-bar"):
            yield Select([(ANY, ANY)], value=ANY, allow_blank=False, id="forwarding-org")
            yield Static("", id="forwarding-summary", classes="admin-summary")
        yield KeyedTable(*COLUMNS, id="forwarding-table", sort_value=self._sort_value)
        yield Static("", id="forwarding-detail", classes="admin-detail-line")

    @property
    def table(self) -> KeyedTable:
        return self.query_one("#forwarding-table", KeyedTable)

    def focus_first(self) -> None:
        self.table.focus()

    def reload(self) -> None:
        self.load_organizations()
        self.load_destinations()

    def action_reload(self) -> None:
        self.reload()

    # -- loading ---------------------------------------------------------------------------------

    @work(exclusive=True, group="forwarding-orgs", exit_on_error=False)
    async def load_organizations(self) -> None:
        async with self.context.sessions() as session:
            organizations = [row.organization_id for row in await list_configs(session=session)]
        if organizations != self.organizations:
            self.organizations = organizations
            self.replace_options(
                self.query_one("#forwarding-org", Select),
                [(ANY, ANY), *((plain(org), org) for org in organizations)],
                organizations,
                fallback=ANY,
            )

    @on(Select.Changed, "#forwarding-org")
    def _organization_chosen(self, event: Select.Changed) -> None:
        chosen = None if event.value in (ANY, Select.BLANK) else str(event.value)
        if chosen != self.organization_id:
            self.organization_id = chosen
            self.load_destinations()

    def filter_by_cell(self, request: KeyedTable.FilterRequested) -> None:
        """``F`` on the Org column shows that organisation's destinations; the others say so."""
        item = self.destinations.get(request.row_key)
        if item is None:
            return
        if request.column != "org":
            self.context.notify(
                "F filters by the Org column (the box above the table); s sorts by any column.", timeout=4
            )
            return
        if item.row.organization_id not in self.organizations:
            self.context.notify("That organisation is not listed (deleted?).", severity="warning")
            return
        self.query_one("#forwarding-org", Select).value = item.row.organization_id
        self.context.notify(f"Showing the destinations of {item.row.organization_id}.", timeout=3)

    @work(exclusive=True, group="forwarding-load", exit_on_error=False)
    async def load_destinations(self, select: str | None = None) -> None:
        try:
            async with self.context.sessions() as session:
                rows = await list_destinations(session=session, organization_id=self.organization_id)
                shown = [
                    ShownDestination(row, await destination_lag(session=session, destination=row))
                    for row in rows
                ]
        finally:
            self.refresh_while_shown(REFRESH_SECONDS, self.load_destinations)
        self.show(shown, select=select)

    def show(self, shown: Sequence[ShownDestination], *, select: str | None = None) -> None:
        self.destinations = {str(item.row.id): item for item in shown}
        self.table.show(
            ((str(item.row.id), self._cells(item)) for item in shown),
            select=select,
        )
        paused = sum(item.row.state == "paused" for item in shown)
        parts = [counted(len(shown), "destination")]
        if paused:
            parts.append(f"{paused:,} paused")
        if not shown:
            parts.append("n adds one" if self.context.user.is_admin else "none yet")
        else:
            parts.append("enter edits" if self.context.user.is_admin else "enter shows the settings")
            parts.append("l dead letters")
        self.query_one("#forwarding-summary", Static).update(" · ".join(parts))
        self._show_detail()

    @staticmethod
    def _cells(item: ShownDestination) -> tuple[Text | str, ...]:
        row, lag = item.row, item.lag
        return (
            plain(row.name),
            plain(row.organization_id),
            Text(row.state, style=STATE_STYLES.get(row.state, ""), end=""),
            behind(lag),
            when(lag.oldest_undelivered_at)[5:] if lag.oldest_undelivered_at else "—",
            plain(f"{row.transport}/{row.format}"),
            plain(row.address),
            plain(one_line(row.last_error)),
        )

    def _sort_value(self, column: str, key: str) -> Any:
        """What ``s`` orders by: numbers and times by value (never-seen last), the rest by their text."""
        item = self.destinations.get(key)
        if item is None:
            return (1, "")
        if column == "behind":
            return (0, item.lag.events_behind + item.lag.alerts_behind)
        if column == "oldest":
            at = item.lag.oldest_undelivered_at
            return (0, when(at, precision="second")) if at is not None else (1, "")
        return (0, cell_text(self._cells(item)[COLUMN_INDEX[column]]).casefold())

    # -- the detail line -------------------------------------------------------------------------

    @on(DataTable.RowHighlighted, "#forwarding-table")
    def _highlighted(self) -> None:
        self._show_detail()

    def _show_detail(self) -> None:
        key = self.table.selected_key
        item = self.destinations.get(key) if key is not None else None
        line = self.query_one("#forwarding-detail", Static)
        if item is None:
            hint = "n adds a destination." if self.context.user.is_admin else ""
            line.update(f"Select a destination to see its settings. {hint}")
            return
        row = item.row
        text = Text.assemble(
            plain(row.name, "bold"),
            " → ",
            plain(row.address),
            f" · {'enabled' if row.enabled else 'disabled'}",
        )
        delivered = row.last_delivered_at
        text.append(f"\nlast delivered {when(delivered) + ' UTC' if delivered else 'never'}")
        if row.last_error:
            text.append(f" · last error {when(row.last_error_at)} UTC: ").append_text(
                plain(one_line(row.last_error), "red")
            )
        line.update(text)

    def _selected(self, what: str) -> ForwardDestination | None:
        item = self.selected_row(self.table, self.destinations, f"a destination to {what}")
        return item.row if item is not None else None

    @on(DataTable.RowSelected, "#forwarding-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if self.context.user.is_admin:
            self.action_edit_destination()
        else:
            self.action_show_detail()

    def action_show_detail(self) -> None:
        item = self.selected_row(self.table, self.destinations, "a destination to see")
        if item is not None:
            self.app.push_screen(DestinationDetailScreen(item))

    # -- changes ---------------------------------------------------------------------------------

    def _after_form(self, destination_id: str | None) -> None:
        if destination_id is not None:
            self.context.notify("Destination saved; its forwarder picks it up within seconds.")
            self.load_destinations(select=destination_id)

    def action_new_destination(self) -> None:
        if not self.context.require_admin("add forwarding destinations"):
            return
        if not self.organizations:
            self.context.notify("Create an organisation first (Config, o).", severity="warning")
            return
        self.app.push_screen(
            DestinationFormScreen(
                self.context,
                self.organizations,
                organization_id=self.organization_id or self.organizations[0],
            ),
            self._after_form,
        )

    def action_edit_destination(self) -> None:
        if self.context.require_admin("change forwarding destinations") and (row := self._selected("edit")):
            self.app.push_screen(
                DestinationFormScreen(self.context, self.organizations, row), self._after_form
            )

    def action_toggle_enabled(self) -> None:
        if not self.context.require_admin("enable or disable forwarding destinations"):
            return
        row = self._selected("enable or disable")
        if row is None:
            return
        if row.enabled:
            question = (
                f"Disable {row.name!r}? Nothing is sent to it until it is enabled again; what it has not "
                "received waits (up to the retention hold)."
            )
            confirm_then(self.app, question, lambda: self.set_enabled(row.id, False))
        else:
            self.set_enabled(row.id, True)

    def action_delete_destination(self) -> None:
        if not self.context.require_admin("delete forwarding destinations"):
            return
        row = self._selected("delete")
        if row is not None:
            question = (
                f"Delete the destination {row.name!r}? Its position in the stream and its dead letters "
                "are forgotten; added again, it starts from new events."
            )
            confirm_then(self.app, question, lambda: self.delete(row.id, row.name))

    def action_dead_letters(self) -> None:
        row = self._selected("see the dead letters of")
        if row is not None:
            self.app.push_screen(DeadLettersScreen(self.context, row.id, row.name))

    @work(exclusive=True, group="forwarding-change", exit_on_error=False)
    async def set_enabled(self, destination_id: uuid.UUID, enabled: bool) -> None:
        async with self.context.sessions() as session:
            try:
                row = await get_destination(session=session, destination_id=destination_id)
                await update_destination(
                    session=session,
                    destination_id=destination_id,
                    spec=spec_of(row, enabled=enabled),
                    actor=self.context.actor,
                    secrets=secret_box_for(self.context.settings),
                )
            except (DestinationError, SecretKeyError) as error:
                self.context.notify(str(error), severity="error")
                return
            await session.commit()
        self.context.notify(f"{row.name!r} is now {'enabled' if enabled else 'disabled'}.")
        self.load_destinations(select=str(destination_id))

    @work(exclusive=True, group="forwarding-change", exit_on_error=False)
    async def delete(self, destination_id: uuid.UUID, name: str) -> None:
        async with self.context.sessions() as session:
            try:
                await delete_destination(
                    session=session, destination_id=destination_id, actor=self.context.actor
                )
            except DestinationError as error:
                self.context.notify(str(error), severity="error")
                return
            await session.commit()
        self.context.notify(f"Destination {name!r} deleted.")
        self.load_destinations()

    # -- the test message ------------------------------------------------------------------------

    def action_send_test(self) -> None:
        if not self.context.require_admin("send test messages"):
            return
        row = self._selected("send a test message to")
        if row is None:
            return
        if self.running_workers("forwarding-test"):
            self.context.notify("A test message is already on its way.", severity="warning")
            return
        self.context.notify(f"Sending a test message to {row.name!r}…", timeout=3)
        self.send_test(row.id)

    @work(exclusive=True, group="forwarding-test", exit_on_error=False)
    async def send_test(self, destination_id: uuid.UUID) -> None:
        """Send one test message with the destination's transport; notify the answer or the error."""
        # Imported here: the transports (and their HTTP client) load only when a test message is sent.
        from forwarding.test_message import send_test_message

        async with self.context.sessions() as session:
            try:
                row = await get_destination(session=session, destination_id=destination_id)
            except DestinationError as error:
                self._test_result(str(error), failed=True)
                return
        try:
            secrets = secret_box_for(self.context.settings)
            answer = await asyncio.wait_for(send_test_message(row, secrets), TEST_MESSAGE_SECONDS)
        except (DestinationDown, RetryLater, SecretUnreadable, SecretKeyError) as error:
            self._test_result(f"Test message to {row.name!r} failed: {error}", failed=True)
            return
        except TimeoutError:
            self._test_result(
                f"Test message to {row.name!r} failed: no answer within {TEST_MESSAGE_SECONDS:g} s",
                failed=True,
            )
            return
        self._test_result(f"Test message to {row.name!r}: {one_line(answer)}", failed=False)

    def _test_result(self, message: str, *, failed: bool) -> None:
        self.last_test_result = message
        self.context.notify(message, severity="error" if failed else "information", timeout=10)
