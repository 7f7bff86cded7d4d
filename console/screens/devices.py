"""Devices section (placeholder): Registered agents: last seen, version, activate/deactivate.

Placeholder with the section contract of :mod:`console.screens` in place: it
receives a :class:`~console.screens.section.ConsoleContext` (sessions, the
signed-in user and role, notify) and is shown by the shell on key 4.
Replace the body of this module to build the screen; app.py needs no change.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from console.screens.section import Section, SectionCommand


class DevicesSection(Section):
    """Registered agents: last seen, version, activate/deactivate."""

    TITLE = "Devices"
    KEY = "4"
    COMMANDS = (
        SectionCommand(
            "Devices: deactivate a device",
            "Stop accepting a device's events (administrators only)",
            "deactivate_device",
            admin_only=True,
        ),
    )

    def compose(self) -> ComposeResult:
        yield Static(
            "[b]Devices[/b]\n\nRegistered agents: last seen, version, activate/deactivate.\n\nThis section is not built yet.",
            classes="placeholder",
        )

    def action_deactivate_device(self) -> None:
        if not self.context.require_admin("deactivate devices"):
            return
        self.context.notify("Devices: not available in this version yet.")
