"""The banner shown across the shell while the database cannot be reached."""

from __future__ import annotations

from textual.widgets import Static


class DatabaseBanner(Static):
    """Hidden until :meth:`show_lost`; says what failed and how to retry."""

    def on_mount(self) -> None:
        self.display = False

    def show_lost(self, reason: str) -> None:
        self.reason = reason
        self.update(
            f"[b]Database unavailable[/b]: {reason}  —  retrying every few seconds; press [b]ctrl+r[/b] to retry now"
        )
        self.display = True

    def hide(self) -> None:
        self.display = False
