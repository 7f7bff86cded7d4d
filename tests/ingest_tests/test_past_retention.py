"""Through a real server: an event older than its organisation's retention cutoff is refused with
``past_retention`` and not stored, and a retention changed in the console reaches connected agents within
the refresh period (or at once, with a ``config`` request), without a reconnect."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from db.base import utcnow
from db.configs import update_config
from db.rights import Actor
from ingest import protocol
from simulation.events import EventGenerator
from tests.support.database import Organization, count_events, rollup_total, stored_ids
from tests.support.ingest import RawClient, RawFactory, StartServer

#: The refresh period of these tests' connections (the default is RETENTION_REFRESH_SECONDS).
REFRESH_SECONDS = 0.5


def days_old(generator: EventGenerator, days: int) -> dict[str, Any]:
    return generator.event(timestamp=utcnow() - timedelta(days=days))


async def set_retention(session: AsyncSession, days: int) -> None:
    await update_config(session=session, organization_id="acme", actor=Actor.cli(), log_retention_days=days)
    await session.commit()


async def answer_to(client: RawClient, event: dict[str, Any]) -> dict[str, Any]:
    await client.send(event)
    return await client.receive()


@pytest.fixture
async def retention_90(session: AsyncSession, org: Organization) -> None:
    await set_retention(session, 90)


@pytest.mark.usefixtures("retention_90")
async def test_event_past_the_retention_is_refused_and_not_stored_one_within_it_is_stored(
    server_factory: StartServer, raw_factory: RawFactory, engine: AsyncEngine, generator: EventGenerator
) -> None:
    server = await server_factory()
    client = await raw_factory(server.port)
    old, recent = days_old(generator, 100), days_old(generator, 80)
    refused = await answer_to(client, old)
    assert (refused["type"], refused["code"], refused["id"]) == ("error", "past_retention", old["id"])
    assert "log_retention_days 90" in refused["message"]
    assert await answer_to(client, recent) == {"type": "ack", "ids": [recent["id"]]}
    assert await stored_ids(engine) == [recent["id"]]
    assert await rollup_total(engine) == 1
    assert server.stats.errors["past_retention"] == 1


@pytest.mark.usefixtures("retention_90")
async def test_raised_retention_accepts_the_refused_event_within_the_refresh_period_without_reconnecting(
    server_factory: StartServer,
    raw_factory: RawFactory,
    session: AsyncSession,
    engine: AsyncEngine,
    generator: EventGenerator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(protocol, "RETENTION_REFRESH_SECONDS", REFRESH_SECONDS)
    server = await server_factory()
    client = await raw_factory(server.port)
    old = days_old(generator, 100)
    assert (await answer_to(client, old))["code"] == "past_retention"
    await set_retention(session, 120)
    changed = time.monotonic()
    # The agent resends as it would; the connection re-reads the retention once a period.
    while (answer := await answer_to(client, old))["type"] != "ack":
        assert answer["code"] == "past_retention", answer
        assert time.monotonic() - changed < REFRESH_SECONDS + protocol.WINDOW_SLIDE_SECONDS + 5
        await client.send({"type": "ping"})  # one round trip between resends instead of a sleep
        assert (await client.receive())["type"] == "pong"
    assert answer["ids"] == [old["id"]]
    assert await count_events(engine) == 1


@pytest.mark.usefixtures("retention_90")
async def test_a_config_request_applies_a_lowered_retention_at_once(
    server_factory: StartServer,
    raw_factory: RawFactory,
    session: AsyncSession,
    engine: AsyncEngine,
    generator: EventGenerator,
) -> None:
    server = await server_factory()  # the default refresh period: only the config answer can apply it
    client = await raw_factory(server.port)
    await set_retention(session, 30)
    await client.send({"type": "config"})
    assert (await client.receive())["config"]["log_retention_days"] == 30
    assert (await answer_to(client, days_old(generator, 40)))["code"] == "past_retention"
    assert await count_events(engine) == 0
