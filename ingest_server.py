"""The ingest server: agents stream NDJSON over TCP; every acknowledged event is committed.

``serve(settings)`` runs an ``asyncio.start_server`` listener. Each connection
says ``hello`` (token, device), then sends ``log`` events, ``config`` and
``ping`` requests. Events go through a bounded queue to one batching writer;
an ``ack`` is sent only after the batch is committed. When the queue is full
the connection handlers block, stop reading their sockets, and TCP pushes
back on the agents. Validation lives in ``db/event_schema.py``, storage in
``db/events.py``; the protocol is described in ``docs/protocol.md``.

Run ``python ingest_server.py --help`` (or ``aifw-ingest --help``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import ssl
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db.configs import effective_config, get_config
from db.devices import DeviceRefused, register_or_touch_device
from db.engine import DatabaseError, check_database, new_engine, new_sessionmaker
from db.event_schema import CLOSING_CODES, EventError, Hello, validate_hello, validate_log
from db.events import store_events
from db.settings import IngestLimits, Settings, SettingsError, load_settings
from db.tokens import verify

log = logging.getLogger("aifw.ingest")

READ_CHUNK_BYTES = 64 * 1024
#: Past this many bytes waiting in a connection's send buffer, the handler waits for the client to read.
WRITE_HIGH_WATER_BYTES = 256 * 1024
#: A client that leaves this much unread (acks it never reads) is closed as too slow.
WRITE_ABORT_BYTES = 4 * 1024 * 1024
#: Database work during hello and config requests may take this long before the client is told so.
DB_REQUEST_TIMEOUT_SECONDS = 10.0
DB_RETRY_FIRST_SECONDS = 0.05
#: Lines a connection handles before letting other tasks (the writer above all) run.
LINES_PER_TURN = 16
#: Shown to a client whose line was discarded (the marker is not a line of bytes).
TOO_LONG = object()
_STOP = object()


# --- framing ---------------------------------------------------------------------------------------


class LineReader:
    """Splits a byte stream into lines of at most ``max_line_bytes``, never holding a longer one.

    ``next_line()`` returns the line without its ``\\n`` (and ``\\r``), ``TOO_LONG``
    once for a line over the limit (then discards the rest of it up to its
    newline), or ``None`` at end of stream (a partial last line is dropped).
    Memory per connection stays below ``max_line_bytes`` plus one read chunk.
    """

    def __init__(self, read_chunk: Callable[[], Awaitable[bytes]], max_line_bytes: int) -> None:
        self._read_chunk = read_chunk
        self._max = max_line_bytes
        self._buffer = bytearray()
        self._lines: list[Any] = []
        self._next = 0
        self._discarding = False
        self.high_water_bytes = 0

    async def next_line(self) -> Any:
        while self._next >= len(self._lines):
            self._lines, self._next = [], 0
            data = await self._read_chunk()
            if not data:
                return None
            self._split(data)
        line = self._lines[self._next]
        self._next += 1
        return line

    def _split(self, data: bytes) -> None:
        if self._discarding:
            newline = data.find(b"\n")
            if newline < 0:
                return
            self._discarding = False
            data = data[newline + 1 :]
        buffer = self._buffer
        buffer += data
        self.high_water_bytes = max(self.high_water_bytes, len(buffer))
        start = 0
        lines = self._lines
        while True:
            newline = buffer.find(b"\n", start)
            if newline < 0:
                break
            end = newline - 1 if newline > start and buffer[newline - 1] == 13 else newline
            lines.append(TOO_LONG if end - start > self._max else bytes(buffer[start:end]))
            start = newline + 1
        del buffer[:start]
        # +1: a line of exactly the limit may wait here for the "\n" after its "\r".
        if len(buffer) > self._max + 1:
            lines.append(TOO_LONG)
            buffer.clear()
            self._discarding = True


# --- statistics ------------------------------------------------------------------------------------


@dataclass
class IngestStats:
    """Counters of a running server (read by tests, the stats line and benchmarks)."""

    connections: int = 0
    connections_total: int = 0
    events_received: int = 0
    events_stored: int = 0
    batches: int = 0
    db_retries: int = 0
    #: Wall time of successful batch writes (insert, rollups, commit), seconds.
    store_seconds: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    max_line_buffer_bytes: int = 0

    def line(self, *, queued: int, events_per_second: float) -> str:
        errors = ",".join(f"{code}:{count}" for code, count in sorted(self.errors.items())) or "none"
        return (
            f"ingest stats connections={self.connections} events_per_s={events_per_second:.1f} "
            f"received={self.events_received} stored={self.events_stored} queued={queued} "
            f"batches={self.batches} db_retries={self.db_retries} errors={errors}"
        )


@dataclass(frozen=True)
class RunningServer:
    """Handed to ``serve(ready=…)`` once the server listens: where, and its live counters."""

    host: str
    port: int
    tls: bool
    stats: IngestStats
    #: The retention scheduler running inside the server (ENABLE_RETENTION_SCHEDULER), or None.
    retention_scheduler: Any = None


# --- the batching writer ---------------------------------------------------------------------------


def _sqlstate(error: BaseException) -> str | None:
    for candidate in (error, getattr(error, "orig", None), error.__cause__):
        state = getattr(candidate, "sqlstate", None)
        if isinstance(state, str):
            return state
    return None


def _is_bad_row(error: BaseException) -> bool:
    """True if the database refused the data (not the connection): retrying the same rows cannot help."""
    if isinstance(error, IntegrityError | DataError):
        return True
    state = _sqlstate(error)
    return state is not None and state[:2] in {"22", "23"}


class BatchWriter:
    """The single task that stores queued events in batches, retries while the database is away,
    and acknowledges each event to its connection only after its batch is committed."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], limits: IngestLimits, stats: IngestStats):
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=limits.queue_max_events)
        self._sessions = sessions
        self._limits = limits
        self._stats = stats
        self._abandon = asyncio.Event()
        self._outage_reported = False

    def abandon(self) -> None:
        """Stop retrying (shutdown grace is over): what is not committed is not acknowledged."""
        self._abandon.set()

    async def run(self) -> None:
        limits = self._limits
        stopping = False
        while not stopping:
            first = await self.queue.get()
            if first is _STOP:
                break
            batch = [first]
            stopping = self._drain_into(batch)
            if not stopping and len(batch) > 1 and len(batch) < limits.batch_max_events:
                # Under load, wait a moment so the next commit carries a fuller batch.
                deadline = asyncio.get_running_loop().time() + limits.batch_max_wait_ms / 1000
                while len(batch) < limits.batch_max_events:
                    remaining = deadline - asyncio.get_running_loop().time()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self.queue.get(), remaining)
                    except TimeoutError:
                        break
                    if item is _STOP:
                        stopping = True
                        break
                    batch.append(item)
                    stopping = self._drain_into(batch)
                    if stopping:
                        break
            try:
                await self._store(batch)
            except Exception:  # a bug here must not stop the writer, or nothing would be acknowledged again
                log.exception("unexpected error storing a batch of %d events", len(batch))
                for row, connection in batch:
                    connection.release(1)
                    connection.send_error(
                        "internal_error", "the server could not store this event; resend it later",
                        event_id=str(row["id"]),
                    )  # fmt: skip

    def _drain_into(self, batch: list[Any]) -> bool:
        limit = self._limits.batch_max_events
        while len(batch) < limit:
            try:
                item = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                return False
            if item is _STOP:
                return True
            batch.append(item)
        return False

    async def _store(self, batch: list[tuple[dict[str, Any], Connection]]) -> None:
        delay = DB_RETRY_FIRST_SECONDS
        while True:
            session = self._sessions()
            started = time.perf_counter()
            try:
                await store_events(session=session, events=[row for row, _ in batch])
                await session.commit()
            except Exception as error:  # noqa: BLE001 - every failure is sorted below, none escapes
                if _is_bad_row(error):
                    await _close_quietly(session)
                    await self._store_bad_batch(batch, error)
                    return
                with contextlib.suppress(Exception):
                    await session.invalidate()
                self._stats.db_retries += 1
                if not self._outage_reported:
                    log.warning(
                        "database unavailable (%s); holding %d events unacknowledged and retrying",
                        _one_line(error),
                        len(batch) + self.queue.qsize(),
                    )
                    self._outage_reported = True
                if self._abandon.is_set():
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._abandon.wait(), delay)
                if self._abandon.is_set():
                    return
                delay = min(delay * 2, self._limits.db_retry_max_seconds)
                continue
            else:
                await session.close()
            break
        if self._outage_reported:
            log.warning("database reachable again; storing the held events")
            self._outage_reported = False
        self._stats.store_seconds += time.perf_counter() - started
        self._stats.batches += 1
        self._stats.events_stored += len(batch)
        _acknowledge(batch)

    async def _store_bad_batch(
        self, batch: list[tuple[dict[str, Any], Connection]], error: Exception
    ) -> None:
        # Split until the refused rows are alone; refuse them, store the rest.
        if len(batch) == 1:
            row, connection = batch[0]
            connection.release(1)
            connection.send_error(
                "invalid_event",
                f"the database refused the event: {_one_line(error)}",
                event_id=str(row["id"]),
            )
            return
        middle = len(batch) // 2
        await self._store(batch[:middle])
        await self._store(batch[middle:])


