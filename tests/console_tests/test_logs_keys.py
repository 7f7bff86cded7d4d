"""The Logs section's keys through Pilot on a real database: the oldest page and paging from it, the order
by time flipped with ``s``, filtering by the cell under the cursor, the readable detail pane, the record
full screen, the raw JSON only on ``J``, and the pane that follows the terminal's width."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from textual.pilot import Pilot

from console.dialogs.log_record import LogRecordScreen
from console.screens.shell import ShellScreen
from console.sections.logs import LogsSection
from console.widgets.log_detail import LogDetail
from console.widgets.log_record import local_time
from console.widgets.log_table import LogTable
from db.logs import PAGE_SIZE, LogFilter
from tests.support.console import (
    add_console_user,
    newest_first,
    open_logs,
    press_and_settle,
    running,
    shown_ids,
    sign_in,
)
from tests.support.database import make_event, store_logs


@pytest.fixture
async def admin(engine: AsyncEngine) -> str:
    await add_console_user(engine, "alice", is_admin=True)
    return "alice"


def notifications(pilot: Pilot[Any]) -> list[str]:
    return [str(notification.message) for notification in pilot.app._notifications]


async def press(pilot: Pilot[Any], *keys: str) -> None:
    await press_and_settle(pilot, *keys)


async def to_column(pilot: Pilot[Any], section: LogsSection, column: str) -> None:
    """Move the table's column cursor to ``column`` (by key) with →."""
    table = section.query_one(LogTable)
    table.focus()
    for _ in range(len(table.specs)):
        if table.selected_column == column:
            return
        await pilot.press("right")
    assert table.selected_column == column


# -- the oldest page and the order by time -------------------------------------------------------


