"""Ingest test helpers: the server in-process on an ephemeral port, agents, raw sockets, TCP proxies
(one that cuts on demand, one that cuts mid-stream).

The fixtures of tests/ingest_tests/conftest.py are built from these; other folders (console,
demo) import them from here rather than from that conftest.
"""

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

from db.settings import Settings
from ingest.client import AgentClient
from ingest.server import RunningServer, serve
from ingest.stats import IngestStats
from tests.support.database import Organization

#: The organisation of the ingest tests' ``org`` fixture.
ORG = "acme"


@dataclass
class ServerHandle:
    """A server started by :func:`start_server`: its port, live counters, and how to stop it."""

    running: RunningServer
    settings: Settings
    task: asyncio.Task[None]
    stop_event: asyncio.Event

    @property
    def port(self) -> int:
        return self.running.port

    @property
    def stats(self) -> IngestStats:
        return self.running.stats

    async def stop(self, within: float = 15.0) -> None:
        """Trigger the shutdown and wait for serve() to return."""
        self.stop_event.set()
        async with asyncio.timeout(within):
            await self.task


StartServer = Callable[..., Awaitable[ServerHandle]]
AgentFactory = Callable[..., Awaitable[AgentClient]]


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
    started: set[asyncio.Future[Any]] = {task, ready}
    done, _ = await asyncio.wait(started, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    return ServerHandle(ready.result(), settings, task, stop_event)


@contextlib.asynccontextmanager
async def serving(settings: Settings, **limits: Any) -> AsyncIterator[ServerHandle]:
    """:func:`start_server` for the length of a block; the server is stopped when the block ends."""
    handle = await start_server(settings, **limits)
    try:
        yield handle
    finally:
        await handle.stop()


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


RawFactory = Callable[..., Awaitable[RawClient]]


def hello_message(org: Organization, **overrides: Any) -> dict[str, Any]:
    """A valid hello of ``org`` (device ``dev-raw``); ``overrides`` replace or add fields."""
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


async def hello(port: int, org: Organization, **overrides: Any) -> dict[str, Any]:
    """Say :func:`hello_message` on a new connection and return the server's answer (``welcome`` or
    ``error``); the connection is closed."""
    client = await RawClient.open(port)
    try:
        await client.send(hello_message(org, **overrides))
        return await client.receive()
    finally:
        await client.close()


class TcpProxy:
    """Forwards TCP to a target; ``cut()`` drops every connection and refuses new ones until ``restore()``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.blocked = False
        #: Connections accepted since start, refused ones included (tests wait on it).
        self.accepted = 0
        self._pairs: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
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


class CuttingProxy:
    """Forwards TCP to a target, aborting each of the first ``cuts`` connections after ``after_bytes``
    bytes from the client: mid-stream, usually mid-line, with acknowledgements still on their way."""

    def __init__(self, target_port: int, *, cuts: int, after_bytes: int) -> None:
        self.target_port = target_port
        self.cuts_left = cuts
        self.after_bytes = after_bytes
        self.cuts_done = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        cut = self.cuts_left > 0
        if cut:
            self.cuts_left -= 1
        downstream = asyncio.create_task(self._pipe(up_reader, writer, limit=None))
        self._tasks.add(downstream)
        try:
            await self._pipe(reader, up_writer, limit=self.after_bytes if cut else None)
        finally:
            for side in (writer, up_writer):
                side.transport.abort()
            downstream.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await downstream
            self._tasks.discard(downstream)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, limit: int | None
    ) -> None:
        forwarded = 0
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(4096):
                if limit is not None and forwarded + len(data) > limit:
                    writer.write(data[: limit - forwarded])
                    self.cuts_done += 1
                    return
                writer.write(data)
                forwarded += len(data)
                await writer.drain()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()


@contextlib.asynccontextmanager
async def write_lock(settings: Settings) -> AsyncIterator[None]:
    """Hold the database's write lock on log_entries (the server's writer waits) until the block ends."""
    if settings.is_sqlite:
        import aiosqlite

        assert settings.url.database is not None
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


def make_tls_files(directory: Path) -> tuple[Path, Path] | None:
    """A self-signed certificate and key for 127.0.0.1 in ``directory``; None without openssl."""
    if shutil.which("openssl") is None:
        return None
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