def _acknowledge(batch: Sequence[tuple[dict[str, Any], Connection]]) -> None:
    by_connection: dict[Connection, list[str]] = {}
    for row, connection in batch:
        by_connection.setdefault(connection, []).append(str(row["id"]))
    for connection, ids in by_connection.items():
        connection.acknowledge(ids)


async def _close_quietly(session: AsyncSession) -> None:
    with contextlib.suppress(Exception):
        await session.close()


def _one_line(error: BaseException) -> str:
    text = " ".join(str(getattr(error, "orig", None) or error).split())
    return (text or type(error).__name__)[:300]


# --- one connection --------------------------------------------------------------------------------


class Connection:
    """One agent connection: hello, then lines of events and requests, until it or the server ends it."""

    def __init__(
        self,
        server: IngestServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self._server = server
        self._reader = reader
        self._writer = writer
        self._limits = server.settings.ingest
        self._loop = asyncio.get_running_loop()
        self._lines = LineReader(self._read_chunk, self._limits.max_line_bytes)
        self._deadline = self._loop.time() + self._limits.hello_timeout_seconds
        self._reading = False
        self._stopping = False
        self._closed = False
        self._in_flight = 0
        self._acked = asyncio.Event()
        self.line_number = 0
        self.task: asyncio.Task[None] | None = None
        self.hello: Hello | None = None

    # -- output --

    def send(self, message: dict[str, Any]) -> None:
        if self._closed or self._writer.is_closing():
            return
        self._writer.write(orjson.dumps(message) + b"\n")
        if self._writer.transport.get_write_buffer_size() > WRITE_ABORT_BYTES:
            log.info("closing a client that does not read its acknowledgements")
            self._closed = True
            self._writer.transport.abort()

    def send_error(self, code: str, message: str, *, event_id: Any = None, line: int | None = None) -> None:
        self._server.stats.errors[code] += 1
        error: dict[str, Any] = {"type": "error", "code": code, "message": message}
        error["line"] = self.line_number if line is None else line
        if isinstance(event_id, str) and len(event_id) <= 64:
            error["id"] = event_id
        self.send(error)

    def acknowledge(self, ids: list[str]) -> None:
        """Called by the writer once these events are committed."""
        self.send({"type": "ack", "ids": ids})
        self.release(len(ids))

    def release(self, count: int) -> None:
        self._in_flight -= count
        self._acked.set()

    async def _flush(self) -> None:
        if self._writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER_BYTES:
            async with asyncio.timeout(self._limits.idle_timeout_seconds):
                await self._writer.drain()

    # -- input --

    def stop_reading(self) -> None:
        """Shutdown: read no more, finish what was read (the handler then waits for its acks)."""
        self._stopping = True
        if self._reading and self.task is not None:
            self.task.cancel()

    async def _read_chunk(self) -> bytes:
        if self._stopping:
            return b""
        stats = self._server.stats
        if self._lines.high_water_bytes > stats.max_line_buffer_bytes:
            stats.max_line_buffer_bytes = self._lines.high_water_bytes
        self._reading = True
        try:
            async with asyncio.timeout_at(self._deadline):
                return await self._reader.read(READ_CHUNK_BYTES)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._stopping and task is not None and task.uncancel() == 0:
                return b""
            raise
        finally:
            self._reading = False

    # -- the conversation --

    async def run(self) -> None:
        stats = self._server.stats
        stats.connections += 1
        stats.connections_total += 1
        try:
            if await self._greet():
                await self._stream()
        except TimeoutError:
            code = "idle_timeout" if self.hello is not None else "hello_timeout"
            waited = self._limits.idle_timeout_seconds if self.hello else self._limits.hello_timeout_seconds
            self.send_error(code, f"no complete line for {waited:g} seconds; closing")
        except (ConnectionError, OSError):
            pass
        finally:
            stats.connections -= 1
            stats.max_line_buffer_bytes = max(stats.max_line_buffer_bytes, self._lines.high_water_bytes)
            await self._close()

    async def _close(self) -> None:
        self._closed = True
        with contextlib.suppress(Exception):
            self._writer.close()
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)

    async def _greet(self) -> bool:
        """Read and check the hello; True if the connection may go on."""
        line = await self._lines.next_line()
        while line == b"":  # blank lines are keep-alives
            line = await self._lines.next_line()
        if line is None:
            return False
        self.line_number += 1
        message = self._parse(line)
        if message is None:
            return False
        if message.get("type") != "hello":
            self.send_error("hello_required", 'the first message must be {"type":"hello", ...}')
            return False
        try:
            hello = validate_hello(message)
        except EventError as error:
            self.send_error(error.code if error.code in CLOSING_CODES else "invalid_hello", error.message)
            return False
        try:
            async with asyncio.timeout(DB_REQUEST_TIMEOUT_SECONDS):
                config = await self._server.admit(hello)
        except DeviceRefused as refused:
            self.send_error(refused.code, refused.message)
            return False
        except PermissionError as error:
            self.send_error("unauthorized", str(error))
            return False
        except Exception as error:  # noqa: BLE001 - the database being away must not kill the server
            log.warning("hello refused, database unavailable: %s", _one_line(error))
            self.send_error("unavailable", "the database cannot be reached right now; retry later")
            return False
        self.hello = hello
        self.send(
            {
                "type": "welcome",
                "config": config,
                "limits": {
                    "max_line_bytes": self._limits.max_line_bytes,
                    "max_in_flight": self._limits.max_in_flight_per_connection,
                    "idle_timeout_seconds": self._limits.idle_timeout_seconds,
                },
            }
        )
        return True

    def _parse(self, line: Any) -> dict[str, Any] | None:
        """The line as a JSON object, or None after answering with an error."""
        if line is TOO_LONG:
            self.send_error(
                "line_too_long",
                f"line longer than {self._limits.max_line_bytes} bytes; it was discarded up to its newline",
            )
            return None
        try:
            message = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            if "UTF-8" in error.msg:
                self.send_error("invalid_json", "the line is not valid UTF-8 text")
            else:
                self.send_error(
                    "invalid_json", f"the line is not valid JSON: {error.msg} (column {error.colno})"
                )
            return None
        if not isinstance(message, dict):
            kind = (
                "a list" if isinstance(message, list) else type(message).__name__.replace("NoneType", "null")
            )
            self.send_error("invalid_json", f'each line must be a JSON object with a "type"; got {kind}')
            return None
        return message

    async def _stream(self) -> None:
        assert self.hello is not None
        hello = self.hello
        idle = self._limits.idle_timeout_seconds
        while True:
            self._deadline = self._loop.time() + idle
            line = await self._lines.next_line()
            if line is None:
                break
            if line == b"":
                continue
            self.line_number += 1
            if self.line_number % LINES_PER_TURN == 0:
                # A chunk holds hundreds of lines; yield now and then so the writer's database
                # round trips are not queued behind every connection's whole chunk.
                await asyncio.sleep(0)
            message = self._parse(line)
            if message is None:
                await self._flush()
                continue
            kind = message.get("type")
            if kind == "log":
                try:
                    row = validate_log(message, hello=hello)
                except EventError as error:
                    self.send_error(error.code, error.message, event_id=message.get("id"))
                    await self._flush()
                    continue
                except Exception:  # a validator bug must cost one event, not the connection
                    log.exception("unexpected error validating line %d", self.line_number)
                    self.send_error("internal_error", "the server could not check this event; it was not stored",
                                    event_id=message.get("id"))  # fmt: skip
                    continue
                await self._submit(row)
            elif kind == "ping":
                pong: dict[str, Any] = {"type": "pong"}
                if "id" in message and isinstance(message["id"], str | int) and len(str(message["id"])) <= 64:
                    pong["id"] = message["id"]
                self.send(pong)
                await self._flush()
            elif kind == "config":
                await self._send_config(hello)
            elif kind == "hello":
                self.send_error("unexpected_hello", "this connection already said hello")
            else:
                self.send_error("unknown_type", _describe_unknown_type(kind))
                await self._flush()
        await self._wait_for_acks()
        if self._stopping:
            self.send_error("shutting_down", "the server is stopping; acknowledged events are stored")

    async def _submit(self, row: dict[str, Any]) -> None:
        limit = self._limits.max_in_flight_per_connection
        while self._in_flight >= limit:
            # Stop reading this socket until the writer has acknowledged enough.
            self._acked.clear()
            await self._acked.wait()
        self._in_flight += 1
        self._server.stats.events_received += 1
        queue = self._server.writer.queue
        if queue.full():
            await queue.put((row, self))  # the writer is behind: wait here, reading nothing more
        else:
            queue.put_nowait((row, self))

    async def _wait_for_acks(self) -> None:
        """After the client's end of stream or shutdown: let the acks of what was read go out."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._limits.idle_timeout_seconds):
                while self._in_flight > 0:
                    self._acked.clear()
                    await self._acked.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer.drain(), 1.0)

    async def _send_config(self, hello: Hello) -> None:
        try:
            async with asyncio.timeout(DB_REQUEST_TIMEOUT_SECONDS):
                config = await self._server.current_config(hello.organization_id)
        except Exception as error:  # noqa: BLE001 - answered, the connection goes on
            log.warning("config request failed: %s", _one_line(error))
            self._server.stats.errors["unavailable"] += 1
            self.send(
                {
                    "type": "error",
                    "code": "unavailable",
                    "line": self.line_number,
                    "message": "the configuration cannot be read right now; keep the last one and retry",
                }
            )
            return
        self.send({"type": "config", "config": config})
        await self._flush()


def _describe_unknown_type(kind: object) -> str:
    if kind is None:
        return 'the message has no "type"; use one of hello, log, config, ping'
    shown = repr(kind) if isinstance(kind, str) and len(kind) <= 32 else "of this kind"
    return f"type {shown} is not one of hello, log, config, ping"


# --- the server ------------------------------------------------------------------------------------


class IngestServer:
    """The listener, its connections, the writer, the engine: started and stopped in order."""

    def __init__(self, settings: Settings, engine: AsyncEngine) -> None:
        self.settings = settings
        self.engine = engine
        self.sessions = new_sessionmaker(engine)
        self.stats = IngestStats()
        # The writer's own pool has no pre-ping (with asyncpg three round trips per checkout, so per
        # batch): a dead connection fails its batch, which is retried on a fresh connection anyway.
        self.writer_engine = new_engine(settings, pool_pre_ping=False) if settings.is_postgresql else engine
        self.writer = BatchWriter(new_sessionmaker(self.writer_engine), settings.ingest, self.stats)
        self.connections: set[Connection] = set()
        self._listener: asyncio.Server | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._accepting = True

    async def admit(self, hello: Hello) -> dict[str, Any]:
        """Check the token, register or touch the device, and return the config for the welcome."""
        async with self.sessions() as session:
            token = await verify(session=session, organization_id=hello.organization_id, token=hello.token)
            if token is None:
                raise PermissionError(
                    f"the token is not valid for organisation {hello.organization_id!r} "
                    "(unknown organisation, wrong token or revoked token)"
                )
            row = await get_config(session=session, organization_id=hello.organization_id)
            await register_or_touch_device(
                session=session,
                organization_id=hello.organization_id,
                device_id=hello.device_id,
                user_id=hello.user_id,
                device_type=hello.device_type,
                agent_version=hello.agent_version,
            )
            await session.commit()
            return effective_config(hello.organization_id, row).for_agent()

    async def current_config(self, organization_id: str) -> dict[str, Any]:
        async with self.sessions() as session:
            row = await get_config(session=session, organization_id=organization_id)
            return effective_config(organization_id, row).for_agent()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = Connection(self, reader, writer)
        if not self._accepting or len(self.connections) >= self.settings.ingest.max_connections:
            code, text = (
                ("shutting_down", "the server is stopping; reconnect later")
                if not self._accepting
                else ("overloaded", "the server has too many connections; retry later with backoff")
            )
            self.stats.errors[code] += 1
            connection.send({"type": "error", "code": code, "message": text, "line": 0})
            await connection._close()
            return
        connection.task = asyncio.current_task()
        self.connections.add(connection)
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)

    async def start(self) -> RunningServer:
        context = tls_context(self.settings)
        self._writer_task = asyncio.create_task(self.writer.run(), name="ingest-writer")
        self._listener = await asyncio.start_server(
            self._on_connect,
            host=self.settings.ingest_host,
            port=self.settings.ingest_port,
            ssl=context,
            limit=READ_CHUNK_BYTES,
            backlog=min(self.settings.ingest.max_connections, 4096),
        )
        socket_name = self._listener.sockets[0].getsockname()
        return RunningServer(
            host=socket_name[0], port=socket_name[1], tls=context is not None, stats=self.stats
        )

    async def stop(self) -> None:
        """Stop accepting, finish and acknowledge what was read, close clients, within the grace period."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.ingest.shutdown_grace_seconds
        self._accepting = False
        if self._listener is not None:
            self._listener.close()
        for connection in list(self.connections):
            connection.stop_reading()
        handlers = [c.task for c in self.connections if c.task is not None]
        if handlers:
            _, late = await asyncio.wait(handlers, timeout=max(0.0, deadline - loop.time()))
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1.0)
        if self._writer_task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.writer.queue.put(_STOP), max(0.0, deadline - loop.time()))
            done, _ = await asyncio.wait({self._writer_task}, timeout=max(0.0, deadline - loop.time()))
            if not done:
                self.writer.abandon()
                await asyncio.wait({self._writer_task}, timeout=1.0)
                self._writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._writer_task
        unacked = self.writer.queue.qsize()
        if unacked:
            log.warning(
                "%d events read but not stored before shutdown; their agents will resend them", unacked
            )


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """A server TLS context from INGEST_TLS_CERT/INGEST_TLS_KEY, or None; SettingsError if unusable."""
    if settings.ingest_tls_cert is None or settings.ingest_tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.ingest_tls_cert, settings.ingest_tls_key)
    except (OSError, ssl.SSLError) as error:
        raise SettingsError(
            f"cannot load TLS certificate {settings.ingest_tls_cert} with key {settings.ingest_tls_key}: "
            f"{getattr(error, 'strerror', None) or error}"
        ) from None
    return context


