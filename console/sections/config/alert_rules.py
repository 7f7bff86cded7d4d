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

from textual import work

from console.dialogs.alert_rule_form import AlertRuleFormScreen, format_duration
from console.dialogs.confirm import confirm_then
from console.sections.config.pane import ConfigHost, TablePane
from console.untrusted import plain
from console.widgets.keyed_table import TableColumn
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
    HINT = "a add · e edit · t enable/disable · del delete"
    COLUMNS = (
        TableColumn("Name", stretch=True),
        TableColumn("Kind"),
        TableColumn("On"),
        TableColumn("Severity"),
        TableColumn("N"),
        TableColumn("Window"),
        TableColumn("Group"),
        TableColumn("Cooldown"),
        TableColumn("Filters", stretch=True),
    )

    def __init__(self, host: ConfigHost) -> None:
        super().__init__(host)
        self.rules: dict[str, AlertRule] = {}
        self._shown_for: str | None = None

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
                        plain(rule.severity),
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
