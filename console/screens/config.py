"""Config section (placeholder): Per-organisation firewall configuration and ingest tokens.

Placeholder with the section contract of :mod:`console.screens` in place: it
receives a :class:`~console.screens.section.ConsoleContext` (sessions, the
signed-in user and role, notify) and is shown by the shell on key 5.
Replace the body of this module to build the screen; app.py needs no change.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from console.screens.section import Section, SectionCommand


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
    )

    def compose(self) -> ComposeResult:
        yield Static(
            "[b]Config[/b]\n\nPer-organisation firewall configuration and ingest tokens.\n\nThis section is not built yet.",
            classes="placeholder",
        )

    def action_edit_config(self) -> None:
        if not self.context.require_admin("change the configuration"):
            return
        self.context.notify("Config: not available in this version yet.")
