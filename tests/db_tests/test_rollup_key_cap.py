"""The cap on distinct rollup keys per organisation, bucket and dimension: a flood of new names adds one
row."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db import overview, rollups
from db.models import LogDailyCount, LogHourlyCount, LogWeeklyCount

MOMENT = datetime(2026, 11, 24, 10, 15, tzinfo=UTC)


@pytest.fixture
def org() -> str:
    # A fresh organisation per test: the known-keys memory is per process and outlives emptied tables.
    return f"org-{uuid.uuid4().hex[:8]}"


def events(org: str, tools: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "timestamp": MOMENT,
            "organization_id": org,
            "risk_level": "green",
            "tool_name": tool,
            "user_id": "ann",
            "detected_entity_types": [],
        }
        for tool in tools
    ]


async def tool_counts(session: AsyncSession, table: Any, org: str) -> dict[str, int]:
    rows = await session.execute(
        select(table.key, func.sum(table.event_count))
        .where(table.organization_id == org, table.dimension == "tool")
        .group_by(table.key)
    )
    return {key: int(count) for key, count in rows.all()}


async def test_new_keys_past_the_cap_are_counted_under_the_overflow_key(
    session: AsyncSession, org: str
) -> None:
    tools = [f"tool-{n:02d}" for n in range(10)]
    await rollups.add_events(session=session, events=events(org, tools), max_keys=3)
    await session.commit()
    for table in (LogHourlyCount, LogDailyCount, LogWeeklyCount):
        counts = await tool_counts(session, table, org)
        assert counts == {"tool-00": 1, "tool-01": 1, "tool-02": 1, rollups.OVERFLOW_KEY: 7}, table


async def test_stored_keys_keep_their_name_once_the_bucket_is_full(session: AsyncSession, org: str) -> None:
    await rollups.add_events(session=session, events=events(org, ["a", "b", "c"]), max_keys=3)
    await session.commit()
    await rollups.add_events(session=session, events=events(org, ["a", "d", "e", "a"]), max_keys=3)
    await session.commit()
    counts = await tool_counts(session, LogHourlyCount, org)
    assert counts == {"a": 3, "b": 1, "c": 1, rollups.OVERFLOW_KEY: 2}


async def test_cap_counts_keys_this_process_has_not_seen(session: AsyncSession, org: str) -> None:
    # Another writer stored the bucket's keys: they are read from the database before admitting new ones.
    await rollups.add_events(session=session, events=events(org, ["a", "b"]), max_keys=10)
    await session.commit()
    rollups.forget_known_keys()
    await rollups.add_events(session=session, events=events(org, ["c", "d"]), max_keys=3)
    await session.commit()
    assert await tool_counts(session, LogHourlyCount, org) == {
        "a": 1,
        "b": 1,
        "c": 1,
        rollups.OVERFLOW_KEY: 1,
    }


async def test_totals_stay_exact_past_the_cap(session: AsyncSession, org: str) -> None:
    tools = [f"t{n}" for n in range(50)]
    await rollups.add_events(session=session, events=events(org, tools) * 2, max_keys=5)
    await session.commit()
    counts = await tool_counts(session, LogHourlyCount, org)
    assert len(counts) == 6
    assert sum(counts.values()) == 100


async def test_overview_names_the_overflow_key_other(session: AsyncSession, org: str) -> None:
    await rollups.add_events(session=session, events=events(org, ["a", "b", "c", "c"]), max_keys=1)
    await session.commit()
    top = await overview.key_sums(
        session=session, dimension="tool", start=MOMENT.replace(minute=0), organization=org
    )
    assert top == [(overview.OVERFLOW_LABEL, 3), ("a", 1)]
