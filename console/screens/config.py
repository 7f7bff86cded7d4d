"""Config section: per-organisation configuration — monitored tools, sensitivity thresholds, custom
patterns with a tester, log retention — and the organisation's ingest tokens.

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
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, DataTable, Input, Label, Select, Static, TabbedContent, TabPane, TextArea

from console.screens.config_forms import (
    OrganizationFormScreen,
    PatternFormScreen,
    TokenFormScreen,
    TokenShownScreen,
    ToolFormScreen,
    error_field,
    save_config_change,
)
from console.screens.confirm import ConfirmScreen
from console.screens.metadata_keys import MetadataKeysScreen
from console.screens.section import Section, SectionCommand
from console.untrusted import plain
from db.configs import ConfigError, default_monitored_tools, get_config, list_configs
from db.models import FirewallConfig, IngestToken
from db.pattern_tester import MAX_SAMPLE_CHARS, PatternTestError, PatternTestResult, try_organization_patterns
from db.tokens import TokenError, list_tokens, revoke_token
from db.vocabulary import MAX_RETENTION_DAYS, MIN_RETENTION_DAYS

log = logging.getLogger(__name__)

THRESHOLD_FIELDS = ("red_entity_types", "amber_min_entities", "red_min_entities")
THRESHOLDS_HELP = (
    "An event is [b]amber[/b] from [i]amber_min_entities[/i] detected entities and [b]red[/b] from "
    "[i]red_min_entities[/i] (1–1000, amber ≤ red); any entity type listed in [i]red_entity_types[/i] "
    "makes it red on its own."
)


def _monitored(tool: dict[str, Any]) -> str:
    return "yes" if tool.get("enabled", True) else "[b]no[/b]"


def _when(moment: object) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment is not None else "never"  # type: ignore[attr-defined]


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
        Binding("o", "new_organization", "New org"),
        Binding("a", "add", "Add"),
        Binding("e", "edit", "Edit"),
        Binding("t", "toggle", "Enable/disable"),
        Binding("delete", "remove", "Remove/revoke"),
        Binding("r", "reload", "Reload"),
        Binding("m", "metadata_keys", "Metadata keys"),
        Binding("right_square_bracket", "next_tab(1)", "Next tab"),
        Binding("left_square_bracket", "next_tab(-1)", "Prev tab", show=False),
    ]
    PANES = ("pane-tools", "pane-thresholds", "pane-patterns", "pane-retention", "pane-tokens", "pane-tester")

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.organization_id: str | None = None
        self.organizations: list[str] = []
        self.row: FirewallConfig | None = None
        self.tokens: dict[str, IngestToken] = {}
        self.tester_result: PatternTestResult | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(classes="admin-bar"):
            yield Select([], id="config-org", prompt="organisation", allow_blank=True)
            yield Static("", id="config-summary", classes="admin-summary")
        with TabbedContent(id="config-tabs"):
            with TabPane("Tools", id="pane-tools"):
                yield Static(
                    "a add · t enable/disable · del remove · palette: restore the default tools",
                    classes="admin-hint",
                )
                tools: DataTable[str] = DataTable(id="tools-table", cursor_type="row", zebra_stripes=True)
                tools.add_columns("Tool", "Type", "Monitored")
                yield tools
            with TabPane("Thresholds", id="pane-thresholds"), VerticalScroll(classes="compact-form"):
                yield Static(THRESHOLDS_HELP, classes="admin-hint")
                for name, label in (("amber_min_entities", "Amber from"), ("red_min_entities", "Red from")):
                    with Vertical(classes="admin-field"):
                        with Horizontal(classes="form-row"):
                            yield Label(label, classes="form-label")
                            yield Input(id=name, placeholder="entities (1-1000)")
                        yield Label("", id=f"{name}-error", classes="field-error")
                with Vertical(classes="admin-field"):
                    with Horizontal(classes="form-row"):
                        yield Label("Red types", classes="form-label")
                        yield Input(id="red_entity_types", placeholder="API_KEY, PASSWORD, …")
                    yield Label("", id="red_entity_types-error", classes="field-error")
                with Horizontal(classes="buttons"):
                    yield Button("Save thresholds", variant="primary", id="save-thresholds")
            with TabPane("Patterns", id="pane-patterns"):
                yield Static(
                    "a add · e edit · del remove · the Tester tab tries them on a sample",
                    classes="admin-hint",
                )
                patterns: DataTable[str] = DataTable(
                    id="patterns-table", cursor_type="row", zebra_stripes=True
                )
                patterns.add_columns("Name", "Regex", "Entity type", "Severity")
                yield patterns
            with TabPane("Retention", id="pane-retention"), Vertical(classes="compact-form"):
                yield Static(
                    f"Logs older than this many days are deleted by the cleanup "
                    f"({MIN_RETENTION_DAYS}–{MAX_RETENTION_DAYS}).",
                    classes="admin-hint",
                )
                with Vertical(classes="admin-field"):
                    with Horizontal(classes="form-row"):
                        yield Label("Days", classes="form-label")
                        yield Input(id="log_retention_days")
                    yield Label("", id="log_retention_days-error", classes="field-error")
                with Horizontal(classes="buttons"):
                    yield Button("Save retention", variant="primary", id="save-retention")
            with TabPane("Tokens", id="pane-tokens"):
                yield Static("a create (shown once) · del revoke", classes="admin-hint")
                tokens: DataTable[str] = DataTable(id="tokens-table", cursor_type="row", zebra_stripes=True)
                tokens.add_columns("Prefix", "Name", "Created", "By", "Last used", "State")
                yield tokens
            with TabPane("Tester", id="pane-tester"), Vertical():
                yield Static(
                    f"Type a sample (at most {MAX_SAMPLE_CHARS:,} characters): the saved patterns run on it "
                    "in a separate process; the text is never stored.",
                    classes="admin-hint",
                )
                yield TextArea(id="tester-sample")
                with Horizontal(classes="buttons"):
                    yield Button("Run the patterns", variant="primary", id="tester-run")
                yield Static("", id="tester-result")

    def focus_first(self) -> None:
        self.query_one("#config-org", Select).focus()

    def reload(self) -> None:
        self.load_organizations()

    def action_reload(self) -> None:
        self.load_organizations()

    @property
    def active_pane(self) -> str:
        return self.query_one("#config-tabs", TabbedContent).active

    def show_pane(self, pane: str) -> None:
        self.query_one("#config-tabs", TabbedContent).active = pane

    def action_next_tab(self, step: int) -> None:
        """Switch to the next (or previous) tab and focus its main widget."""
        pane = self.PANES[(self.PANES.index(self.active_pane) + step) % len(self.PANES)]
        self.show_pane(pane)
        # Tables take the focus; on a form the tab bar keeps it, so [ and ] go on switching (Tab enters the form).
        main = {
            "pane-tools": "#tools-table",
            "pane-patterns": "#patterns-table",
            "pane-tokens": "#tokens-table",
        }
        if pane in main:
            self.query_one(main[pane]).focus()
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
            self.tester_result = None
            self.query_one("#tester-result", Static).update("")
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
                self.show_tokens(tokens)
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
        """Read everything from ``row`` first (what can fail), then set the widgets."""
        thresholds = dict(row.sensitivity_thresholds or {})
        amber = str(thresholds.get("amber_min_entities", ""))
        red = str(thresholds.get("red_min_entities", ""))
        red_types = ", ".join(str(name) for name in thresholds.get("red_entity_types") or [])
        retention = str(int(row.log_retention_days))
        tools = [
            (tool["name"], (plain(tool["name"]), plain(tool["tool_type"]), _monitored(tool)))
            for tool in row.monitored_tools or []
        ]
        patterns = [
            (
                pattern["name"],
                tuple(plain(pattern[name]) for name in ("name", "regex", "entity_type", "severity")),
            )
            for pattern in row.custom_patterns or []
        ]
        for what, rows in (("monitored tool", tools), ("custom pattern", patterns)):
            names = [name for name, _ in rows]
            if not all(isinstance(name, str) for name in names):
                raise ValueError(f"a {what} has a name that is not text")
            twice = next((name for name in names if names.count(name) > 1), None)
            if twice is not None:
                raise ValueError(f"{what} {twice!r} is listed twice")
        summary = (
            f"updated {_when(row.updated_at)} UTC by {row.updated_by or '—'} · {len(tools)} tools · "
            f"{len(patterns)} patterns · {retention} days · o new organisation"
        )
        self.query_one("#amber_min_entities", Input).value = amber
        self.query_one("#red_min_entities", Input).value = red
        self.query_one("#red_entity_types", Input).value = red_types
        self.query_one("#log_retention_days", Input).value = retention
        for table_id, rows in (("#tools-table", tools), ("#patterns-table", patterns)):
            table = self.query_one(table_id, DataTable)
            keep = table.cursor_row
            table.clear()
            for key, cells in rows:
                table.add_row(*cells, key=key)
            if table.row_count:
                table.move_cursor(row=min(keep, table.row_count - 1))
        self.query_one("#config-summary", Static).update(plain(summary))
        self._clear_field_errors()

    def clear_config(self, summary: Text) -> None:
        """Empty every field and table (tokens too) and turn saving off, with ``summary`` saying why."""
        self.row = None
        self.tokens = {}
        for field in ("amber_min_entities", "red_min_entities", "red_entity_types", "log_retention_days"):
            self.query_one(f"#{field}", Input).value = ""
        for table_id in ("#tools-table", "#patterns-table", "#tokens-table"):
            self.query_one(table_id, DataTable).clear()
        self.query_one("#config-summary", Static).update(summary)
        self._clear_field_errors()
        self._allow_saving(False)

    def _allow_saving(self, allowed: bool) -> None:
        for widget_id in ("#save-thresholds", "#save-retention"):
            self.query_one(widget_id, Button).disabled = not allowed
        for field in ("amber_min_entities", "red_min_entities", "red_entity_types", "log_retention_days"):
            self.query_one(f"#{field}", Input).disabled = not allowed

    def _clear_field_errors(self) -> None:
        for label in self.query(".field-error"):
            assert isinstance(label, Label)
            label.update("")

    def show_tokens(self, tokens: Any) -> None:
        table = self.query_one("#tokens-table", DataTable)
        table.clear()
        self.tokens = {str(token.id): token for token in tokens}
        for token in tokens:
            state = f"[b]revoked[/b] {_when(token.revoked_at)}" if token.revoked_at else "active"
            table.add_row(
                plain(token.token_prefix + "…"),
                plain(token.name),
                _when(token.created_at),
                plain(token.created_by or ""),
                _when(token.last_used_at),
                state,
                key=str(token.id),
            )

    def _selected_key(self, table_id: str) -> str | None:
        table = self.query_one(table_id, DataTable)
        if table.row_count == 0:
            return None
        return str(table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value)

    def _ready(self, what: str) -> bool:
        if not self.context.require_admin(what):
            return False
        if self.organization_id is None or self.row is None:
            self.context.notify("Create an organisation first (o).", severity="warning")
            return False
        return True

    # -- dispatch by tab -------------------------------------------------------------------------

    def action_edit_config(self) -> None:
        if self.context.require_admin("change the configuration"):
            self.show_pane("pane-tools")
            self.query_one("#tools-table", DataTable).focus()

    def action_show_tester(self) -> None:
        self.show_pane("pane-tester")
        self.query_one("#tester-sample", TextArea).focus()

    def action_add(self) -> None:
        pane = self.active_pane
        if pane == "pane-tools":
            self.action_add_tool()
        elif pane == "pane-patterns":
            self.action_add_pattern()
        elif pane == "pane-tokens":
            self.action_create_token()

    def action_edit(self) -> None:
        if self.active_pane == "pane-patterns":
            self.action_edit_pattern()

    def action_toggle(self) -> None:
        if self.active_pane == "pane-tools":
            self.action_toggle_tool()

    def action_remove(self) -> None:
        pane = self.active_pane
        if pane == "pane-tools":
            self.action_remove_tool()
        elif pane == "pane-patterns":
            self.action_remove_pattern()
        elif pane == "pane-tokens":
            self.action_revoke_token()

    def _reload_after(self, result: object) -> None:
        if result is not None:
            self.load_config()

    # -- organisations ---------------------------------------------------------------------------

    def action_metadata_keys(self) -> None:
        if self.organization_id is None:
            self.context.notify("Create an organisation first (o).", severity="warning")
            return
        self.app.push_screen(MetadataKeysScreen(self.context, self.organization_id))

    def action_new_organization(self) -> None:
        if self.context.require_admin("create organisations"):
            self.app.push_screen(
                OrganizationFormScreen(self.context),
                lambda org: self.load_organizations(select=org) if org else None,
            )

    # -- tools -----------------------------------------------------------------------------------

    def action_add_tool(self) -> None:
        if self._ready("change the configuration"):
            assert self.organization_id is not None
            self.app.push_screen(ToolFormScreen(self.context, self.organization_id), self._reload_after)

    def action_toggle_tool(self) -> None:
        name = self._selected_key("#tools-table")
        if name is None or not self._ready("change the configuration"):
            return
        self.change_field(
            "monitored_tools",
            lambda tools: [
                {**t, "enabled": not t.get("enabled", True)} if t["name"] == name else t for t in tools
            ],
        )

    def action_remove_tool(self) -> None:
        name = self._selected_key("#tools-table")
        if name is None or not self._ready("change the configuration"):
            return
        self.app.push_screen(
            ConfirmScreen(f"Stop monitoring {name!r} (remove it from the list)?"),
            lambda yes: (
                self.change_field("monitored_tools", lambda tools: [t for t in tools if t["name"] != name])
                if yes
                else None
            ),
        )

    def action_default_tools(self) -> None:
        if self._ready("change the configuration"):
            self.app.push_screen(
                ConfirmScreen("Replace the monitored tools with the default list?"),
                lambda yes: (
                    self.change_field("monitored_tools", lambda _: default_monitored_tools()) if yes else None
                ),
            )

    # -- patterns --------------------------------------------------------------------------------

    def _patterns(self) -> list[dict[str, Any]]:
        return list(self.row.custom_patterns or []) if self.row is not None else []

    def action_add_pattern(self) -> None:
        if self._ready("change the configuration"):
            assert self.organization_id is not None
            self.app.push_screen(
                PatternFormScreen(self.context, self.organization_id, self._patterns()), self._reload_after
            )

    def action_edit_pattern(self) -> None:
        name = self._selected_key("#patterns-table")
        if name is None or not self._ready("change the configuration"):
            return
        assert self.organization_id is not None
        patterns = self._patterns()
        index = next((i for i, p in enumerate(patterns) if p["name"] == name), None)
        if index is not None:
            self.app.push_screen(
                PatternFormScreen(self.context, self.organization_id, patterns, index), self._reload_after
            )

    def action_remove_pattern(self) -> None:
        name = self._selected_key("#patterns-table")
        if name is None or not self._ready("change the configuration"):
            return
        self.app.push_screen(
            ConfirmScreen(f"Remove the custom pattern {name!r}?"),
            lambda yes: (
                self.change_field(
                    "custom_patterns", lambda patterns: [p for p in patterns if p["name"] != name]
                )
                if yes
                else None
            ),
        )

    # -- thresholds and retention ----------------------------------------------------------------

    @on(Button.Pressed, "#save-thresholds")
    def action_save_thresholds(self) -> None:
        if not self._ready("change the configuration"):
            return
        values: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for name in ("amber_min_entities", "red_min_entities"):
            text = self.query_one(f"#{name}", Input).value.strip()
            try:
                values[name] = int(text)
            except ValueError:
                errors[name] = f"{name} must be a whole number from 1 to 1000; got {text!r}"
        raw_types = self.query_one("#red_entity_types", Input).value
        values["red_entity_types"] = [part.strip() for part in raw_types.split(",") if part.strip()]
        if errors:
            self._field_errors(errors)
            return
        self.change_field("sensitivity_thresholds", lambda _: values, fields=THRESHOLD_FIELDS)

    @on(Button.Pressed, "#save-retention")
    def action_save_retention(self) -> None:
        if not self._ready("change the configuration"):
            return
        text = self.query_one("#log_retention_days", Input).value.strip()
        self.change_field("log_retention_days", lambda _: text, fields=("log_retention_days",))

    @on(Input.Submitted, "#log_retention_days")
    def _retention_submitted(self) -> None:
        self.action_save_retention()

    @on(Input.Submitted, "#amber_min_entities, #red_min_entities, #red_entity_types")
    def _thresholds_submitted(self) -> None:
        self.action_save_thresholds()

    def _field_errors(self, errors: dict[str, str]) -> None:
        for label in self.query(".field-error"):
            assert isinstance(label, Label)
            label.update("")
        for field, message in errors.items():
            self.query_one(f"#{field}-error", Label).update(plain(message))

    def field_error(self, field: str) -> str:
        """The error shown under a field of the Thresholds or Retention tab (for tests)."""
        return str(self.query_one(f"#{field}-error", Label).render())

    @work(exclusive=True, group="config-change", exit_on_error=False)
    async def change_field(self, field: str, edit: Any, fields: tuple[str, ...] = ()) -> None:
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
                    self._field_errors({target: str(error)})
                else:
                    self.context.notify(str(error), severity="error", markup=False)
                return
            await session.commit()
        self.context.notify(
            "Saved: agents get it on their next config request." if changes else "Nothing changed."
        )
        self.load_config()

    # -- tokens ----------------------------------------------------------------------------------

    def action_create_token(self) -> None:
        if not self._ready("create ingest tokens"):
            return
        assert self.organization_id is not None
        organization_id = self.organization_id

        def created(result: tuple[str, str] | None) -> None:
            if result is not None:
                self.load_config()
                self.app.push_screen(TokenShownScreen(organization_id, result[1]))

        self.show_pane("pane-tokens")
        self.app.push_screen(TokenFormScreen(self.context, organization_id), created)

    def action_revoke_token(self) -> None:
        token_id = self._selected_key("#tokens-table")
        if token_id is None or not self._ready("revoke ingest tokens"):
            return
        token = self.tokens[token_id]
        if token.revoked_at is not None:
            self.context.notify("That token is already revoked.")
            return
        self.app.push_screen(
            ConfirmScreen(
                f"Revoke the token {token.token_prefix}… ({token.name or 'unnamed'})? "
                "Agents using it are refused from their next hello."
            ),
            lambda yes: self.revoke(token_id) if yes else None,
        )

    @work(exclusive=True, group="config-change", exit_on_error=False)
    async def revoke(self, token_id: str) -> None:
        import uuid

        async with self.context.sessions() as session:
            try:
                row = await revoke_token(
                    session=session, token_id=uuid.UUID(token_id), actor=self.context.actor
                )
            except TokenError as error:
                self.context.notify(str(error), severity="error", markup=False)
                return
            await session.commit()
        self.context.notify(f"Token {row.token_prefix}… revoked.")
        self.load_config()

    # -- tester ----------------------------------------------------------------------------------

    @on(Button.Pressed, "#tester-run")
    def action_run_tester(self) -> None:
        if self.organization_id is None:
            self.context.notify("Create an organisation first (o).", severity="warning")
            return
        self.run_tester(self.query_one("#tester-sample", TextArea).text)

    @work(exclusive=True, group="config-tester", exit_on_error=False)
    async def run_tester(self, sample: str) -> None:
        assert self.organization_id is not None
        output = self.query_one("#tester-result", Static)
        output.update("Running…")
        try:
            async with self.context.sessions() as session:
                result = await try_organization_patterns(
                    session=session, organization_id=self.organization_id, sample=sample
                )
        except PatternTestError as error:
            self.tester_result = None
            output.update(plain(error, "bold"))
            return
        self.tester_result = result
        output.update(describe_result(result))


def describe_result(result: PatternTestResult) -> Text:
    """The tester's output: one line per pattern, then its first matches (names and samples as plain text)."""
    if not result.matched:
        text = Text("No pattern matched.", style="bold")
    else:
        text = Text.assemble(
            (f"{len(result.matched)} pattern(s) matched", "bold"),
            plain(f"; highest severity: {result.highest_severity}"),
        )
    for hit in result.hits:
        if hit.error:
            text.append("\n  ").append(plain(hit.name)).append(": ").append("regex error", style="bold")
            text.append(": ").append(plain(hit.error))
            continue
        found = f"{hit.name} ({hit.entity_type}, {hit.severity}): {hit.count} match(es)"
        text.append("\n  ").append(plain(found))
        for start, end, sample in hit.matches[:5]:
            text.append(f"\n      {start}–{end}: ").append(plain(repr(sample)))
    return text
