"""The banner shown across the shell while the database cannot be reached."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from console.untrusted import plain


class DatabaseBanner(Static):
    """Hidden until :meth:`show_lost`; says what failed and how to retry."""

    def on_mount(self) -> None:
        self.display = False

    def show_lost(self, reason: str) -> None:
        # The reason quotes the driver and DATABASE_URL (an IPv6 host is "[::1]"): plain text, not markup.
        self.reason = reason
        self.update(
            Text.assemble(
                ("Database unavailable", "bold"),
                ": ",
                plain(reason),
                "  —  retrying every few seconds; press ",
                ("ctrl+r", "bold"),
                " to retry now",
            )
        )
        self.display = True

    def hide(self) -> None:
        self.display = False
