"""Hourly, daily and weekly pre-aggregated counts of stored events, so the overview never counts raw rows.

Call :func:`add_events` in the same transaction that inserts the events, with
only the events actually inserted (a resent event is not counted twice). Each
event is added to its hour in ``log_hourly_counts``, its UTC day in
``log_daily_counts`` and its ISO week (from Monday, UTC) in
``log_weekly_counts``; all outlive retention, so history older than the raw
logs stays visible.

This runs in every ingest batch, so it is written for speed: a batch usually
falls in one hour, found from its earliest and latest timestamps; each dimension
is counted in C (``Counter`` over zipped columns), so Python only touches the
few distinct keys; buckets are whole hours, days and weeks since the Unix epoch
(UTC) until the rows are sent. PostgreSQL gets each table's rows as six arrays
in one prepared statement on the driver connection.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any

from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.base import as_utc
from db.models import LogDailyCount, LogHourlyCount, LogWeeklyCount

DIMENSIONS = ("risk", "tool", "user", "entity")
MAX_KEY_LENGTH = 255


ROLLUP_KEY = ["bucket_start", "organization_id", "dimension", "key", "risk_level"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)
_WEEK = timedelta(weeks=1)
#: 1970-01-01 was a Thursday: day number + 3 counts days from the Monday before it.
_EPOCH_WEEKDAY = 3
_FIRST_MONDAY = _EPOCH - _EPOCH_WEEKDAY * _DAY


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


#: Event counts keyed by (bucket number, organisation, dimension, key, risk level); the bucket
#: a number of whole hours, days or weeks since the Unix epoch (UTC).
_NumberedCounts = Counter[tuple[int, str, str, str, str]]
#: One row of a rollup table: bucket start, organisation, dimension, key, risk level, count.
Row = tuple[datetime, str, str, str, str, int]


def _hour_number(moment: datetime) -> int:
    """Whole UTC hours from the Unix epoch to ``moment`` (naive is UTC), in exact integer arithmetic."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _HOUR


def _by_hour(events: list[Mapping[str, Any]]) -> dict[int, list[Mapping[str, Any]]]:
    """The events grouped by hour number; a batch usually falls in one hour, found without a per-event step."""
    if not events:
        return {}
    try:
        # min/max compare in C; naive and aware timestamps mixed cannot be compared (TypeError).
        first = _hour_number(min(map(_timestamp, events)))
        last = _hour_number(max(map(_timestamp, events)))
    except TypeError:
        first, last = 0, 1
    if first == last:
        return {first: events}
    groups: dict[int, list[Mapping[str, Any]]] = {}
    for event in events:
        groups.setdefault(_hour_number(event["timestamp"]), []).append(event)
    return groups


_timestamp = itemgetter("timestamp")
_organization = itemgetter("organization_id")
_risk = itemgetter("risk_level")
_tool = itemgetter("tool_name")
_user = itemgetter("user_id")


def _count_by_hour_number(events: Iterable[Mapping[str, Any]]) -> _NumberedCounts:
    """Counts keyed by (hour number, organisation, dimension, key, risk level).

    Each dimension is first counted by a Counter over zipped columns (counted in C), so the
    Python work is per distinct (organisation, key, risk level), not per event.
    """
    counts: _NumberedCounts = Counter()
    for hour, group in _by_hour(list(events)).items():
        orgs = list(map(_organization, group))
        risks = list(map(_risk, group))
        for (org, risk), count in Counter(zip(orgs, risks, strict=True)).items():
            counts[(hour, org, "risk", "", risk)] += count
        for (org, tool, risk), count in Counter(zip(orgs, map(_tool, group), risks, strict=True)).items():
            counts[(hour, org, "tool", tool[:MAX_KEY_LENGTH], risk)] += count
        for (org, user, risk), count in Counter(zip(orgs, map(_user, group), risks, strict=True)).items():
            counts[(hour, org, "user", user[:MAX_KEY_LENGTH], risk)] += count
        entity_lists = Counter(
            (org, tuple(entities), risk)
            for org, entities, risk in zip(
                orgs, (e.get("detected_entity_types") for e in group), risks, strict=True
            )
            if entities
        )
        for (org, entities, risk), count in entity_lists.items():
            for entity in set(entities):
                counts[(hour, org, "entity", str(entity)[:MAX_KEY_LENGTH], risk)] += count
    return counts


