"""Log rows written without the product, as a person or another tool would (a plain SQL ``INSERT`` of literal
values, PostgreSQL's ``COPY``), and the rollups those rows must produce, counted the plain way in Python."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.base import as_utc, utcnow
from db.events import EVENT_COLUMNS
from db.models import LogDailyCount, LogHourlyCount, LogWeeklyCount
from db.rollups import day_of, hour_of, week_of

#: The columns every row is written with, in the order ingest's COPY uses.
COLUMNS = EVENT_COLUMNS
BUCKET_OF = {LogHourlyCount: hour_of, LogDailyCount: day_of, LogWeeklyCount: week_of}
ROLLUPS = tuple(BUCKET_OF)
#: Sunday 23:30 UTC three weeks ago: an hour, a day and an ISO week end half an hour later; inside the
#: partitions every database has, and in the past.
NEAR_WEEK_EDGE = week_of(utcnow()) - timedelta(weeks=3) + timedelta(days=6, hours=23, minutes=30)
RowKey = tuple[Any, ...]


def log_row(
    moment: datetime,
    *,
    organization_id: str = "acme",
    tool_name: str = "ChatGPT",
    user_id: str = "ann",
    risk_level: str = "green",
    entities: Sequence[str] = (),
    event_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """One log row with every column a plain INSERT must give."""
    return {
        "id": event_id or uuid.uuid4(),
        "timestamp": as_utc(moment),
        "device_id": "dev-1",
        "user_id": user_id,
        "organization_id": organization_id,
        "tool_name": tool_name,
        "tool_type": "web",
        "risk_level": risk_level,
        "prompt_length": 10,
        "detected_entity_types": list(entities),
        "entity_count": len(entities),
        "was_sanitized": False,
        "log_metadata": {"os": "linux"},
        "created_at": utcnow(),
    }


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _literal(value: Any, backend: str) -> str:
    """A SQL literal as someone typing the INSERT would write it (SQLite: the stored forms)."""
    if isinstance(value, uuid.UUID):
        return _quoted(str(value) if backend == "postgresql" else value.hex)
    if isinstance(value, datetime):
        moment = f"{as_utc(value):%Y-%m-%d %H:%M:%S.%f}"
        return _quoted(moment + "+00" if backend == "postgresql" else moment)
    if isinstance(value, bool):
        return ("true" if value else "false") if backend == "postgresql" else str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | dict):
        return _quoted(json.dumps(value))
    return _quoted(str(value))


def insert_sql(rows: Iterable[dict[str, Any]], backend: str, *, on_conflict_do_nothing: bool = False) -> str:
    """One ``INSERT … VALUES (…), (…)`` of literal values (never through the product's code)."""
    values = ", ".join(
        "(" + ", ".join(_literal(row[column], backend) for column in COLUMNS) + ")" for row in rows
    )
    statement = f"INSERT INTO log_entries ({', '.join(COLUMNS)}) VALUES {values}"
    if on_conflict_do_nothing:
        statement += " ON CONFLICT (organization_id, id, timestamp) DO NOTHING"
    return statement


async def insert_rows(
    session: AsyncSession, rows: Sequence[dict[str, Any]], *, on_conflict_do_nothing: bool = False
) -> int:
    """Run :func:`insert_sql` on the session's connection (the caller commits); the rows inserted."""
    connection = await session.connection()
    result = await connection.exec_driver_sql(
        insert_sql(rows, connection.dialect.name, on_conflict_do_nothing=on_conflict_do_nothing)
    )
    return int(result.rowcount)


async def copy_rows(
    session: AsyncSession, rows: Sequence[dict[str, Any]], table: str = "log_entries"
) -> None:
    """PostgreSQL ``COPY`` of the rows into ``table`` (the parent or a partition), in the session's
    transaction (the caller commits)."""
    connection = await session.connection()
    raw = (await connection.get_raw_connection()).driver_connection
    assert isinstance(raw, asyncpg.Connection)
    records = [
        tuple(
            json.dumps(row[column]) if column in ("detected_entity_types", "log_metadata") else row[column]
            for column in COLUMNS
        )
        for row in rows
    ]
    await raw.copy_records_to_table(table, records=records, columns=COLUMNS)


def expected_counts(rows: Iterable[dict[str, Any]], table: Any) -> Counter[RowKey]:
    """Counted the plain way: each row once per dimension, each distinct entity type once, keys cut to 255."""
    bucket_of = BUCKET_OF[table]
    counts: Counter[RowKey] = Counter()
    for row in rows:
        head = (bucket_of(row["timestamp"]), row["organization_id"])
        risk = row["risk_level"]
        counts[(*head, "risk", "", risk)] += 1
        counts[(*head, "tool", row["tool_name"][:255], risk)] += 1
        counts[(*head, "user", row["user_id"][:255], risk)] += 1
        for entity in {entity[:255] for entity in row["detected_entity_types"] or ()}:
            counts[(*head, "entity", entity, risk)] += 1
    return counts


async def stored_counts(
    session: AsyncSession, table: Any, organization_id: str | None = None
) -> Counter[RowKey]:
    """The rows of a rollup table as (bucket, organisation, dimension, key, risk) → events."""
    query = select(
        table.bucket_start,
        table.organization_id,
        table.dimension,
        table.key,
        table.risk_level,
        table.event_count,
    )
    if organization_id is not None:
        query = query.where(table.organization_id == organization_id)
    rows = (await session.execute(query)).all()
    return Counter({tuple(row[:5]): row[5] for row in rows})
