"""Audit section (placeholder): The audit trail of changes made from the console and the CLI.

Placeholder with the section contract of :mod:`console.screens` in place: it
receives a :class:`~console.screens.section.ConsoleContext` (sessions, the
signed-in user and role, notify) and is shown by the shell from the command palette.
Replace the body of this module to build the screen; app.py needs no change.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from console.screens.section import Section


class AuditSection(Section):
    """The audit trail of changes made from the console and the CLI."""

    TITLE = "Audit"
    KEY = None

    def compose(self) -> ComposeResult:
        yield Static(
            "[b]Audit[/b]\n\nThe audit trail of changes made from the console and the CLI.\n\nThis section is not built yet.",
            classes="placeholder",
        )