async def _report_stats(server: IngestServer, interval: float) -> None:
    """Every interval, one line on stderr, only when something happened (quiet when idle)."""
    stats = server.stats
    last_stored, last_errors, last_connections = stats.events_stored, sum(stats.errors.values()), 0
    last_time = time.monotonic()
    while True:
        await asyncio.sleep(interval)
        now = time.monotonic()
        errors = sum(stats.errors.values())
        if (stats.events_stored, errors, stats.connections) != (last_stored, last_errors, last_connections):
            rate = (stats.events_stored - last_stored) / max(now - last_time, 1e-9)
            log.info(stats.line(queued=server.writer.queue.qsize(), events_per_second=rate))
        last_stored, last_errors, last_connections, last_time = (
            stats.events_stored,
            errors,
            stats.connections,
            now,
        )


async def serve(
    settings: Settings,
    *,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
    ready: Callable[[RunningServer], Any] | None = None,
) -> None:
    """Run the ingest server until ``shutdown_trigger()`` returns (default: SIGTERM or SIGINT).

    ``ready`` is called with a :class:`RunningServer` (host, bound port, live
    stats) once the server listens. Raises DatabaseError or SettingsError with
    one-line messages if the database or TLS files cannot be used at start.
    """
    engine = new_engine(settings)
    scheduler: Any = None
    stats_task: asyncio.Task[None] | None = None
    server = IngestServer(settings, engine)
    try:
        await check_database(engine, settings)
        running = await server.start()
        log.info(
            "ingest server listening on %s:%d%s, writing to %s",
            running.host,
            running.port,
            " (TLS)" if running.tls else "",
            settings.describe_database(),
        )
        # Retention scheduler (ENABLE_RETENTION_SCHEDULER): started once the database is ready.
        scheduler = _start_retention_scheduler(settings, server.sessions)
        if settings.ingest.stats_interval_seconds > 0:
            stats_task = asyncio.create_task(_report_stats(server, settings.ingest.stats_interval_seconds))
        if ready is not None:
            ready(replace(running, retention_scheduler=scheduler))
        if shutdown_trigger is None:
            await _wait_for_signal()
        else:
            await shutdown_trigger()
        log.info("ingest server stopping: finishing what was read")
        await server.stop()
    finally:
        if stats_task is not None:
            stats_task.cancel()
        if scheduler is not None:
            await scheduler.shutdown()
        await server.writer_engine.dispose()
        await engine.dispose()
    stats = server.stats
    log.info(
        "ingest server stopped (stored %d events in %d batches, %.1f s writing to the database)",
        stats.events_stored,
        stats.batches,
        stats.store_seconds,
    )


