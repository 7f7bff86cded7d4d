"""What every pane of the Config section is (a tab showing one part of an organisation's configuration),
and what it may ask of the section that hosts it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, Label, Static, TabPane

from console.messages import ForwardsWorkerFailures
from console.widgets.keyed_table import KeyedTable, Row, TableColumn

if TYPE_CHECKING:
    from console.dialogs.config_forms import Edit
    from console.sections.section import ConsoleContext
    from db.models import FirewallConfig

Shown = TypeVar("Shown")
#: What the panes that edit the configuration row tell a viewer they may not do.
CHANGE_CONFIGURATION = "change the configuration"


class ConfigHost(Protocol):
    """The Config section as its panes see it: the organisation shown and the one way to change it."""

    context: ConsoleContext
    organization_id: str | None
    row: FirewallConfig | None

    def ready(self, what: str) -> bool:
        """True if an administrator may ``what`` now and an organisation is shown (else says why)."""
        ...

    def change_field(self, field: str, edit: Edit, fields: tuple[str, ...] = ...) -> Any:
        """Apply ``edit`` to ``field`` of the organisation shown (a worker); errors go under ``fields``."""
        ...

    def load_config(self) -> Any:
        """Read the organisation's configuration again (a worker)."""
        ...

    def show_field_errors(self, errors: dict[str, str]) -> None:
        """Put each message under its field (clearing the others)."""
        ...


class ConfigPane(ForwardsWorkerFailures, TabPane, Generic[Shown]):
    """A tab of the Config section: reads its part of a configuration row, shows it, or clears it.

    :meth:`read` does everything that can fail on a broken row (written around the validators)
    before any pane shows anything, so the section shows every pane or none. The section's
    keys a, e, t and delete go to the shown pane's :meth:`add_entry`, :meth:`edit_entry`,
    :meth:`toggle_entry` and :meth:`remove_entry`.
    """

    #: The selector of the widget that takes the focus when the tab is chosen with [ or ] (None: the tabs).
    MAIN: str | None = None

    def __init__(self, title: str, host: ConfigHost, *, id: str) -> None:
        super().__init__(title, id=id)
        self.host = host

    def read(self, row: FirewallConfig) -> Shown:
        """What this pane shows of ``row``; raises (any exception) if the row cannot be shown."""
        raise NotImplementedError

    def fill(self, shown: Shown) -> None:
        """Show what :meth:`read` returned."""

    def clear(self) -> None:
        """Show nothing (no organisation, or one that cannot be shown)."""

    def allow_saving(self, allowed: bool) -> None:
        """Enable or disable what saves (panes with a form)."""

    def add_entry(self) -> None:
        """The a key on this tab."""

    def edit_entry(self) -> None:
        """The e key on this tab."""

    def toggle_entry(self) -> None:
        """The t key on this tab."""

    def remove_entry(self) -> None:
        """The delete key on this tab."""


class TablePane(ConfigPane[Shown]):
    """A tab that is a line of key hints over one keyed table (tools, patterns, tokens).

    A subclass names itself (``NAME``: the tab is ``#pane-<NAME>``, its table ``#<NAME>-table``,
    which takes the focus) and gives its ``TITLE``, ``HINT`` and ``COLUMNS``.
    """

    NAME: ClassVar[str]
    TITLE: ClassVar[str]
    HINT: ClassVar[str]
    COLUMNS: ClassVar[tuple[TableColumn, ...]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.MAIN = f"#{cls.NAME}-table"

    def __init__(self, host: ConfigHost) -> None:
        super().__init__(self.TITLE, host, id=f"pane-{self.NAME}")

    #: What the hint line says to a viewer, who may not change anything here.
    VIEWER_HINT: ClassVar[str] = "Read only: administrators make the changes."

    def compose(self) -> ComposeResult:
        # Viewers see only what they can do: the keys that change things are an administrator's.
        yield Static(self.HINT if self.host.context.user.is_admin else self.VIEWER_HINT, classes="admin-hint")
        yield KeyedTable(*self.COLUMNS, id=f"{self.NAME}-table")

    @property
    def table(self) -> KeyedTable:
        return self.query_one(f"#{self.NAME}-table", KeyedTable)

    def clear(self) -> None:
        self.table.show([], keep="top")

    @on(DataTable.RowSelected)
    def _row_opened(self, event: DataTable.RowSelected) -> None:
        """Enter on a row edits it (where the tab can edit: tools, patterns)."""
        event.stop()
        self.edit_entry()

    def fill_rows(self, rows: list[Row]) -> None:
        """Show ``rows``, the cursor staying on the same row index (after an edit, on the edited entry)."""
        self.table.show(rows, keep="row")

    def selected_entry(self, what: str) -> str | None:
        """The key of the row under the cursor, if there is one and the user may ``what`` now (else None)."""
        key = self.table.selected_key
        return key if key is not None and self.host.ready(what) else None

    def reload_after(self, result: object) -> None:
        """A form's callback: read the configuration again once it saved something (None: cancelled)."""
        if result is not None:
            self.host.load_config()


def check_names(what: str, names: Iterable[object]) -> None:
    """ValueError if a name of a list of ``what`` (tools, patterns) is not text or is there twice."""
    listed = list(names)
    if not all(isinstance(name, str) for name in listed):
        raise ValueError(f"a {what} has a name that is not text")
    twice = next((name for name in listed if listed.count(name) > 1), None)
    if twice is not None:
        raise ValueError(f"{what} {twice!r} is listed twice")


def form_field(label: str, field: Input) -> ComposeResult:
    """A labelled input of a pane's form, then the line its errors go to (id ``<input id>-error``)."""
    with Vertical(classes="admin-field"):
        with Horizontal(classes="form-row"):
            yield Label(label, classes="form-label")
            yield field
        yield Label("", id=f"{field.id}-error", classes="field-error")
