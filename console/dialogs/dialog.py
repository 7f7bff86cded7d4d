"""The base of every dialog and form: focus on the first field, a hint when it scrolls, Esc closes it, and
a question first when closing would throw away what was typed.

As in k9s and lazygit, a dialog opens with the cursor in its first field (never on a
scrolling container or nothing), Esc closes it from anywhere inside, and what did not
fit shows a "▼ more below" hint in the dialog's frame (Tab and PgDn reach it). A form
that edits something sets ``GUARDS_UNSAVED``: its fields' values when it opened (or
when it last called :meth:`Dialog.mark_saved`) are compared on Esc, and a change asks
"Discard your changes?" before closing.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from textual import events
from textual.binding import Binding, BindingType
from textual.containers import ScrollableContainer
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Checkbox, DataTable, Input, RadioSet, Select, SelectionList, Switch, TextArea

from console.dialogs.confirm import ConfirmScreen

ResultType = TypeVar("ResultType")

#: What a dialog's first field may be, in the order they are found in the dialog.
FIELD_TYPES = (Input, TextArea, Select, Checkbox, Switch, RadioSet, SelectionList, DataTable)
MORE_BELOW = "▼ more below: Tab or PgDn"
MORE_ABOVE = "▲ more above: shift+Tab or PgUp"


def field_value(widget: Widget) -> Any:
    """What a field holds now, comparable with what it held before (None for what is not a field)."""
    if isinstance(widget, Input):
        return widget.value
    if isinstance(widget, TextArea):
        return widget.text
    if isinstance(widget, Select):
        return widget.value
    if isinstance(widget, Checkbox | Switch):
        return widget.value
    if isinstance(widget, RadioSet):
        return widget.pressed_index
    if isinstance(widget, SelectionList):
        return tuple(widget.selected)
    return None


class Dialog(ModalScreen[ResultType]):
    """A modal dialog: see the module. Subclasses put their content in a container of class ``dialog``."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close_dialog", "Close"),
        # A modal screen does not pass keys on to the app's bindings: ? is bound here again.
        Binding("question_mark", "app.help", "Help: these keys", show=False),
    ]
    #: Ask before Esc throws away changed fields (forms that edit something).
    GUARDS_UNSAVED: ClassVar[bool] = False
    #: What ``?`` says about this dialog above its keys (Markdown, the console's own words), and its title.
    HELP: ClassVar[str] = ""
    HELP_TITLE: ClassVar[str] = "this dialog"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._saved_state: dict[int, Any] = {}
        self._asking_to_discard = False

    # -- focus and the scroll hint ---------------------------------------------------------------

    def on_mount(self) -> None:
        self.call_after_refresh(self._opened)

    def _opened(self) -> None:
        self.focus_first_field()
        self.mark_saved()
        for widget in self.scrollables():
            self.watch(widget, "scroll_y", self.update_scroll_hint, init=False)
            self.watch(widget, "virtual_size", self.update_scroll_hint, init=False)
        self.update_scroll_hint()

    def focus_first_field(self) -> None:
        """Put the cursor in the dialog's first field (or its first button), if it has one."""
        for widget in self.query("*"):
            if isinstance(widget, FIELD_TYPES) and widget.focusable:
                widget.focus()
                return
        self.focus_next()

    def scrollables(self) -> list[Widget]:
        """The dialog's frame and the containers inside it that scroll."""
        frames = list(self.query(".dialog"))
        # A one-line Input is a ScrollableContainer too (it scrolls sideways): it is no place with more below.
        inner = [widget for widget in self.query(ScrollableContainer) if not isinstance(widget, Input)]
        return [*frames[:1], *(widget for widget in inner if widget.display)]

    def update_scroll_hint(self) -> None:
        """Say in the frame's bottom edge that there is more below (or above) what is shown."""
        frames = list(self.query(".dialog"))
        if not frames:
            return
        hint = ""
        for widget in self.scrollables():
            if widget.max_scroll_y > 0 and widget.scroll_y < widget.max_scroll_y - 0.5:
                hint = MORE_BELOW
                break
            if widget.max_scroll_y > 0 and hint == "":
                hint = MORE_ABOVE
        frames[0].border_subtitle = hint

    def on_resize(self, _: events.Resize) -> None:
        self.call_after_refresh(self.update_scroll_hint)

    def on_descendant_focus(self, _: events.DescendantFocus) -> None:
        self.call_after_refresh(self.update_scroll_hint)

    @property
    def scroll_hint(self) -> str:
        """The hint the frame shows now ("" when everything fits); for tests and the tmux eye."""
        frames = list(self.query(".dialog"))
        return str(frames[0].border_subtitle or "") if frames else ""

    # -- closing, with unsaved changes -----------------------------------------------------------

    def form_state(self) -> dict[int, Any]:
        """Every field's value, by widget."""
        return {
            id(widget): field_value(widget) for widget in self.query("*") if isinstance(widget, FIELD_TYPES)
        }

    def mark_saved(self) -> None:
        """What the fields hold now is what closing may throw away without asking (after loading a form)."""
        self._saved_state = self.form_state()

    @property
    def has_unsaved_changes(self) -> bool:
        return self.GUARDS_UNSAVED and self.form_state() != self._saved_state

    def action_close_dialog(self) -> None:
        self.request_close()

    def request_close(self, result: ResultType | None = None) -> None:
        """Close with ``result``; first ask when fields were changed and would be thrown away."""
        if not self.has_unsaved_changes:
            self.dismiss(result)
            return
        if self._asking_to_discard:
            return
        self._asking_to_discard = True

        def answered(discard: bool | None) -> None:
            self._asking_to_discard = False
            if discard:
                self.dismiss(result)

        self.app.push_screen(ConfirmScreen("Discard your changes? What you typed is lost."), answered)
