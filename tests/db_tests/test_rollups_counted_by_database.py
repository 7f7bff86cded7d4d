"""The database counts every inserted row into the rollups exactly once, whatever wrote it: plain SQL,
a resend that conflicts, COPY into the parent or straight into a partition; counted columns cannot be
updated behind the counts' back."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from db.engine import new_sessionmaker
from db.models import LogEntry, LogHourlyCount
from db.partition_layout import partition_name, week_start
from db.rollups import counting_paused
from tests.db_tests.rollup_rows import (
    NEAR_WEEK_EDGE,
    ROLLUPS,
    copy_rows,
    expected_counts,
    insert_rows,
    log_row,
    stored_counts,
)

postgres_only = pytest.mark.postgres_only
LONG = "k" * 300


def varied_rows(count: int, *, organization_id: str = "acme") -> list[dict]:
    """Rows across an hour, a day and an ISO week edge, with duplicate, long and no entity types."""
    return [
        log_row(
            NEAR_WEEK_EDGE + timedelta(minutes=7 * n),
            organization_id=organization_id,
            tool_name=("ChatGPT", "Claude", "Gemini")[n % 3],
            user_id=("ann", "bob", LONG[:200])[n % 3],
            risk_level=("green", "amber", "red")[n % 3],
            entities=[["EMAIL", "EMAIL"], [LONG + "a", LONG + "b"], [], ["IBAN", "EMAIL"]][n % 4],
        )
        for n in range(count)
    ]


async def assert_counted(session: AsyncSession, rows: list[dict], times: int = 1) -> None:
    for table in ROLLUPS:
        expected = Counter({key: n * times for key, n in expected_counts(rows, table).items()})
        assert await stored_counts(session, table) == expected, table.__tablename__


async def test_plain_sql_insert_of_one_row_is_counted_in_its_hour_day_and_week(session: AsyncSession) -> None:
    rows = [log_row(NEAR_WEEK_EDGE, tool_name="Claude", risk_level="red", entities=["EMAIL"])]
    assert await insert_rows(session, rows) == 1
    await session.commit()
    await assert_counted(session, rows)


async def test_multi_row_insert_counts_each_row_once_and_each_entity_once_per_row(
    session: AsyncSession,
) -> None:
    rows = varied_rows(40)
    await insert_rows(session, rows)
    await session.commit()
    await assert_counted(session, rows)


async def test_resend_with_on_conflict_do_nothing_is_not_counted_again(session: AsyncSession) -> None:
    rows = varied_rows(12)
    await insert_rows(session, rows)
    await session.commit()
    fresh = varied_rows(3)
    inserted = await insert_rows(session, rows + fresh, on_conflict_do_nothing=True)
    await session.commit()
    assert inserted == 3
    await assert_counted(session, rows + fresh)


async def test_statements_in_separate_transactions_add_up(session: AsyncSession) -> None:
    rows = varied_rows(30)
    for start in range(0, 30, 7):
        await insert_rows(session, rows[start : start + 7])
        await session.commit()
    await assert_counted(session, rows)


@postgres_only
async def test_copy_into_the_parent_is_counted(session: AsyncSession, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("COPY is PostgreSQL's")
    rows = varied_rows(25)
    await copy_rows(session, rows)
    await session.commit()
    await assert_counted(session, rows)


@postgres_only
async def test_copy_straight_into_a_partition_is_counted_once(session: AsyncSession, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("partitions are PostgreSQL's")
    rows = [row for row in varied_rows(25) if week_start(row["timestamp"]) == week_start(NEAR_WEEK_EDGE)]
    assert rows
    await copy_rows(session, rows, table=partition_name(week_start(NEAR_WEEK_EDGE)))
    await insert_rows(session, [log_row(NEAR_WEEK_EDGE)], on_conflict_do_nothing=True)
    await session.commit()
    await assert_counted(session, [*rows, log_row(NEAR_WEEK_EDGE)])


@postgres_only
async def test_session_time_zone_does_not_move_buckets(session: AsyncSession, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite has no session time zone")
    await session.execute(text("SET TIME ZONE 'America/New_York'"))
    rows = varied_rows(40)
    await insert_rows(session, rows[:20])
    await copy_rows(session, rows[20:])
    await session.commit()
    await session.execute(text("SET TIME ZONE 'UTC'"))
    await assert_counted(session, rows)


async def test_rows_inserted_with_counting_paused_are_not_counted_and_counting_resumes(
    session: AsyncSession,
) -> None:
    paused = varied_rows(10)
    async with counting_paused(session):
        await insert_rows(session, paused)
    counted = varied_rows(5, organization_id="globex")
    await insert_rows(session, counted)
    await session.commit()
    assert await session.scalar(select(func.count()).select_from(LogEntry)) == 15
    await assert_counted(session, counted)
    # And in the next transaction too (SQLite's switch is a row: it must be back on).
    later = varied_rows(4, organization_id="initech")
    await insert_rows(session, later)
    await session.commit()
    await assert_counted(session, counted + later)


async def test_counting_comes_back_on_when_the_paused_block_fails(session: AsyncSession) -> None:
    async def failed_repair() -> None:
        async with counting_paused(session):
            await insert_rows(session, varied_rows(2))
            raise RuntimeError("the repair failed")

    with pytest.raises(RuntimeError, match="the repair failed"):
        await failed_repair()
    await session.rollback()
    rows = varied_rows(3, organization_id="globex")
    await insert_rows(session, rows)
    await session.commit()
    await assert_counted(session, rows)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("tool_name", "Claude"),
        ("user_id", "mallory"),
        ("risk_level", "red"),
        ("organization_id", "globex"),
        ("detected_entity_types", ["IBAN"]),
        ("timestamp", NEAR_WEEK_EDGE + timedelta(hours=2)),
    ],
)
async def test_update_of_a_counted_column_is_refused(
    session: AsyncSession, column: str, value: object
) -> None:
    rows = [log_row(NEAR_WEEK_EDGE, entities=["EMAIL"])]
    await insert_rows(session, rows)
    await session.commit()
    with pytest.raises(DBAPIError, match="cannot be updated"):
        await session.execute(update(LogEntry).values({column: value}))
    await session.rollback()
    await assert_counted(session, rows)


async def test_update_of_a_counted_column_is_allowed_with_counting_paused(session: AsyncSession) -> None:
    await insert_rows(session, [log_row(NEAR_WEEK_EDGE)])
    await session.commit()
    async with counting_paused(session):
        await session.execute(update(LogEntry).values(tool_name="Claude"))
    await session.commit()
    assert await session.scalar(select(LogEntry.tool_name)) == "Claude"
    # The repair keeps the counts itself: they still name the old tool.
    keys = await session.scalars(select(LogHourlyCount.key).where(LogHourlyCount.dimension == "tool"))
    assert keys.all() == ["ChatGPT"]


async def test_update_of_other_columns_is_allowed(session: AsyncSession) -> None:
    rows = [log_row(NEAR_WEEK_EDGE)]
    await insert_rows(session, rows)
    await session.commit()
    await session.execute(
        update(LogEntry).values(log_metadata={"os": "macOS"}, was_sanitized=True, device_id="dev-2")
    )
    # Setting a counted column to the value it holds changes no count, so it is not refused either.
    await session.execute(update(LogEntry).values(tool_name="ChatGPT"))
    await session.commit()
    assert (await session.execute(select(LogEntry.device_id, LogEntry.was_sanitized))).one() == (
        "dev-2",
        True,
    )
    await assert_counted(session, rows)


@postgres_only
async def test_concurrent_writers_into_the_same_buckets_never_deadlock_and_end_exact(
    engine: AsyncEngine, backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite has one writer")
    batches = {writer: [varied_rows(20) for _ in range(50)] for writer in ("first", "second")}

    async def write(writer: str) -> None:
        async with new_sessionmaker(engine)() as session:
            for index, rows in enumerate(batches[writer]):
                # COPY and INSERT by turns: the two ways ingest writes.
                if index % 2:
                    await copy_rows(session, rows)
                else:
                    await insert_rows(session, rows)
                await session.commit()

    await asyncio.wait_for(asyncio.gather(write("first"), write("second")), timeout=120)
    every = [row for batch in batches.values() for rows in batch for row in rows]
    async with new_sessionmaker(engine)() as session:
        await assert_counted(session, every)
