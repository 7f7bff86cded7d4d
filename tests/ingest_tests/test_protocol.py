"""The happy path of the protocol over a real socket, on both engines."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from db.configs import update_config
from db.models import Device, LogEntry, LogHourlyCount
from db.rights import Actor
from ingest.client import AgentClient
from simulation.events import EventGenerator
from tests.support.database import count_events, stored_ids
from tests.support.ingest import AgentFactory, RawClient, ServerHandle


async def test_hello_is_welcomed_with_the_organisations_config(agent: AgentClient) -> None:
    assert agent.config is not None
    assert agent.config["organization_id"] == "acme"
    assert {"monitored_tools", "sensitivity_thresholds", "custom_patterns", "version"} <= set(agent.config)


async def test_first_hello_registers_the_device(agent: AgentClient, session: AsyncSession) -> None:
    device = await session.scalar(select(Device).where(Device.device_id == agent.identity.device_id))
    assert device is not None
    assert device.organization_id == "acme"
    assert device.user_id == agent.identity.user_id
    assert device.agent_version == "simulator-1.0"
    assert device.registered_at is not None


async def test_next_hello_updates_last_seen_and_agent_version(
    server: ServerHandle, agent_factory: AgentFactory, session: AsyncSession
) -> None:
    first = await agent_factory(server.port, device_id="dev-x")
    await first.close()
    before = await session.scalar(select(Device).where(Device.device_id == "dev-x"))
    assert before is not None
    seen_before = before.last_seen
    second = await agent_factory(server.port, device_id="dev-x", connect=False)
    second.identity = type(second.identity)(**{**second.identity.__dict__, "agent_version": "2.0.0"})
    await second.connect()
    session.expire_all()
    after = await session.scalar(select(Device).where(Device.device_id == "dev-x"))
    assert after is not None
    assert after.agent_version == "2.0.0"
    assert after.last_seen >= seen_before
    assert after.registered_at == before.registered_at


async def test_logged_event_is_acked_and_stored_with_the_hellos_identity(
    agent: AgentClient, generator: EventGenerator, engine: AsyncEngine
) -> None:
    event = generator.event()
    await agent.send(event)
    await agent.wait_acked(within=10)
    assert event["id"] in agent.acked
    async with engine.connect() as connection:
        row = (await connection.execute(select(LogEntry).where(LogEntry.id == uuid.UUID(event["id"])))).one()
    assert row.device_id == agent.identity.device_id
    assert row.user_id == agent.identity.user_id
    assert row.organization_id == "acme"
    assert row.tool_name == event["tool_name"]
    assert row.risk_level == event["risk_level"]
    assert row.detected_entity_types == event["detected_entity_types"]
    assert row.log_metadata == event["log_metadata"]


async def test_event_naming_a_user_keeps_that_user(
    agent: AgentClient, generator: EventGenerator, engine: AsyncEngine
) -> None:
    event = generator.event(user_id="bob@acme.example")
    await agent.send(event)
    await agent.wait_acked(within=10)
    async with engine.connect() as connection:
        user = (await connection.execute(select(LogEntry.user_id))).scalar_one()
    assert user == "bob@acme.example"


async def test_resent_event_is_acked_and_stored_once(
    agent: AgentClient, generator: EventGenerator, engine: AsyncEngine
) -> None:
    event = generator.event()
    await agent.send(event)
    await agent.wait_acked(within=10)
    await agent.send(event)
    await agent.wait_acked(within=10)
    assert await stored_ids(engine) == [event["id"]]


async def test_resent_event_is_counted_once_in_the_hourly_rollups(
    agent: AgentClient, generator: EventGenerator, engine: AsyncEngine
) -> None:
    event = generator.event()
    for _ in range(3):
        await agent.send(event)
        await agent.wait_acked(within=10)
    async with engine.connect() as connection:
        counts = (
            (
                await connection.execute(
                    select(LogHourlyCount.event_count).where(LogHourlyCount.dimension == "risk")
                )
            )
            .scalars()
            .all()
        )
    assert counts == [1]


async def test_unacked_events_are_resent_on_reconnect_and_stored_once(
    server: ServerHandle, agent_factory: AgentFactory, generator: EventGenerator, engine: AsyncEngine
) -> None:
    agent = await agent_factory(server.port)
    events = [generator.event() for _ in range(50)]
    await agent.send_many(events)
    # Pretend the acks were lost: forget them, reconnect and resend everything.
    agent.unacked.update({event["id"]: event for event in events})
    await agent.reconnect()
    await agent.wait_acked(within=10)
    ids = await stored_ids(engine)
    assert sorted(ids) == sorted(event["id"] for event in events)


async def test_many_events_are_all_acked_and_stored(
    agent: AgentClient, generator: EventGenerator, engine: AsyncEngine
) -> None:
    await agent.send_many([generator.event() for _ in range(500)])
    await agent.wait_acked(within=20)
    assert len(agent.acked) == 500
    assert await count_events(engine) == 500


async def test_ping_is_answered_with_pong(raw: RawClient) -> None:
    await raw.send({"type": "ping", "id": "p1"})
    assert await raw.receive() == {"type": "pong", "id": "p1"}


async def test_config_request_returns_the_current_config(raw: RawClient, session: AsyncSession) -> None:
    await raw.send({"type": "config"})
    before = await raw.receive()
    await update_config(session=session, organization_id="acme", actor=Actor.cli(), log_retention_days=45)
    await session.commit()
    await raw.send({"type": "config"})
    after = await raw.receive()
    assert after["type"] == "config"
    assert after["config"]["log_retention_days"] == 45
    assert after["config"]["version"] != before["config"]["version"]


async def test_crlf_line_endings_are_accepted(raw: RawClient) -> None:
    await raw.write(b'{"type":"ping"}\r\n')
    assert await raw.receive() == {"type": "pong"}


async def test_blank_lines_are_ignored(raw: RawClient) -> None:
    await raw.write(b'\n\r\n{"type":"ping"}\n')
    assert await raw.receive() == {"type": "pong"}
