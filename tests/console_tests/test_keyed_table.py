"""The keyed table every list of the console uses: rows known by key, where the cursor goes when rows are
replaced, the column cursor, the sort hook, the width policy, and cells shown as the text they are."""

from __future__ import annotations

from typing import Any

import pytest
from rich.text import Text
from textual.app import App, ComposeResult
from textual.widgets.data_table import DuplicateKey

from console.untrusted import plain
from console.widgets.keyed_table import KeyedTable, Row, TableColumn

COLUMNS = (TableColumn("Name"), TableColumn("Note", width=8, stretch=True), TableColumn("Size", key="size"))


def rows(*names: str) -> list[Row]:
    return [(name, (plain(name), plain(f"note of {name}"), str(len(name)))) for name in names]


class TableApp(App[None]):
    def __init__(self, **table: Any) -> None:
        super().__init__()
        self.table_options = table

    def compose(self) -> ComposeResult:
        yield KeyedTable(*COLUMNS, id="table", **self.table_options)


async def test_the_selected_key_follows_the_cursor_and_is_none_when_empty() -> None:
    async with TableApp().run_test() as pilot:
        table = pilot.app.query_one(KeyedTable)
        assert table.selected_key is None
        table.show(rows("ann", "bob", "cyd"))
        await pilot.pause()
        assert table.row_keys == ["ann", "bob", "cyd"]
        assert table.selected_key == "ann"
        table.focus()
        await pilot.press("down")
        assert table.selected_key == "bob"
        assert table.select_key("cyd")
        assert table.selected_key == "cyd"
        assert not table.select_key("nobody")


async def test_replaced_rows_keep_the_key_the_row_or_go_to_the_top_as_asked() -> None:
    async with TableApp().run_test() as pilot:
        table = pilot.app.query_one(KeyedTable)
        table.show(rows("ann", "bob", "cyd"))
        table.select_key("bob")
        table.show(rows("zed", "ann", "bob"))
        assert table.selected_key == "bob"  # keep="key": the same row, wherever it went
        table.show(rows("ann", "cyd", "dan"), keep="row")
        assert table.selected_key == "dan"  # the same index
        table.show(rows("ann", "cyd"), keep="top")
        assert table.selected_key == "ann"
        table.show(rows("ann", "cyd", "dan"), select="dan", keep="top")
        assert table.selected_key == "dan"
        table.show(rows("eve"))  # the key is gone: the top
        assert table.selected_key == "eve"


async def test_the_sort_hook_orders_rows_and_the_order_holds_for_new_rows() -> None:
    sizes = {"ann": 3, "bob": 1, "cyd": 2, "dan": 0}
    async with TableApp(sort_value=lambda column, key: sizes[key]).run_test() as pilot:
        table = pilot.app.query_one(KeyedTable)
        table.show(rows("ann", "bob", "cyd"))
        table.select_key("cyd")
        table.move_column_cursor(2)
        assert table.selected_column == "size"
        table.sort_by()
        assert table.row_keys == ["bob", "cyd", "ann"]
        assert table.selected_key == "cyd"
        table.show(rows("ann", "dan"))
        assert table.row_keys == ["dan", "ann"]
        table.unsort()
        assert table.row_keys == ["ann", "dan"]


async def test_without_a_hook_rows_sort_by_the_text_of_their_cells() -> None:
    async with TableApp().run_test() as pilot:
        table = pilot.app.query_one(KeyedTable)
        table.show(rows("cyd", "ann", "bob"))
        table.sort_by("Name", reverse=True)
        assert table.row_keys == ["cyd", "bob", "ann"]


async def test_a_stretch_column_takes_the_room_left_and_never_less_than_its_width() -> None:
    async with TableApp().run_test(size=(80, 10)) as pilot:
        table = pilot.app.query_one(KeyedTable)
        table.show(rows("ann", "bob"))
        await pilot.pause()
        note = table.columns[table.ordered_columns[1].key]
        wide = note.width
        assert wide > 40
        assert sum(column.get_render_width(table) for column in table.ordered_columns) <= 80
        await pilot.resize_terminal(20, 10)
        await pilot.pause()
        assert note.width == 8


async def test_cells_are_shown_as_the_text_they_are() -> None:
    async with TableApp().run_test() as pilot:
        table = pilot.app.query_one(KeyedTable)
        table.show([("[b]x", (plain("[b]x[/b]"), plain("\x1b[31mred"), "1"))])
        cells = table.get_row_at(0)
        assert isinstance(cells[0], Text)
        assert cells[0].plain == "[b]x[/b]"
        assert cells[1].plain == "\\x1b[31mred"
        assert table.selected_key == "[b]x"


async def test_two_rows_with_one_key_are_refused_and_the_rows_shown_stay() -> None:
    async with TableApp().run_test() as pilot:
        table = pilot.app.query_one(KeyedTable)
        table.show(rows("ann", "bob"))
        with pytest.raises(DuplicateKey, match="'cyd'"):
            table.show(rows("cyd", "dan", "cyd"))
        assert table.row_keys == ["ann", "bob"]
