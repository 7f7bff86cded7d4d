"""The shell after sign-in: header, section tabs (keys 1–8), the database banner, the footer."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widget import AwaitMount
from textual.widgets import ContentSwitcher, Footer, Header, Input, Select, Static, Tab, Tabs, TextArea

from console.context import ConsoleContext
from console.messages import DatabaseReachable, ShowLogs
from console.sections.alerts import AlertsSection
from console.sections.audit import AuditSection
from console.sections.cleanup import CleanupSection
from console.sections.config import ConfigSection
from console.sections.devices import DevicesSection
from console.sections.forwarding import ForwardingSection
from console.sections.logs import LogsSection
from console.sections.overview import OverviewSection
from console.sections.section import Section
from console.sections.users import UsersSection
from console.widgets.banner import DatabaseBanner
from db.identifiers import visible

#: Below this width the tabs other than the shown one show only their number key (the tab bar fits 80).
FULL_TAB_LABELS_WIDTH = 112

#: Every section, in tab order; the ones with a KEY get a number key.
SECTIONS: tuple[type[Section], ...] = (
    OverviewSection,
    LogsSection,
    UsersSection,
    DevicesSection,
    ConfigSection,
    CleanupSection,
    AlertsSection,
    ForwardingSection,
    AuditSection,
)


def section_id(section: type[Section]) -> str:
    return "section-" + section.TITLE.lower()


class ShellScreen(Screen[None]):
    """Hosts one section at a time; the app talks to it to switch sections and show the banner."""

    BINDINGS = [
        *(
            Binding(section.KEY, f"show_section('{section_id(section)}')", section.TITLE, show=False)
            for section in SECTIONS
            if section.KEY
        ),
        Binding("ctrl+r", "app.retry_database", "Retry DB", show=False),
        Binding("escape", "leave_input", "Leave the box", show=False),
    ]

    def __init__(self, context: ConsoleContext) -> None:
        super().__init__()
        self.context = context
        self.shown: set[str] = set()
        self._built: dict[str, Section] = {}
        self._mounting: dict[str, AwaitMount] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="tab-bar"):
            yield Tabs(
                *(
                    Tab(
                        f"{section.KEY} {section.TITLE}" if section.KEY else section.TITLE,
                        id=f"tab-{section_id(section)}",
                    )
                    for section in SECTIONS
                ),
                id="section-tabs",
            )
            # As k9s keeps "<?> Help" in view: the footer shows the section's keys, ? lists them all.
            yield Static("? keys  q quit", id="tab-bar-keys")
        yield DatabaseBanner(id="db-banner")
        # Sections are built the first time they are shown: opening the shell stays quick.
        yield ContentSwitcher(id="sections")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        user = self.context.user
        database = self.context.settings.describe_database()
        self.sub_title = visible(f"{user.username} ({user.role}) · {database}")
        self.action_show_section(section_id(SECTIONS[0]))

    @property
    def current(self) -> Section:
        switcher = self.query_one("#sections", ContentSwitcher)
        return self.query_one(f"#{switcher.current}", Section)

    def section(self, section_type: type[Section]) -> Section:
        """The section of this type; built and mounted (in the background) the first time."""
        identifier = section_id(section_type)
        section = self._built.get(identifier)
        if section is None:
            section = section_type(self.context, id=identifier)
            self._built[identifier] = section
            self._mounting[identifier] = self.query_one("#sections", ContentSwitcher).mount(section)
        return section

    async def mounted(self, section_type: type[Section]) -> Section:
        """The section of this type once it and its children are mounted (built first if needed)."""
        section = self.section(section_type)
        pending = self._mounting.get(section_id(section_type))
        if pending is not None:
            await pending  # every caller waits for the same mount
            self._mounting.pop(section_id(section_type), None)
        return section

    def action_show_section(self, identifier: str) -> None:
        """Show a section (by id), reload it, and focus it; builds it on first use."""
        section_type = next(section for section in SECTIONS if section_id(section) == identifier)
        self.section(section_type)
        if identifier in self._mounting:
            self.call_later(self._show_when_mounted, section_type)
        else:
            self._activate(self._built[identifier])

    async def _show_when_mounted(self, section_type: type[Section]) -> None:
        self._activate(await self.mounted(section_type))

    def _activate(self, section: Section) -> None:
        identifier = section.id or ""
        self.query_one("#sections", ContentSwitcher).current = identifier
        tabs = self.query_one("#section-tabs", Tabs)
        if tabs.active != f"tab-{identifier}":
            tabs.active = f"tab-{identifier}"
        self.label_tabs()
        section.reload()
        self.shown.add(identifier)
        section.focus_first()

    def on_resize(self) -> None:
        self.label_tabs()

    def label_tabs(self) -> None:
        """Every tab's number and title; in a narrow terminal the tabs not shown keep only their number."""
        narrow = self.size.width < FULL_TAB_LABELS_WIDTH
        switcher = self.query_one("#sections", ContentSwitcher)
        for section in SECTIONS:
            identifier = section_id(section)
            full = f"{section.KEY} {section.TITLE}" if section.KEY else section.TITLE
            short = narrow and section.KEY is not None and switcher.current != identifier
            tab = self.query_one(f"#tab-{identifier}", Tab)
            label = section.KEY if short and section.KEY else full
            if str(tab.label) != label:
                tab.label = label

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "leave_input":
            return isinstance(self.focused, Input | TextArea | Select)
        return super().check_action(action, parameters)

    def action_leave_input(self) -> None:
        """Esc in a search box or a field: back to the section's main view, keeping what was applied.

        As in k9s, the keys typed next are commands again, not text; what the box holds stays
        (Enter applied it; a box is cleared with ctrl+u, the Logs filters with c).
        """
        self.current.focus_first()

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        identifier = (event.tab.id or "").removeprefix("tab-")
        switcher = self.query_one("#sections", ContentSwitcher)
        if identifier and switcher.current != identifier:
            self.action_show_section(identifier)

    async def on_show_logs(self, message: ShowLogs) -> None:
        """Show Logs under the filters a section asked for (Enter on a device, on an alert)."""
        logs = await self.mounted(LogsSection)
        assert isinstance(logs, LogsSection)
        self.action_show_section(section_id(LogsSection))
        logs.apply_filters(message.filters)

    def database_lost(self, reason: str) -> None:
        self.query_one(DatabaseBanner).show_lost(reason)

    def on_database_reachable(self, _: DatabaseReachable) -> None:
        banner = self.query_one(DatabaseBanner)
        if banner.display:
            banner.hide()
            self.notify("The database is back.")
            self.current.reload()

    @property
    def database_banner_shown(self) -> bool:
        return bool(self.query_one(DatabaseBanner).display)
