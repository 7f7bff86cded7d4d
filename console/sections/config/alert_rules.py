"""The Alert rules tab of the Config section: the organisation's alert rules — add, edit, enable or
disable, delete (confirmed), through :mod:`db.alerts` (admin-only, checked again and audited there).

Rules are not part of the configuration row: the pane reads them itself each time the section has
shown an organisation's configuration (the section then allows saving on every pane), and forgets
them when the section clears its panes.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from console.dialogs.alert_rule_form import KIND_FIELDS, KIND_LABELS, AlertRuleFormScreen, format_duration
from console.dialogs.confirm import confirm_then
from console.sections.config.pane import ConfigHost, TablePane
from console.untrusted import plain
from console.widgets.keyed_table import KeyedTable, TableColumn
from console.widgets.severity import severity_text
from console.widgets.time_format import when
from db.alerts import AlertError, AlertRuleSpec, delete_rule, list_rules, update_rule
from db.models import AlertRule

#: How the filters are summed up in the table (key in ``filters`` → its short label).
FILTER_LABELS: dict[str, str] = {
    "risk_levels": "risk",
    "entity_types": "entity",
    "tool_names": "tool",
    "user_ids": "user",
    "device_ids": "device",
}


def filters_summary(filters: dict[str, Any] | None) -> str:
    """``risk=red entity=API_KEY,PRIVATE_KEY sanitised=no``, or "—" for none."""
    parts: list[str] = []
    for key, label in FILTER_LABELS.items():
        values = (filters or {}).get(key)
        if values:
            shown = values if isinstance(values, list) else [values]
            parts.append(f"{label}=" + ",".join(str(value) for value in shown))
    sanitized = (filters or {}).get("was_sanitized")
    if sanitized is not None:
        parts.append("sanitised=" + ("yes" if sanitized else "no"))
    return " ".join(parts) or "—"


def rule_detail(rule: AlertRule) -> Text:
    """The rule in full, in two lines: its name and what it does, then its filters and last change."""
    kind = KIND_LABELS.get(rule.kind, rule.kind)
    text = Text.assemble(
        plain(rule.name, "bold"),
        " · ",
        severity_text(rule.severity),
        f" · {'enabled' if rule.enabled else 'disabled'} · {kind}",
    )
    fields = KIND_FIELDS.get(rule.kind, frozenset())
    if "threshold" in fields:
        text.append(f" · N={rule.threshold}")
    if "window" in fields:
        text.append(f" · window {format_duration(rule.window_seconds)}")
    text.append(f" · one alert per {rule.group_by} · cooldown {format_duration(rule.cooldown_seconds)}")
    text.append("\nfilters ").append_text(plain(filters_summary(rule.filters)))
    text.append(f" · changed {when(rule.updated_at)} UTC")
    if rule.updated_by:
        text.append(" by ").append_text(plain(rule.updated_by))
    return text


def spec_of(rule: AlertRule, **changes: Any) -> AlertRuleSpec:
    """The spec a stored rule has, with ``changes``."""
    values: dict[str, Any] = {
        "name": rule.name,
        "kind": rule.kind,
        "enabled": rule.enabled,
        "severity": rule.severity,
        "threshold": rule.threshold,
        "window_seconds": rule.window_seconds,
        "group_by": rule.group_by,
        "cooldown_seconds": rule.cooldown_seconds,
        "filters": dict(rule.filters or {}),
    }
    values.update(changes)
    return AlertRuleSpec(**values)


class AlertRulesPane(TablePane[None]):
    """What raises the organisation's alerts."""

    NAME = "alert-rules"
    TITLE = "Alert rules"
    HINT = "a add · Enter/e edit · t enable/disable · del delete · the selected rule in full below"
    VIEWER_HINT = "What raises this organisation's alerts (only administrators change rules)."
    COLUMNS = (
        TableColumn("Name", width=12, stretch=True),
        TableColumn("Kind", width=6),
        TableColumn("On"),
        TableColumn("Sev"),
        TableColumn("N"),
        TableColumn("Window"),
        TableColumn("Group", width=5),
        TableColumn("Cooldown", width=5),
        TableColumn("Filters", width=8, stretch=True),
    )

    def __init__(self, host: ConfigHost) -> None:
        super().__init__(host)
        self.rules: dict[str, AlertRule] = {}
        self._shown_for: str | None = None

    def compose(self) -> ComposeResult:
        admin = self.host.context.user.is_admin
        yield Static(self.HINT if admin else self.VIEWER_HINT, classes="admin-hint", markup=False)
        yield KeyedTable(*self.COLUMNS, id=f"{self.NAME}-table")
        yield Static("", id="alert-rule-detail", classes="admin-detail-line")

    def read(self, row: Any) -> None:
        """Rules are not part of the configuration row: :meth:`allow_saving` reads them."""

    def allow_saving(self, allowed: bool) -> None:
        # The section allows saving once it has shown an organisation's configuration: read its rules.
        if allowed and self.host.organization_id is not None:
            self.load_rules()

    def clear(self) -> None:
        self.show_rules([])

    @work(exclusive=True, group="config-alert-rules", exit_on_error=False)
    async def load_rules(self, select: str | None = None) -> None:
        organization_id = self.host.organization_id
        if organization_id is None:
            return
        async with self.host.context.sessions() as session:
            rules = await list_rules(session=session, organization_id=organization_id)
        if organization_id == self.host.organization_id:
            self.show_rules(rules, select=select)

    def show_rules(self, rules: Sequence[AlertRule], *, select: str | None = None) -> None:
        self.rules = {str(rule.id): rule for rule in rules}
        self.table.show(
            (
                (
                    str(rule.id),
                    (
                        plain(rule.name),
                        plain(rule.kind),
                        "yes" if rule.enabled else "[b]off[/b]",
                        severity_text(rule.severity, short=True),
                        str(rule.threshold),
                        format_duration(rule.window_seconds),
                        plain(rule.group_by),
                        format_duration(rule.cooldown_seconds),
                        plain(filters_summary(rule.filters)),
                    ),
                )
                for rule in rules
            ),
            select=select,
            keep="row",
        )
        self._show_detail()

    @on(DataTable.RowHighlighted, "#alert-rules-table")
    def _highlighted(self) -> None:
        self._show_detail()

    def _show_detail(self) -> None:
        key = self.table.selected_key
        rule = self.rules.get(key) if key is not None else None
        detail = self.query_one("#alert-rule-detail", Static)
        detail.update(rule_detail(rule) if rule is not None else "No alert rule selected.")

    def _selected(self, what: str) -> AlertRule | None:
        if self.table.selected_key is None:
            self.host.context.notify("Select an alert rule first.", severity="warning")
            return None
        key = self.selected_entry(what)
        return self.rules.get(key) if key is not None else None

    def _after_form(self, rule_id: str | None) -> None:
        if rule_id is not None:
            self.host.context.notify("Alert rule saved: the evaluator uses it from its next pass.")
            self.load_rules(select=rule_id)

    # -- the section's keys ------------------------------------------------------------------------

    def add_entry(self) -> None:
        if not self.host.ready("change alert rules"):
            return
        assert self.host.organization_id is not None
        self.app.push_screen(
            AlertRuleFormScreen(self.host.context, self.host.organization_id), self._after_form
        )

    def edit_entry(self) -> None:
        rule = self._selected("edit alert rules")
        if rule is not None:
            self.app.push_screen(
                AlertRuleFormScreen(self.host.context, rule.organization_id, rule), self._after_form
            )

    def toggle_entry(self) -> None:
        rule = self._selected("enable or disable alert rules")
        if rule is None:
            return
        if rule.enabled:
            question = f"Disable the alert rule {rule.name!r}? It raises nothing until enabled again."
            confirm_then(self.app, question, lambda: self.set_enabled(rule, False))
        else:
            self.set_enabled(rule, True)

    def remove_entry(self) -> None:
        rule = self._selected("delete alert rules")
        if rule is not None:
            question = f"Delete the alert rule {rule.name!r}? The alerts it raised stay."
            confirm_then(self.app, question, lambda: self.delete(rule.id, rule.name))

    @work(exclusive=True, group="config-change", exit_on_error=False)
    async def set_enabled(self, rule: AlertRule, enabled: bool) -> None:
        context = self.host.context
        async with context.sessions() as session:
            try:
                await update_rule(
                    session=session, rule_id=rule.id, spec=spec_of(rule, enabled=enabled), actor=context.actor
                )
            except AlertError as error:
                context.notify(str(error), severity="error")
                return
            await session.commit()
        context.notify(f"Alert rule {rule.name!r} {'enabled' if enabled else 'disabled'}.")
        self.load_rules(select=str(rule.id))

    @work(exclusive=True, group="config-change", exit_on_error=False)
    async def delete(self, rule_id: uuid.UUID, name: str) -> None:
        context = self.host.context
        async with context.sessions() as session:
            try:
                await delete_rule(session=session, rule_id=rule_id, actor=context.actor)
            except AlertError as error:
                context.notify(str(error), severity="error")
                return
            await session.commit()
        context.notify(f"Alert rule {name!r} deleted.")
        self.load_rules()
