"""An event is identified by (organization_id, id): the same id from another organisation is another event."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db import logs
from db.event_schema import Hello, validate_log
from db.events import StoredBatch, store_events
from db.models import LogEntry, LogHourlyCount
from simulation.events import EventGenerator

ACME = Hello("acme", "t", "dev-1", "ann@acme.example", "browser", "1.0")
GLOBEX = Hello("globex", "t", "dev-2", "bob@globex.example", "browser", "1.0")


def event(hello: Hello, event_id: uuid.UUID, seed: int = 3) -> dict[str, Any]:
    message = EventGenerator(seed=seed).event()
    message["id"] = str(event_id)
    return validate_log(message, hello=hello)


async def stored_by_organisation(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(
        select(LogEntry.organization_id, func.count()).group_by(LogEntry.organization_id)
    )
    return {org: count for org, count in rows.all()}


async def risk_total(session: AsyncSession, organization_id: str) -> int:
    total = await session.scalar(
        select(func.sum(LogHourlyCount.event_count)).where(
            LogHourlyCount.dimension == "risk", LogHourlyCount.organization_id == organization_id
        )
    )
    return int(total or 0)


async def test_same_event_id_from_another_organisation_is_stored_for_it(session: AsyncSession) -> None:
    shared = uuid.uuid4()
    assert await store_events(session=session, events=[event(ACME, shared)]) == StoredBatch(1, 1)
    await session.commit()
    assert await store_events(session=session, events=[event(GLOBEX, shared)]) == StoredBatch(1, 1)
    await session.commit()
    assert await stored_by_organisation(session) == {"acme": 1, "globex": 1}
    assert (await risk_total(session, "acme"), await risk_total(session, "globex")) == (1, 1)


async def test_one_batch_holding_the_same_id_for_two_organisations_stores_both(session: AsyncSession) -> None:
    shared = uuid.uuid4()
    batch = [event(ACME, shared), event(GLOBEX, shared), event(ACME, shared)]
    assert await store_events(session=session, events=batch) == StoredBatch(events=2, inserted=2)
    await session.commit()
    assert await stored_by_organisation(session) == {"acme": 1, "globex": 1}


async def test_resend_alongside_another_organisations_copy_stores_only_the_new_one(
    session: AsyncSession,
) -> None:
    # On PostgreSQL the second batch's COPY meets acme's row: the staging path must insert globex's.
    shared, other = uuid.uuid4(), uuid.uuid4()
    await store_events(session=session, events=[event(ACME, shared)])
    await session.commit()
    batch = [event(ACME, shared), event(GLOBEX, shared), event(GLOBEX, other)]
    assert await store_events(session=session, events=batch) == StoredBatch(events=3, inserted=2)
    await session.commit()
    assert await stored_by_organisation(session) == {"acme": 1, "globex": 2}


async def test_rows_may_carry_keys_besides_the_columns(session: AsyncSession) -> None:
    row = {**event(ACME, uuid.uuid4()), "ack_id": "ABC"}
    assert await store_events(session=session, events=[row]) == StoredBatch(1, 1)


async def test_log_page_of_several_risk_levels_shows_each_organisations_copy_once(
    session: AsyncSession,
) -> None:
    shared = uuid.uuid4()
    rows = [event(ACME, shared), event(GLOBEX, shared)]
    for row in rows:
        row["risk_level"] = "red"
    await store_events(session=session, events=rows)
    await session.commit()
    # Two risk levels: the page is a UNION of per-level branches joined back to log_entries.
    page = await logs.page(session=session, filters=logs.LogFilter(risk_levels=frozenset({"red", "amber"})))
    assert sorted((row.organization_id, row.id) for row in page.rows) == [
        ("acme", shared),
        ("globex", shared),
    ]
