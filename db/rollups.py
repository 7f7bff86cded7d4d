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

Distinct keys are capped per organisation, bucket and dimension (``tool``,
``user``, ``entity``): past ``max_keys`` (ROLLUP_MAX_KEYS_PER_BUCKET) a new
key's events are counted under :data:`OVERFLOW_KEY`, so an agent that invents a
tool name per event adds one row, not thousands. Totals stay exact; only the
names past the cap are lost. Which keys a bucket holds is remembered per
process (:class:`_KnownKeys`) and read from the database only when a batch
brings a key the process has not seen in that bucket and the bucket is not
known to be full: in steady state (the same tools every hour) that is once per
bucket. The cap is soft by what the process cannot see: each writer process
(and a batch whose transaction rolled back) may add up to ``max_keys`` keys
that another does not know of, and a full bucket stays full for a process even
if the scrub folds keys away.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession

from db.base import as_utc
from db.identifiers import MAX_ROLLUP_KEY_CHARS
from db.models import LogDailyCount, LogHourlyCount, LogWeeklyCount
from db.settings import IngestLimits

DIMENSIONS = ("risk", "tool", "user", "entity")
MAX_KEY_LENGTH = MAX_ROLLUP_KEY_CHARS
#: The dimensions whose keys come from agents, so their number is capped per bucket.
CAPPED_DIMENSIONS = frozenset({"tool", "user", "entity"})
#: The key that counts the events of keys past the cap: empty, which no identifier can be
#: (the risk dimension's one key is empty too). The overview shows it as "(other)".
OVERFLOW_KEY = ""


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
    """The events grouped by hour number; a batch usually falls in one hour, found without a per-event
    step."""
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


# --- the cap on distinct keys ------------------------------------------------------------------------

#: One bucket of one dimension of one organisation: (bucket start, organisation, dimension).
_Group = tuple[datetime, str, str]


class _KnownKeys:
    """Keys known to be stored, per (database, table, bucket, organisation, dimension), in this process.

    Least recently used buckets are forgotten past :attr:`max_keys` keys in all
    (a forgotten bucket is read again when next touched), so a flood of keys
    cannot grow the process.
    """

    max_keys = 200_000

    def __init__(self) -> None:
        self._buckets: OrderedDict[tuple[URL, str, _Group], set[str]] = OrderedDict()
        self._total = 0

    def get(self, key: tuple[URL, str, _Group]) -> set[str] | None:
        keys = self._buckets.get(key)
        if keys is not None:
            self._buckets.move_to_end(key)
        return keys

    def put(self, key: tuple[URL, str, _Group], keys: set[str]) -> None:
        self._total += len(keys) - len(self._buckets.pop(key, ()))
        self._buckets[key] = keys
        while self._total > self.max_keys and len(self._buckets) > 1:
            _, forgotten = self._buckets.popitem(last=False)
            self._total -= len(forgotten)

    def clear(self) -> None:
        self._buckets.clear()
        self._total = 0


_known_keys = _KnownKeys()


def forget_known_keys() -> None:
    """Forget which keys each bucket holds (after the rollups were changed behind this process's back)."""
    _known_keys.clear()


async def _stored_keys(
    session: AsyncSession, table: RollupTable, groups: list[_Group]
) -> dict[_Group, set[str]]:
    """The keys stored in these buckets (overflow key left out): one index range of the primary key each."""
    statement = (
        select(table.bucket_start, table.organization_id, table.dimension, table.key)
        .distinct()
        .where(tuple_(table.bucket_start, table.organization_id, table.dimension).in_(groups))
    )
    stored: dict[_Group, set[str]] = {group: set() for group in groups}
    for start, org, dimension, key in (await session.execute(statement)).all():
        if key != OVERFLOW_KEY:
            stored.setdefault((as_utc(start), org, dimension), set()).add(key)
    return stored


async def _cap_keys(session: AsyncSession, table: RollupTable, rows: list[Row], max_keys: int) -> list[Row]:
    """``rows`` with the keys past the cap of their bucket replaced by the overflow key (and merged)."""
    batch_keys: dict[_Group, set[str]] = {}
    for start, org, dimension, key, _, _ in rows:
        if dimension in CAPPED_DIMENSIONS and key != OVERFLOW_KEY:
            batch_keys.setdefault((start, org, dimension), set()).add(key)
    database = session.get_bind().engine.url
    name = table.__tablename__
    to_read = []
    for group, keys in batch_keys.items():
        known = _known_keys.get((database, name, group))
        # Read the bucket only if the batch brings a key this process has not seen there and
        # the bucket may still have room: the steady state and a flood into a full bucket read nothing.
        if known is None or (len(known) < max_keys and not keys <= known):
            to_read.append(group)
    stored = await _stored_keys(session, table, to_read) if to_read else {}
    overflowing: dict[_Group, set[str]] = {}
    for group, keys in batch_keys.items():
        known = _known_keys.get((database, name, group)) or set()
        if group in stored:
            known = known | stored[group]
        new = keys - known
        if new:
            admitted = sorted(new)[: max(max_keys - len(known), 0)]
            known = known | set(admitted)
            if len(admitted) < len(new):
                overflowing[group] = new.difference(admitted)
        if new or group in stored:
            _known_keys.put((database, name, group), known)
    if not overflowing:
        return rows
    merged: Counter[tuple[datetime, str, str, str, str]] = Counter()
    for start, org, dimension, key, risk, count in rows:
        if key in overflowing.get((start, org, dimension), ()):
            key = OVERFLOW_KEY
        merged[(start, org, dimension, key, risk)] += count
    return [(*row_key, count) for row_key, count in sorted(merged.items())]


async def add_events(
    *,
    session: AsyncSession,
    events: Iterable[Mapping[str, Any]],
    max_keys: int = IngestLimits.rollup_max_keys_per_bucket,
) -> None:
    """Add the given (newly stored) events to the hourly, daily and weekly counts, in the caller's
    transaction.

    At most ``max_keys`` distinct keys per organisation, bucket and capped dimension;
    the events of further keys are counted under :data:`OVERFLOW_KEY`.
    """
    hourly = _count_by_hour_number(events)
    if not hourly:
        return
    daily = _regroup(hourly, 24)
    weekly = _regroup(daily, 7, _EPOCH_WEEKDAY)  # week n starts on day 7n - 3, a Monday
    # Sorted rows, tables always in the same order, take row locks in one order: concurrent
    # writers wait for each other but cannot deadlock.
    rows_by_table = [
        await _cap_keys(session, table, rows, max_keys)
        for table, rows in zip(
            _TABLES,
            [_rows(hourly, _HOUR), _rows(daily, _DAY), _rows(weekly, _WEEK, _FIRST_MONDAY)],
            strict=True,
        )
    ]
    if session.get_bind().dialect.name == "postgresql":
        await _upsert_postgresql(session, rows_by_table)
    else:
        await _upsert_sqlite(session, rows_by_table)
