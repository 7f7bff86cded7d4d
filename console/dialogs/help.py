"""The help screen (``?``): the keys of the screen it was opened over, what that screen is for, and the keys
that work anywhere.

It is built from the bindings in force where ``?`` was pressed (the focused table, the
section, the shell, the app), so it lists exactly what works there, the keys the footer
has no room for included, and nothing a viewer may not do (their keys are not in force).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Markdown, Static

from console.dialogs.dialog import Dialog

ANYWHERE_ABOUT = (
    "`ctrl+p` opens the command palette: every section and action by name (Audit too). "
    "In a table: ←/→ column, `s` sort by it, `F` filter by the cell, `y` copy the cell, "
    "Home/End first and last row, Enter opens the row. Esc leaves a box or closes a dialog."
)


@dataclass(frozen=True)
class KeyHelp:
    """One key and what it does; ``anywhere`` for the shell's and the app's keys."""

    key: str
    description: str
    anywhere: bool = False


def keys_in_force(screen: Screen[object], *, anywhere_from: Iterable[object] = ()) -> list[KeyHelp]:
    """The keys that work on ``screen`` now, with their descriptions, once each (first binding wins).

    Bindings whose node is in ``anywhere_from`` (the app, the shell) are marked ``anywhere``.
    """
    general = {id(node) for node in anywhere_from}
    seen: set[str] = set()
    found: list[KeyHelp] = []
    for key, active in screen.active_bindings.items():
        binding: Binding = active.binding
        if not active.enabled or not binding.description or key in seen:
            continue
        seen.add(key)
        shown = screen.app.get_key_display(binding)
        found.append(KeyHelp(shown, binding.description, id(active.node) in general))
    return found


def keys_table(title: str, keys: Iterable[KeyHelp]) -> Table:
    table = Table(title=title, title_justify="left", box=None, show_header=False, expand=True)
    table.add_column("Key", style="bold", no_wrap=True, min_width=8)
    table.add_column("Does")
    for entry in keys:
        table.add_row(Text(entry.key), Text(entry.description))
    return table


class HelpScreen(Dialog[None]):
    """The keys of the screen below and what it is for; Esc or ``?`` closes it."""

    BINDINGS = [Binding("escape", "close_dialog", "Close"), Binding("question_mark", "close_dialog", "Close")]

    def __init__(self, title: str, about: str, keys: list[KeyHelp]) -> None:
        super().__init__()
        self.help_title = title
        self.about = about
        self.keys = keys

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-dialog", classes="dialog") as frame:
            frame.border_title = f"Help: {self.help_title}"
            if self.about:
                yield Markdown(self.about, id="help-about")
            here = [entry for entry in self.keys if not entry.anywhere]
            yield Static(keys_table("Keys here", here), id="help-keys")
            anywhere = [entry for entry in self.keys if entry.anywhere]
            yield Static(keys_table("Keys anywhere", anywhere), id="help-anywhere")
            yield Markdown(ANYWHERE_ABOUT)

    def focus_first_field(self) -> None:
        self.query_one("#help-dialog").focus()

    @property
    def key_names(self) -> list[str]:
        """The keys listed, for tests."""
        return [entry.key for entry in self.keys]