def _regroup(counts: _NumberedCounts, divisor: int, offset: int = 0) -> _NumberedCounts:
    """Numbered counts summed into coarser buckets: bucket number ``(n + offset) // divisor``."""
    coarser: _NumberedCounts = Counter()
    for (number, org, dimension, key, risk), count in counts.items():
        coarser[((number + offset) // divisor, org, dimension, key, risk)] += count
    return coarser


def _rows(counts: _NumberedCounts, step: timedelta, first: datetime = _EPOCH) -> list[Row]:
    """Rows sorted by key (so concurrent writers lock rows in one order), bucket numbers as UTC datetimes.

    Bucket ``n`` starts at ``first + n * step``.
    """
    starts: dict[int, datetime] = {}
    rows = []
    for (number, org, dimension, key, risk), count in sorted(counts.items()):
        start = starts.get(number)
        if start is None:
            start = starts[number] = first + number * step
        rows.append((start, org, dimension, key, risk, count))
    return rows


RollupTable = type[LogHourlyCount] | type[LogDailyCount] | type[LogWeeklyCount]
#: Hourly, daily, weekly: always in this order, so concurrent writers lock rows in one order.
_TABLES: tuple[RollupTable, ...] = (LogHourlyCount, LogDailyCount, LogWeeklyCount)

# PostgreSQL: each table's rows travel as six arrays in one statement, which costs a fraction of
# the Python and protocol work of thousands of parameter sets (this runs in every ingest batch).
# Sent on the asyncpg connection itself: asyncpg prepares it once per connection and caches it.
_UNNEST_UPSERTS = {
    table: f"""
INSERT INTO {table.__tablename__} (bucket_start, organization_id, dimension, key, risk_level, event_count)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[])
ON CONFLICT (bucket_start, organization_id, dimension, key, risk_level)
DO UPDATE SET event_count = {table.__tablename__}.event_count + excluded.event_count
"""
    for table in _TABLES
}


async def _upsert_postgresql(session: AsyncSession, rows_by_table: list[list[Row]]) -> None:
    """One unnest upsert per table, on the asyncpg connection of the session's transaction."""
    connection = await session.connection()
    raw = (await connection.get_raw_connection()).driver_connection
    assert raw is not None
    for table, rows in zip(_TABLES, rows_by_table, strict=True):
        await raw.execute(_UNNEST_UPSERTS[table], *map(list, zip(*rows, strict=True)))


async def _upsert_sqlite(session: AsyncSession, rows_by_table: list[list[Row]]) -> None:
    """One multi-row ``INSERT … ON CONFLICT DO UPDATE`` per table."""
    names = [*ROLLUP_KEY, "event_count"]
    for table, rows in zip(_TABLES, rows_by_table, strict=True):
        statement = sqlite_insert(table)
        statement = statement.on_conflict_do_update(
            index_elements=ROLLUP_KEY,
            set_={"event_count": table.event_count + statement.excluded.event_count},
        )
        await session.execute(statement, [dict(zip(names, row, strict=True)) for row in rows])


async def add_events(*, session: AsyncSession, events: Iterable[Mapping[str, Any]]) -> None:
    """Add the given (newly stored) events to the hourly, daily and weekly counts, in the caller's transaction."""
    hourly = _count_by_hour_number(events)
    if not hourly:
        return
    daily = _regroup(hourly, 24)
    weekly = _regroup(daily, 7, _EPOCH_WEEKDAY)  # week n starts on day 7n - 3, a Monday
    # Sorted rows, tables always in the same order, take row locks in one order: concurrent
    # writers wait for each other but cannot deadlock.
    rows_by_table = [_rows(hourly, _HOUR), _rows(daily, _DAY), _rows(weekly, _WEEK, _FIRST_MONDAY)]
    if session.get_bind().dialect.name == "postgresql":
        await _upsert_postgresql(session, rows_by_table)
    else:
        await _upsert_sqlite(session, rows_by_table)
