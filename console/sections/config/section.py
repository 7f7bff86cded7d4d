"""Config section: per-organisation configuration — monitored tools, sensitivity thresholds, custom
patterns with a tester, log retention — and the organisation's ingest tokens, one tab (a
:class:`~console.sections.config.pane.ConfigPane`) each; this module holds the organisation chooser,
loading, and the one worker that saves a change.

Validation lives in :mod:`db.configs`; every save stamps ``updated_at`` and
``updated_by`` there, and agents get the new configuration (a new ``version``)
on their next ``config`` request. Each change is admin-only and audited;
removals and revocations are confirmed. The pattern tester runs the saved
patterns on text typed here, in a separate process, and never stores the text.
"""

from __future__ import annotations

import logging
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Label, Select, Static, TabbedContent

from console.dialogs.config_forms import Edit, OrganizationFormScreen, error_field, save_config_change
from console.dialogs.metadata_keys import MetadataKeysScreen
from console.sections.config.alert_rules import AlertRulesPane
from console.sections.config.pane import CHANGE_CONFIGURATION, ConfigPane
from console.sections.config.patterns import PatternsPane
from console.sections.config.retention import RetentionPane
from console.sections.config.tester import PatternTesterPane
from console.sections.config.thresholds import ThresholdsPane
from console.sections.config.tokens import TokensPane
from console.sections.config.tools import ToolsPane
from console.sections.section import Section, SectionCommand
from console.untrusted import plain
from console.widgets.time_format import when
from db.configs import ConfigError, get_config, list_configs
from db.models import FirewallConfig
from db.tokens import list_tokens
from db.wording import counted

log = logging.getLogger(__name__)


