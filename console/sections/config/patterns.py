"""The Patterns tab of the Config section: the organisation's custom patterns — add, edit, remove."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from console.dialogs.config_forms import PatternFormScreen
from console.dialogs.confirm import confirm_then
from console.sections.config.pane import CHANGE_CONFIGURATION, TablePane, check_names
from console.untrusted import plain
from console.widgets.keyed_table import Row, TableColumn

if TYPE_CHECKING:
    from db.models import FirewallConfig


class PatternsPane(TablePane[list[Row]]):
    """Custom patterns (name, regex, entity type, severity); the Tester tab tries them on a sample."""

    NAME = "patterns"
    TITLE = "Patterns"
    HINT = "a add · Enter/e edit · del remove · the Tester tab tries them on a sample"
    VIEWER_HINT = "Read only: administrators make the changes. The Tester tab tries them on a sample."
    COLUMNS = (
        TableColumn("Name"),
        TableColumn("Regex", stretch=True),
        TableColumn("Entity type"),
        TableColumn("Severity"),
    )

    def read(self, row: FirewallConfig) -> list[Row]:
        patterns: list[Row] = [
            (
                pattern["name"],
                tuple(plain(pattern[name]) for name in ("name", "regex", "entity_type", "severity")),
            )
            for pattern in row.custom_patterns or []
        ]
        check_names("custom pattern", (name for name, _ in patterns))
        return patterns

    def fill(self, shown: list[Row]) -> None:
        self.fill_rows(shown)

    def _patterns(self) -> list[dict[str, Any]]:
        row = self.host.row
        return list(row.custom_patterns or []) if row is not None else []

    def add_entry(self) -> None:
        if self.host.ready(CHANGE_CONFIGURATION):
            assert self.host.organization_id is not None
            form = PatternFormScreen(self.host.context, self.host.organization_id, self._patterns())
            self.app.push_screen(form, self.reload_after)

    def edit_entry(self) -> None:
        name = self.selected_entry(CHANGE_CONFIGURATION)
        if name is None:
            return
        assert self.host.organization_id is not None
        patterns = self._patterns()
        index = next((i for i, p in enumerate(patterns) if p["name"] == name), None)
        if index is not None:
            form = PatternFormScreen(self.host.context, self.host.organization_id, patterns, index)
            self.app.push_screen(form, self.reload_after)

    def remove_entry(self) -> None:
        name = self.selected_entry(CHANGE_CONFIGURATION)
        if name is None:
            return
        confirm_then(
            self.app,
            f"Remove the custom pattern {name!r}?",
            lambda: self.host.change_field(
                "custom_patterns", lambda patterns: [p for p in patterns if p["name"] != name]
            ),
        )
