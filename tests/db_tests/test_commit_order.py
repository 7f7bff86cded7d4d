"""Readers of the commit-ordered streams see only committed rows, in order, and never skip one."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from db.engine import new_sessionmaker
from db.events import store_events
from db.models import LogEntry
from db.streams import Position, load_cursor, read_events, save_cursor, start_cursor
from tests.support.database import asyncpg_dsn, make_event, postgres_admin_url, store_logs


async def read_all(
    session: AsyncSession, after: Position, *, limit: int = 1000
) -> tuple[list[str], Position]:
    """Every id readable after ``after`` (page by page) and the position after them."""
    ids: list[str] = []
    while True:
        page = await read_events(session, after=after, limit=limit)
        await session.commit()
        ids.extend(str(row.id) for row in page.rows)
        if page.next_position == after or not page.rows:
            return ids, page.next_position
        after = page.next_position


async def test_a_new_cursor_starts_after_what_is_stored(engine: AsyncEngine, session: AsyncSession) -> None:
    await store_logs(engine, [make_event(i) for i in range(3)])
    state = await start_cursor(session, name="reader", stream="log_entries")
    await session.commit()
    later = make_event(10)
    await store_logs(engine, [later])

    ids, _ = await read_all(session, state.position)

    assert ids == [str(later["id"])]


async def test_pages_follow_commit_order_and_cover_every_row_once(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    start = (await start_cursor(session, name="reader", stream="log_entries")).position
    await session.commit()
    batches = [
        [make_event(10 * b + i, organization_id=org) for i in range(5) for org in ("a", "b")]
        for b in range(4)
    ]
    for batch in batches:
        await store_logs(engine, batch)

    ids, end = await read_all(session, start, limit=3)

    expected = [str(event["id"]) for batch in batches for event in batch]
    assert sorted(ids) == sorted(expected)
    assert len(ids) == len(set(ids))
    # Batch by batch: commit order, whatever the order inside a batch.
    for index, batch in enumerate(batches):
        assert set(ids[index * 10 : (index + 1) * 10]) == {str(event["id"]) for event in batch}
    assert (await read_all(session, end))[0] == []


async def test_filters_skip_rows_but_the_position_passes_them(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    start = (await start_cursor(session, name="reader", stream="log_entries")).position
    await session.commit()
    await store_logs(engine, [make_event(i, risk_level="green") for i in range(5)])
    red = make_event(9, risk_level="red")
    await store_logs(engine, [red])

    page = await read_events(session, after=start, risk_levels=["red"])

    assert [str(row.id) for row in page.rows] == [str(red["id"])]
    assert page.next_position > start
    again = await read_events(session, after=page.next_position)
    assert again.rows == []


async def test_the_cursor_is_saved_with_where_a_resend_starts(session: AsyncSession) -> None:
    await save_cursor(session, name="fwd", position=Position(7, "acme", "x"), resend_from=Position(5))
    await session.commit()

    state = await load_cursor(session, name="fwd")

    assert state is not None
    assert state.position == Position(7, "acme", "x")
    assert state.resend_from == Position(5)


@pytest.mark.postgres_only
async def test_a_transaction_that_commits_late_is_not_skipped(engine: AsyncEngine, backend: str) -> None:
    """Writer A starts first and commits last: a reader that passed B's rows must still get A's."""
    if backend != "postgresql":
        pytest.skip("SQLite has one writer at a time: commits cannot overtake each other")
    sessions = new_sessionmaker(engine)
    async with sessions() as reader:
        start = (await start_cursor(reader, name="reader", stream="log_entries")).position
        await reader.commit()
        async with sessions() as writer_a, sessions() as writer_b:
            # Two organisations: the same one would make B wait for A's rollup rows instead of overtaking it.
            first = make_event(1, organization_id="early")
            second = make_event(2, organization_id="late")
            await store_events(session=writer_a, events=[first])  # takes its transaction id first
            await store_events(session=writer_b, events=[second])
            await writer_b.commit()

            seen_before, position = await read_all(reader, start)
            await writer_a.commit()
        seen_after, _ = await read_all(reader, position)

    # B is committed but cannot be read before A ends (A's id is below it): nothing is passed over.
    assert seen_before == []
    assert sorted(seen_after) == sorted([str(first["id"]), str(second["id"])])


async def test_rows_inserted_by_hand_join_the_stream(engine: AsyncEngine, session: AsyncSession) -> None:
    """A default on PostgreSQL, a trigger on SQLite: an import by SQL is read like an ingested event."""
    start = (await start_cursor(session, name="reader", stream="log_entries")).position
    await session.commit()
    event = make_event(3)
    event.pop("log_metadata")
    async with engine.begin() as connection:
        await connection.execute(insert(LogEntry).values(**event, log_metadata={}))

    ids, _ = await read_all(session, start)

    assert ids == [str(event["id"])]
    async with engine.connect() as connection:
        seq = await connection.scalar(select(LogEntry.commit_seq).where(LogEntry.id == event["id"]))
    assert seq is not None
    assert seq >= start.seq


async def test_rows_from_before_the_stream_existed_are_never_read(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    event = make_event(4)
    await store_logs(engine, [event])
    async with engine.begin() as connection:
        await connection.execute(text("UPDATE log_entries SET commit_seq = NULL"))

    ids, _ = await read_all(session, Position(0))

    assert ids == []
    assert uuid.UUID(str(event["id"]))


@pytest.mark.postgres_only
async def test_a_transaction_in_another_database_does_not_hold_readers_back(
    engine: AsyncEngine, session: AsyncSession, backend: str
) -> None:
    """Databases share the server's transaction ids: another database's long transaction is told apart."""
    if backend != "postgresql":
        pytest.skip("the transaction ids of a PostgreSQL server are shared by its databases")
    start = (await start_cursor(session, name="reader", stream="log_entries")).position
    await session.commit()
    other = await asyncpg.connect(asyncpg_dsn(postgres_admin_url()))
    try:
        transaction = other.transaction()
        await transaction.start()
        await other.fetchval("SELECT pg_current_xact_id()")  # holds a transaction id, open
        event = make_event(5)
        await store_logs(engine, [event])

        ids, _ = await read_all(session, start)

        assert ids == [str(event["id"])]
        await transaction.rollback()
    finally:
        await other.close()
