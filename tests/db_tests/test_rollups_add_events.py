"""rollups.add_events on batches the ingest fast path does not see: offsets, naive UTC, long keys, many
hours."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db import rollups
from db.models import LogDailyCount, LogHourlyCount, LogWeeklyCount

BUCKET_OF = {LogHourlyCount: rollups.hour_of, LogDailyCount: rollups.day_of, LogWeeklyCount: rollups.week_of}
#: Sunday 23:30 UTC: an hour, a day and an ISO week end half an hour later.
NEAR_WEEK_EDGE = datetime(2026, 11, 22, 23, 30, tzinfo=UTC)
LONG = "k" * 300
AWARE = (UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-5)))
NAIVE = (None,)  # naive is taken to be UTC


def event(moment: datetime, index: int, offsets: tuple[timezone | None, ...]) -> dict[str, Any]:
    """An event at ``moment`` in one of ``offsets`` (None: naive), its keys varied by ``index``."""
    tz = offsets[index % len(offsets)]
    entities = [["EMAIL", "EMAIL"], [LONG + "a", LONG + "b"], [], ["IBAN"]][index % 4]
    return {
        "timestamp": moment.replace(tzinfo=None) if tz is None else moment.astimezone(tz),
        "organization_id": ("acme", "globex")[index % 2],
        "risk_level": ("green", "amber", "red")[index % 3],
        "tool_name": (LONG + "x", LONG + "y", "ChatGPT")[index % 3],
        "user_id": ("ann", "bob", LONG)[index % 3],
        "detected_entity_types": entities or None,
    }


def batch(minutes: range, offsets: tuple[timezone | None, ...]) -> list[dict[str, Any]]:
    return [event(NEAR_WEEK_EDGE + timedelta(minutes=m), index, offsets) for index, m in enumerate(minutes)]


def expected(events: list[dict[str, Any]], table: Any) -> Counter[tuple[Any, ...]]:
    """Counted the plain way: each event once per dimension, entity types once each, keys cut to 255."""
    bucket_of = BUCKET_OF[table]
    counts: Counter[tuple[Any, ...]] = Counter()
    for e in events:
        bucket = bucket_of(e["timestamp"])
        head = (bucket, e["organization_id"])
        counts[(*head, "risk", "", e["risk_level"])] += 1
        counts[(*head, "tool", e["tool_name"][:255], e["risk_level"])] += 1
        counts[(*head, "user", e["user_id"][:255], e["risk_level"])] += 1
        for entity in set(e["detected_entity_types"] or ()):
            counts[(*head, "entity", entity[:255], e["risk_level"])] += 1
    return counts


async def stored(session: AsyncSession, table: Any) -> Counter[tuple[Any, ...]]:
    rows = await session.execute(
        select(
            table.bucket_start,
            table.organization_id,
            table.dimension,
            table.key,
            table.risk_level,
            table.event_count,
        )
    )
    return Counter({tuple(row[:5]): row[5] for row in rows.all()})


@pytest.mark.parametrize(
    ("minutes", "offsets"),
    [(range(29), AWARE), (range(29), NAIVE), (range(-60 * 24 * 9, 60 * 24 * 9, 97), AWARE + NAIVE)],
    ids=["one-utc-hour-in-offsets", "one-utc-hour-naive", "hours-days-and-weeks-apart-naive-and-aware-mixed"],
)
async def test_rollups_count_every_event_in_its_utc_hour_day_and_week(
    session: AsyncSession, minutes: range, offsets: tuple[timezone | None, ...]
) -> None:
    events = batch(minutes, offsets)
    await rollups.add_events(session=session, events=events)
    await rollups.add_events(session=session, events=events[::2])
    await session.commit()
    for table in BUCKET_OF:
        assert await stored(session, table) == expected(events, table) + expected(events[::2], table)
