"""Hourly and daily pre-aggregated counts of stored events, so the overview never counts raw rows.

Call :func:`add_events` in the same transaction that inserts the events, with
only the events actually inserted (a resent event is not counted twice). Each
event is added to its hour in ``log_hourly_counts``, its UTC day in
``log_daily_counts`` and its ISO week (from Monday, UTC) in
``log_weekly_counts``; all outlive retention, so history older than the raw
logs stays visible.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, DateTime, Text, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.base import as_utc
from db.models import LogDailyCount, LogHourlyCount, LogWeeklyCount

DIMENSIONS = ("risk", "tool", "user", "entity")
MAX_KEY_LENGTH = 255


ROLLUP_KEY = ["bucket_start", "organization_id", "dimension", "key", "risk_level"]


def hour_of(moment: datetime) -> datetime:
    """The start of the UTC hour of ``moment``."""
    return as_utc(moment).replace(minute=0, second=0, microsecond=0)


def day_of(moment: datetime) -> datetime:
    """The start (midnight UTC) of the UTC day of ``moment``."""
    return as_utc(moment).replace(hour=0, minute=0, second=0, microsecond=0)


def week_of(moment: datetime) -> datetime:
    """The start (Monday, midnight UTC) of the ISO week of ``moment``."""
    day = day_of(moment)
    return day - timedelta(days=day.weekday())


#: Event counts keyed by (bucket start, organisation, dimension, key, risk level).
Counts = Counter[tuple[datetime, str, str, str, str]]


def count_events(events: Iterable[Mapping[str, Any]]) -> Counts:
    """Counts keyed by (hour, organisation, dimension, key, risk level)."""
    counts: Counts = Counter()
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


def regroup(counts: Counts, bucket_of: Callable[[datetime], datetime]) -> Counts:
    """Counts keyed as :func:`count_events` keys them, summed into coarser buckets (days, weeks)."""
    coarser: Counts = Counter()
    for (bucket, org, dimension, key, risk), count in counts.items():
        coarser[(bucket_of(bucket), org, dimension, key, risk)] += count
    return coarser


RollupTable = type[LogHourlyCount] | type[LogDailyCount] | type[LogWeeklyCount]

# PostgreSQL: the rows travel as six arrays in one statement, which costs a fraction of the
# Python and protocol work of thousands of parameter sets (this runs in every ingest batch).
_UNNEST_UPSERT = """
INSERT INTO {table} (bucket_start, organization_id, dimension, key, risk_level, event_count)
SELECT * FROM unnest(
    CAST(:buckets AS timestamptz[]), CAST(:orgs AS text[]), CAST(:dimensions AS text[]),
    CAST(:keys AS text[]), CAST(:risks AS text[]), CAST(:counts AS bigint[])
)
ON CONFLICT (bucket_start, organization_id, dimension, key, risk_level)
DO UPDATE SET event_count = {table}.event_count + excluded.event_count
"""
_ARRAY_TYPES = {
    "buckets": ARRAY(DateTime(timezone=True)),
    "orgs": ARRAY(Text()),
    "dimensions": ARRAY(Text()),
    "keys": ARRAY(Text()),
    "risks": ARRAY(Text()),
    "counts": ARRAY(BigInteger()),
}


async def _upsert(session: AsyncSession, table: RollupTable, counts: Counts) -> None:
    """Add ``counts`` to ``table``, rows in key order (so concurrent writers lock rows in one order)."""
    ordered = sorted(counts.items())
    if session.get_bind().dialect.name == "postgresql":
        statement = text(_UNNEST_UPSERT.format(table=table.__tablename__)).bindparams(
            *(bindparam(name, type_=type_) for name, type_ in _ARRAY_TYPES.items())
        )
        columns = list(zip(*(key for key, _ in ordered), strict=True))
        await session.execute(
            statement,
            {
                "buckets": list(columns[0]),
                "orgs": list(columns[1]),
                "dimensions": list(columns[2]),
                "keys": list(columns[3]),
                "risks": list(columns[4]),
                "counts": [count for _, count in ordered],
            },
        )
        return
    rows = [
        {
            "bucket_start": bucket,
            "organization_id": org,
            "dimension": dimension,
            "key": key,
            "risk_level": risk,
            "event_count": count,
        }
        for (bucket, org, dimension, key, risk), count in ordered
    ]
    statement = sqlite_insert(table)
    statement = statement.on_conflict_do_update(
        index_elements=ROLLUP_KEY,
        set_={"event_count": table.event_count + statement.excluded.event_count},
    )
    await session.execute(statement, rows)


async def add_events(*, session: AsyncSession, events: Iterable[Mapping[str, Any]]) -> None:
    """Add the given (newly stored) events to the hourly, daily and weekly counts, in the caller's transaction."""
    hourly = count_events(events)
    if not hourly:
        return
    daily = regroup(hourly, day_of)
    # Sorted rows, tables always in this order, take row locks in one order: concurrent
    # writers wait for each other but cannot deadlock.
    await _upsert(session, LogHourlyCount, hourly)
    await _upsert(session, LogDailyCount, daily)
    await _upsert(session, LogWeeklyCount, regroup(daily, week_of))
