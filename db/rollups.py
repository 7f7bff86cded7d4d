"""Hourly pre-aggregated counts of stored events, so the overview never counts raw rows.

Call :func:`add_events` in the same transaction that inserts the events, with
only the events actually inserted (a resent event is not counted twice). The
counts outlive retention, so history older than the raw logs stays visible.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.base import as_utc
from db.models import LogHourlyCount

DIMENSIONS = ("risk", "tool", "user", "entity")
MAX_KEY_LENGTH = 255


def hour_of(moment: datetime) -> datetime:
    return as_utc(moment).replace(minute=0, second=0, microsecond=0)


def count_events(events: Iterable[Mapping[str, Any]]) -> Counter[tuple[datetime, str, str, str, str]]:
    """Counts keyed by (hour, organisation, dimension, key, risk level)."""
    counts: Counter[tuple[datetime, str, str, str, str]] = Counter()
    for event in events:
        hour = hour_of(event["timestamp"])
        org = event["organization_id"]
        risk = event["risk_level"]
        counts[(hour, org, "risk", "", risk)] += 1
        counts[(hour, org, "tool", event["tool_name"][:MAX_KEY_LENGTH], risk)] += 1
        counts[(hour, org, "user", event["user_id"][:MAX_KEY_LENGTH], risk)] += 1
        for entity in set(event.get("detected_entity_types") or ()):
            counts[(hour, org, "entity", str(entity)[:MAX_KEY_LENGTH], risk)] += 1
    return counts


async def add_events(*, session: AsyncSession, events: Iterable[Mapping[str, Any]]) -> None:
    """Add the given (newly stored) events to the hourly counts, in the caller's transaction."""
    counts = count_events(events)
    if not counts:
        return
    rows = [
        {
            "bucket_start": hour,
            "organization_id": org,
            "dimension": dimension,
            "key": key,
            "risk_level": risk,
            "event_count": count,
        }
        for (hour, org, dimension, key, risk), count in sorted(counts.items())
    ]
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(LogHourlyCount)
    statement = statement.on_conflict_do_update(
        index_elements=["bucket_start", "organization_id", "dimension", "key", "risk_level"],
        set_={"event_count": LogHourlyCount.event_count + statement.excluded.event_count},
    )
    # Sorted rows take row locks in one order, so concurrent writers cannot deadlock.
    await session.execute(statement, rows)
