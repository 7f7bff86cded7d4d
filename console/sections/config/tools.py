"""The Tools tab of the Config section: the monitored tools — add, enable/disable, remove, restore
defaults."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from console.dialogs.config_forms import ToolFormScreen
from console.dialogs.confirm import confirm_then
from console.sections.config.pane import CHANGE_CONFIGURATION, TablePane, check_names
from console.untrusted import plain
from console.widgets.keyed_table import Row, TableColumn
from db.configs import default_monitored_tools

if TYPE_CHECKING:
    from db.models import FirewallConfig

FIELD = "monitored_tools"


def _monitored(tool: dict[str, Any]) -> str:
    return "yes" if tool.get("enabled", True) else "[b]no[/b]"


class ToolsPane(TablePane[list[Row]]):
    """The tools whose use agents report; each change is one audited edit of ``monitored_tools``."""

    NAME = "tools"
    TITLE = "Tools"
    HINT = "a add · Enter/e edit · t monitor or not · del remove · palette: restore the default tools"
    COLUMNS = (TableColumn("Tool", stretch=True), TableColumn("Type"), TableColumn("Monitored"))

    def read(self, row: FirewallConfig) -> list[Row]:
        tools: list[Row] = [
            (tool["name"], (plain(tool["name"]), plain(tool["tool_type"]), _monitored(tool)))
            for tool in row.monitored_tools or []
        ]
        check_names("monitored tool", (name for name, _ in tools))
        return tools

    def fill(self, shown: list[Row]) -> None:
        self.fill_rows(shown)

    def add_entry(self) -> None:
        if self.host.ready(CHANGE_CONFIGURATION):
            assert self.host.organization_id is not None
            self.app.push_screen(
                ToolFormScreen(self.host.context, self.host.organization_id, self._tools()), self.reload_after
            )

    def _tools(self) -> list[dict[str, Any]]:
        row = self.host.row
        return list(row.monitored_tools or []) if row is not None else []

    def edit_entry(self) -> None:
        name = self.selected_entry(CHANGE_CONFIGURATION)
        if name is None:
            return
        assert self.host.organization_id is not None
        tools = self._tools()
        index = next((i for i, tool in enumerate(tools) if tool.get("name") == name), None)
        if index is not None:
            form = ToolFormScreen(self.host.context, self.host.organization_id, tools, index)
            self.app.push_screen(form, self.reload_after)

    def toggle_entry(self) -> None:
        name = self.selected_entry(CHANGE_CONFIGURATION)
        if name is None:
            return
        self.host.change_field(
            FIELD,
            lambda tools: [
                {**t, "enabled": not t.get("enabled", True)} if t["name"] == name else t for t in tools
            ],
        )

    def remove_entry(self) -> None:
        name = self.selected_entry(CHANGE_CONFIGURATION)
        if name is None:
            return
        confirm_then(
            self.app,
            f"Stop monitoring {name!r} (remove it from the list)?",
            lambda: self.host.change_field(FIELD, lambda tools: [t for t in tools if t["name"] != name]),
        )

    def restore_defaults(self) -> None:
        if self.host.ready(CHANGE_CONFIGURATION):
            confirm_then(
                self.app,
                "Replace the monitored tools with the default list?",
                lambda: self.host.change_field(FIELD, lambda _: default_monitored_tools()),
            )
