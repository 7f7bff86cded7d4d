"""The alert rule form (modal): add or edit one of an organisation's alert rules.

The fields follow the rule's kind (alerts/rules.py says what each kind reads): a threshold rule
counts N matching events in a window per group; an entity rule fires on any event carrying one
of its entity types; a silent-agent rule on devices silent for longer than its window; a new-tool
rule on the first event of an unmonitored tool, at most N alerts an hour; a forwarding rule on a
destination that stopped taking messages. Durations are typed as ``90s``, ``10m``, ``72h`` or
``3d`` (a bare number is seconds). :mod:`db.alerts` validates; its
:class:`~db.alerts.AlertError` is shown under the field it names.
"""

from __future__ import annotations

import re
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import Checkbox, Input, Label, Select

from console.context import ConsoleContext
from console.dialogs.admin_form import AdminForm, error_label, field_named_in, form_title
from console.widgets.tick_box import TickBox
from db.alerts import AlertError, AlertRuleSpec, create_rule, update_rule
from db.models import ALERT_GROUP_KEYS, ALERT_RULE_KINDS, ALERT_SEVERITIES, AlertRule

KIND_LABELS: dict[str, str] = {
    "threshold": "threshold: N events in a window",
    "entity": "entity: any event with these entity types",
    "silent_agent": "silent agent: devices that sent nothing",
    "new_tool": "new tool: a tool not monitored",
    "forwarding": "forwarding: a destination failing",
}
#: The fields each kind shows besides name, kind, enabled, severity and cooldown.
KIND_FIELDS: dict[str, frozenset[str]] = {
    "threshold": frozenset({"threshold", "window", "group_by", "filters"}),
    "entity": frozenset({"window", "group_by", "filters"}),
    "silent_agent": frozenset({"window"}),
    "new_tool": frozenset({"threshold", "window"}),
    "forwarding": frozenset(),
}
#: The group of the kinds that do not choose one: a new-tool alert is about one tool.
IMPLIED_GROUPS: dict[str, str] = {"new_tool": "tool"}
#: What the threshold and window fields mean for each kind.
THRESHOLD_LABELS: dict[str, str] = {"threshold": "Events (N)", "new_tool": "Max per hour"}
WINDOW_LABELS: dict[str, str] = {
    "threshold": "Window",
    "entity": "Live for",
    "silent_agent": "Silent for",
    "new_tool": "Live for",
}
#: The list filters (key in ``filters``, label, placeholder).
LIST_FILTERS: tuple[tuple[str, str, str], ...] = (
    ("entity_types", "Entity types", "e.g. API_KEY, PRIVATE_KEY"),
    ("tool_names", "Tools", "any tool; or e.g. ChatGPT, Claude"),
    ("user_ids", "Users", "any user; or user ids, comma-separated"),
    ("device_ids", "Devices", "any device; or device ids, comma-separated"),
)
SANITIZED_CHOICES: dict[str, bool | None] = {"either": None, "sanitised only": True, "not sanitised": False}
#: An AlertError naming one of these words lands under that field (the first that matches).
ERROR_FIELDS: tuple[tuple[str, str], ...] = (
    ("entity", "entity_types"),
    ("tool", "tool_names"),
    ("user", "user_ids"),
    ("device", "device_ids"),
    ("risk", "risk_levels"),
    ("threshold", "threshold"),
    ("window", "window"),
    ("silen", "window"),
    ("cooldown", "cooldown"),
    ("group", "group_by"),
    ("severity", "severity"),
    ("kind", "kind"),
    ("name", "name"),
)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$", re.IGNORECASE)


def parse_duration(text: str) -> int:
    """Seconds in ``90s``, ``10m``, ``72h``, ``3d`` or ``600``; ValueError with a message otherwise."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text.strip() or 'nothing'!r} is not a duration: write e.g. 90s, 10m, 72h or 3d")
    return int(match.group(1)) * _UNITS[(match.group(2) or "s").lower()]


def format_duration(seconds: int) -> str:
    """``seconds`` in the largest unit that divides it: 600 → ``10m``, 259200 → ``3d``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


