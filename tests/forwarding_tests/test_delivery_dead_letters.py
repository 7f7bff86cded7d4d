"""A message HEC refuses on its own (400) becomes a dead letter; the rest goes on; an administrator retries
or discards it, audited."""

from __future__ import annotations

import orjson
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.deliveries import start_round
from db.destinations import list_dead_letters, retry_dead_letters
from db.engine import new_sessionmaker
from db.events import store_events
from db.models import AuditEvent, DeadLetter
from db.rights import Actor
from tests.forwarding_tests.test_delivery import forwarding
from tests.support.database import make_event
from tests.support.forwarding_rows import (
    add_alert_revision,
    add_destination,
    add_org,
    commit_order,
    events,
    reload,
    store,
)
from tests.support.http_receiver import HEC_TOKEN, http_receiver
from tests.support.waiting import wait_until


def hec_ids(received: list[dict[str, object]]) -> list[str]:
    """The ids in what HEC received, in order: each event's JSON body carries its ``id``, each alert
    change its ``alert_id``."""
    ids = []
    for event in received:
        body = event["event"]
        document = orjson.loads(body) if isinstance(body, str) else body
        assert isinstance(document, dict)
        ids.append(str(document["alert_id"] if document["type"] == "alert" else document["id"]))
    return ids


async def dead_letters(engine: AsyncEngine) -> list[DeadLetter]:
    async with new_sessionmaker(engine)() as session:
        return list(await list_dead_letters(session=session))


async def test_a_refused_event_is_a_dead_letter_and_is_delivered_when_retried(engine: AsyncEngine) -> None:
    await add_org(engine)
    async with http_receiver() as receiver:
        destination = await add_destination(
            engine, address=receiver.url, transport="hec", secret=HEC_TOKEN, risk_levels=("red",)
        )
        await store(engine, events(12))
        expected = await commit_order(engine, "acme", ["red"])
        refused_id = expected[5]
        receiver.faults.refuse_containing = refused_id
        async with forwarding(engine):
            await wait_until(lambda: len(receiver.hec_events) >= 11, what="every event HEC accepts")

            async def one_dead_letter() -> bool:
                return len(await dead_letters(engine)) == 1

            await wait_until(one_dead_letter, what="the refused event to be a dead letter")
            [letter] = await dead_letters(engine)
            assert (letter.stream, letter.item_id, letter.attempts, letter.retry_requested) == (
                "event",
                refused_id,
                1,
                False,
            )
            assert "HEC refused the event" in letter.error
            assert refused_id in letter.payload
            assert hec_ids(receiver.hec_events) == [
                event_id for event_id in expected if event_id != refused_id
            ]

            # Retried while HEC still refuses it: one more attempt, and it waits for another request.
            async with new_sessionmaker(engine)() as session:
                assert await retry_dead_letters(session=session, ids=[letter.id], actor=Actor.cli()) == 1
                await session.commit()

            async def attempted_twice() -> bool:
                letters = await dead_letters(engine)
                return letters[0].attempts == 2 and not letters[0].retry_requested

            await wait_until(attempted_twice, what="the second refusal")

            # Fixed on the receiver's side: the retry delivers it and the dead letter is gone.
            receiver.faults.refuse_containing = None
            async with new_sessionmaker(engine)() as session:
                assert await retry_dead_letters(session=session, ids=[letter.id], actor=Actor.cli()) == 1
                await session.commit()

            async def none_left() -> bool:
                return await dead_letters(engine) == []

            await wait_until(none_left, what="the retried dead letter to be delivered")
    assert sorted(hec_ids(receiver.hec_events)) == sorted(expected)
    assert hec_ids(receiver.hec_events)[-1] == refused_id
    row = await reload(engine, destination.id)
    assert (row.state, row.delivered_count) == ("active", 12)
    async with new_sessionmaker(engine)() as session:
        actions = (
            await session.scalars(select(AuditEvent.action).where(AuditEvent.entity_type == "dead_letter"))
        ).all()
    assert actions == ["dead_letter.retry", "dead_letter.retry"]


async def test_alert_changes_accepted_before_the_events_failed_are_not_sent_again(
    engine: AsyncEngine,
) -> None:
    """A round sends alert changes, then events: when HEC takes the alert changes and turns the events
    away (503), the alert changes are recorded, so they are not sent twice once the events go through."""
    await add_org(engine)
    async with http_receiver() as receiver:
        destination = await add_destination(
            engine,
            address=receiver.url,
            transport="hec",
            secret=HEC_TOKEN,
            risk_levels=("red",),
            forward_alerts=True,
        )
        alert = await add_alert_revision(engine)
        await store(engine, events(3))
        expected = await commit_order(engine, "acme", ["red"])
        receiver.faults.unavailable_containing = expected[0]
        async with forwarding(engine):

            async def turned_away() -> bool:
                return (await reload(engine, destination.id)).state == "retrying"

            await wait_until(turned_away, what="the events turned away")
            assert hec_ids(receiver.hec_events) == [str(alert.id)]
            receiver.faults.unavailable_containing = None
            await wait_until(lambda: len(receiver.hec_events) >= 4, what="the events")
        assert hec_ids(receiver.hec_events) == [str(alert.id), *expected]


async def test_a_round_starts_from_the_destination_its_retries_and_the_visible_bound(
    engine: AsyncEngine, backend: str
) -> None:
    """start_round reads in one statement what a round needs first; its bound is held back by a writer
    still in flight, as visible_bound is (db/commit_order.py)."""
    await add_org(engine)
    destination = await add_destination(engine, address="127.0.0.1:514")
    sessions = new_sessionmaker(engine)
    async with sessions() as session:
        start = await start_round(session=session, destination_id=destination.id)
    assert start.destination is not None
    assert start.destination.id == destination.id
    assert not start.letters_to_retry
    if backend != "postgresql":
        assert start.bound is None  # SQLite: each stream's reader takes its own
        return
    async with sessions() as writer, sessions() as later:
        await store_events(session=writer, events=[make_event(1, organization_id="early")])
        writer_id = int(await writer.scalar(text("SELECT pg_current_xact_id()::text::bigint")))
        # A later transaction that ends first: the bound must still stop at the writer's id.
        await store_events(session=later, events=[make_event(2, organization_id="late")])
        await later.commit()
        async with sessions() as session:
            held = await start_round(session=session, destination_id=destination.id)
        await writer.commit()
    async with sessions() as session:
        after = await start_round(session=session, destination_id=destination.id)
    assert held.bound is not None
    assert held.bound <= writer_id < (after.bound or 0)
