"""db/events.py when a batch meets ids already stored: on PostgreSQL the optimistic COPY straight into
log_entries fails on the unique index, its savepoint is rolled back and the batch goes through the
staging table with ON CONFLICT DO NOTHING; every new row is stored once and counted once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from db.engine import new_sessionmaker
from db.event_schema import Hello, validate_log
from db.events import StoredBatch, store_events
from db.models import LogEntry, LogHourlyCount
from simulation.events import EventGenerator

HELLO = Hello("acme", "t", "dev-1", "alice@acme.example", "browser", "1.0")


def rows(count: int, seed: int = 7) -> list[dict[str, Any]]:
    generator = EventGenerator(seed=seed)
    return [validate_log(generator.event(), hello=HELLO) for _ in range(count)]


async def stored_and_counted(session: AsyncSession) -> tuple[int, int]:
    stored = await session.scalar(select(func.count()).select_from(LogEntry))
    counted = await session.scalar(
        select(func.sum(LogHourlyCount.event_count)).where(LogHourlyCount.dimension == "risk")
    )
    return int(stored or 0), int(counted or 0)


async def test_batch_with_a_stored_id_in_the_middle_stores_the_rest_once_and_counts_them_once(
    session: AsyncSession,
) -> None:
    events = rows(50)
    await store_events(session=session, events=[events[25]])
    await session.commit()
    stored = await store_events(session=session, events=events)
    await session.commit()
    assert stored == StoredBatch(events=50, inserted=49)
    assert await stored_and_counted(session) == (50, 50)


async def test_fallback_keeps_what_the_same_transaction_stored_before(session: AsyncSession) -> None:
    # The failed COPY is undone by its savepoint only: the first batch, not yet committed, stays.
    events = rows(20)
    await store_events(session=session, events=events[:10])
    stored = await store_events(session=session, events=events[5:])
    await session.commit()
    assert stored == StoredBatch(events=15, inserted=10)
    assert await stored_and_counted(session) == (20, 20)


async def test_fallback_twice_in_one_transaction_stores_and_counts_each_row_once(
    session: AsyncSession,
) -> None:
    events = rows(30)
    await store_events(session=session, events=events[:10])
    await session.commit()
    await store_events(session=session, events=events[:20])
    await store_events(session=session, events=events)
    await session.commit()
    assert await stored_and_counted(session) == (30, 30)


async def test_batch_racing_another_writer_for_the_same_id_stores_it_once(
    engine: AsyncEngine, backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("two concurrent write transactions: SQLite has one writer at a time")
    events = rows(40)
    sessions = new_sessionmaker(engine)
    async with sessions() as first, sessions() as second:
        await store_events(session=first, events=events[:10])
        # The second COPY meets id 9 uncommitted: it waits on the unique index, then fails over.
        racing = asyncio.create_task(store_events(session=second, events=events[9:]))
        done, _ = await asyncio.wait({racing}, timeout=0.3)
        assert not done, "the second writer should wait for the first one's commit"
        await first.commit()
        assert await racing == StoredBatch(events=31, inserted=30)
        await second.commit()
    async with sessions() as session:
        assert await stored_and_counted(session) == (40, 40)


async def test_events_stored_inside_a_callers_savepoint_go_when_it_is_rolled_back(
    session: AsyncSession,
) -> None:
    events = rows(12)
    await store_events(session=session, events=events[:4])
    nested = await session.begin_nested()
    await store_events(session=session, events=events[2:8])
    await store_events(session=session, events=events[8:])
    await nested.rollback()
    await session.commit()
    assert await stored_and_counted(session) == (4, 4)
