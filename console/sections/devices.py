"""Devices section: registered agents — search and filters, per-device activity, (de)activate, delete.

Reads and writes go through :mod:`db.devices`. A deactivated device is refused
by the ingest server at its next hello; deleting forgets the registration only
(its logs stay), and the device registers again if it says hello, so
deactivation is the way to keep one out. Changes are admin-only (checked in ``db/``
as of now), confirmed, and audited there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, Select, Static
from textual.widgets.select import InvalidSelectValueError

from console.dialogs.confirm import confirm_then
from console.messages import ShowLogs
from console.sections.section import Section, SectionCommand
from console.untrusted import plain
from console.widgets.keyed_table import KeyedTable, TableColumn
from console.widgets.risk import RISK_COLORS
from console.widgets.time_format import when
from db.configs import list_configs
from db.devices import (
    DeviceActivity,
    DeviceError,
    DeviceFilter,
    delete_device,
    device_activity,
    list_devices,
    set_device_active,
)
from db.logs import LogFilter
from db.models import Device
from db.vocabulary import DEVICE_TYPES, RISK_LEVELS
from db.wording import counted

ANY = "any"
#: The "seen" filter: label → days (None: any; -1: never sent an event).
SEEN_CHOICES: dict[str, int | None] = {
    "seen: any time": None,
    "seen: last day": 1,
    "seen: last 7 days": 7,
    "seen: last 30 days": 30,
    "never sent an event": -1,
}
ACTIVE_CHOICES: dict[str, bool | None] = {"active or not": None, "active": True, "inactive": False}
#: At 80 columns (the activity pane hidden) device ids and dates stay readable; wider, every value whole.
COLUMNS = (
    TableColumn("Device", width=10),
    TableColumn("User", width=8, stretch=True),
    TableColumn("Type", width=7),
    TableColumn("Org", width=6),
    TableColumn("Version"),
    TableColumn("Registered", width=10),
    TableColumn("Last seen", width=10),
    TableColumn("State"),
)
#: Below this width the activity pane is hidden (``i`` shows it), so the table keeps the room.
ACTIVITY_MIN_WIDTH = 130


class DevicesSection(Section):
    """Registered agents: last seen, version, activity, activate/deactivate, delete."""

    TITLE = "Devices"
    KEY = "4"
    COMMANDS = (
        SectionCommand(
            "Devices: activate / deactivate",
            "Stop or resume accepting the selected device (administrators only)",
            "toggle_active",
            admin_only=True,
        ),
        SectionCommand(
            "Devices: deactivate a device",
            "Stop accepting a device's events (administrators only)",
            "deactivate_device",
            admin_only=True,
        ),
        SectionCommand(
            "Devices: delete the selected device",
            "Forget its registration; logs stay (confirmed)",
            "delete_device",
            admin_only=True,
        ),
        SectionCommand("Devices: search", "Focus the search box", "focus_search"),
    )
    BINDINGS = [
        Binding("l", "open_logs", "Logs"),
        Binding("a", "toggle_active", "(De)activate"),
        Binding("delete", "delete_device", "Delete"),
        Binding("slash", "focus_search", "Search"),
        Binding("i", "toggle_activity", "Activity pane", show=False),
        Binding("r", "reload", "Reload", show=False),
    ]
    ADMIN_ACTIONS = frozenset({"toggle_active", "deactivate_device", "delete_device"})
    HELP = """\
