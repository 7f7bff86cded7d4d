"""Hostile and heavy clients: huge lines, clients vanishing mid-line, many connections, backpressure,
in-flight limits, TLS and the stats line. None of it disturbs the other clients."""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from db.settings import Settings, SettingsError
from ingest.client import AgentClient
from ingest.framing import READ_CHUNK_BYTES
from ingest.server import tls_context
from simulation.events import EventGenerator
from tests.support.database import count_events, stored_ids
from tests.support.ingest import AgentFactory, RawFactory, ServerHandle, StartServer, write_lock
from tests.support.waiting import wait_until


async def test_ten_megabyte_line_without_newline_is_refused_with_bounded_memory(
    server: ServerHandle, raw_factory: RawFactory
) -> None:
    raw = await raw_factory(server.port)
    chunk = b"x" * (1 << 20)
    for _ in range(10):
        raw.writer.write(chunk)
    error = await raw.receive(within=20)
    assert error["code"] == "line_too_long"
    await raw.writer.drain()
    await raw.write(b"\n")
    await raw.send({"type": "ping"})
    assert await raw.receive() == {"type": "pong"}
    limit = server.settings.ingest.max_line_bytes
    assert server.stats.max_line_buffer_bytes <= limit + READ_CHUNK_BYTES


async def test_client_closing_mid_line_stores_only_its_complete_lines(
    server: ServerHandle, raw_factory: RawFactory, generator: EventGenerator, engine: AsyncEngine
) -> None:
    raw = await raw_factory(server.port)
    complete, partial = generator.event(), orjson.dumps(generator.event())
    await raw.write(orjson.dumps(complete) + b"\n" + partial[: len(partial) // 2])
    await raw.close()
    await wait_until(lambda: server.stats.connections == 0 and server.stats.events_stored == 1, timeout=10)
    assert await stored_ids(engine) == [complete["id"]]


async def test_client_vanishing_mid_line_does_not_disturb_others(
    server: ServerHandle, raw_factory: RawFactory, agent_factory: AgentFactory, generator: EventGenerator
) -> None:
    other = await agent_factory(server.port)
    raw = await raw_factory(server.port)
    await raw.write(b'{"type":"log","id":"')
    raw.writer.transport.abort()
    event = generator.event()
    await other.send(event)
    await other.wait_acked(within=10)
    assert event["id"] in other.acked


async def test_many_connections_at_once_all_events_are_stored(
    server: ServerHandle, agent_factory: AgentFactory, generator: EventGenerator, engine: AsyncEngine
) -> None:
    agents = await asyncio.gather(*(agent_factory(server.port, device_id=f"dev-{i}") for i in range(40)))

    async def send(agent: AgentClient) -> None:
        await agent.send_many([generator.event() for _ in range(25)])
        await agent.wait_acked(within=30)

    await asyncio.gather(*(send(agent) for agent in agents))
    assert await count_events(engine) == 1000
    assert sum(len(agent.acked) for agent in agents) == 1000


async def test_full_queue_stops_reading_sockets_and_catches_up(
    server_factory: StartServer, agent_factory: AgentFactory, generator: EventGenerator, engine: AsyncEngine
) -> None:
    server = await server_factory(
        queue_max_events=20, batch_max_events=10, max_in_flight_per_connection=100_000
    )
    agent = await agent_factory(server.port, max_in_flight=10**9)
    async with write_lock(server.settings):
        sender = asyncio.create_task(agent.send_many([generator.event() for _ in range(3000)]))
        await wait_until(lambda: server.stats.events_received >= 30, timeout=10)
        await asyncio.sleep(0.5)  # the behaviour is that nothing more is read: give it time to be read
        # Each writer holds one batch, the queue is full, the handler waits on one put: nothing more is read.
        writers = server.settings.ingest.writers if server.settings.is_postgresql else 1
        assert server.stats.events_received <= 20 + writers * 10 + 1
        assert server.stats.events_stored == 0
    await sender
    await agent.wait_acked(within=60)
    assert await count_events(engine) == 3000


async def test_connection_is_not_read_past_its_in_flight_limit(
    server_factory: StartServer, agent_factory: AgentFactory, generator: EventGenerator, engine: AsyncEngine
) -> None:
    server = await server_factory(max_in_flight_per_connection=5)
    agent = await agent_factory(server.port, max_in_flight=10**9)
    async with write_lock(server.settings):
        await agent.send_many([generator.event() for _ in range(50)])
        await wait_until(lambda: server.stats.events_received == 5, timeout=10)
        await asyncio.sleep(0.3)  # the behaviour is that nothing more is read: give it time to be read
        assert server.stats.events_received == 5
    await agent.wait_acked(within=30)
    assert await count_events(engine) == 50


async def test_tls_connection_is_welcomed_and_acked(
    settings: Settings,
    engine: AsyncEngine,
    agent_factory: AgentFactory,
    generator: EventGenerator,
    tls_files: tuple[Path, Path],
) -> None:
    from tests.support.ingest import start_server

    cert, key = tls_files
    server = await start_server(replace(settings, ingest_tls_cert=str(cert), ingest_tls_key=str(key)))
    try:
        assert server.running.tls
        agent = await agent_factory(server.port, ssl_context=ssl.create_default_context(cafile=str(cert)))
        event = generator.event()
        await agent.send(event)
        await agent.wait_acked(within=10)
        assert event["id"] in agent.acked
    finally:
        await server.stop()


def test_unreadable_tls_files_are_a_one_line_settings_error(settings: Settings, tmp_path: Path) -> None:
    broken = replace(
        settings, ingest_tls_cert=str(tmp_path / "missing.pem"), ingest_tls_key=str(tmp_path / "k.pem")
    )
    with pytest.raises(SettingsError, match="cannot load TLS certificate"):
        tls_context(broken)


async def test_stats_line_reports_events_and_errors(
    server_factory: StartServer,
    agent_factory: AgentFactory,
    generator: EventGenerator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="aifw.ingest")
    server = await server_factory(stats_interval_seconds=0.05)
    agent = await agent_factory(server.port)
    await agent.send(generator.event())
    await agent.send_raw(b"nope\n")
    await agent.wait_acked(within=10)

    def reported() -> bool:
        return any("stored=1" in r.message and "invalid_json:1" in r.message for r in caplog.records)

    await wait_until(reported, timeout=10)