async def test_shift_g_shows_the_oldest_rows_and_p_and_n_page_on_from_there(
    engine: AsyncEngine, app_factory, admin: str
) -> None:
    # 2.5 pages, groups of 7 rows sharing a timestamp so page edges fall inside groups.
    events = [make_event(index // 7) for index in range(PAGE_SIZE * 2 + 25)]
    await store_logs(engine, events)
    order = newest_first(events)
    async with running(app_factory()) as pilot:
        await sign_in(pilot, admin)
        section = await open_logs(pilot)
        await press(pilot, "G")
        assert shown_ids(section) == order[-PAGE_SIZE:]
        assert section.page_label() == "oldest page"
        assert "oldest page" in str(section.query_one("#logs-summary").render())
        await press(pilot, "n")
        assert shown_ids(section) == order[-PAGE_SIZE:]
        assert "This is the oldest page." in notifications(pilot)
        await press(pilot, "p")
        assert shown_ids(section) == order[-2 * PAGE_SIZE : -PAGE_SIZE]
        assert section.page_label() == "page 2 from the end"
        await press(pilot, "n")
        assert shown_ids(section) == order[-PAGE_SIZE:]
        assert section.page_label() == "oldest page"
        await press(pilot, "p", "p")
        assert shown_ids(section) == order[:PAGE_SIZE]  # past the top: the newest page, whole
        assert section.page_label() == "page 1"
        await press(pilot, "G", "g")
        assert shown_ids(section) == order[:PAGE_SIZE]
        assert section.on_first_page


async def test_s_on_the_time_column_flips_the_whole_result_to_oldest_first_and_back(
    engine: AsyncEngine, app_factory, admin: str
) -> None:
    events = [make_event(index) for index in range(PAGE_SIZE + 10)]
    await store_logs(engine, events)
    ascending = list(reversed(newest_first(events)))
    async with running(app_factory()) as pilot:
        await sign_in(pilot, admin)
        section = await open_logs(pilot)
        table = section.query_one(LogTable)
        assert table.selected_column == "time"
        assert "▼" in str(table.columns[table.ordered_columns[0].key].label)
        await press(pilot, "s")
        assert not section.newest_first
        assert shown_ids(section) == ascending[:PAGE_SIZE]
        assert table.order_shown == ("time", False)
        assert "▲" in str(table.ordered_columns[0].label)
        assert "oldest first" in str(section.query_one("#logs-summary").render())
        await press(pilot, "n")
        assert shown_ids(section) == ascending[PAGE_SIZE:]
        await press(pilot, "p")
        assert shown_ids(section) == ascending[:PAGE_SIZE]
        await press(pilot, "g")  # the newest page, still oldest first within it
        assert shown_ids(section) == ascending[-PAGE_SIZE:]
        await press(pilot, "G")
        assert shown_ids(section) == ascending[:PAGE_SIZE]
        await press(pilot, "s")
        assert section.newest_first
        assert shown_ids(section) == newest_first(events)[:PAGE_SIZE]
        assert "▼" in str(table.ordered_columns[0].label)


async def test_s_on_another_column_says_logs_sort_by_time_only_and_why(
    engine: AsyncEngine, app_factory, admin: str
) -> None:
    events = [make_event(index, user_id=f"user{index % 3}@example.com") for index in range(6)]
    await store_logs(engine, events)
    async with running(app_factory()) as pilot:
        await sign_in(pilot, admin)
        section = await open_logs(pilot)
        before = shown_ids(section)
        await to_column(pilot, section, "user")
        await press(pilot, "s")
        assert shown_ids(section) == before
        assert section.newest_first
        [said] = [n for n in notifications(pilot) if "sort by time only" in n]
        assert "User" in said
        assert "index-policy" in said


# -- filter by the cell under the cursor ---------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "field", "expected"),
    [
        ("user", "user", "user2@example.com"),
        ("risk", "risk_levels", frozenset({"red"})),
        ("device", "device", "dev-2"),
        ("tool", "tool", "Claude"),
        ("entities", "entity_type", "IBAN"),
        ("sanitised", "sanitized", True),
    ],
)
async def test_shift_f_filters_by_the_cell_under_the_cursor(
    engine: AsyncEngine, app_factory, admin: str, column: str, field: str, expected: Any
) -> None:
    events = [
        make_event(
            index,
            user_id=f"user{index % 3}@example.com",
            device_id=f"dev-{index % 4}",
            risk_level=("green", "amber", "red")[index % 3],
            tool_name=("ChatGPT", "Claude")[index % 2],
            detected_entity_types=["IBAN", "EMAIL"] if index % 5 == 2 else [],
            entity_count=2 if index % 5 == 2 else 0,
            was_sanitized=index % 5 == 2,
        )
        for index in range(12)
    ]
    await store_logs(engine, events)
    # The newest row is index 11: user2, dev-3, red, Claude; pick the row that matches ``expected``.
    async with running(app_factory()) as pilot:
        await sign_in(pilot, admin)
        section = await open_logs(pilot)
        table = section.query_one(LogTable)
        target = next(
            key
            for key in table.row_keys
            if {
                "user": lambda e: e.user_id == expected,
                "risk_levels": lambda e: e.risk_level == "red",
                "device": lambda e: e.device_id == expected,
                "tool": lambda e: e.tool_name == expected,
                "entity_type": lambda e: (e.detected_entity_types or [None])[0] == expected,
                "sanitized": lambda e: e.was_sanitized,
            }[field](section._rows[key])
        )
        table.select_key(target)
        await to_column(pilot, section, column)
        await press(pilot, "F")
        assert getattr(section.filters, field) == expected
        assert shown_ids(section)
        for entry in section.page_state.rows:
            value = {
                "user": entry.user_id,
                "risk_levels": frozenset({entry.risk_level}),
                "device": entry.device_id,
                "tool": entry.tool_name,
                "entity_type": expected if expected in (entry.detected_entity_types or []) else None,
                "sanitized": entry.was_sanitized,
            }[field]
            assert value == expected


async def test_shift_f_on_the_time_column_points_to_the_filter_dialog(
    engine: AsyncEngine, app_factory, admin: str
) -> None:
    await store_logs(engine, [make_event(index) for index in range(3)])
    async with running(app_factory()) as pilot:
        await sign_in(pilot, admin)
        section = await open_logs(pilot)
        await press(pilot, "F")
        assert section.filters == LogFilter()
        assert any("press f" in n and "From" in n for n in notifications(pilot))


# -- the row: pane, full screen, raw JSON ---------------------------------------------------------


def row_with_everything() -> dict[str, Any]:
    return make_event(
        0,
        user_id="carmen.garcia@initech.example",
        risk_level="red",
        detected_entity_types=["EMAIL", "API_KEY"],
        entity_count=2,
        was_sanitized=True,
        log_metadata={"browser": "firefox-128", "window": {"w": 1280}},
    )


async def test_the_detail_pane_reads_as_labelled_fields_and_shows_raw_json_only_on_j(
    engine: AsyncEngine, app_factory, admin: str
) -> None:
    event = row_with_everything()
    await store_logs(engine, [event])
    async with running(app_factory(), size=(160, 40)) as pilot:
        await sign_in(pilot, admin)
        section = await open_logs(pilot)
        detail = section.query_one(LogDetail)
        shown = detail.text
        for label in (
            "Time (UTC)",
            "Local time",
            "Risk",
            "User",
            "Entities",
            "Sanitised",
            "Event id",
            "Metadata",
        ):
            assert label in shown
        assert local_time(event["timestamp"]) in shown
        assert "● red" in shown
        assert " EMAIL   API_KEY " in shown  # chips, not a list
        assert "Metadata (2 keys)" in shown
        assert "browser" in shown
        assert "firefox-128" in shown
        assert '{"w": 1280}' in shown
        assert "Sanitised    yes" in shown
        assert str(event["id"])[:23] in shown  # the rest folds onto the next line in a 40-column pane
        assert '"user_id":' not in shown, "no raw JSON until asked"
        await press(pilot, "J")
        raw = detail.text
        assert '"user_id":' in raw
        assert '"log_metadata": {' in raw
        assert "Local time" not in raw
        await press(pilot, "J")
        assert '"user_id":' not in detail.text


async def test_enter_and_z_open_the_row_full_screen_and_escape_closes_it(
    engine: AsyncEngine, app_factory, admin: str
) -> None:
    events = [row_with_everything(), make_event(1, user_id="bob@example.com")]
    await store_logs(engine, events)
    async with running(app_factory(), size=(80, 24)) as pilot:
        await sign_in(pilot, admin)
        section = await open_logs(pilot)
        await press(pilot, "down", "enter")
        record = pilot.app.screen
        assert isinstance(record, LogRecordScreen)
        assert record.entry.user_id == "carmen.garcia@initech.example"
        assert "Local time" in record.text
        assert '"user_id":' not in record.text
        assert record.query_one("#log-record").has_focus  # ↓/PgDn scroll it
        await press(pilot, "J")
        assert json.loads(record.text)["user_id"] == "carmen.garcia@initech.example"
        await press(pilot, "escape")
        assert isinstance(pilot.app.screen, ShellScreen)
        await press(pilot, "up", "z")
        assert isinstance(pilot.app.screen, LogRecordScreen)
        assert pilot.app.screen.entry.user_id == "bob@example.com"
        await press(pilot, "escape")
        assert isinstance(pilot.app.screen, ShellScreen)
        assert section.query_one(LogTable).has_focus


async def test_the_pane_starts_hidden_below_110_columns_d_shows_it_and_tab_reaches_it(
    engine: AsyncEngine, app_factory, admin: str
) -> None:
    await store_logs(engine, [make_event(index) for index in range(3)])
    async with running(app_factory(), size=(80, 24)) as pilot:
        await sign_in(pilot, admin)
        section = await open_logs(pilot)
        detail = section.query_one(LogDetail)
        assert not detail.display
        await press(pilot, "d")
        assert detail.display
        assert detail.region.width >= 36
        await press(pilot, "tab")
        assert detail.has_focus
        await press(pilot, "d")
        assert not detail.display
        assert section.query_one(LogTable).has_focus


@pytest.mark.parametrize(("width", "pane"), [(120, 36), (200, 50), (320, 80)])
async def test_the_pane_width_follows_the_terminal(
    engine: AsyncEngine, app_factory, admin: str, width: int, pane: int
) -> None:
    # Demo-sized values, and more rows than fit: the table has its scroll bar, as it has in use.
    long_values = [
        make_event(
            index,
            user_id="carmen.garcia@initech.example",
            device_id="sim-demo-initech-laptop-001",
            organization_id="demo-initech",
            tool_name="GitHub Copilot",
            detected_entity_types=["EMAIL", "API_KEY", "IBAN"],
            entity_count=3,
        )
        for index in range(40)
    ]
    await store_logs(engine, long_values)
    async with running(app_factory(), size=(width, 30)) as pilot:
        await sign_in(pilot, admin)
        section = await open_logs(pilot)
        detail = section.query_one(LogDetail)
        assert detail.display
        assert detail.outer_size.width == pane
        table = section.query_one(LogTable)
        # Beside the pane every column still fits: no sideways scrolling at any of these widths.
        assert table.virtual_size.width <= table.scrollable_content_region.width


async def test_at_200_columns_demo_sized_values_show_whole(
    engine: AsyncEngine, app_factory, admin: str
) -> None:
    event = make_event(
        0,
        user_id="carmen.garcia@initech.example",
        device_id="sim-demo-initech-laptop-001",
        organization_id="demo-initech",
        tool_name="GitHub Copilot",
        detected_entity_types=["EMAIL", "API_KEY", "IBAN"],
        entity_count=3,
    )
    await store_logs(engine, [event])
    async with running(app_factory(), size=(200, 40)) as pilot:
        await sign_in(pilot, admin)
        section = await open_logs(pilot)
        table = section.query_one(LogTable)
        widths = {
            spec.column_key: column.width
            for spec, column in zip(table.specs, table.ordered_columns, strict=True)
        }
        for column, value in (
            ("user", event["user_id"]),
            ("device", event["device_id"]),
            ("org", event["organization_id"]),
            ("tool", event["tool_name"]),
            ("entities", "EMAIL, API_KEY, IBAN"),
        ):
            assert widths[column] >= len(value), column
