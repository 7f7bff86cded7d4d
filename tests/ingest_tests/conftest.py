"""Fixtures of the ingest tests: an organisation with a token, the server in-process on an ephemeral port,
connected simulated agents, raw sockets, and a TCP proxy that can cut the server off PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from db.configs import create_organization
from db.models import LogEntry
from db.rights import Actor
from db.settings import Settings
from db.tokens import create_token
from ingest.client import AgentClient, AgentIdentity
from ingest_server import RunningServer, serve
from simulation.events import EventGenerator

ORG = "acme"


@dataclass
class Org:
    organization_id: str
    token: str


@pytest.fixture
async def org(session: AsyncSession) -> Org:
    """The organisation 'acme' with a live ingest token."""
    await create_organization(session=session, organization_id=ORG, actor=Actor.cli())
    _, token = await create_token(session=session, actor=Actor.cli(), organization_id=ORG, name="test")
    await session.commit()
    return Org(ORG, token)


@dataclass
class ServerHandle:
    running: RunningServer
    settings: Settings
    task: asyncio.Task[None]
    stop_event: asyncio.Event

    @property
    def port(self) -> int:
        return self.running.port

    @property
    def stats(self) -> Any:
        return self.running.stats

    async def stop(self, within: float = 15.0) -> None:
        self.stop_event.set()
        async with asyncio.timeout(within):
            await self.task


StartServer = Callable[..., Awaitable[ServerHandle]]


async def start_server(settings: Settings, **limits: Any) -> ServerHandle:
    """Run serve() in this event loop on an ephemeral port; limits override IngestLimits fields."""
    settings = replace(
        settings,
        ingest_host="127.0.0.1",
        ingest_port=0,
        ingest=replace(settings.ingest, **{"stats_interval_seconds": 0, **limits}),
    )
    stop_event = asyncio.Event()
    ready: asyncio.Future[RunningServer] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(settings, shutdown_trigger=stop_event.wait, ready=ready.set_result))
    done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    return ServerHandle(ready.result(), settings, task, stop_event)


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


AgentFactory = Callable[..., Awaitable[AgentClient]]


@pytest.fixture
async def agent_factory(org: Org) -> AsyncIterator[AgentFactory]:
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


class RawClient:
    """A bare socket for hostile input: write any bytes, read JSON lines."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        return cls(reader, writer)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, message: Any) -> None:
        await self.write(orjson.dumps(message) + b"\n")

    async def receive(self, within: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(within):
            line = await self.reader.readline()
        assert line, "the server closed the connection"
        return orjson.loads(line)

    async def closed_by_server(self, within: float = 10.0) -> bool:
        async with asyncio.timeout(within):
            return await self.reader.read(1 << 16) == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


def hello_message(org: Org, **overrides: Any) -> dict[str, Any]:
    message = {
        "type": "hello",
        "organization_id": org.organization_id,
        "token": org.token,
        "device_id": "dev-raw",
        "user_id": "raw@acme.example",
        "device_type": "cli",
        "agent_version": "1.0.0",
    }
    message.update(overrides)
    return message


RawFactory = Callable[..., Awaitable[RawClient]]


@pytest.fixture
async def raw_factory(org: Org) -> AsyncIterator[RawFactory]:
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


async def stored_ids(engine: AsyncEngine) -> list[str]:
    """Every stored event id, duplicates included (there must be none)."""
    async with engine.connect() as connection:
        rows = await connection.execute(select(LogEntry.id))
        return [str(row[0]) for row in rows]


async def count_rows(engine: AsyncEngine, table: str) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def count_events(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(select(func.count()).select_from(LogEntry))).scalar_one())


class TcpProxy:
    """Forwards TCP to a target; ``cut()`` drops every connection and refuses new ones until ``restore()``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.blocked = False
        self._pairs: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.blocked:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._pairs.update({writer, up_writer})
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()
            self._pairs.discard(writer)

    def cut(self) -> None:
        self.blocked = True
        for writer in list(self._pairs):
            writer.transport.abort()
        self._pairs.clear()

    def restore(self) -> None:
        self.blocked = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


@contextlib.asynccontextmanager
async def write_lock(settings: Settings) -> AsyncIterator[None]:
    """Hold the database's write lock on log_entries (the server's writer waits) until the block ends."""
    if settings.is_sqlite:
        import aiosqlite

        database = await aiosqlite.connect(settings.url.database)
        try:
            await database.execute("BEGIN IMMEDIATE")
            yield
            await database.rollback()
        finally:
            await database.close()
        return
    import asyncpg

    connection = await asyncpg.connect(settings.url.set(drivername="postgresql").render_as_string(False))
    try:
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute("LOCK TABLE log_entries IN EXCLUSIVE MODE")
        yield
        await transaction.rollback()
    finally:
        await connection.close()


async def eventually(condition: Callable[[], bool], within: float = 10.0, step: float = 0.02) -> None:
    """Wait until condition() is true (polling a server counter); TimeoutError otherwise."""
    async with asyncio.timeout(within):
        while not condition():
            await asyncio.sleep(step)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1 (skipped without openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
