"""Users section (placeholder): Console users: list, create, deactivate, reset passwords, change roles.

Placeholder with the section contract of :mod:`console.screens` in place: it
receives a :class:`~console.screens.section.ConsoleContext` (sessions, the
signed-in user and role, notify) and is shown by the shell on key 3.
Replace the body of this module to build the screen; app.py needs no change.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from console.screens.section import Section, SectionCommand


class UsersSection(Section):
    """Console users: list, create, deactivate, reset passwords, change roles."""

    TITLE = "Users"
    KEY = "3"
    COMMANDS = (
        SectionCommand(
            "Users: create a user",
            "Add a console user (administrators only)",
            "create_user",
            admin_only=True,
        ),
    )

    def compose(self) -> ComposeResult:
        yield Static(
            "[b]Users[/b]\n\nConsole users: list, create, deactivate, reset passwords, change roles.\n\nThis section is not built yet.",
            classes="placeholder",
        )

    def action_create_user(self) -> None:
        if not self.context.require_admin("create users"):
            return
        self.context.notify("Users: not available in this version yet.")
