"""The one table of the console: rows keyed by what they show (a username, an event, a run), on DataTable.

Every list (logs, users, devices, tools, patterns, tokens, metadata keys,
cleanup previews and runs, audit, alerts, destinations) is a :class:`KeyedTable`.
A section gives it its columns once and then whole sets of rows with
:meth:`KeyedTable.show`, each row a key and its cells, and asks
:attr:`KeyedTable.selected_key` which row the cursor is on. Cells are shown as
given: a :class:`rich.text.Text` is never parsed, a ``str`` is markup, so
whatever came from an agent or the database must arrive as
:func:`console.untrusted.plain` text (the sections do that).

The keys are k9s's, the same in every table: ↑/↓ move the row cursor, ←/→ the
column cursor (its header is shown reversed), Home/End go to the first and last
row, ``g``/``G`` too (a *paged* table leaves ``g``/``G`` to its section: newest
and oldest page), ``s`` sorts by the cursor's column (again: reversed, a third
time: as given), ``y`` copies the cell to the terminal's clipboard (OSC 52) and
``F`` asks the section to filter by the cell (:class:`KeyedTable.FilterRequested`);
Enter posts DataTable's ``RowSelected`` (the section opens the row). A paged
table sorts through its section too (:class:`KeyedTable.SortRequested`), which
knows which orders an index serves.

Column widths follow the terminal and the data: each column as wide as its widest
value (up to :attr:`TableColumn.max_width`); room left over goes to the
``stretch`` columns; when there is not enough, the widest columns give way first,
never below their :attr:`TableColumn.width`, and a cut value ends with "…".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from rich.cells import cell_len
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.coordinate import Coordinate
from textual.geometry import Region
from textual.message import Message
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
#: No column grows past this many cells by its data alone (a stretch column may, to fill the room).
MAX_NATURAL_WIDTH = 60


@dataclass(frozen=True)
class TableColumn:
    """A column: its title, its key (the title unless given), and its width policy.

    ``width`` is the least the column keeps when room is short (None: its title's width);
    otherwise it is as wide as its widest cell, up to ``max_width``. A ``stretch`` column
    also takes an equal share of the room the other columns leave.
    """

    title: str
    width: int | None = None
    stretch: bool = False
    key: str = ""
    max_width: int = MAX_NATURAL_WIDTH

    @property
    def column_key(self) -> str:
        return self.key or self.title


def cell_text(cell: Cell) -> str:
    """What a cell reads, without its styles (the whole value, however narrow its column)."""
    return cell.plain if isinstance(cell, Text) else Text.from_markup(cell).plain


class KeyedTable(DataTable[Cell]):
    """A row-cursor table whose rows are known by key; see the module for its contract and keys."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left", "move_column(-1)", "Column ◀", show=False),
        Binding("right", "move_column(1)", "Column ▶", show=False),
        Binding("home", "first_row", "First row", show=False),
        Binding("end", "last_row", "Last row", show=False),
        Binding("g", "top", "First row", show=False),
        Binding("G", "bottom", "Last row", show=False),
        Binding("s", "sort_column", "Sort by column", show=False),
        Binding("y", "copy_cell", "Copy cell", show=False),
        Binding("F", "filter_by_cell", "Filter by cell", show=False),
    ]

    @dataclass
    class FilterRequested(Message):
        """``F`` on a cell: the section filters its view by ``value`` in ``column`` (if it can)."""

        table: KeyedTable
        column: str
        row_key: str
        value: str

        @property
        def control(self) -> KeyedTable:
            return self.table

    @dataclass
    class SortRequested(Message):
        """``s`` in a paged table: the section orders its pages by ``column`` (if an index serves it)."""

        table: KeyedTable
        column: str

        @property
        def control(self) -> KeyedTable:
            return self.table

    #: The column under the column cursor (an index into the columns); moved by :meth:`move_column_cursor`.
    column_cursor: reactive[int] = reactive(0)

    def __init__(
        self,
        *columns: TableColumn,
        sort_value: SortValue | None = None,
        paged: bool = False,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=True)
        self.specs: tuple[TableColumn, ...] = columns
        #: A paged table shows one page of many: ``g``/``G`` and ``s`` belong to its section.
        self.paged = paged
        #: The hook :meth:`sort_by` orders rows with; None sorts by the cells' text.
        self.sort_value: SortValue | None = sort_value
        self._rows: dict[str, Sequence[Cell]] = {}
        self._sorted_by: tuple[str, bool] | None = None
        #: The natural width of each column for the rows shown (computed once per set of rows).
        self._natural: list[int] | None = None
        #: A paged table's order as its section reports it (column, descending), shown in the header.
        self.order_shown: tuple[str, bool] | None = None
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
        self._natural = None
        self.clear()
        for key in self._ordered_keys():
            self.add_row(*(_cut_with_ellipsis(cell) for cell in self._rows[key]), key=key)
        if select is None and keep == "key":
            select = previous_key
        if select is not None and select in self._rows:
            self.move_cursor(row=self.get_row_index(select))
        elif keep == "row" and self.row_count:
            self.move_cursor(row=min(previous_row, self.row_count - 1))
        self.label_headers()
        if not self.apply_widths():
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

    def cell_value(self, key: str | None = None, column: str | None = None) -> str | None:
        """The whole text of a cell (default: under the cursors), or None when there is no such cell."""
        key = key if key is not None else self.selected_key
        column = column if column is not None else self.selected_column
        if key is None or column is None or key not in self._rows:
            return None
        index = self._column_index(column)
        return cell_text(self._rows[key][index])

    # -- keys ------------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # In a paged table g/G mean the newest and oldest page: the section's keys, not ours.
        if self.paged and action in ("top", "bottom"):
            return False
        return super().check_action(action, parameters)

    def action_move_column(self, step: int) -> None:
        self.move_column_cursor(step)

    def action_first_row(self) -> None:
        if self.row_count:
            self.move_cursor(row=0)

    def action_last_row(self) -> None:
        if self.row_count:
            self.move_cursor(row=self.row_count - 1)

    def action_top(self) -> None:
        self.action_first_row()

    def action_bottom(self) -> None:
        self.action_last_row()

    def action_copy_cell(self) -> None:
        """Send the cell under the cursors to the terminal's clipboard (OSC 52), and say so."""
        value = self.cell_value()
        if value is None:
            self.app.notify("Nothing to copy: the table is empty.", severity="warning", timeout=3)
            return
        self.app.copy_to_clipboard(value)
        shown = value if len(value) <= 60 else value[:59] + "…"
        self.app.notify(
            f"Sent {shown!r} to the terminal's clipboard (OSC 52; the terminal may not confirm it).",
            timeout=4,
        )

    def action_filter_by_cell(self) -> None:
        key, column = self.selected_key, self.selected_column
        value = self.cell_value()
        if key is None or column is None or value is None:
            self.app.notify("Nothing to filter by: the table is empty.", severity="warning", timeout=3)
            return
        self.post_message(self.FilterRequested(self, column, key, value))

    def action_sort_column(self) -> None:
        """Sort by the cursor's column: ascending, then descending, then back to the given order."""
        column = self.selected_column
        if column is None:
            return
        if self.paged:
            self.post_message(self.SortRequested(self, column))
            return
        if self._sorted_by is None or self._sorted_by[0] != column:
            self.sort_by(column)
        elif not self._sorted_by[1]:
            self.sort_by(column, reverse=True)
        else:
            self.unsort()

    # -- the column cursor and sorting -----------------------------------------------------------

    @property
    def selected_column(self) -> str | None:
        """The key of the column under the column cursor (None without columns)."""
        if not self.specs:
            return None
        return self.specs[min(self.column_cursor, len(self.specs) - 1)].column_key

    @property
    def sorted_by(self) -> tuple[str, bool] | None:
        """(column, reverse) of the order shown, or None for the order the rows came in."""
        return self._sorted_by

    def move_column_cursor(self, step: int) -> None:
        """Move the column cursor ``step`` columns (wrapping) and scroll that column into view."""
        if self.specs:
            self.column_cursor = (self.column_cursor + step) % len(self.specs)
            columns = self.ordered_columns
            x = sum(column.get_render_width(self) for column in columns[: self.column_cursor])
            width = columns[self.column_cursor].get_render_width(self)
            self.scroll_to_region(Region(x, 0, width, 1), animate=False)

    def watch_column_cursor(self) -> None:
        self.label_headers()

    def on_focus(self) -> None:
        self.label_headers()

    def on_blur(self) -> None:
        self.label_headers()

    def label_headers(self) -> None:
        """Titles with the sort arrow; the column cursor's title reversed while the table has focus."""
        order = self.order_shown if self.paged else self._sorted_by
        changed = False
        for index, spec in enumerate(self.specs):
            label = Text(spec.title)
            if order is not None and order[0] == spec.column_key:
                label.append(" ▼" if order[1] else " ▲")
            if index == self.column_cursor and self.has_focus:
                label.stylize("reverse")
            column = self.columns.get(ColumnKey(spec.column_key))
            if column is not None and column.label != label:
                column.label = label
                changed = True
        if changed:
            self._require_update_dimensions = True
            self._clear_caches()
            self.refresh()

    def sort_by(self, column: str | None = None, *, reverse: bool = False) -> None:
        """Order the rows by ``column`` (default: the column cursor's) through :attr:`sort_value`.

        The order holds for later :meth:`show` calls until :meth:`unsort`; the cursor keeps its row.
        """
        column = column or self.selected_column
        if column is None:
            return
        self._sorted_by = (column, reverse)
        self.show(list(self._rows.items()), keep="key")
        self.label_headers()

    def unsort(self) -> None:
        """Back to the order the rows were given in."""
        self._sorted_by = None
        self.show(list(self._rows.items()), keep="key")
        self.label_headers()

    def _column_index(self, column: str) -> int:
        return next(i for i, spec in enumerate(self.specs) if spec.column_key == column)

    def _ordered_keys(self) -> list[str]:
        if self._sorted_by is None:
            return list(self._rows)
        column, reverse = self._sorted_by
        index = self._column_index(column)

        def value(key: str) -> Any:
            if self.sort_value is not None:
                return self.sort_value(column, key)
            return _natural(cell_text(self._rows[key][index]))

        return sorted(self._rows, key=value, reverse=reverse)

    # -- the width policy ------------------------------------------------------------------------

    def on_resize(self, _: events.Resize) -> None:
        self.apply_widths()

    def wanted_widths(self, room: int) -> list[int]:
        """Each column's width for ``room`` cells of content (padding aside): see the module's policy."""
        if self._natural is None:
            self._natural = self._natural_widths()
        natural = self._natural
        floors = [
            min(spec.width or cell_len(spec.title), width)
            for spec, width in zip(self.specs, natural, strict=True)
        ]
        widths = list(natural)
        excess = sum(widths) - room
        # The widest column gives way first, one cell at a time, never below its floor.
        while excess > 0:
            candidates = [i for i, width in enumerate(widths) if width > floors[i]]
            if not candidates:
                break
            widest = max(candidates, key=lambda i: widths[i])
            widths[widest] -= 1
            excess -= 1
        stretchy = [i for i, spec in enumerate(self.specs) if spec.stretch]
        if excess < 0 and stretchy:
            share, left = divmod(-excess, len(stretchy))
            for position, i in enumerate(stretchy):
                widths[i] += share + (1 if position < left else 0)
        return widths

    def _natural_widths(self) -> list[int]:
        """Each column as wide as its widest value (capped) and its title with room for the sort arrow."""
        widest = [0] * len(self.specs)
        for cells in self._rows.values():
            for index, cell in enumerate(cells[: len(widest)]):
                widest[index] = max(widest[index], cell_len(cell_text(cell)))
        return [
            max(cell_len(spec.title) + 2, min(width, spec.max_width), spec.width or 0)
            for spec, width in zip(self.specs, widest, strict=True)
        ]

    def apply_widths(self) -> bool:
        """Fit the columns to the table's width and its rows (on resize and new rows); False before layout."""
        if not self.is_mounted or not self.specs:
            return False
        padding = 2 * self.cell_padding * len(self.specs)
        # Room for the vertical scroll bar when the rows will need one: it appears after the rows are
        # added, and the table's size does not change then, so no resize would fit the columns again.
        scrollbar = (
            self.styles.scrollbar_size_vertical if self.row_count + 1 > self.content_region.height else 0
        )
        room = self.content_region.width - scrollbar - padding
        if room <= 0:
            return False
        changed = False
        for spec, width in zip(self.specs, self.wanted_widths(room), strict=True):
            column = self.columns[ColumnKey(spec.column_key)]
            if column.auto_width or column.width != width:
                column.width, column.auto_width, changed = width, False, True
        if changed:
            # DataTable has no public way to resize a column: this is what its add_column does after one.
            self._require_update_dimensions = True
            self._clear_caches()
            self.check_idle()
            self.refresh()
        return True


def _natural(text: str) -> tuple[int, float, str]:
    """Sort key of a cell: numbers (with thousands separators) by value before words, words case-folded."""
    number = text.replace(",", "").strip()
    try:
        return (0, float(number), "")
    except ValueError:
        return (1, 0.0, text.casefold())


def _cut_with_ellipsis(cell: Cell) -> Cell:
    """A Text cell wider than its column ends with "…" rather than being cut mid-word silently."""
    if isinstance(cell, Text) and cell.overflow is None:
        cell.overflow = "ellipsis"
    return cell
