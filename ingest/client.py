"""The reference agent client of the ingest protocol: hello, send, track acknowledgements, resend.

The fleet (``simulation/``), the tests and ``bench/ingest.py`` talk to the server through it.
Events carry metadata only, never any prompt content.

Example::

    generator = EventGenerator(seed=7)       # simulation.events
    identity = AgentIdentity(organization_id="acme", token=token, device_id="dev-1",
                             user_id="alice@acme.example", device_type="browser")
    async with AgentClient("127.0.0.1", 7878, identity) as agent:   # connects and says hello
        for _ in range(100):
            await agent.send(generator.event(device_type=identity.device_type))
        await agent.wait_acked(within=10)       # every event committed by the server
        print(len(agent.acked), agent.latencies[:3])

The client keeps every event it sent until the server acknowledges it; after
a dropped connection, ``reconnect()`` says hello again and resends them (the
server stores each id once, so resending is always safe).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import orjson

from db.event_schema import CLOSING_CODES


class AgentRefused(ConnectionError):
    """The server refused the hello (or closed the connection); ``code`` is its error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class AgentIdentity:
    """What an agent says in its hello."""

    organization_id: str
    token: str
    device_id: str
    user_id: str
    device_type: str = "browser"
    agent_version: str = "simulator-1.0"

    def hello(self) -> dict[str, Any]:
        return {
            "type": "hello",
            "organization_id": self.organization_id,
            "token": self.token,
            "device_id": self.device_id,
            "user_id": self.user_id,
            "device_type": self.device_type,
            "agent_version": self.agent_version,
        }


@dataclass
class AgentClient:
    """One agent connection: hello, send events, track what is not acknowledged yet, resend on reconnect.

    ``unacked`` maps event id → event until the server acknowledges it;
    ``acked`` holds acknowledged ids; ``rejected`` maps ids refused by the
    server to its error; ``errors`` keeps every error line; ``latencies``
    holds send→ack seconds. ``max_in_flight`` (default: what the welcome
    says) bounds unacknowledged events: ``send`` waits beyond it.
    """

    host: str
    port: int
    identity: AgentIdentity
    ssl_context: ssl.SSLContext | None = None
    max_in_flight: int | None = None
    unacked: dict[str, dict[str, Any]] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)
    rejected: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    config: dict[str, Any] | None = None
    closed_by_server: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._listener: asyncio.Task[None] | None = None
        self._sent_at: dict[str, float] = {}
        self._progress = asyncio.Event()
        self._replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def __aenter__(self) -> AgentClient:
        await self.connect()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing() and self.closed_by_server is None

    async def connect(self, *, within: float = 10.0) -> dict[str, Any]:
        """Open the connection and say hello; return the config. Raises AgentRefused."""
        async with asyncio.timeout(within):
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.ssl_context, limit=1 << 22
            )
            self.closed_by_server = None
            self._write(self.identity.hello())
            line = await self._reader.readline()
        if not line:
            raise AgentRefused("closed", "the server closed the connection before answering the hello")
        reply = orjson.loads(line)
        if reply.get("type") != "welcome":
            await self._close_transport()
            raise AgentRefused(reply.get("code", "unknown"), reply.get("message", str(reply)))
        self.config = reply.get("config")
        if self.max_in_flight is None:
            self.max_in_flight = int(reply.get("limits", {}).get("max_in_flight", 1000))
        self._listener = asyncio.create_task(self._listen(), name=f"agent-{self.identity.device_id}")
        return reply

    def _write(self, message: dict[str, Any]) -> None:
        assert self._writer is not None, "connect() first"
        self._writer.write(orjson.dumps(message) + b"\n")

    async def send(self, event: dict[str, Any]) -> None:
        """Send one log event (waits while ``max_in_flight`` events are unacknowledged)."""
        await self.send_many([event], drain_every=1)

    async def send_many(self, events: Sequence[dict[str, Any]], *, drain_every: int = 64) -> None:
        """Send events back to back (draining every ``drain_every``), within ``max_in_flight``."""
        limit = self.max_in_flight or 1000
        for index, event in enumerate(events):
            while len(self.unacked) >= limit and self.connected:
                self._progress.clear()
                await self._progress.wait()
            event_id = event["id"]
            self.unacked[event_id] = event
            self._sent_at[event_id] = time.perf_counter()
            if self.connected:
                self._write(event)
                if index % drain_every == drain_every - 1:
                    assert self._writer is not None
                    await self._writer.drain()
        if self.connected and self._writer is not None:
            await self._writer.drain()

    async def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (tests of hostile input)."""
        assert self._writer is not None, "connect() first"
        self._writer.write(data)
        await self._writer.drain()

    async def request(self, message: dict[str, Any], *, within: float = 10.0) -> dict[str, Any]:
        """Send a ping or config request and return the next reply that is not an ack."""
        self._write(message)
        async with asyncio.timeout(within):
            return await self._replies.get()

    async def ping(self, *, within: float = 10.0) -> dict[str, Any]:
        return await self.request({"type": "ping"}, within=within)

    async def next_reply(self, *, within: float = 10.0) -> dict[str, Any]:
        """The next line from the server that is not an ack (errors, pongs, configs)."""
        async with asyncio.timeout(within):
            return await self._replies.get()

    async def wait_acked(self, *, within: float = 30.0) -> None:
        """Wait until every sent event is acknowledged or rejected (TimeoutError otherwise)."""
        async with asyncio.timeout(within):
            while self.unacked:
                if not self.connected:
                    raise ConnectionError(f"connection closed with {len(self.unacked)} events unacknowledged")
                self._progress.clear()
                await self._progress.wait()

    async def reconnect(self, *, within: float = 10.0) -> None:
        """Connect again, say hello and resend every event not yet acknowledged."""
        await self._close_transport()
        await self.connect(within=within)
        for event_id, event in list(self.unacked.items()):
            self._sent_at[event_id] = time.perf_counter()
            self._write(event)
        if self._writer is not None:
            await self._writer.drain()

    async def close(self) -> None:
        """Close the connection (unacknowledged events stay in ``unacked``)."""
        await self._close_transport()

    async def _close_transport(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), 1.0)
            self._writer = None
        self._progress.set()

    async def _listen(self) -> None:
        assert self._reader is not None
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                self._handle(orjson.loads(line))
        except (ConnectionError, OSError, orjson.JSONDecodeError):
            pass
        finally:
            if self.closed_by_server is None:
                self.closed_by_server = {"type": "closed"}
            self._progress.set()

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "ack":
            now = time.perf_counter()
            for event_id in message.get("ids", ()):
                if self.unacked.pop(event_id, None) is not None:
                    sent = self._sent_at.pop(event_id, None)
                    if sent is not None:
                        self.latencies.append(now - sent)
                self.acked.add(event_id)
            self._progress.set()
            return
        if kind == "error":
            self.errors.append(message)
            event_id = message.get("id")
            if isinstance(event_id, str) and event_id in self.unacked:
                self.rejected[event_id] = message
                del self.unacked[event_id]
                self._sent_at.pop(event_id, None)
                self._progress.set()
            if message.get("code") in CLOSING_CODES:
                self.closed_by_server = message
                self._progress.set()
        self._replies.put_nowait(message)