class ConfigSection(Section):
    """Per-organisation firewall configuration and ingest tokens."""

    TITLE = "Config"
    KEY = "5"
    COMMANDS = (
        SectionCommand(
            "Config: edit the configuration",
            "Change monitored tools, thresholds, patterns, retention (administrators only)",
            "edit_config",
            admin_only=True,
        ),
        SectionCommand(
            "Config: new organisation",
            "Create an organisation with the default configuration",
            "new_organization",
            admin_only=True,
        ),
        SectionCommand(
            "Config: restore the default tools",
            "Replace the monitored tools with the default list",
            "default_tools",
            admin_only=True,
        ),
        SectionCommand(
            "Config: create an ingest token",
            "A token for the organisation's agents (shown once)",
            "create_token",
            admin_only=True,
        ),
        SectionCommand(
            "Config: test the patterns",
            "Run the custom patterns on a sample text (not stored)",
            "show_tester",
        ),
        SectionCommand(
            "Config: metadata keys",
            "The log_metadata keys the organisation's agents may send besides the standard ones",
            "metadata_keys",
        ),
    )
    BINDINGS = [
        Binding("left_square_bracket", "next_tab(-1)", "Prev tab"),
        Binding("right_square_bracket", "next_tab(1)", "Next tab"),
        Binding("a", "add_entry", "Add"),
        Binding("e", "edit_entry", "Edit"),
        Binding("t", "toggle_entry", "On/off"),
        Binding("delete", "remove_entry", "Remove"),
        Binding("m", "metadata_keys", "Metadata keys", show=False),
        Binding("o", "new_organization", "New organisation", show=False),
        Binding("r", "reload", "Reload", show=False),
    ]
    ADMIN_ACTIONS = frozenset({"add_entry", "edit_entry", "toggle_entry", "remove_entry", "new_organization"})
    HELP = """\
One organisation's configuration at a time (choose it in the box at the top left); `[` and `]`
switch tabs. **Tools**: the monitored tools (`a` add, Enter or `e` edit, `t` monitor or not,
`del` remove). **Thresholds** and **Retention**: small forms, saved with their button or Enter.
**Patterns**: custom patterns (`a`, Enter/`e`, `del`); the **Tester** tab runs them on a sample
that is never stored. **Tokens**: ingest tokens (`a` creates one, shown once, `y` copies it;
`del` revokes). **Alert rules**: what raises the organisation's alerts (`a` add, Enter/`e` edit,
`t` on/off, `del` delete); the selected rule is shown whole below the list. `m` lists the
organisation's extra metadata keys. Agents get a saved change on their next config request; every
change is audited.
"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.organization_id: str | None = None
        self.organizations: list[str] = []
        self.row: FirewallConfig | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(classes="admin-bar"):
            yield Select([], id="config-org", prompt="organisation", allow_blank=True)
            yield Static("", id="config-summary", classes="admin-summary")
        with TabbedContent(id="config-tabs"):
            yield ToolsPane(self)
            yield ThresholdsPane(self)
            yield PatternsPane(self)
            yield RetentionPane(self)
            yield TokensPane(self)
            yield AlertRulesPane(self)
            yield PatternTesterPane(self)

    @property
    def panes(self) -> list[ConfigPane[Any]]:
        """The tabs, in order."""
        return list(self.query_one("#config-tabs", TabbedContent).query(ConfigPane))

    def focus_first(self) -> None:
        self.query_one("#config-org", Select).focus()

    def reload(self) -> None:
        self.load_organizations()

    def action_reload(self) -> None:
        self.load_organizations()

    @property
    def active_pane(self) -> ConfigPane[Any]:
        active = self.query_one("#config-tabs", TabbedContent).active
        return next(pane for pane in self.panes if pane.id == active)

    def show_pane(self, pane: ConfigPane[Any]) -> None:
        self.query_one("#config-tabs", TabbedContent).active = pane.id or ""

    def action_next_tab(self, step: int) -> None:
        """Switch to the next (or previous) tab and focus its main widget."""
        panes = self.panes
        pane = panes[(panes.index(self.active_pane) + step) % len(panes)]
        self.show_pane(pane)
        # Tables take the focus; on a form the tab bar keeps it, so [ and ] go on switching (Tab enters the
        # form).
        if pane.MAIN is not None:
            pane.query_one(pane.MAIN).focus()
        else:
            self.query_one("#config-tabs Tabs").focus()

    # -- loading ---------------------------------------------------------------------------------

    @work(exclusive=True, group="config-orgs", exit_on_error=False)
    async def load_organizations(self, select: str | None = None) -> None:
        async with self.context.sessions() as session:
            self.organizations = [row.organization_id for row in await list_configs(session=session)]
        wanted = select or self.organization_id
        if wanted not in self.organizations:
            wanted = self.organizations[0] if self.organizations else None
        org_select = self.query_one("#config-org", Select)
        with self.prevent(Select.Changed):
            org_select.set_options([(plain(org), org) for org in self.organizations])
            if wanted is not None:
                org_select.value = wanted
        self.organization_id = wanted
        if wanted is None:
            self.query_one("#config-summary", Static).update("No organisation yet: press o to create one.")
            return
        self.load_config()

    @on(Select.Changed, "#config-org")
    def _organization_chosen(self, event: Select.Changed) -> None:
        if event.value is not Select.BLANK and event.value != self.organization_id:
            self.organization_id = str(event.value)
            self.query_one(PatternTesterPane).forget_result()
            # Nothing of the previous organisation may stay on screen while this one loads: a save
            # pressed meanwhile would write its values into this organisation.
            self.clear_config(plain(f"Loading {self.organization_id}…"))
            self.load_config()

    @work(exclusive=True, group="config-load", exit_on_error=False)
    async def load_config(self) -> None:
        if self.organization_id is None:
            return
        async with self.context.sessions() as session:
            row = await get_config(session=session, organization_id=self.organization_id)
            tokens = await list_tokens(session=session, organization_id=self.organization_id)
        if row is None:
            self.load_organizations()
            return
        if self.show_config(row):
            try:
                self.query_one(TokensPane).show_tokens(tokens)
            except Exception as error:  # noqa: BLE001 - tokens are part of what is shown: all or none
                self._cannot_show(row.organization_id, error)

    def show_config(self, row: FirewallConfig) -> bool:
        """Show every field of ``row``, or none: True if shown.

        A row the screen cannot show (written around the validators, by SQL) clears every
        field and table and disables saving, so no value of the organisation shown before
        stays in a field to be saved into this one.
        """
        try:
            self._fill_config(row)
        except Exception as error:  # noqa: BLE001 - any broken row: say so, keep nothing
            self._cannot_show(row.organization_id, error)
            return False
        self.row = row
        self._allow_saving(True)
        return True

    def _cannot_show(self, organization_id: str, error: Exception) -> None:
        log.warning("config of %r cannot be shown", organization_id, exc_info=error)
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        self.clear_config(
            Text.assemble(
                ("The configuration of ", "bold"),
                plain(organization_id, "bold"),
                (" cannot be shown: ", "bold"),
                plain(reason),
                " · saving is off; fix the row (SQL), then reload (r)",
            )
        )

    def _fill_config(self, row: FirewallConfig) -> None:
        """Read everything from ``row`` first (what can fail), then fill every tab."""
        tools, thresholds, patterns, retention = (
            self.query_one(ToolsPane),
            self.query_one(ThresholdsPane),
            self.query_one(PatternsPane),
            self.query_one(RetentionPane),
        )
        shown_tools, shown_patterns = tools.read(row), patterns.read(row)
        shown_thresholds, days = thresholds.read(row), retention.read(row)
        summary = (
            f"updated {when(row.updated_at, missing='never')} UTC by {row.updated_by or '—'} · "
            f"{counted(len(shown_tools), 'tool')} · {counted(len(shown_patterns), 'pattern')} · "
            f"kept {counted(int(days), 'day')}"
        )
        thresholds.fill(shown_thresholds)
        retention.fill(days)
        tools.fill(shown_tools)
        patterns.fill(shown_patterns)
        self.query_one("#config-summary", Static).update(plain(summary))
        self.show_field_errors({})

    def clear_config(self, summary: Text) -> None:
        """Empty every field and table (tokens too) and turn saving off, with ``summary`` saying why."""
        self.row = None
        for pane in self.panes:
            pane.clear()
        self.query_one("#config-summary", Static).update(summary)
        self.show_field_errors({})
        self._allow_saving(False)

    def _allow_saving(self, allowed: bool) -> None:
        for pane in self.panes:
            pane.allow_saving(allowed)

    def ready(self, what: str) -> bool:
        """True for an administrator with an organisation shown; otherwise says what is missing."""
        if not self.context.require_admin(what):
            return False
        if self.organization_id is None or self.row is None:
            self.context.notify("Create an organisation first (o).", severity="warning")
            return False
        return True

    # -- keys and palette commands -----------------------------------------------------------------

    def action_add_entry(self) -> None:
        self.active_pane.add_entry()

    def action_edit_entry(self) -> None:
        self.active_pane.edit_entry()

    def action_toggle_entry(self) -> None:
        self.active_pane.toggle_entry()

    def action_remove_entry(self) -> None:
        self.active_pane.remove_entry()

    def action_edit_config(self) -> None:
        if self.context.require_admin(CHANGE_CONFIGURATION):
            tools = self.query_one(ToolsPane)
            self.show_pane(tools)
            tools.table.focus()

    def action_show_tester(self) -> None:
        self.show_pane(self.query_one(PatternTesterPane))
        self.query_one("#tester-sample").focus()

    def action_default_tools(self) -> None:
        self.query_one(ToolsPane).restore_defaults()

    def action_create_token(self) -> None:
        tokens = self.query_one(TokensPane)
        if self.ready("create ingest tokens"):
            self.show_pane(tokens)
            tokens.add_entry()

    def action_metadata_keys(self) -> None:
        if self.organization_id is None:
            self.context.notify("Create an organisation first (o).", severity="warning")
            return
        self.app.push_screen(MetadataKeysScreen(self.context, self.organization_id))

    def action_new_organization(self) -> None:
        if self.context.require_admin("create organisations"):
            self.app.push_screen(OrganizationFormScreen(self.context), self._organization_created)

    def _organization_created(self, organization_id: str | None) -> None:
        if organization_id:
            self.load_organizations(select=organization_id)

    # -- saving ------------------------------------------------------------------------------------

    def show_field_errors(self, errors: dict[str, str]) -> None:
        """Put each message under its field of the Thresholds or Retention tab; clear the others."""
        for label in self.query(".field-error"):
            assert isinstance(label, Label)
            label.update("")
        for field, message in errors.items():
            self.query_one(f"#{field}-error", Label).update(plain(message))

    def field_error(self, field: str) -> str:
        """The error shown under a field of the Thresholds or Retention tab (for tests)."""
        return str(self.query_one(f"#{field}-error", Label).render())

    @work(exclusive=True, group="config-change", exit_on_error=False)
    async def change_field(self, field: str, edit: Edit, fields: tuple[str, ...] = ()) -> None:
        """Apply one edit to ``field`` of the shown organisation, validated and audited."""
        assert self.organization_id is not None
        async with self.context.sessions() as session:
            try:
                changes = await save_config_change(
                    self.context, session, organization_id=self.organization_id, field=field, edit=edit
                )
            except ConfigError as error:
                target = error_field(str(error), fields)
                if target is not None:
                    self.show_field_errors({target: str(error)})
                else:
                    self.context.notify(str(error), severity="error", markup=False)
                return
            await session.commit()
        self.context.notify(
            "Saved: agents get it on their next config request." if changes else "Nothing changed."
        )
        self.load_config()
