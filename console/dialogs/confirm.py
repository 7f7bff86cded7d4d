"""A yes/no question (before quitting while work runs, before removing or deactivating something), and
:func:`confirm_then`, the one way the console asks before it acts.

The question names what it is about (a device id, a pattern name), so it is shown as plain text.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label

from console.untrusted import plain


class ConfirmScreen(ModalScreen[bool]):
    """Returns True for yes (y), False for no (n / escape)."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-dialog", classes="dialog"):
            yield Label(plain(self.question), id="confirm-question")
            with Horizontal(classes="buttons"):
                yield Button("Yes (y)", variant="error", id="yes")
                yield Button("No (n)", variant="primary", id="no")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


def confirm_then(
    app: App[Any],
    question: str,
    then: Callable[[], object],
    *,
    otherwise: Callable[[], object] | None = None,
) -> None:
    """Ask ``question``; on yes call ``then`` (usually starting a worker), on no ``otherwise`` if given.

    ``then`` may be a coroutine function: it is awaited before the dialog's answer is done with.
    """

    async def answered(yes: bool | None) -> None:
        action = then if yes else otherwise
        if action is not None:
            result = action()
            if inspect.isawaitable(result):
                await result

    app.push_screen(ConfirmScreen(question), answered)