class AlertRuleFormScreen(AdminForm[str | None]):
    """Add (``rule`` None) or edit an alert rule of ``organization_id``; returns the rule's id once saved."""

    HELP = """\
What raises an alert. **Kinds**: *threshold* (N matching events within the window, per group),
*entity* (any event carrying one of the entity types), *silent agent* (devices that sent nothing for
the window), *new tool* (the first event of a tool that is not monitored; at most N alerts an hour),
*forwarding* (a destination that stopped taking messages; one per organisation, built in). The fields
shown follow the kind; a rule's kind cannot change once saved.

**Group by**: one alert per user, device, tool or organisation. **Cooldown**: once an alert is
resolved, its rule raises nothing more for that group until the cooldown has passed. Durations read
`90s`, `10m`, `72h` or `3d` (a bare number is seconds). The filters (risk levels, entity types, tools,
users, devices, sanitised) narrow the events a threshold or entity rule counts; empty means any.

`ctrl+s` saves (checked first: a refusal is shown under its field); Esc closes, asking first when
something was changed. The evaluator uses a saved rule from its next pass.
"""
    HELP_TITLE = "Alert rule"
    BINDINGS = [
        # A modal screen does not see the app's keys: ? (outside a text field) is the app's help.
        Binding("question_mark", "app.help", "Help: these keys", show=False),
    ]

    def __init__(self, context: ConsoleContext, organization_id: str, rule: AlertRule | None = None) -> None:
        super().__init__(context)
        self.organization_id = organization_id
        self.rule = rule

    def compose(self) -> ComposeResult:
        rule = self.rule
        filters: dict[str, Any] = dict(rule.filters or {}) if rule is not None else {}
        title = f"Edit the alert rule {rule.name}" if rule else f"New alert rule for {self.organization_id}"
        with Vertical(id="alert-rule-form", classes="dialog"):
            yield Label(form_title(title, "ctrl+s save · escape cancel"), id="alert-rule-title")
            with VerticalScroll(id="alert-rule-fields"):
                yield from self.field_row("Name", "name", Input(rule.name if rule else "", id="name"))
                yield from self.field_row(
                    "Kind",
                    "kind",
                    Select(
                        [
                            (KIND_LABELS.get(kind, kind), kind)
                            for kind in ALERT_RULE_KINDS
                            if kind != "forwarding"
                        ]
                        if rule is None
                        else [(KIND_LABELS.get(rule.kind, rule.kind), rule.kind)],
                        value=rule.kind if rule else "threshold",
                        allow_blank=False,
                        id="kind",
                        disabled=rule is not None,
                    ),
                )
                yield from self.field_row(
                    "State",
                    "enabled",
                    TickBox("enabled", value=rule.enabled if rule else True, id="enabled"),
                )
                yield from self.field_row(
                    "Severity",
                    "severity",
                    Select(
                        [(level, level) for level in ALERT_SEVERITIES],
                        value=rule.severity if rule else "high",
                        allow_blank=False,
                        id="severity",
                    ),
                )
                yield from self.field_row(
                    "Events (N)",
                    "threshold",
                    Input(str(rule.threshold if rule else 5), id="threshold"),
                    label_id="label-threshold",
                )
                yield from self.field_row(
                    "Window",
                    "window",
                    Input(format_duration(rule.window_seconds if rule else 600), id="window"),
                    label_id="label-window",
                )
                yield from self.field_row(
                    "Group by",
                    "group_by",
                    Select(
                        [(key, key) for key in ALERT_GROUP_KEYS],
                        value=rule.group_by if rule else "user",
                        allow_blank=False,
                        id="group_by",
                    ),
                )
                yield from self.field_row(
                    "Cooldown",
                    "cooldown",
                    Input(format_duration(rule.cooldown_seconds if rule else 900), id="cooldown"),
                )
                yield from self.risk_levels_row(
                    "Risk levels", filters.get("risk_levels") or (), classes="admin-field filter-field"
                )
                for key, label, placeholder in LIST_FILTERS:
                    value = ", ".join(str(name) for name in filters.get(key) or ())
                    with Vertical(classes="admin-field filter-field"):
                        with Horizontal(classes="form-row"):
                            yield Label(label, classes="form-label")
                            yield Input(value, id=key, placeholder=placeholder)
                        yield error_label(f"{key}-error")
                sanitized = filters.get("was_sanitized")
                label = next(name for name, value in SANITIZED_CHOICES.items() if value == sanitized)
                with Vertical(classes="admin-field filter-field"):
                    with Horizontal(classes="form-row"):
                        yield Label("Sanitised", classes="form-label")
                        yield Select(
                            [(name, name) for name in SANITIZED_CHOICES],
                            value=label,
                            allow_blank=False,
                            id="was_sanitized",
                        )
            yield from self.form_buttons("Save")

    def on_mount(self) -> None:
        # Before the dialog marks what it holds as saved (after the first refresh) and focuses the name.
        self._follow_kind()

    def scrollables(self) -> list[Widget]:
        """The frame and the fields' scroll (one-line inputs scroll too, but hold no more below)."""
        return [self.query_one("#alert-rule-form"), self.query_one("#alert-rule-fields")]

    @property
    def kind(self) -> str:
        return str(self.query_one("#kind", Select).value)

    @on(Select.Changed, "#kind")
    def _follow_kind(self) -> None:
        """Show the fields the kind reads, labelled as that kind reads them."""
        kind = self.kind
        shown = KIND_FIELDS.get(kind, frozenset())
        for name in ("threshold", "window", "group_by"):
            self.show_field(name, name in shown)
        for field in self.query(".filter-field"):
            field.display = "filters" in shown
        self.query_one("#label-threshold", Label).update(THRESHOLD_LABELS.get(kind, "Threshold"))
        self.query_one("#label-window", Label).update(WINDOW_LABELS.get(kind, "Window"))
        if kind == "silent_agent" and self.rule is None and self.query_one("#window", Input).value == "10m":
            self.query_one("#window", Input).value = "72h"

    def build(self) -> AlertRuleSpec:
        """The spec the form describes; ValueError (with the field as ``args[1]``) on a bad number."""
        kind = self.kind
        shown = KIND_FIELDS.get(kind, frozenset())
        current = self.rule
        threshold_text = self.query_one("#threshold", Input).value.strip()
        try:
            threshold = int(threshold_text) if "threshold" in shown else (current.threshold if current else 1)
        except ValueError:
            raise ValueError(f"{threshold_text or 'nothing'!r} is not a whole number", "threshold") from None
        try:
            window = (
                parse_duration(self.query_one("#window", Input).value)
                if "window" in shown
                else (current.window_seconds if current else 600)
            )
        except ValueError as error:
            raise ValueError(str(error), "window") from None
        try:
            cooldown = parse_duration(self.query_one("#cooldown", Input).value)
        except ValueError as error:
            raise ValueError(str(error), "cooldown") from None
        filters: dict[str, Any] = {}
        if "filters" in shown:
            levels = self.ticked_risk_levels()
            if levels:
                filters["risk_levels"] = levels
            for key, _, _ in LIST_FILTERS:
                names = _names(self.query_one(f"#{key}", Input).value)
                if names:
                    filters[key] = names
            sanitized = SANITIZED_CHOICES.get(str(self.query_one("#was_sanitized", Select).value))
            if sanitized is not None:
                filters["was_sanitized"] = sanitized
        elif current is not None:
            filters = dict(current.filters or {})
        return AlertRuleSpec(
            name=self.query_one("#name", Input).value.strip(),
            kind=kind,
            enabled=self.query_one("#enabled", Checkbox).value,
            severity=str(self.query_one("#severity", Select).value),
            threshold=threshold,
            window_seconds=window,
            group_by=(
                str(self.query_one("#group_by", Select).value)
                if "group_by" in shown
                else (current.group_by if current else IMPLIED_GROUPS.get(kind, "organization"))
            ),
            cooldown_seconds=cooldown,
            filters=filters,
        )

    def action_submit(self) -> None:
        try:
            spec = self.build()
        except ValueError as error:
            message, field = error.args
            self.show_errors({field: message})
            return
        if self.context.require_admin("change alert rules"):
            self.clear_errors()
            self.save(spec)

    @work(exclusive=True, group="alert-rule-form", exit_on_error=False)
    async def save(self, spec: AlertRuleSpec) -> None:
        async with self.context.sessions() as session:
            try:
                if self.rule is None:
                    row = await create_rule(
                        session=session,
                        organization_id=self.organization_id,
                        spec=spec,
                        actor=self.context.actor,
                    )
                else:
                    row, _ = await update_rule(
                        session=session, rule_id=self.rule.id, spec=spec, actor=self.context.actor
                    )
            except AlertError as error:
                self.show_errors({field_named_in(str(error), ERROR_FIELDS): str(error)})
                return
            await session.commit()
        self.dismiss(str(row.id))
