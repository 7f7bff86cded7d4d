"""The database's counting puts each row in its UTC hour, UTC day and ISO week (from Monday, UTC), however
its timestamp was written: offsets, naive UTC, long keys, many hours, through the ingest path or plain SQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from db.events import store_events
from tests.db_tests.rollup_rows import NEAR_WEEK_EDGE, ROLLUPS, expected_counts, insert_rows, stored_counts

LONG = "k" * 300
AWARE = (UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-5)))
NAIVE = (None,)  # naive is taken to be UTC


def event(moment: datetime, index: int, offsets: tuple[timezone | None, ...]) -> dict[str, Any]:
    """An event at ``moment`` in one of ``offsets`` (None: naive), its keys varied by ``index``."""
    tz = offsets[index % len(offsets)]
    entities = [["EMAIL", "EMAIL"], [LONG + "a", LONG + "b"], [], ["IBAN"]][index % 4]
    return {
        "id": uuid.uuid4(),
        "timestamp": moment.replace(tzinfo=None) if tz is None else moment.astimezone(tz),
        "device_id": "dev-1",
        "organization_id": ("acme", "globex")[index % 2],
        "risk_level": ("green", "amber", "red")[index % 3],
        "tool_name": ("ChatGPT", "Claude", "c" * 100)[index % 3],
        "tool_type": "web",
        "user_id": ("ann", "bob", "u" * 255)[index % 3],
        "prompt_length": 1,
        "detected_entity_types": entities,
        "entity_count": len(entities),
        "was_sanitized": False,
        "log_metadata": {},
    }


def batch(minutes: range, offsets: tuple[timezone | None, ...]) -> list[dict[str, Any]]:
    return [event(NEAR_WEEK_EDGE + timedelta(minutes=m), index, offsets) for index, m in enumerate(minutes)]


def in_utc(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events as the plain count reads them: timestamps as UTC instants."""
    return [
        {**e, "timestamp": e["timestamp"].replace(tzinfo=e["timestamp"].tzinfo or UTC).astimezone(UTC)}
        for e in events
    ]


CASES = pytest.mark.parametrize(
    ("minutes", "offsets"),
    [(range(29), AWARE), (range(29), NAIVE), (range(-60 * 24 * 9, 60 * 24 * 9, 97), AWARE + NAIVE)],
    ids=["one-utc-hour-in-offsets", "one-utc-hour-naive", "hours-days-and-weeks-apart-naive-and-aware-mixed"],
)


@CASES
async def test_ingest_path_counts_every_event_in_its_utc_hour_day_and_week(
    session: AsyncSession, minutes: range, offsets: tuple[timezone | None, ...]
) -> None:
    events = batch(minutes, offsets)
    again = [{**e, "id": uuid.uuid4()} for e in events[::2]]
    await store_events(session=session, events=events)
    await store_events(session=session, events=again)
    await session.commit()
    for table in ROLLUPS:
        expected = expected_counts(in_utc(events), table) + expected_counts(in_utc(again), table)
        assert await stored_counts(session, table) == expected, table.__tablename__


@CASES
async def test_plain_sql_counts_every_row_in_its_utc_hour_day_and_week(
    session: AsyncSession, minutes: range, offsets: tuple[timezone | None, ...]
) -> None:
    rows = [{**e, "created_at": NEAR_WEEK_EDGE} for e in in_utc(batch(minutes, offsets))]
    await insert_rows(session, rows)
    await session.commit()
    for table in ROLLUPS:
        assert await stored_counts(session, table) == expected_counts(rows, table), table.__tablename__
