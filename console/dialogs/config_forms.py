"""The configuration forms (modals): new organisation, monitored tool, custom pattern, ingest token,
and the once-only display of a new token.

Each form that changes the configuration saves through :func:`save_config_change`:
:func:`db.configs.update_config` (the one place validation lives) reads the
organisation's row, locked, applies one edit to the *current* list (so two
administrators editing different entries do not undo each other), validates,
records the before/after in the audit trail, and the form commits. A
:class:`~db.configs.ConfigError` is shown under the field its message names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Select, Static

from console.context import ConsoleContext
from console.dialogs.admin_form import AdminForm, form_title
from console.dialogs.dialog import Dialog
from console.untrusted import plain
from console.widgets.tick_box import TickBox
from db.configs import (
    ConfigError,
    create_organization,
    custom_pattern_name_taken,
    update_config,
    validate_custom_patterns,
    validate_monitored_tools,
    validate_organization_id,
    validate_retention_days,
)
from db.tokens import TokenError, create_token
from db.vocabulary import DEFAULT_RETENTION_DAYS, RISK_LEVELS, TOOL_TYPES

#: One edit of one config field: the field's current value in, the new value out.
Edit = Callable[[Any], Any]


async def save_config_change(
    context: ConsoleContext, session: AsyncSession, *, organization_id: str, field: str, edit: Edit
) -> dict[str, dict[str, Any]]:
    """Apply ``edit`` to the organisation's current ``field`` (read, locked, in ``db/``); the caller commits.

    Raises ConfigError (validation, or the organisation is gone) or NotAllowed; returns the
    changes, audited by :func:`db.configs.update_config`.
    """
    _, changes = await update_config(
        session=session, organization_id=organization_id, actor=context.actor, edits={field: edit}
    )
    return changes


def error_field(message: str, fields: tuple[str, ...]) -> str | None:
    """The first of ``fields`` named in a ConfigError message (None: a general error)."""
    for field in fields:
        if field in message:
            return field
    return None


class OrganizationFormScreen(AdminForm[str | None]):
    """Create an organisation with the default configuration; returns its id."""

    def compose(self) -> ComposeResult:
        with Vertical(id="org-form", classes="dialog"):
            yield Label("[b]New organisation[/b]  (ctrl+s save · escape cancel)")
            yield from self.field_row(
                "Id", "organization_id", Input(id="organization_id", placeholder="e.g. acme")
            )
            yield from self.field_row(
                "Retention", "log_retention_days", Input(str(DEFAULT_RETENTION_DAYS), id="log_retention_days")
            )
            yield from self.form_buttons("Create")

    def action_submit(self) -> None:
        errors: dict[str | None, str] = {}
        organization_id = self.query_one("#organization_id", Input).value.strip()
        try:
            validate_organization_id(organization_id)
        except ConfigError as error:
            errors["organization_id"] = str(error)
        try:
            days = validate_retention_days(self.query_one("#log_retention_days", Input).value.strip())
        except ConfigError as error:
            errors["log_retention_days"] = str(error)
        if errors:
            self.show_errors(errors)
            return
        if self.context.require_admin("create organisations"):
            self.save(organization_id, days)

    @work(exclusive=True, group="org-form", exit_on_error=False)
    async def save(self, organization_id: str, days: int) -> None:
        async with self.context.sessions() as session:
            try:
                await create_organization(
                    session=session,
                    organization_id=organization_id,
                    actor=self.context.actor,
                    log_retention_days=days,
                )
            except ConfigError as error:
                self.show_errors({"organization_id": str(error)})
                return
            await session.commit()
        self.context.notify(f"Organisation {organization_id!r} created with the default configuration.")
        self.dismiss(organization_id)


class ToolFormScreen(AdminForm[str | None]):
    """Add a monitored tool (``index`` None) or edit one of ``tools``; returns its name once saved."""

    def __init__(
        self,
        context: ConsoleContext,
        organization_id: str,
        tools: list[dict[str, Any]] | None = None,
        index: int | None = None,
    ) -> None:
        super().__init__(context)
        self.organization_id = organization_id
        self.tools = list(tools or [])
        self.index = index

    def compose(self) -> ComposeResult:
        current = self.tools[self.index] if self.index is not None else {}
        with Vertical(id="tool-form", classes="dialog"):
            verb = "Edit a monitored tool of" if self.index is not None else "Monitor a tool in"
            yield Label(form_title(f"{verb} {self.organization_id}", "ctrl+s save · escape cancel"))
            yield from self.field_row(
                "Name", "name", Input(str(current.get("name", "")), id="name", placeholder="e.g. Le Chat")
            )
            tool_type = current.get("tool_type")
            yield from self.field_row(
                "Type",
                "tool_type",
                Select(
                    [(kind, kind) for kind in TOOL_TYPES],
                    value=tool_type if tool_type in TOOL_TYPES else "web",
                    allow_blank=False,
                    id="tool_type",
                ),
            )
            yield from self.field_row(
                "Monitored",
                "enabled",
                TickBox("report its use", value=bool(current.get("enabled", True)), id="enabled"),
            )
            yield from self.form_buttons("Save" if self.index is not None else "Add")

    def action_submit(self) -> None:
        tool = {
            "name": self.query_one("#name", Input).value.strip(),
            "tool_type": str(self.query_one("#tool_type", Select).value),
            "enabled": self.query_one("#enabled", TickBox).value,
        }
        try:
            validate_monitored_tools([tool])
        except ConfigError as error:
            self.show_errors({error_field(str(error), ("tool_type", "name")): str(error)})
            return
        if self.context.require_admin("change the configuration"):
            self.save(tool, self.tools[self.index].get("name") if self.index is not None else None)

    @work(exclusive=True, group="tool-form", exit_on_error=False)
    async def save(self, tool: dict[str, Any], replacing: str | None) -> None:
        def edit(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
            if replacing is None:
                return [*tools, tool]
            return [{**t, **tool} if t.get("name") == replacing else t for t in tools]

        async with self.context.sessions() as session:
            try:
                await save_config_change(
                    self.context,
                    session,
                    organization_id=self.organization_id,
                    field="monitored_tools",
                    edit=edit,
                )
            except ConfigError as error:
                self.show_errors({error_field(str(error), ("tool_type",)) or "name": str(error)})
                return
            await session.commit()
        self.dismiss(tool["name"])


PATTERN_FIELDS = ("regex", "entity_type", "severity", "name")


class PatternFormScreen(AdminForm[str | None]):
    """Add (``index`` None) or edit a custom pattern; returns its name once saved."""

    def __init__(
        self,
        context: ConsoleContext,
        organization_id: str,
        patterns: list[dict[str, Any]],
        index: int | None = None,
    ) -> None:
        super().__init__(context)
        self.organization_id = organization_id
        self.patterns = patterns
        self.index = index

    def compose(self) -> ComposeResult:
        current = self.patterns[self.index] if self.index is not None else {}
        verb = "Edit the" if self.index is not None else "Add a"
        with Vertical(id="pattern-form", classes="dialog"):
            title = f"{verb} custom pattern of {self.organization_id}"
            yield Label(form_title(title, "ctrl+s save · escape cancel"))
            yield from self.field_row("Name", "name", Input(current.get("name", ""), id="name"))
            yield from self.field_row(
                "Regex", "regex", Input(current.get("regex", ""), id="regex", placeholder=r"e.g. EMP-\d{6}")
            )
            yield from self.field_row(
                "Entity type",
                "entity_type",
                Input(current.get("entity_type", ""), id="entity_type", placeholder="e.g. EMPLOYEE_ID"),
            )
            yield from self.field_row(
                "Severity",
                "severity",
                Select(
                    [(level, level) for level in RISK_LEVELS],
                    value=current.get("severity", "amber"),
                    allow_blank=False,
                    id="severity",
                ),
            )
            yield from self.form_buttons("Save")

    def build(self) -> dict[str, Any]:
        return {
            "name": self.query_one("#name", Input).value.strip(),
            "regex": self.query_one("#regex", Input).value,
            "entity_type": self.query_one("#entity_type", Input).value.strip(),
            "severity": str(self.query_one("#severity", Select).value),
        }

    def action_submit(self) -> None:
        pattern = self.build()
        try:
            validate_custom_patterns([pattern])
        except ConfigError as error:
            self.show_errors({error_field(str(error), PATTERN_FIELDS): str(error)})
            return
        others = [p for i, p in enumerate(self.patterns) if i != self.index]
        if custom_pattern_name_taken(others, pattern["name"]):
            self.show_errors({"name": f"there is already a pattern called {pattern['name']!r}"})
            return
        if self.context.require_admin("change the configuration"):
            self.save(pattern, self.patterns[self.index]["name"] if self.index is not None else None)

    @work(exclusive=True, group="pattern-form", exit_on_error=False)
    async def save(self, pattern: dict[str, Any], replacing: str | None) -> None:
        def edit(patterns: list[dict[str, Any]]) -> list[dict[str, Any]]:
            if replacing is None:
                return [*patterns, pattern]
            return [pattern if p.get("name") == replacing else p for p in patterns]

        async with self.context.sessions() as session:
            try:
                await save_config_change(
                    self.context,
                    session,
                    organization_id=self.organization_id,
                    field="custom_patterns",
                    edit=edit,
                )
            except ConfigError as error:
                self.show_errors({error_field(str(error), PATTERN_FIELDS): str(error)})
                return
            await session.commit()
        self.dismiss(pattern["name"])


class TokenFormScreen(AdminForm[tuple[str, str] | None]):
    """Create an ingest token; returns (token id, clear token) — the caller shows the token once."""

    def __init__(self, context: ConsoleContext, organization_id: str) -> None:
        super().__init__(context)
        self.organization_id = organization_id

    def compose(self) -> ComposeResult:
        with Vertical(id="token-form", classes="dialog"):
            title = f"New ingest token for {self.organization_id}"
            yield Label(form_title(title, "ctrl+s create · escape cancel"))
            yield from self.field_row(
                "Name", "name", Input(id="name", placeholder="what it is for, e.g. laptops")
            )
            yield from self.form_buttons("Create")

    def action_submit(self) -> None:
        if self.context.require_admin("create ingest tokens"):
            self.save(self.query_one("#name", Input).value)

    @work(exclusive=True, group="token-form", exit_on_error=False)
    async def save(self, name: str) -> None:
        async with self.context.sessions() as session:
            try:
                row, clear = await create_token(
                    session=session, organization_id=self.organization_id, name=name, actor=self.context.actor
                )
            except TokenError as error:
                self.show_errors({"name": str(error)})
                return
            await session.commit()
        self.dismiss((str(row.id), clear))


class TokenShownScreen(Dialog[None]):
    """Shows a new token once, read-only: it is not stored anywhere and cannot be shown again.

    ``y`` (or the Copy button) sends it to the terminal's clipboard (OSC 52); typing cannot change it.
    """

    BINDINGS = [
        Binding("y", "copy_token", "Copy the token"),
    ]
    HELP = "The new ingest token, shown only this once: `y` copies it (OSC 52), Esc closes."
    HELP_TITLE = "the new token"

    def __init__(self, organization_id: str, token: str) -> None:
        super().__init__()
        self.organization_id = organization_id
        self.token = token

    def compose(self) -> ComposeResult:
        with Vertical(id="token-shown", classes="dialog"):
            yield Label(plain(f"Ingest token for {self.organization_id}", "bold"))
            yield Label(
                "Copy it now into the agents' configuration: it is shown only this once "
                "(only its hash is stored). y copies it to the terminal's clipboard."
            )
            yield Static(plain(self.token, "reverse"), id="token-value")
            with Horizontal(classes="buttons"):
                yield Button("Copy (y)", variant="primary", id="token-copy")
                yield Button("I have copied it", id="token-close")

    def focus_first_field(self) -> None:
        self.query_one("#token-copy", Button).focus()

    @property
    def shown_token(self) -> str:
        """What the read-only field shows (for tests and the tmux eye)."""
        return str(self.query_one("#token-value", Static).render())

    @on(Button.Pressed, "#token-copy")
    def action_copy_token(self) -> None:
        if not self.token:
            return
        self.app.copy_to_clipboard(self.token)
        self.app.notify(
            "Sent the token to the terminal's clipboard (OSC 52; the terminal may not confirm it).", timeout=5
        )

    @on(Button.Pressed, "#token-close")
    def action_close(self) -> None:
        self.token = ""
        self.dismiss(None)

    def action_close_dialog(self) -> None:
        self.action_close()
