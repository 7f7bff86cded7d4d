"""The log browser's two orders by time: the oldest page, oldest-first pages, and keyset paging from
either end, on both engines; on PostgreSQL each is planned on the index of its filter, as the newest page.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from db import logs
from db.base import utcnow
from db.engine import new_sessionmaker
from db.logs import LogFilter
from tests.db_tests.test_index_policy import filled, pg_engine, planned_indexes  # noqa: F401 (fixtures)
from tests.support.console import newest_first
from tests.support.database import make_event, store_logs

PAGE = 4


async def stored(engine: AsyncEngine, count: int = 10) -> list[Any]:
    # Groups of three rows share a timestamp, so page edges fall inside a group.
    events = [make_event(index // 3, user_id=("ann", "bob")[index % 2]) for index in range(count)]
    await store_logs(engine, events)
    return newest_first(events)


async def test_the_oldest_page_holds_the_oldest_rows_newest_first(engine: AsyncEngine) -> None:
    order = await stored(engine)
    async with new_sessionmaker(engine)() as session:
        oldest = await logs.oldest_page(session=session, filters=LogFilter(), limit=PAGE)
    assert [row.id for row in oldest.rows] == order[-PAGE:]
    assert oldest.has_newer
    assert not oldest.has_older
    assert oldest.has_previous
    assert not oldest.has_next


async def test_paging_back_from_the_oldest_page_shows_every_row_once_then_the_newest_page(
    engine: AsyncEngine,
) -> None:
    order = await stored(engine, count=12)
    seen: list[Any] = []
    async with new_sessionmaker(engine)() as session:
        current = await logs.oldest_page(session=session, filters=LogFilter(), limit=PAGE)
        seen = [row.id for row in current.rows]
        while current.has_previous:
            current = await logs.page(session=session, filters=LogFilter(), before=current.first, limit=PAGE)
            seen = [row.id for row in current.rows] + seen
    assert seen == order


async def test_oldest_first_pages_walk_the_whole_result_in_ascending_order(engine: AsyncEngine) -> None:
    order = await stored(engine)
    ascending = list(reversed(order))
    walked: list[Any] = []
    async with new_sessionmaker(engine)() as session:
        current = await logs.page(session=session, filters=LogFilter(), limit=PAGE, newest_first=False)
        assert not current.has_previous
        assert not current.has_older
        walked += [row.id for row in current.rows]
        while current.has_next:
            current = await logs.page(
                session=session, filters=LogFilter(), after=current.last, limit=PAGE, newest_first=False
            )
            walked += [row.id for row in current.rows]
        back = await logs.page(
            session=session, filters=LogFilter(), before=current.first, limit=PAGE, newest_first=False
        )
        last = await logs.last_page(session=session, filters=LogFilter(), limit=PAGE, newest_first=False)
    assert walked == ascending
    assert len(ascending) == 10  # pages of 4: [0:4], [4:8], [8:10]; back from the last is [4:8]
    assert [row.id for row in back.rows] == ascending[4:8]
    assert [row.id for row in last.rows] == ascending[-PAGE:]
    assert not last.has_next


async def test_the_oldest_page_of_a_filter_holds_only_its_rows(engine: AsyncEngine) -> None:
    events = [make_event(index, user_id=("ann", "bob")[index % 2]) for index in range(10)]
    await store_logs(engine, events)
    bobs = newest_first([e for e in events if e["user_id"] == "bob"])
    async with new_sessionmaker(engine)() as session:
        oldest = await logs.oldest_page(session=session, filters=LogFilter(user="bob"), limit=3)
    assert [row.id for row in oldest.rows] == bobs[-3:]


ORDER_CASES = {
    "no filter": (LogFilter(), "ix_log_entries_timestamp_id"),
    "a user": (LogFilter(user="user1@example.com"), "idx_user_timestamp"),
    "a time range": (LogFilter(since=utcnow() - timedelta(days=3)), "ix_log_entries_timestamp_id"),
    "risk amber and red": (
        LogFilter(risk_levels=frozenset({"amber", "red"})),
        "ix_log_entries_risk_timestamp_id",
    ),
    "a device": (LogFilter(device="dev-1"), "ix_log_entries_device_timestamp"),
}


@pytest.mark.parametrize("case", ORDER_CASES)
async def test_the_oldest_page_walks_the_index_of_its_filter(
    pg_engine: AsyncEngine,  # noqa: F811
    filled: list[dict[str, Any]],  # noqa: F811
    case: str,
) -> None:
    filters, index = ORDER_CASES[case]
    async with AsyncSession(pg_engine) as session:
        oldest = await planned_indexes(
            session, lambda s: logs.oldest_page(session=s, filters=filters), marker="SELECT"
        )
    async with AsyncSession(pg_engine) as session:
        ascending = await planned_indexes(
            session, lambda s: logs.page(session=s, filters=filters, newest_first=False), marker="SELECT"
        )
    assert index in oldest
    assert index in ascending


async def test_the_oldest_page_of_a_search_lists_a_row_matching_it_two_ways_once(engine: AsyncEngine) -> None:
    both = make_event(0, user_id="same", device_id="same")
    others = [make_event(index, user_id="same") for index in range(1, 4)]
    await store_logs(engine, [both, *others, make_event(9, user_id="else")])
    async with new_sessionmaker(engine)() as session:
        oldest = await logs.oldest_page(session=session, filters=LogFilter(search="same"), limit=3)
        ascending = await logs.page(
            session=session, filters=LogFilter(search="same"), limit=3, newest_first=False
        )
    assert [row.id for row in oldest.rows] == newest_first([both, *others])[-3:]
    assert [row.id for row in ascending.rows] == list(reversed(newest_first([both, *others])))[:3]


async def test_a_prefix_search_pages_exactly_across_its_time_windows(engine: AsyncEngine) -> None:
    """A prefix search reads in widening windows (a week, five weeks, then all): sparse matches months
    apart, rows sharing a timestamp and a row a day ahead are paged in both orders as without them."""
    now = utcnow().replace(microsecond=0)
    days = [-1, 0, 0, 2, 6, 8, 20, 36, 37, 60, 79, 79]
    matches = [
        make_event(i, user_id=f"ann{i % 3}", timestamp=now - timedelta(days=day))
        for i, day in enumerate(days)
    ]
    others = [make_event(i, user_id="bob", timestamp=now - timedelta(days=i * 5)) for i in range(16)]
    await store_logs(engine, matches + others)
    order = newest_first(matches)
    search = LogFilter(search="ann*")
    async with new_sessionmaker(engine)() as session:
        current = await logs.page(session=session, filters=search, limit=PAGE)
        walked = [row.id for row in current.rows]
        while current.has_next:
            current = await logs.page(session=session, filters=search, after=current.last, limit=PAGE)
            walked += [row.id for row in current.rows]
        oldest = await logs.oldest_page(session=session, filters=search, limit=PAGE)
        back = [row.id for row in oldest.rows]
        current = oldest
        while current.has_previous:
            current = await logs.page(session=session, filters=search, before=current.first, limit=PAGE)
            back = [row.id for row in current.rows] + back
        ascending = await logs.page(session=session, filters=search, limit=PAGE, newest_first=False)
        until = LogFilter(search="ann*", until=now - timedelta(days=7))
        bounded = await logs.page(session=session, filters=until, limit=PAGE)
    assert walked == order
    assert back == order
    assert [row.id for row in ascending.rows] == list(reversed(order))[:PAGE]
    assert [row.id for row in bounded.rows] == [
        e["id"]
        for e in sorted(matches, key=lambda e: (e["timestamp"], e["id"]), reverse=True)
        if e["timestamp"] < now - timedelta(days=7)
    ][:PAGE]
