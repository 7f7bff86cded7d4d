"""The Thresholds tab of the Config section: from how many detected entities an event is amber or red,
and the entity types that make it red on their own."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Input, Static

from console.sections.config.pane import CHANGE_CONFIGURATION, ConfigHost, ConfigPane, form_field

if TYPE_CHECKING:
    from db.models import FirewallConfig

#: The fields of ``sensitivity_thresholds``, as its inputs are named (errors go under them).
THRESHOLD_FIELDS = ("red_entity_types", "amber_min_entities", "red_min_entities")
THRESHOLDS_HELP = (
    "An event is [b]amber[/b] from [i]amber_min_entities[/i] detected entities and [b]red[/b] from "
    "[i]red_min_entities[/i] (1–1000, amber ≤ red); any entity type listed in [i]red_entity_types[/i] "
    "makes it red on its own."
)


class ThresholdsPane(ConfigPane[dict[str, str]]):
    """A small form saved as one audited edit of ``sensitivity_thresholds``."""

    def __init__(self, host: ConfigHost) -> None:
        super().__init__("Thresholds", host, id="pane-thresholds")

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="compact-form"):
            yield Static(THRESHOLDS_HELP, classes="admin-hint")
            yield from form_field(
                "Amber from", Input(id="amber_min_entities", placeholder="entities (1-1000)")
            )
            yield from form_field("Red from", Input(id="red_min_entities", placeholder="entities (1-1000)"))
            yield from form_field(
                "Red types", Input(id="red_entity_types", placeholder="API_KEY, PASSWORD, …")
            )
            with Horizontal(classes="buttons"):
                yield Button("Save thresholds", variant="primary", id="save-thresholds")

    def read(self, row: FirewallConfig) -> dict[str, str]:
        thresholds = dict(row.sensitivity_thresholds or {})
        return {
            "amber_min_entities": str(thresholds.get("amber_min_entities", "")),
            "red_min_entities": str(thresholds.get("red_min_entities", "")),
            "red_entity_types": ", ".join(str(name) for name in thresholds.get("red_entity_types") or []),
        }

    def fill(self, shown: dict[str, str]) -> None:
        for field, value in shown.items():
            self.query_one(f"#{field}", Input).value = value

    def clear(self) -> None:
        self.fill(dict.fromkeys(THRESHOLD_FIELDS, ""))

    def allow_saving(self, allowed: bool) -> None:
        self.query_one("#save-thresholds", Button).disabled = not allowed
        for field in THRESHOLD_FIELDS:
            self.query_one(f"#{field}", Input).disabled = not allowed

    @on(Button.Pressed, "#save-thresholds")
    @on(Input.Submitted, "#amber_min_entities, #red_min_entities, #red_entity_types")
    def save(self) -> None:
        """Check the numbers here, then save: ``db/`` validates the rest (amber ≤ red, known types)."""
        if not self.host.ready(CHANGE_CONFIGURATION):
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
            self.host.show_field_errors(errors)
            return
        self.host.change_field("sensitivity_thresholds", lambda _: values, fields=THRESHOLD_FIELDS)
