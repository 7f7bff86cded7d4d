"""An event is identified by (organization_id, id, timestamp): a resend repeats all three and is stored once;
the same id from another organisation, or with another timestamp, is another event."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db import logs
from db.base import utcnow
from db.event_schema import Hello, validate_log
from db.events import StoredBatch, store_events
from db.models import LogEntry, LogHourlyCount
from simulation.events import EventGenerator

ACME = Hello("acme", "t", "dev-1", "ann@acme.example", "browser", "1.0")
GLOBEX = Hello("globex", "t", "dev-2", "bob@globex.example", "browser", "1.0")
#: When the events of these tests happened: a resend repeats it (the generator would take the clock).
WHEN = utcnow().replace(microsecond=0) - timedelta(hours=1)


def event(hello: Hello, event_id: uuid.UUID, seed: int = 3, *, when: datetime = WHEN) -> dict[str, Any]:
    message = EventGenerator(seed=seed).event(timestamp=when)
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
    acme = event(ACME, shared)
    batch = [acme, event(GLOBEX, shared), dict(acme)]  # a resend repeats the id and the timestamp
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


async def test_resend_repeating_id_and_timestamp_is_stored_and_counted_once(session: AsyncSession) -> None:
    sent = uuid.uuid4()
    assert await store_events(session=session, events=[event(ACME, sent)]) == StoredBatch(1, 1)
    await session.commit()
    assert await store_events(session=session, events=[event(ACME, sent)]) == StoredBatch(1, 0)
    await session.commit()
    assert await stored_by_organisation(session) == {"acme": 1}
    assert await risk_total(session, "acme") == 1


async def test_same_id_with_another_timestamp_is_another_event(session: AsyncSession) -> None:
    # The seed's key was the id alone; the partition key must be in every unique key (docs/protocol.md).
    reused = uuid.uuid4()
    first, second = event(ACME, reused), event(ACME, reused, when=WHEN + timedelta(seconds=1))
    assert await store_events(session=session, events=[first]) == StoredBatch(1, 1)
    await session.commit()
    assert await store_events(session=session, events=[second, first]) == StoredBatch(2, 1)
    await session.commit()
    assert await stored_by_organisation(session) == {"acme": 2}
    assert await risk_total(session, "acme") == 2


async def test_the_same_instant_written_in_another_zone_is_the_same_event(session: AsyncSession) -> None:
    # The timestamp is compared as the instant it names: +01:00 at 11:00 is 10:00Z.
    sent = uuid.uuid4()
    message = EventGenerator(seed=3).event(timestamp=WHEN)
    message["id"] = str(sent)
    shifted = {**message, "timestamp": (WHEN + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S+01:00")}
    assert await store_events(session=session, events=[validate_log(message, hello=ACME)]) == StoredBatch(
        1, 1
    )
    await session.commit()
    assert await store_events(session=session, events=[validate_log(shifted, hello=ACME)]) == StoredBatch(
        1, 0
    )
    await session.commit()
    assert await stored_by_organisation(session) == {"acme": 1}


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
