"""Fixtures of the ingest tests: an organisation with a token, the server in-process on an ephemeral port,
connected simulated agents and raw sockets (the helpers themselves are tests/support/ingest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from db.settings import Settings
from ingest.client import AgentClient, AgentIdentity
from simulation.events import EventGenerator
from tests.support.database import Organization, add_organization
from tests.support.ingest import (
    ORG,
    AgentFactory,
    RawClient,
    RawFactory,
    ServerHandle,
    StartServer,
    hello_message,
    make_tls_files,
    start_server,
)


@pytest.fixture
async def org(session: AsyncSession) -> Organization:
    """The organisation 'acme' with a live ingest token."""
    return await add_organization(session, ORG)


@pytest.fixture
async def server_factory(settings: Settings, engine: AsyncEngine) -> AsyncIterator[StartServer]:
    """Start servers on the test database (tables emptied first); all stopped at the end."""
    handles: list[ServerHandle] = []

    async def start(**limits: Any) -> ServerHandle:
        handle = await start_server(settings, **limits)
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        if not handle.task.done():
            await handle.stop()


@pytest.fixture
async def server(server_factory: StartServer) -> ServerHandle:
    return await server_factory()


@pytest.fixture
def generator() -> EventGenerator:
    return EventGenerator(seed=1234)


@pytest.fixture
async def agent_factory(org: Organization) -> AsyncIterator[AgentFactory]:
    """Connected simulated agents (closed at the end); device ids differ per call."""
    agents: list[AgentClient] = []

    async def connect(
        port: int, *, device_id: str | None = None, connect: bool = True, **kwargs: Any
    ) -> AgentClient:
        identity = AgentIdentity(
            organization_id=org.organization_id,
            token=org.token,
            device_id=device_id or f"dev-{len(agents)}",
            user_id=f"user{len(agents)}@acme.example",
        )
        agent = AgentClient("127.0.0.1", port, identity, **kwargs)
        agents.append(agent)
        if connect:
            await agent.connect()
        return agent

    yield connect
    for agent in agents:
        await agent.close()


@pytest.fixture
async def agent(server: ServerHandle, agent_factory: AgentFactory) -> AgentClient:
    return await agent_factory(server.port)


@pytest.fixture
async def raw_factory(org: Organization) -> AsyncIterator[RawFactory]:
    """Raw clients; with ``hello=True`` (default) the hello is done and the welcome read."""
    clients: list[RawClient] = []

    async def open_client(port: int, *, hello: bool = True, **hello_overrides: Any) -> RawClient:
        client = await RawClient.open(port)
        clients.append(client)
        if hello:
            await client.send(hello_message(org, **hello_overrides))
            welcome = await client.receive()
            assert welcome["type"] == "welcome", welcome
        return client

    yield open_client
    for client in clients:
        await client.close()


@pytest.fixture
async def raw(server: ServerHandle, raw_factory: RawFactory) -> RawClient:
    return await raw_factory(server.port)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1 (skipped without openssl)."""
    files = make_tls_files(tmp_path_factory.mktemp("tls"))
    if files is None:
        pytest.skip("openssl is not installed")
    return files
