"""Rows written without the product (plain SQL INSERT, PostgreSQL COPY) appear in the overview: the database
counts them itself, so 501 rows inserted by SQL no longer show "no events yet"."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from console.sections.overview import OverviewSection
from db.base import utcnow
from db.engine import new_sessionmaker
from db.overview import load_overview
from tests.db_tests.rollup_rows import copy_rows, insert_rows, log_row
from tests.support.console import add_console_user, running, settle, sign_in


def rows_of_the_last_hours(count: int, **fields: Any) -> list[dict[str, Any]]:
    now = utcnow()
    return [log_row(now - timedelta(minutes=10 + n % 600), **fields) for n in range(count)]


async def write_by_sql(engine: AsyncEngine, backend: str) -> dict[str, int]:
    """501 red rows by INSERT and, on PostgreSQL, 120 amber ones by COPY; the totals they make."""
    inserted = rows_of_the_last_hours(501, risk_level="red", tool_name="Claude", entities=["EMAIL"])
    copied = rows_of_the_last_hours(120, risk_level="amber", tool_name="Gemini")
    async with new_sessionmaker(engine)() as session:
        await insert_rows(session, inserted)
        if backend == "postgresql":
            await copy_rows(session, copied)
        await session.commit()
    return {"green": 0, "amber": 120 if backend == "postgresql" else 0, "red": 501}


async def test_overview_figures_count_rows_inserted_by_sql_and_copy(
    engine: AsyncEngine, backend: str
) -> None:
    expected = await write_by_sql(engine, backend)
    async with new_sessionmaker(engine)() as session:
        overview = await load_overview(session=session, window="24h")
    assert {totals.window: totals.counts for totals in overview.totals}["24h"] == expected
    assert overview.top_tools[0] == ("Claude", 501)
    assert overview.top_red_users == [("ann", 501)]
    assert overview.top_entity_types == [("EMAIL", 501)]
    assert sum(sum(series) for series in overview.timeline.series.values()) == sum(expected.values())


async def test_console_overview_shows_rows_inserted_by_sql_not_no_events_yet(
    engine: AsyncEngine, backend: str, app_factory
) -> None:
    expected = await write_by_sql(engine, backend)
    await add_console_user(engine, "alice")
    async with running(app_factory()) as pilot:
        await sign_in(pilot, "alice")
        section = pilot.app.screen.query_one(OverviewSection)
        await settle(pilot)
        assert section.overview is not None
        assert {totals.window: totals.counts for totals in section.overview.totals}["24h"] == expected
        assert "no events yet" not in str(section.query_one("#overview-status").render())
