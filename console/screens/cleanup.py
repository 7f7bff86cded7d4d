"""Cleanup section (placeholder): Retention: preview and run the log cleanup, past runs.

Placeholder with the section contract of :mod:`console.screens` in place: it
receives a :class:`~console.screens.section.ConsoleContext` (sessions, the
signed-in user and role, notify) and is shown by the shell on key 6.
Replace the body of this module to build the screen; app.py needs no change.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from console.screens.section import Section, SectionCommand


class CleanupSection(Section):
    """Retention: preview and run the log cleanup, past runs."""

    TITLE = "Cleanup"
    KEY = "6"
    COMMANDS = (
        SectionCommand(
            "Cleanup: run retention now",
            "Delete logs older than each organisation's retention (administrators only)",
            "run_cleanup",
            admin_only=True,
        ),
    )

    def compose(self) -> ComposeResult:
        yield Static(
            "[b]Cleanup[/b]\n\nRetention: preview and run the log cleanup, past runs.\n\nThis section is not built yet.",
            classes="placeholder",
        )

    def action_run_cleanup(self) -> None:
        if not self.context.require_admin("run a retention cleanup"):
            return
        self.context.notify("Cleanup: not available in this version yet.")
