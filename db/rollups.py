"""Hourly, daily and weekly pre-aggregated counts of stored events, kept by the database itself.

Every row inserted into ``log_entries``, by the ingest server, a ``COPY``, a
restore or plain SQL, is added once to its hour in ``log_hourly_counts``, its
UTC day in ``log_daily_counts`` and its ISO week (from Monday, UTC) in
``log_weekly_counts`` by a trigger (migration 0015): a statement trigger with a
transition table on PostgreSQL, a row trigger on SQLite. All three outlive
retention, so history older than the raw logs stays visible.

Distinct keys are capped per organisation, bucket and dimension (``tool``,
``user``, ``entity``) at ``rollup_settings.max_keys_per_bucket``: past it a new
key's events are counted under :data:`OVERFLOW_KEY`, so an agent that invents a
tool name per event adds one row, not thousands. Totals stay exact; only the
names past the cap are lost. Concurrent writers may each admit the last free
places, so the cap is soft by a batch.

An UPDATE of a counted column is refused. Work that moves or repairs rows
(partition maintenance, a migration copy, the scrub) runs inside
:func:`counting_paused` and keeps the counts right itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.base import as_utc
from db.identifiers import MAX_ROLLUP_KEY_CHARS
from db.models import LogDailyCount, LogHourlyCount, LogWeeklyCount, RollupSettings

DIMENSIONS = ("risk", "tool", "user", "entity")
MAX_KEY_LENGTH = MAX_ROLLUP_KEY_CHARS
#: The dimensions whose keys come from agents, so their number is capped per bucket.
CAPPED_DIMENSIONS = frozenset({"tool", "user", "entity"})
#: The key that counts the events of keys past the cap: empty, which no identifier can be
#: (the risk dimension's one key is empty too). The overview shows it as "(other)".
OVERFLOW_KEY = ""
#: The cap a database starts with (migration 0015).
DEFAULT_MAX_KEYS = 10_000


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


RollupTable = type[LogHourlyCount] | type[LogDailyCount] | type[LogWeeklyCount]
#: Hourly, daily, weekly: always in this order, so concurrent writers lock rows in one order.
TABLES: tuple[RollupTable, ...] = (LogHourlyCount, LogDailyCount, LogWeeklyCount)


@asynccontextmanager
async def counting_paused(session: AsyncSession) -> AsyncIterator[None]:
    """Inside this block, rows the session inserts are not counted and counted columns may be updated.

    For work that moves or repairs rows and keeps the counts right itself. It
    holds for the session's current transaction only: on PostgreSQL a
    transaction-local setting; on SQLite a switch in ``rollup_settings`` that is
    turned back on before the block ends (SQLite has one writer, so no other
    connection sees it off).
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT set_config('aifw.counting', 'off', true)"))
        try:
            yield
        finally:
            await session.execute(text("SELECT set_config('aifw.counting', 'on', true)"))
        return
    await session.execute(update(RollupSettings).where(RollupSettings.id == 1).values(counting=False))
    try:
        yield
    finally:
        await session.execute(update(RollupSettings).where(RollupSettings.id == 1).values(counting=True))


async def key_cap(*, session: AsyncSession) -> int:
    """The distinct keys a bucket of one dimension of one organisation holds before the overflow key."""
    value = await session.scalar(select(RollupSettings.max_keys_per_bucket).where(RollupSettings.id == 1))
    return int(value) if value is not None else DEFAULT_MAX_KEYS


async def set_key_cap(*, session: AsyncSession, max_keys: int) -> None:
    """Change the cap on distinct keys per bucket (in the caller's transaction)."""
    if max_keys < 1:
        raise ValueError("the cap on distinct keys must be at least 1")
    await session.execute(
        update(RollupSettings).where(RollupSettings.id == 1).values(max_keys_per_bucket=max_keys)
    )
