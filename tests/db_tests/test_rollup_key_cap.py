"""The database's cap on distinct rollup keys per organisation, bucket and dimension: a flood of new names
adds one row, known keys keep their name, totals stay exact, whoever wrote the rows."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db import overview, rollups
from db.events import store_events
from db.models import AuditEvent, LogDailyCount, LogHourlyCount, LogWeeklyCount
from db.rights import Actor
from tests.db_tests.rollup_rows import NEAR_WEEK_EDGE, insert_rows, log_row

#: Half an hour before the hour, the day and the week end: every row of a test in one bucket of each.
MOMENT = NEAR_WEEK_EDGE
OVERFLOW = rollups.OVERFLOW_KEY


def rows(tools: list[str], **fields: Any) -> list[dict[str, Any]]:
    return [log_row(MOMENT, tool_name=tool, **fields) for tool in tools]


async def cap_at(session: AsyncSession, max_keys: int) -> None:
    await rollups.set_key_cap(session=session, actor=Actor.cli(), max_keys=max_keys)
    await session.commit()


async def key_counts(session: AsyncSession, table: Any, dimension: str = "tool") -> dict[str, int]:
    result = await session.execute(
        select(table.key, func.sum(table.event_count)).where(table.dimension == dimension).group_by(table.key)
    )
    return {key: int(count) for key, count in result.all()}


async def test_new_keys_past_the_cap_are_counted_under_the_overflow_key(session: AsyncSession) -> None:
    await cap_at(session, 3)
    await insert_rows(session, rows([f"tool-{n:02d}" for n in range(10)]))
    await session.commit()
    for table in (LogHourlyCount, LogDailyCount, LogWeeklyCount):
        counts = await key_counts(session, table)
        assert counts == {"tool-00": 1, "tool-01": 1, "tool-02": 1, OVERFLOW: 7}, table.__tablename__


async def test_stored_keys_keep_their_name_once_the_bucket_is_full(session: AsyncSession) -> None:
    await cap_at(session, 3)
    await insert_rows(session, rows(["a", "b", "c"]))
    await session.commit()
    await insert_rows(session, rows(["a", "d", "e", "a"]))
    await session.commit()
    assert await key_counts(session, LogHourlyCount) == {"a": 3, "b": 1, "c": 1, OVERFLOW: 2}


async def test_the_cap_counts_keys_another_writer_stored(session: AsyncSession) -> None:
    # The ingest path stored a and b; a plain INSERT then meets them in the bucket.
    await store_events(session=session, events=rows(["a", "b"]))
    await session.commit()
    await cap_at(session, 3)
    await insert_rows(session, rows(["c", "d"]))
    await session.commit()
    assert await key_counts(session, LogHourlyCount) == {"a": 1, "b": 1, "c": 1, OVERFLOW: 1}


async def test_the_cap_is_per_organisation_and_dimension(session: AsyncSession) -> None:
    await cap_at(session, 1)
    await insert_rows(session, rows(["a"], entities=["EMAIL"]) + rows(["b"], entities=["IBAN"]))
    await insert_rows(session, rows(["c"], organization_id="globex", user_id="bob"))
    await session.commit()
    assert await key_counts(session, LogHourlyCount) == {"a": 1, OVERFLOW: 1, "c": 1}
    assert await key_counts(session, LogHourlyCount, "user") == {"ann": 2, "bob": 1}
    assert await key_counts(session, LogHourlyCount, "entity") == {"EMAIL": 1, OVERFLOW: 1}


async def test_one_rows_entity_types_past_the_cap_are_counted_under_the_overflow_key(
    session: AsyncSession,
) -> None:
    await cap_at(session, 1)
    await insert_rows(session, rows(["a", "a"], entities=["EMAIL", "IBAN", "PHONE"]))
    await session.commit()
    assert await key_counts(session, LogHourlyCount, "entity") == {"EMAIL": 2, OVERFLOW: 4}


async def test_a_rows_known_entity_types_take_no_place_from_its_new_ones(session: AsyncSession) -> None:
    await cap_at(session, 2)
    await insert_rows(session, rows(["a"], entities=["EMAIL"]))
    await insert_rows(session, rows(["a"], entities=["PHONE", "EMAIL", "IBAN"]))
    await session.commit()
    # EMAIL was held; of the two new ones the first in key order takes the last place.
    for table in (LogHourlyCount, LogDailyCount, LogWeeklyCount):
        counts = await key_counts(session, table, "entity")
        assert counts == {"EMAIL": 2, "IBAN": 1, OVERFLOW: 1}, table.__tablename__


async def test_totals_stay_exact_past_the_cap(session: AsyncSession) -> None:
    await cap_at(session, 5)
    tools = [f"t{n:02d}" for n in range(50)]
    await insert_rows(session, rows(tools) + rows(tools))
    await session.commit()
    counts = await key_counts(session, LogHourlyCount)
    assert len(counts) == 6
    assert sum(counts.values()) == 100
    assert await key_counts(session, LogHourlyCount, "risk") == {"": 100}


async def test_overview_names_the_overflow_key_other(session: AsyncSession) -> None:
    await cap_at(session, 1)
    await insert_rows(session, rows(["a", "b", "c", "c"]))
    await session.commit()
    top = await overview.key_sums(session=session, dimension="tool", start=rollups.hour_of(MOMENT))
    assert top == [(overview.OVERFLOW_LABEL, 3), ("a", 1)]


async def test_changing_the_cap_is_audited_and_a_cap_below_one_is_refused(session: AsyncSession) -> None:
    assert await rollups.key_cap(session=session) == rollups.DEFAULT_MAX_KEYS
    await rollups.set_key_cap(session=session, actor=Actor(name="carol", source="cli"), max_keys=20)
    await session.commit()
    assert await rollups.key_cap(session=session) == 20
    audit = (await session.scalars(select(AuditEvent))).all()
    assert [(a.action, a.actor, a.changes) for a in audit] == [
        ("rollups.cap", "carol", {"max_keys_per_bucket": {"before": rollups.DEFAULT_MAX_KEYS, "after": 20}})
    ]
    with pytest.raises(ValueError, match="at least 1"):
        await rollups.set_key_cap(session=session, actor=Actor.cli(), max_keys=0)
