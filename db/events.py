"""Storing validated log events in batches, idempotently by the event's identity.

An event is identified by (organization_id, id, timestamp): the id an agent chose,
within its organisation, and the time it happened, which a resend repeats (the
partition key must be part of every unique key: docs/partitions.md). The same id
sent by another organisation is another event, stored for that organisation; it
can neither overwrite nor suppress the first.

:func:`store_events` inserts what is new and skips what is already there, in the
caller's transaction, and says how many distinct events are now safely stored
(new or already present: all of them may be acknowledged once the caller has
committed) and how many were new. The database counts what was inserted into the
rollups itself (migration 0015), so a resend is neither stored nor counted twice.

PostgreSQL takes the fast path: resends are rare, so the batch is first
``COPY``'d straight into ``log_entries`` inside a savepoint; if that succeeds,
every row was new. If an event is already stored (``UniqueViolation``, also
when another server committed it meanwhile: the primary key decides), the
savepoint is rolled back and the batch takes the careful path: ``COPY`` into a
per-connection temporary table, then ``INSERT … SELECT … ON CONFLICT
(organization_id, id, timestamp) DO NOTHING RETURNING …``. SQLite inserts many rows per
statement with the same ``ON CONFLICT … DO NOTHING RETURNING``.

Rows may carry keys besides the columns (the validator adds ``ack_id``, the id
exactly as the agent sent it): they are ignored here.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from sqlalchemy import text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.base import utcnow
from db.commit_order import next_commit_seq
from db.models import LogEntry

#: Columns an event row provides (``created_at`` is added here), in COPY order.
EVENT_COLUMNS = (
    "id",
    "timestamp",
    "device_id",
    "user_id",
    "organization_id",
    "tool_name",
    "tool_type",
    "risk_level",
    "prompt_length",
    "detected_entity_types",
    "entity_count",
    "was_sanitized",
    "log_metadata",
    "created_at",
)
STAGING_TABLE = "ingest_staging_events"
_COPY_SAVEPOINT = "ingest_copy"
_COLUMN_LIST = ", ".join(f'"{name}"' for name in EVENT_COLUMNS)


#: What identifies an event: its organisation, the id its agent chose and when it happened.
EventKey = tuple[str, uuid.UUID, datetime]


@dataclass(frozen=True)
class StoredBatch:
    """What :func:`store_events` did: ``events`` distinct events are now stored, ``inserted`` of them just
    now.

    ``events - inserted`` were resends (or repeats within the batch) already stored.
    """

    events: int
    inserted: int


def _key(event: Mapping[str, Any]) -> EventKey:
    return (event["organization_id"], event["id"], event["timestamp"])


def _unique(events: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    seen: set[EventKey] = set()
    unique = []
    for event in events:
        key = _key(event)
        if key not in seen:
            seen.add(key)
            unique.append(event)
    return unique


async def store_events(
    *,
    session: AsyncSession,
    events: Sequence[Mapping[str, Any]],
) -> StoredBatch:
    """Insert the events that are new, by (organization_id, id, timestamp); say how many are stored and how
    many are new.

    Runs in the caller's transaction (commit after).
    """
    unique = _unique(events)
    if not unique:
        return StoredBatch(events=0, inserted=0)
    if session.get_bind().dialect.name == "postgresql":
        inserted = await _insert_postgresql(session, unique)
    else:
        inserted = await _insert_sqlite(session, unique)
    return StoredBatch(events=len(unique), inserted=inserted)


async def _insert_postgresql(session: AsyncSession, events: list[Mapping[str, Any]]) -> int:
    records = _copy_records(events)
    # Through the session, so that it also opens the transaction the raw COPY then joins.
    await session.execute(text(f"SAVEPOINT {_COPY_SAVEPOINT}"))
    raw = await _driver_connection(session)
    try:
        await raw.copy_records_to_table("log_entries", records=records, columns=EVENT_COLUMNS)
    except asyncpg.UniqueViolationError:
        await session.execute(text(f"ROLLBACK TO SAVEPOINT {_COPY_SAVEPOINT}"))
        return await _insert_postgresql_skipping_stored(session, raw, records)
    # No RELEASE: the commit ends the savepoint (or the caller's own enclosing one does); a round
    # trip less per batch. Any other error leaves the transaction failed for the caller to roll back.
    return len(events)


async def _insert_postgresql_skipping_stored(
    session: AsyncSession, raw: asyncpg.Connection, records: list[tuple[Any, ...]]
) -> int:
    """Some event is already stored: stage the batch, then insert only the rows that are new."""
    await session.execute(
        text(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING_TABLE} "
            "(LIKE log_entries INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
    )
    # Rows of an earlier call in this transaction would only meet ON CONFLICT below; empty it anyway.
    await session.execute(text(f"TRUNCATE {STAGING_TABLE}"))
    await raw.copy_records_to_table(STAGING_TABLE, records=records, columns=EVENT_COLUMNS)
    result = await session.execute(
        text(
            f"INSERT INTO log_entries ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM {STAGING_TABLE} "
            "ON CONFLICT (organization_id, id, timestamp) DO NOTHING"
        )
    )
    return result.rowcount  # type: ignore[attr-defined]


async def _driver_connection(session: AsyncSession) -> asyncpg.Connection:
    connection = await session.connection()
    raw = (await connection.get_raw_connection()).driver_connection
    assert raw is not None
    return raw


def _copy_records(events: list[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    """COPY rows in EVENT_COLUMNS order; the JSON columns go as text (asyncpg's jsonb codec wants str)."""
    created_at = utcnow()
    dumps = orjson.dumps
    return [
        (
            event["id"],
            event["timestamp"],
            event["device_id"],
            event["user_id"],
            event["organization_id"],
            event["tool_name"],
            event["tool_type"],
            event["risk_level"],
            event["prompt_length"],
            dumps(event["detected_entity_types"]).decode(),
            event["entity_count"],
            event["was_sanitized"],
            dumps(event["log_metadata"]).decode(),
            created_at,
        )
        for event in events
    ]


async def _insert_sqlite(session: AsyncSession, events: list[Mapping[str, Any]]) -> int:
    created_at = utcnow()
    # One value for the whole batch, taken with the write lock (db/commit_order.py).
    commit_seq = await next_commit_seq(session, "log_entries")
    rows = [
        {
            **{name: event[name] for name in EVENT_COLUMNS[:-1]},
            "created_at": created_at,
            "commit_seq": commit_seq,
        }
        for event in events
    ]
    statement = (
        sqlite_insert(LogEntry)
        .on_conflict_do_nothing(index_elements=["organization_id", "id", "timestamp"])
        .returning(LogEntry.id)
    )
    return len((await session.execute(statement, rows)).all())
