"""The one table of the console: rows keyed by what they show (a username, an event, a run), on DataTable.

Every list (logs, users, devices, tools, patterns, tokens, metadata keys,
cleanup previews and runs, audit) is a :class:`KeyedTable`. A section gives it
its columns once and then whole sets of rows with :meth:`KeyedTable.show`, each
row a key and its cells, and asks :attr:`KeyedTable.selected_key` which row the
cursor is on. Cells are shown as given: a :class:`rich.text.Text` is never
parsed, a ``str`` is markup, so whatever came from an agent or the database
must arrive as :func:`console.untrusted.plain` text (the sections do that).

Built for what comes next: a column cursor (:attr:`KeyedTable.selected_column`,
:meth:`KeyedTable.move_column_cursor`), sorting through a hook
(:attr:`KeyedTable.sort_value`, :meth:`KeyedTable.sort_by`; no keys are bound
to it yet) and a width policy (:attr:`TableColumn.width`, :attr:`TableColumn.stretch`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rich.text import Text
from textual import events
from textual.coordinate import Coordinate
from textual.geometry import Region
from textual.reactive import reactive
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, DuplicateKey

#: A cell: Text is shown as it is; a str is markup (only for the console's own words, never untrusted).
Cell = Text | str
#: A row: its key, then its cells in column order.
Row = tuple[str, Sequence[Cell]]
#: The sort hook: (column key, row key) → the value that row sorts by in that column.
SortValue = Callable[[str, str], Any]
#: Where the cursor goes when rows are replaced: to the same key (else the top), the same row index, the top.
Keep = Literal["key", "row", "top"]


@dataclass(frozen=True)
class TableColumn:
    """A column: its title, its key (the title unless given), and its width policy.

    ``width`` fixes the column to that many cells (None: as wide as its widest cell);
    a ``stretch`` column also takes an equal share of the room the other columns leave,
    never less than its ``width``. A cell wider than its column ends with "…".
    """

    title: str
    width: int | None = None
    stretch: bool = False
    key: str = ""

    @property
    def column_key(self) -> str:
        return self.key or self.title


class KeyedTable(DataTable[Cell]):
    """A row-cursor table whose rows are known by key; see the module for its contract."""

    #: The column under the column cursor (an index into the columns); moved by :meth:`move_column_cursor`.
    column_cursor: reactive[int] = reactive(0)

    def __init__(
        self,
        *columns: TableColumn,
        sort_value: SortValue | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=True)
        self.specs: tuple[TableColumn, ...] = columns
        #: The hook :meth:`sort_by` orders rows with; None sorts by the cells' text.
        self.sort_value: SortValue | None = sort_value
        self._rows: dict[str, Sequence[Cell]] = {}
        self._sorted_by: tuple[str, bool] | None = None
        for spec in columns:
            self.add_column(spec.title, width=spec.width, key=spec.column_key)

    # -- rows --------------------------------------------------------------------------------------

    def show(self, rows: Iterable[Row], *, select: str | None = None, keep: Keep = "key") -> None:
        """Replace every row with ``rows``; the cursor goes to ``select`` if shown, else as ``keep`` says."""
        given = list(rows)
        keyed = dict(given)
        if len(keyed) != len(given):
            twice = next(key for key, _ in given if sum(other == key for other, _ in given) > 1)
            raise DuplicateKey(f"two rows have the key {twice!r}")
        previous_key, previous_row = self.selected_key, self.cursor_row
        self._rows = keyed
        self.clear()
        for key in self._ordered_keys():
            self.add_row(*(_cut_with_ellipsis(cell) for cell in self._rows[key]), key=key)
        if select is None and keep == "key":
            select = previous_key
        if select is not None and select in self._rows:
            self.move_cursor(row=self.get_row_index(select))
        elif keep == "row" and self.row_count:
            self.move_cursor(row=min(previous_row, self.row_count - 1))
        self.call_after_refresh(self.apply_widths)

    @property
    def row_keys(self) -> list[str]:
        """The keys of the rows, top to bottom."""
        return [str(row.key.value) for row in self.ordered_rows]

    @property
    def selected_key(self) -> str | None:
        """The key of the row under the cursor, or None when the table is empty."""
        if self.row_count == 0:
            return None
        return str(self.coordinate_to_cell_key(Coordinate(self.cursor_row, 0)).row_key.value)

    def select_key(self, key: str) -> bool:
        """Put the cursor on the row ``key``; False if there is none."""
        if key not in self._rows:
            return False
        self.move_cursor(row=self.get_row_index(key))
        return True

    # -- the column cursor and sorting -----------------------------------------------------------

    @property
    def selected_column(self) -> str | None:
        """The key of the column under the column cursor (None without columns)."""
        if not self.specs:
            return None
        return self.specs[min(self.column_cursor, len(self.specs) - 1)].column_key

    def move_column_cursor(self, step: int) -> None:
        """Move the column cursor ``step`` columns (wrapping) and scroll that column into view."""
        if self.specs:
            self.column_cursor = (self.column_cursor + step) % len(self.specs)
            columns = self.ordered_columns
            x = sum(column.get_render_width(self) for column in columns[: self.column_cursor])
            width = columns[self.column_cursor].get_render_width(self)
            self.scroll_to_region(Region(x, 0, width, 1), animate=False)

    def sort_by(self, column: str | None = None, *, reverse: bool = False) -> None:
        """Order the rows by ``column`` (default: the column cursor's) through :attr:`sort_value`.

        The order holds for later :meth:`show` calls until :meth:`unsort`; the cursor keeps its row.
        """
        column = column or self.selected_column
        if column is None:
            return
        self._sorted_by = (column, reverse)
        self.show(list(self._rows.items()), keep="key")

    def unsort(self) -> None:
        """Back to the order the rows were given in."""
        self._sorted_by = None
        self.show(list(self._rows.items()), keep="key")

    def _ordered_keys(self) -> list[str]:
        if self._sorted_by is None:
            return list(self._rows)
        column, reverse = self._sorted_by
        index = next(i for i, spec in enumerate(self.specs) if spec.column_key == column)

        def value(key: str) -> Any:
            if self.sort_value is not None:
                return self.sort_value(column, key)
            cell = self._rows[key][index]
            return cell.plain if isinstance(cell, Text) else Text.from_markup(cell).plain

        return sorted(self._rows, key=value, reverse=reverse)

    # -- the width policy ------------------------------------------------------------------------

    def on_resize(self, _: events.Resize) -> None:
        self.apply_widths()

    def apply_widths(self) -> None:
        """Share the room the other columns leave between the stretch columns (on resize and new rows)."""
        stretchy = [spec for spec in self.specs if spec.stretch]
        if not stretchy or not self.is_mounted:
            return
        keys = {ColumnKey(spec.column_key) for spec in stretchy}
        taken = sum(column.get_render_width(self) for key, column in self.columns.items() if key not in keys)
        room = self.scrollable_content_region.width - taken
        share = room // len(stretchy) - 2 * self.cell_padding
        changed = False
        for spec in stretchy:
            column = self.columns[ColumnKey(spec.column_key)]
            width = max(spec.width or column.content_width, share)
            if column.auto_width or column.width != width:
                column.width, column.auto_width, changed = width, False, True
        if changed:
            # DataTable has no public way to resize a column: this is what its add_column does after one.
            self._require_update_dimensions = True
            self._clear_caches()
            self.check_idle()
            self.refresh()


def _cut_with_ellipsis(cell: Cell) -> Cell:
    """A Text cell wider than its column ends with "…" rather than being cut mid-word silently."""
    if isinstance(cell, Text) and cell.overflow is None:
        cell.overflow = "ellipsis"
    return cell
