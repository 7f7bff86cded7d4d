"""db.logs directly: search de-duplication, counts that say when they are approximate, follow reads."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from db import logs
from db.engine import new_sessionmaker
from db.logs import LogCount, LogFilter
from tests.support.console import newest_first
from tests.support.database import make_event, store_logs


async def test_a_row_matching_a_search_several_ways_is_listed_once(engine: AsyncEngine) -> None:
    both = make_event(1, user_id="same", device_id="same")
    other = make_event(2, user_id="someone", device_id="dev-9")
    await store_logs(engine, [both, other])
    async with new_sessionmaker(engine)() as session:
        page = await logs.page(session=session, filters=LogFilter(search="same"))
    assert [entry.id for entry in page.rows] == [both["id"]]


async def test_counts_beyond_the_cap_are_marked_not_exact(engine: AsyncEngine, backend: str) -> None:
    await store_logs(engine, [make_event(index) for index in range(12)])
    async with new_sessionmaker(engine)() as session:
        assert await logs.count(session=session, filters=LogFilter(), cap=20) == LogCount(12)
        capped = await logs.count(session=session, filters=LogFilter(), cap=10)
    assert not capped.exact
    if backend == "sqlite":
        assert capped == LogCount(10, exact=False, at_least=True)
        assert capped.label() == "10+"
    else:
        assert capped.value >= 11  # the planner's estimate, never below what was counted
        assert capped.label().startswith("≈")


async def test_rows_after_returns_only_newer_matching_rows_newest_first(engine: AsyncEngine) -> None:
    old = [make_event(index, risk_level="red") for index in range(3)]
    await store_logs(engine, old)
    async with new_sessionmaker(engine)() as session:
        first = await logs.page(session=session, filters=LogFilter(risk_levels=frozenset({"red"})))
    new = [make_event(10 + index, risk_level=risk) for index, risk in enumerate(("red", "green", "red"))]
    await store_logs(engine, new)
    async with new_sessionmaker(engine)() as session:
        fresh = await logs.rows_after(
            session=session, filters=LogFilter(risk_levels=frozenset({"red"})), cursor=first.first
        )
    assert [entry.id for entry in fresh] == newest_first([e for e in new if e["risk_level"] == "red"])
