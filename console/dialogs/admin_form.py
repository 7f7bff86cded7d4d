"""The base of the admin forms (modals): a field-error label under each field, and worker failures
forwarded to the app like a section's (:class:`~console.messages.ForwardsWorkerFailures`).

A form builds its rows with :meth:`AdminForm.field_row`, which yields the label,
the input and an error label with id ``<field>-error``; :meth:`show_errors`
fills those labels (an error for a field without a row goes to the general
``#form-error`` label). Saving happens inside the form, in an async worker, so
a refusal from ``db/`` (a taken username, the last administrator) lands next to
its field and the form stays open; the form dismisses itself only once saved.
``db/`` writes the audit row of each change; a :class:`~db.rights.NotAllowed`
(the role was taken away since sign-in) is not caught here but goes to the app
like any failed worker, which signs out or drops to the viewer's keys.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Generic, TypeVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Input, Label

from console.context import ConsoleContext
from console.dialogs.dialog import Dialog
from console.messages import ForwardsWorkerFailures
from console.untrusted import plain
from console.widgets.tick_box import TickBox
from db.vocabulary import RISK_LEVELS

ResultType = TypeVar("ResultType")


class AdminForm(ForwardsWorkerFailures, Dialog[ResultType], Generic[ResultType]):
    """A modal form that validates, saves through ``db/`` and shows errors next to fields.

    Esc asks before throwing away what was typed (:class:`~console.dialogs.dialog.Dialog`); a form
    that fills its fields after opening calls :meth:`mark_saved` once they are filled.
    """

    GUARDS_UNSAVED = True

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "submit", "Save"),
    ]
    #: The field names this form shows errors for (in order).
    FIELDS: tuple[str, ...] = ()

    def __init__(self, context: ConsoleContext) -> None:
        super().__init__()
        self.context = context
        self.add_class("admin-form")

    @staticmethod
    def field_row(label: str, name: str, widget: Widget, *, label_id: str | None = None) -> ComposeResult:
        """A label and a widget side by side, then the field's (initially empty) error label.

        ``label_id`` names the label, for a form whose labels change with another field.
        """
        with Vertical(classes="admin-field"):
            with Horizontal(classes="form-row"):
                yield Label(label, classes="form-label", id=label_id)
                yield widget
            yield error_label(f"{name}-error")

    @staticmethod
    def risk_levels_row(label: str, chosen: Iterable[str], *, classes: str = "admin-field") -> ComposeResult:
        """A checkbox per risk level (id ``risk-<level>``), ``chosen`` ticked, then the risk levels error."""
        ticked = set(chosen)
        with Vertical(classes=classes):
            with Horizontal(classes="form-row"):
                yield Label(label, classes="form-label")
                for level in RISK_LEVELS:
                    yield TickBox(level, value=level in ticked, id=f"risk-{level}", classes="risk-box")
            yield error_label("risk_levels-error")

    def ticked_risk_levels(self) -> list[str]:
        """The risk levels ticked in :meth:`risk_levels_row`, in :data:`~db.vocabulary.RISK_LEVELS` order."""
        return [level for level in RISK_LEVELS if self.query_one(f"#risk-{level}", Checkbox).value]

    def show_field(self, name: str, shown: bool) -> None:
        """Show or hide the whole row (label, widget, error) of the field whose widget has id ``name``."""
        widget = self.query_one(f"#{name}")
        row = widget.parent.parent if widget.parent is not None else None
        if row is not None:
            row.display = shown

    def error_of(self, name: str) -> str:
        """The error shown under ``name`` (``form`` for the general one); for tests and the tmux eye."""
        return str(self.query_one(f"#{name}-error", Label).render())

    def clear_errors(self) -> None:
        for label in self.query(".field-error"):
            assert isinstance(label, Label)
            label.update("")
            label.display = False

    def show_errors(self, errors: dict[str | None, str]) -> None:
        """Put each message under its field; unknown fields and None go to the general error line."""
        self.clear_errors()
        for field, message in errors.items():
            target = f"#{field}-error" if field and self.query(f"#{field}-error") else "#form-error"
            label = self.query_one(target, Label)
            label.update(plain(message))
            label.display = True

    @on(Input.Submitted)
    def _next_or_submit(self, event: Input.Submitted) -> None:
        """Enter moves to the next text field; on the last one it saves."""
        event.stop()
        fields = [field for field in self.query(Input) if not field.disabled]
        if event.input in fields and event.input is not fields[-1]:
            fields[fields.index(event.input) + 1].focus()
        else:
            self.action_submit()

    @staticmethod
    def form_buttons(save_label: str) -> ComposeResult:
        """What every form ends with: the general error line, then its save and cancel buttons."""
        yield form_error_row()
        with Horizontal(classes="buttons"):
            yield Button(save_label, variant="primary", id="form-save")
            yield Button("Cancel", id="form-cancel")

    @on(Button.Pressed, "#form-save")
    def _save_pressed(self) -> None:
        self.action_submit()

    @on(Button.Pressed, "#form-cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()

    def action_cancel(self) -> None:
        self.request_close(None)

    def action_submit(self) -> None:
        """Validate and save (subclasses)."""

    def worker_failed(self, error: BaseException) -> None:
        self.show_errors({None: "Saving failed; see the notification."})


def form_title(title: str, keys: str) -> Text:
    """A form's bold title, then its keys; the title may name a user or an organisation: plain text."""
    return Text.assemble(plain(title, "bold"), f"  ({keys})")


def error_label(identifier: str) -> Label:
    """A field's error label (id ``<field>-error``), empty and hidden until :meth:`AdminForm.show_errors`."""
    label = Label("", id=identifier, classes="field-error")
    label.display = False
    return label


def form_error_row() -> Label:
    """The general error line of a form (errors that belong to no one field)."""
    return error_label("form-error")


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def field_named_in(message: str, error_fields: Iterable[tuple[str, str]]) -> str | None:
    """The field of the first (word, field) in ``error_fields`` whose word ``message`` names (None: none).

    Quoted values in ``message`` (a name, a tool) are what was typed, not what the message is about:
    they are not searched.
    """
    lowered = _QUOTED.sub("", message).lower()
    for word, field in error_fields:
        if word in lowered:
            return field
    return None
