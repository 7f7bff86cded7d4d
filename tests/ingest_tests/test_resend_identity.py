"""Through a real server: an event is identified by (organization_id, id, timestamp). A resend repeats the
id and the timestamp and is acknowledged again but stored and counted once; the same id with another
timestamp is another event (docs/protocol.md, event identity)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from db.base import utcnow
from simulation.events import EventGenerator
from tests.support.database import count_events, rollup_total, stored_ids
from tests.support.ingest import RawFactory, ServerHandle


def line(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event) + b"\n"


async def test_resent_event_after_reconnect_is_acknowledged_and_stored_once(
    server: ServerHandle, raw_factory: RawFactory, engine: AsyncEngine, generator: EventGenerator
) -> None:
    event = generator.event()
    for _ in range(2):  # the same line on a new connection, as an agent resends what it was not sure of
        client = await raw_factory(server.port)
        await client.write(line(event))
        assert await client.receive() == {"type": "ack", "ids": [event["id"]]}
        await client.close()
    assert await stored_ids(engine) == [event["id"]]
    assert await rollup_total(engine) == 1
    assert (server.stats.events_acknowledged, server.stats.events_stored) == (2, 1)


async def test_same_id_with_another_timestamp_is_stored_as_another_event(
    server: ServerHandle, raw_factory: RawFactory, engine: AsyncEngine, generator: EventGenerator
) -> None:
    when = utcnow() - timedelta(minutes=5)
    first = generator.event(timestamp=when)
    later = {**first, "timestamp": (when + timedelta(seconds=1)).isoformat()}
    client = await raw_factory(server.port)
    for event in (first, later):
        await client.write(line(event))
        assert await client.receive() == {"type": "ack", "ids": [first["id"]]}
    assert await stored_ids(engine) == [first["id"]] * 2
    assert await rollup_total(engine) == 2


async def test_a_batch_of_a_resend_and_a_new_event_stores_the_new_one_once(
    server: ServerHandle, raw_factory: RawFactory, engine: AsyncEngine, generator: EventGenerator
) -> None:
    # On PostgreSQL the batch's COPY straight into log_entries meets the stored row (UniqueViolation):
    # its savepoint is rolled back and the staging path inserts only the new event.
    stored, new = generator.event(), generator.event()
    client = await raw_factory(server.port)
    await client.write(line(stored))
    assert await client.receive() == {"type": "ack", "ids": [stored["id"]]}
    batches = server.stats.batches
    await client.write(line(stored) + line(new))  # one write: one read, one batch
    assert await client.receive() == {"type": "ack", "ids": [stored["id"], new["id"]]}
    assert server.stats.batches == batches + 1
    assert sorted(await stored_ids(engine)) == sorted([stored["id"], new["id"]])
    assert await count_events(engine) == 2
    assert await rollup_total(engine) == 2
    assert (server.stats.events_acknowledged, server.stats.events_stored) == (3, 2)
