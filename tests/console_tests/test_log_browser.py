"""The log browser through Pilot: every filter and their combination, keyset paging, follow mode, states."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from console.dialogs.log_filters import LogFilterScreen
from console.sections import logs as logs_screen
from db import logs as db_logs
from db.logs import PAGE_SIZE, LogCount, LogFilter
from tests.support.console import (
    add_console_user,
    newest_first,
    open_logs,
    press_and_settle,
    pump_until,
    running,
    settle,
    shown_ids,
    sign_in,
    table_keys,
)
from tests.support.database import BASE_TIME, make_event, store_logs


def varied_events() -> list[dict[str, Any]]:
    """Rows that differ in every filterable field, so each filter keeps a different subset."""
    events = []
    for index in range(36):
        events.append(
            make_event(
                index,
                risk_level=("green", "amber", "red")[index % 3],
                tool_name=("ChatGPT", "Claude", "Gemini CLI")[index % 3 if index % 2 else 0],
                tool_type="web",
                organization_id=("default", "acme")[index % 2],
                detected_entity_types=[["EMAIL"], ["API_KEY", "EMAIL"], []][index % 3],
                entity_count=[1, 2, 0][index % 3],
                was_sanitized=index % 4 == 0,
            )
        )
    return events


FILTERS: dict[str, tuple[LogFilter, Any]] = {
    "one risk level": (LogFilter(risk_levels=frozenset({"red"})), lambda e: e["risk_level"] == "red"),
    "several risk levels": (
        LogFilter(risk_levels=frozenset({"amber", "red"})),
        lambda e: e["risk_level"] in {"amber", "red"},
    ),
    "tool": (LogFilter(tool="Claude"), lambda e: e["tool_name"] == "Claude"),
    "user": (LogFilter(user="user1@example.com"), lambda e: e["user_id"] == "user1@example.com"),
    "device": (LogFilter(device="dev-2"), lambda e: e["device_id"] == "dev-2"),
    "organisation": (LogFilter(organization="acme"), lambda e: e["organization_id"] == "acme"),
    "time range": (
        LogFilter(since=BASE_TIME + timedelta(seconds=10), until=BASE_TIME + timedelta(seconds=20)),
        lambda e: BASE_TIME + timedelta(seconds=10) <= e["timestamp"] < BASE_TIME + timedelta(seconds=20),
    ),
    "entity type": (LogFilter(entity_type="API_KEY"), lambda e: "API_KEY" in e["detected_entity_types"]),
    "sanitised yes": (LogFilter(sanitized=True), lambda e: e["was_sanitized"]),
    "sanitised no": (LogFilter(sanitized=False), lambda e: not e["was_sanitized"]),
    "search by user": (LogFilter(search="user3@example.com"), lambda e: e["user_id"] == "user3@example.com"),
    "search by user prefix": (LogFilter(search="user3*"), lambda e: e["user_id"].startswith("user3")),
    "search by device or org": (LogFilter(search="acme"), lambda e: e["organization_id"] == "acme"),
    "search by entity type": (LogFilter(search="API_KEY"), lambda e: "API_KEY" in e["detected_entity_types"]),
    "combination": (
        LogFilter(
            risk_levels=frozenset({"amber", "red"}),
            organization="acme",
            entity_type="EMAIL",
            since=BASE_TIME + timedelta(seconds=3),
            sanitized=False,
        ),
        lambda e: (
            e["risk_level"] in {"amber", "red"}
            and e["organization_id"] == "acme"
            and "EMAIL" in e["detected_entity_types"]
            and e["timestamp"] >= BASE_TIME + timedelta(seconds=3)
            and not e["was_sanitized"]
        ),
    ),
}


@pytest.fixture
async def admin(engine: AsyncEngine) -> str:
    await add_console_user(engine, "alice", is_admin=True)
    return "alice"


async def test_each_filter_shows_exactly_the_matching_rows_newest_first_with_an_exact_count(
    engine: AsyncEngine, app_factory, admin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Exactness is the point here: a machine loaded enough to pass the 400 ms count timeout on a
    # few rows would show the planner's estimate instead (that path has its own test).
    monkeypatch.setattr(db_logs, "COUNT_TIMEOUT_MS", 30_000)
    events = varied_events()
    await store_logs(engine, events)
    async with running(app_factory()) as pilot:
        await sign_in(pilot, admin)
        section = await open_logs(pilot)
        for name, (filters, keep) in FILTERS.items():
            expected = newest_first([e for e in events if keep(e)])
            assert expected, f"the test data must match something for {name}"
            section.apply_filters(filters)
            await settle(pilot)
            assert shown_ids(section) == expected, name
            assert table_keys(section) == [f"{e.organization_id}/{e.id}" for e in section.page_state.rows], (
                name
            )
            assert section.count_result == LogCount(len(expected)), name


async def test_filter_form_applies_several_fields_typed_by_the_user(
    engine: AsyncEngine, app_factory, admin: str
) -> None:
    events = varied_events()
    await store_logs(engine, events)
    expected = newest_first(
        [e for e in events if e["risk_level"] == "red" and e["organization_id"] == "acme"]
    )
    async with running(app_factory()) as pilot:
        await sign_in(pilot, admin)
        section = await open_logs(pilot)
        await press_and_settle(pilot, "f")
        form = pilot.app.screen
        assert isinstance(form, LogFilterScreen)
        form.query_one("#risk-red").value = True
        form.query_one("#filter-organization").value = "acme"
        await press_and_settle(pilot, "ctrl+s")
        assert section.filters.describe() == "risk=red org=acme"
        assert shown_ids(section) == expected


async def test_a_filter_that_matches_nothing_says_so(engine: AsyncEngine, app_factory, admin: str) -> None:
    await store_logs(engine, varied_events())
    async with running(app_factory()) as pilot:
        await sign_in(pilot, admin)
        section = await open_logs(pilot)
        section.apply_filters(LogFilter(user="nobody@example.com"))
        await settle(pilot)
        assert shown_ids(section) == []
        assert "no rows match" in str(section.query_one("#logs-summary").render())


async def test_paging_forward_and_back_across_equal_timestamps_shows_every_row_once(
    engine: AsyncEngine, app_factory, admin: str
) -> None:
    # 2.5 pages of rows, in groups of 7 sharing one timestamp, so page edges fall inside groups.
    events = [make_event(index // 7) for index in range(PAGE_SIZE * 2 + 25)]
    await store_logs(engine, events)
    expected = newest_first(events)
    async with running(app_factory()) as pilot:
        await sign_in(pilot, admin)
        section = await open_logs(pilot)
        pages = [shown_ids(section)]
        while section.page_state.has_older:
            await press_and_settle(pilot, "n")
            pages.append(shown_ids(section))
        assert [i for page in pages for i in page] == expected
        assert [len(page) for page in pages] == [PAGE_SIZE, PAGE_SIZE, 25]
        for page in reversed(pages[:-1]):
            await press_and_settle(pilot, "p")
            assert shown_ids(section) == page
        assert section.page_number == 1
        assert not section.page_state.has_newer


async def test_follow_mode_shows_rows_stored_after_the_page_opened(
    engine: AsyncEngine, app_factory, admin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs_screen, "FOLLOW_SECONDS", 0.05)
    await store_logs(engine, [make_event(index) for index in range(5)])
    async with running(app_factory()) as pilot:
        await sign_in(pilot, admin)
        section = await open_logs(pilot)
        await press_and_settle(pilot, "t")
        assert section.following
        late = [make_event(100 + index, risk_level="red") for index in range(3)]
        await store_logs(engine, late)
        await pump_until(pilot, lambda: len(section.page_state.rows) == 8)
        assert shown_ids(section)[:3] == newest_first(late)
        await pilot.press("t")
        assert not section.following


async def test_an_empty_database_shows_no_logs_yet(engine: AsyncEngine, app_factory, admin: str) -> None:
    async with running(app_factory()) as pilot:
        await sign_in(pilot, admin)
        section = await open_logs(pilot)
        assert shown_ids(section) == []
        assert "no logs yet" in str(section.query_one("#logs-summary").render())


async def test_the_detail_pane_shows_the_selected_rows_metadata(
    engine: AsyncEngine, app_factory, admin: str
) -> None:
    events = [make_event(index, log_metadata={"browser": f"firefox-{index}"}) for index in range(3)]
    await store_logs(engine, events)
    async with running(app_factory()) as pilot:
        await sign_in(pilot, admin)
        section = await open_logs(pilot)
        await press_and_settle(pilot, "down")
        record = section.query_one("#log-detail").record
        assert record["id"] == str(newest_first(events)[1])
        assert record["log_metadata"] == {"browser": "firefox-1"}


async def test_the_same_event_id_in_two_organisations_shows_two_rows_each_with_its_own_detail(
    engine: AsyncEngine, app_factory, admin: str
) -> None:
    shared = make_event(0, organization_id="acme", tool_name="Claude")
    copy = {
        **shared,
        "organization_id": "globex",
        "tool_name": "Gemini",
        "timestamp": BASE_TIME - timedelta(hours=1),
    }
    await store_logs(engine, [shared, copy])
    async with running(app_factory()) as pilot:
        await sign_in(pilot, admin)
        section = await open_logs(pilot)
        assert table_keys(section) == [f"acme/{shared['id']}", f"globex/{shared['id']}"]
        seen = []
        for _ in range(2):
            record = section.query_one("#log-detail").record
            seen.append((record["organization_id"], record["tool_name"]))
            await press_and_settle(pilot, "down")
        assert seen == [("acme", "Claude"), ("globex", "Gemini")]


async def test_the_console_works_in_an_80_by_24_terminal(
    engine: AsyncEngine, app_factory, admin: str
) -> None:
    await store_logs(engine, [make_event(index) for index in range(60)])
    async with running(app_factory(), size=(80, 24)) as pilot:
        await sign_in(pilot, admin)
        section = await open_logs(pilot)
        table = section.query_one("#log-table")
        assert table.region.height >= 10
        assert table.region.width >= 60
        assert len(shown_ids(section)) == PAGE_SIZE
        await press_and_settle(pilot, "1")
        await press_and_settle(pilot, "question_mark")
        assert type(pilot.app.screen).__name__ == "HelpScreen"


async def test_home_and_end_go_to_the_first_and_last_row_of_the_page(
    engine: AsyncEngine, app_factory, admin: str
) -> None:
    events = [make_event(index) for index in range(5)]
    await store_logs(engine, events)
    async with running(app_factory()) as pilot:
        await sign_in(pilot, admin)
        section = await open_logs(pilot)
        table = section.query_one("#log-table")
        await press_and_settle(pilot, "end")
        assert section.query_one("#log-detail").record["id"] == str(newest_first(events)[-1])
        assert table.selected_key == table_keys(section)[-1]
        await press_and_settle(pilot, "home")
        assert table.selected_key == table_keys(section)[0]