def _start_retention_scheduler(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> Any:
    from db.scheduler import maybe_start_retention_scheduler

    return maybe_start_retention_scheduler(settings, sessions)


async def _wait_for_signal() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


# --- command line ----------------------------------------------------------------------------------


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    """Every option, with its default from the environment (db/settings.py)."""
    limits = settings.ingest
    parser = argparse.ArgumentParser(
        prog="aifw-ingest",
        description="AI Usage Firewall ingest server: agents stream NDJSON events over TCP (docs/protocol.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--host", default=settings.ingest_host, help="address to listen on (INGEST_HOST)")
    add("--port", type=int, default=settings.ingest_port, help="TCP port, 0 for any free port (INGEST_PORT)")
    add(
        "--tls-cert",
        default=settings.ingest_tls_cert,
        help="PEM certificate chain; enables TLS (INGEST_TLS_CERT)",
    )
    add("--tls-key", default=settings.ingest_tls_key, help="PEM private key (INGEST_TLS_KEY)")
    add(
        "--max-line-bytes",
        type=int,
        default=limits.max_line_bytes,
        help="longest line accepted (INGEST_MAX_LINE_BYTES)",
    )
    add(
        "--max-connections",
        type=int,
        default=limits.max_connections,
        help="connections at once; more get 'overloaded' (INGEST_MAX_CONNECTIONS)",
    )
    add(
        "--hello-timeout",
        type=float,
        default=limits.hello_timeout_seconds,
        help="seconds a new connection has to say hello (INGEST_HELLO_TIMEOUT_SECONDS)",
    )
    add(
        "--idle-timeout",
        type=float,
        default=limits.idle_timeout_seconds,
        help="seconds without a complete line before closing (INGEST_IDLE_TIMEOUT_SECONDS)",
    )
    add(
        "--max-in-flight",
        type=int,
        default=limits.max_in_flight_per_connection,
        help="unacknowledged events per connection before it is no longer read (INGEST_MAX_IN_FLIGHT)",
    )
    add(
        "--queue-max-events",
        type=int,
        default=limits.queue_max_events,
        help="events waiting for the writer before all reading pauses (INGEST_QUEUE_MAX_EVENTS)",
    )
    add(
        "--batch-max-events",
        type=int,
        default=limits.batch_max_events,
        help="events per database transaction at most (INGEST_BATCH_MAX_EVENTS)",
    )
    add(
        "--batch-max-wait-ms",
        type=float,
        default=limits.batch_max_wait_ms,
        help="under load, milliseconds the writer waits to fill a batch (INGEST_BATCH_MAX_WAIT_MS)",
    )
    add(
        "--stats-interval",
        type=float,
        default=limits.stats_interval_seconds,
        help="seconds between stats lines on stderr, 0 for none (INGEST_STATS_INTERVAL_SECONDS)",
    )
    add(
        "--shutdown-grace",
        type=float,
        default=limits.shutdown_grace_seconds,
        help="seconds to finish and acknowledge on SIGTERM (INGEST_SHUTDOWN_GRACE_SECONDS)",
    )
    add(
        "--db-retry-max",
        type=float,
        default=limits.db_retry_max_seconds,
        help="longest pause between database retries, seconds (INGEST_DB_RETRY_MAX_SECONDS)",
    )
    add("--quiet", action="store_true", help="log warnings only (no start, stop and stats lines)")
    return parser


def settings_from_args(settings: Settings, args: argparse.Namespace) -> Settings:
    if (args.tls_cert is None) != (args.tls_key is None):
        raise SettingsError("--tls-cert and --tls-key go together: give both or neither")
    checks = {
        "--port": (args.port, 0 <= args.port <= 65535),
        "--max-line-bytes": (args.max_line_bytes, args.max_line_bytes >= 1024),
        "--max-connections": (args.max_connections, args.max_connections >= 1),
        "--hello-timeout": (args.hello_timeout, args.hello_timeout > 0),
        "--idle-timeout": (args.idle_timeout, args.idle_timeout > 0),
        "--max-in-flight": (args.max_in_flight, args.max_in_flight >= 1),
        "--queue-max-events": (args.queue_max_events, args.queue_max_events >= 1),
        "--batch-max-events": (args.batch_max_events, args.batch_max_events >= 1),
        "--batch-max-wait-ms": (args.batch_max_wait_ms, args.batch_max_wait_ms >= 0),
        "--stats-interval": (args.stats_interval, args.stats_interval >= 0),
        "--shutdown-grace": (args.shutdown_grace, args.shutdown_grace >= 0),
        "--db-retry-max": (args.db_retry_max, args.db_retry_max > 0),
    }
    for option, (value, ok) in checks.items():
        if not ok:
            raise SettingsError(f"{option} is out of range: {value}")
    limits = replace(
        settings.ingest,
        max_line_bytes=args.max_line_bytes,
        max_connections=args.max_connections,
        hello_timeout_seconds=args.hello_timeout,
        idle_timeout_seconds=args.idle_timeout,
        max_in_flight_per_connection=args.max_in_flight,
        queue_max_events=args.queue_max_events,
        batch_max_events=args.batch_max_events,
        batch_max_wait_ms=args.batch_max_wait_ms,
        stats_interval_seconds=args.stats_interval,
        shutdown_grace_seconds=args.shutdown_grace,
        db_retry_max_seconds=args.db_retry_max,
    )
    return replace(
        settings,
        ingest_host=args.host,
        ingest_port=args.port,
        ingest_tls_cert=args.tls_cert,
        ingest_tls_key=args.tls_key,
        ingest=limits,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python ingest_server.py`` and ``aifw-ingest``: 0 after a clean stop, 1 or 2 on errors."""
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args = build_parser(settings).parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        settings = settings_from_args(settings, args)
        asyncio.run(serve(settings))
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except DatabaseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(
            f"error: cannot listen on {settings.ingest_host}:{settings.ingest_port}: {error.strerror or error}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
