"""PostgreSQL going away mid-stream: the server keeps its clients, acknowledges nothing it has not
committed, retries, and catches up; every acknowledged event is stored exactly once.

The shared PostgreSQL cluster is never restarted: a TCP proxy between the server and PostgreSQL
drops every connection and refuses new ones for a while, and the server's backends are terminated.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.settings import Settings
from simulation.events import EventGenerator
from tests.support.database import stored_ids
from tests.support.ingest import AgentFactory, RawFactory, ServerHandle, TcpProxy, hello_message, start_server
from tests.support.waiting import wait_until


@pytest.fixture
async def proxy(settings: Settings, backend: str) -> AsyncIterator[TcpProxy]:
    if backend != "postgresql":
        pytest.skip("a database server that goes away exists only with PostgreSQL")
    proxy = await TcpProxy(settings.url.host or "127.0.0.1", settings.url.port or 5432).start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def proxied_server(
    settings: Settings, engine: AsyncEngine, proxy: TcpProxy
) -> AsyncIterator[ServerHandle]:
    proxied = replace(
        settings, database_url=settings.url.set(port=proxy.port).render_as_string(hide_password=False)
    )
    server = await start_server(proxied, db_retry_max_seconds=0.3)
    yield server
    proxy.restore()
    await server.stop()


async def terminate_other_backends(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )


async def test_database_restarted_mid_stream_loses_no_acked_event_and_stores_none_twice(
    proxied_server: ServerHandle,
    proxy: TcpProxy,
    agent_factory: AgentFactory,
    generator: EventGenerator,
    engine: AsyncEngine,
) -> None:
    agent = await agent_factory(proxied_server.port)
    before = [generator.event() for _ in range(200)]
    await agent.send_many(before)
    await agent.wait_acked(within=20)

    proxy.cut()
    await terminate_other_backends(engine)
    during = [generator.event() for _ in range(200)]
    await agent.send_many(during)
    # Every event read and queued, and the writer has failed and retried since: an ack would be out.
    await wait_until(lambda: proxied_server.stats.events_received == 400, timeout=15)
    retries = proxied_server.stats.db_retries
    await wait_until(lambda: proxied_server.stats.db_retries >= retries + 2, timeout=15)
    assert agent.acked == {event["id"] for event in before}, (
        "nothing is acknowledged while the database is away"
    )
    assert agent.connected, "the server keeps its clients while the database is away"

    proxy.restore()
    after = [generator.event() for _ in range(200)]
    await agent.send_many(after)
    await agent.wait_acked(within=30)

    ids = await stored_ids(engine)
    assert len(ids) == len(set(ids)), "no event is stored twice"
    assert agent.acked <= set(ids), "every acknowledged event is stored"
    assert set(ids) == {event["id"] for event in before + during + after}
    assert proxied_server.stats.db_retries > 0


async def test_hello_while_the_database_is_away_gets_unavailable(
    proxied_server: ServerHandle, proxy: TcpProxy, raw_factory: RawFactory, org: object, engine: AsyncEngine
) -> None:
    proxy.cut()
    await terminate_other_backends(engine)
    raw = await raw_factory(proxied_server.port, hello=False)
    await raw.send(hello_message(org))  # type: ignore[arg-type]
    error = await raw.receive(within=15)
    assert error["code"] == "unavailable"
    assert await raw.closed_by_server()