The agents that said hello, and beside them the activity of the one under the cursor (events
by risk, last event, last hello; `i` shows or hides it, hidden below 130 columns). `/` searches
device and user ids; the boxes at the top filter by type, organisation, state and when last
seen. `F` on a cell filters by its value (the Type and Org columns set their box, the others
search). `s` sorts by the cursor's column. Enter or `l` shows the device's logs.
Administrators: `a` deactivates (asked first: its agent is refused from its next hello) or
activates; `del` forgets the registration (its logs stay; it registers again at its next hello).
"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filters = DeviceFilter()
        self.devices: dict[str, Device] = {}
        self.activity: DeviceActivity | None = None
        self._organizations: list[str] = []
        #: Whether ``i`` asked for the activity pane (None: shown when there is room).
        self._activity_wanted: bool | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(classes="admin-bar"):
            yield Input(placeholder="/ search: device or user", id="devices-search")
            yield Select(
                [(kind, kind) for kind in (ANY, *DEVICE_TYPES)],
                value=ANY,
                allow_blank=False,
                id="devices-type",
                prompt="type",
            )
            yield Select([(ANY, ANY)], value=ANY, allow_blank=False, id="devices-org")
            yield Select(
                [(label, label) for label in ACTIVE_CHOICES],
                value="active or not",
                allow_blank=False,
                id="devices-active",
            )
            yield Select(
                [(label, label) for label in SEEN_CHOICES],
                value="seen: any time",
                allow_blank=False,
                id="devices-seen",
            )
        yield Static("", id="devices-summary", classes="admin-summary")
        with Horizontal(classes="admin-body"):
            yield KeyedTable(*COLUMNS, id="devices-table")
            with Vertical(id="device-activity", classes="admin-detail"):
                yield Static("Select a device to see its activity.", id="device-activity-text")

    @property
    def table(self) -> KeyedTable:
        return self.query_one("#devices-table", KeyedTable)

    def focus_first(self) -> None:
        self.table.focus()

    def on_mount(self) -> None:
        self.show_activity()

    def on_resize(self) -> None:
        self.show_activity()

    def show_activity(self) -> None:
        """The activity pane beside the table: as ``i`` last set it, else only when there is room."""
        wanted = self._activity_wanted
        shown = wanted if wanted is not None else self.app.size.width >= ACTIVITY_MIN_WIDTH
        self.query_one("#device-activity").display = shown

    def action_toggle_activity(self) -> None:
        self._activity_wanted = not self.query_one("#device-activity").display
        self.show_activity()

    def reload(self) -> None:
        self.load_organizations()
        self.load_devices()

    def action_reload(self) -> None:
        self.reload()

    def action_focus_search(self) -> None:
        self.query_one("#devices-search", Input).focus()

    @on(DataTable.RowSelected, "#devices-table")
    def _row_opened(self, event: DataTable.RowSelected) -> None:
        """Enter opens the device: its logs."""
        event.stop()
        self.action_open_logs()

    def action_open_logs(self) -> None:
        device = self._selected("see the logs of")
        if device is not None:
            self.open_logs(device.device_id)

    def open_logs(self, device_id: str) -> None:
        """Switch to Logs, filtered to ``device_id``'s events."""
        self.post_message(ShowLogs(LogFilter(device=device_id)))

    def filter_by_cell(self, request: KeyedTable.FilterRequested) -> None:
        """``F``: the Type and Org columns set their box; the others search for the value."""
        boxes = {"Type": "#devices-type", "Org": "#devices-org"}
        if request.column not in boxes:
            super().filter_by_cell(request)
            return
        select: Select[str] = self.query_one(boxes[request.column], Select)
        try:
            select.value = request.value
        except InvalidSelectValueError:
            super().filter_by_cell(request)
            return
        self.context.notify(
            f"Showing {request.column.lower()} {request.value!r} only (set the box to any for all).",
            timeout=3,
        )

    # -- filters -------------------------------------------------------------------------------

    def read_filters(self) -> DeviceFilter:
        """The filter the bar describes."""
        kind = self.query_one("#devices-type", Select).value
        org = self.query_one("#devices-org", Select).value
        seen = SEEN_CHOICES.get(str(self.query_one("#devices-seen", Select).value))
        return DeviceFilter(
            search=self.query_one("#devices-search", Input).value.strip(),
            device_type=None if kind in (ANY, Select.BLANK) else str(kind),
            organization_id=None if org in (ANY, Select.BLANK) else str(org),
            active=ACTIVE_CHOICES.get(str(self.query_one("#devices-active", Select).value)),
            seen_within_days=seen if seen is not None and seen > 0 else None,
            never_seen=seen == -1,
        )

    @on(Input.Submitted, "#devices-search")
    @on(Select.Changed)
    def _filters_changed(self) -> None:
        filters = self.read_filters()
        if filters != self.filters:
            self.filters = filters
            self.load_devices()

    @work(exclusive=True, group="devices-orgs", exit_on_error=False)
    async def load_organizations(self) -> None:
        async with self.context.sessions() as session:
            organizations = [row.organization_id for row in await list_configs(session=session)]
        if organizations != self._organizations:
            self._organizations = organizations
            select = self.query_one("#devices-org", Select)
            current = select.value
            with self.prevent(Select.Changed):
                select.set_options([(ANY, ANY), *((plain(org), org) for org in organizations)])
                select.value = current if current in organizations else ANY

    # -- list and activity ---------------------------------------------------------------------

    @work(exclusive=True, group="devices-load", exit_on_error=False)
    async def load_devices(self, select: str | None = None) -> None:
        async with self.context.sessions() as session:
            rows = await list_devices(session=session, filters=self.filters)
        self.show(rows, select=select)

    def show(self, rows: Sequence[Device], *, select: str | None = None) -> None:
        self.devices = {device.device_id: device for device in rows}
        self.table.show(
            (
                (
                    device.device_id,
                    (
                        plain(device.device_id),
                        plain(device.user_id),
                        plain(device.device_type),
                        plain(device.organization_id),
                        plain(device.agent_version or ""),
                        when(device.registered_at, precision="day"),
                        when(device.last_seen),
                        Text("active") if device.is_active else Text("inactive", style="bold"),
                    ),
                )
                for device in rows
            ),
            select=select,
        )
        self.query_one("#devices-summary", Static).update(counted(len(rows), "device"))
        if not rows:
            self.query_one("#device-activity-text", Static).update("No device matches.")

    @on(DataTable.RowHighlighted, "#devices-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value is not None:
            self.load_activity(str(event.row_key.value))

    @work(exclusive=True, group="devices-activity", exit_on_error=False)
    async def load_activity(self, device_id: str) -> None:
        async with self.context.sessions() as session:
            activity = await device_activity(session=session, device_id=device_id)
        self.activity = activity
        text = Text.assemble(plain(device_id, "bold"), "\n\n")
        for level in RISK_LEVELS:
            text.append(f"{level:>6}", style=RISK_COLORS.get(level, ""))
            text.append(f" {activity.by_risk.get(level, 0):>10,}\n")
        text.append(f"{'total':>6} {activity.total:>10,}\n\n")
        text.append(f"last event  {when(activity.last_event_at)}\nlast hello  {when(activity.last_seen)}")
        device = self.devices.get(device_id)
        if device is not None and not device.is_active:
            text.append("\n\n").append("inactive", style="bold").append(": refused at its next hello")
        self.query_one("#device-activity-text", Static).update(text)

    # -- changes -------------------------------------------------------------------------------

    def _selected(self, what: str) -> Device | None:
        return self.selected_row(self.table, self.devices, f"a device to {what}")

    def action_deactivate_device(self) -> None:
        device = self._selected("deactivate")
        if device is not None and not device.is_active:
            self.context.notify(f"{device.device_id!r} is already inactive.")
            return
        self.action_toggle_active()

    def action_toggle_active(self) -> None:
        if not self.context.require_admin("activate or deactivate devices"):
            return
        device = self._selected("activate or deactivate")
        if device is None:
            return
        if device.is_active:
            question = f"Deactivate {device.device_id!r}? Its agent is refused from its next hello."
            confirm_then(self.app, question, lambda: self.set_active(device.device_id, False))
        else:
            self.set_active(device.device_id, True)

    def action_delete_device(self) -> None:
        if not self.context.require_admin("delete devices"):
            return
        device = self._selected("delete")
        if device is not None:
            question = (
                f"Delete the device {device.device_id!r}? Its logs stay; it registers again "
                "at its next hello (deactivate it to keep it out)."
            )
            confirm_then(self.app, question, lambda: self.delete(device.device_id))

    @work(exclusive=True, group="devices-change", exit_on_error=False)
    async def set_active(self, device_id: str, active: bool) -> None:
        async with self.context.sessions() as session:
            try:
                await set_device_active(
                    session=session, device_id=device_id, active=active, actor=self.context.actor
                )
            except DeviceError as error:
                self.context.notify(str(error), severity="error", markup=False)
                return
            await session.commit()
        self.context.notify(f"{device_id!r} is now {'active' if active else 'inactive'}.")
        self.load_devices(select=device_id)

    @work(exclusive=True, group="devices-change", exit_on_error=False)
    async def delete(self, device_id: str) -> None:
        async with self.context.sessions() as session:
            try:
                await delete_device(session=session, device_id=device_id, actor=self.context.actor)
            except DeviceError as error:
                self.context.notify(str(error), severity="error", markup=False)
                return
            await session.commit()
        self.context.notify(f"Device {device_id!r} deleted.")
        self.load_devices()
