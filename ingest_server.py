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
import resource
import signal
import ssl
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db.configs import effective_config, get_config
from db.devices import DeviceRefused, register_or_touch_device
from db.engine import check_database, new_engine, new_sessionmaker
from db.errors import DatabaseError, error_reason, is_refused_data
from db.event_schema import EventError, Hello, validate_hello, validate_log
from db.events import store_events
from db.metadata_keys import Shape, keys_for_agent, organization_shapes, shapes_from_agent
from db.models import FirewallConfig
from db.settings import (
    MIN_MAX_LINE_BYTES,
    IngestLimits,
    OneLineArgumentParser,
    Settings,
    SettingsError,
    load_settings,
    port_number,
)
from db.tokens import verify

log = logging.getLogger("aifw.ingest")

READ_CHUNK_BYTES = 64 * 1024
#: File descriptors the server needs besides its connections: listener, two database pools, logs.
SPARE_FILE_DESCRIPTORS = 128
#: Lines a minute the log gets about one kind of bad input; the rest are counted, then reported.
LOG_REPEATS_PER_MINUTE = 5
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
    Lines are cut one at a time from the buffer, so memory per connection stays
    below ``max_line_bytes`` plus one read chunk. ``unfinished_since`` is when the
    reader started waiting for the rest of a line (``None`` between lines): the
    server times lines out, and sheds the connection whose line is oldest.
    """

    def __init__(
        self,
        read_chunk: Callable[[], Awaitable[bytes]],
        max_line_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read_chunk = read_chunk
        #: May change between lines (a connection's limit grows once it has said hello).
        self.max_line_bytes = max_line_bytes
        self._clock = clock
        self._buffer = bytearray()
        self._start = 0
        self._discarding = False
        self.high_water_bytes = 0
        self.unfinished_since: float | None = None

    async def next_line(self) -> Any:
        while True:
            line = self._take()
            if line is not None:
                self.unfinished_since = None
                return line
            if self.unfinished_since is None and (self._discarding or self._buffer):
                self.unfinished_since = self._clock()
            data = await self._read_chunk()
            if not data:
                return None
            self._buffer += data
            self.high_water_bytes = max(self.high_water_bytes, len(self._buffer))

    def _take(self) -> Any:
        """The next complete line in the buffer, or None (the buffer then holds only a partial line)."""
        buffer = self._buffer
        if self._discarding:
            newline = buffer.find(b"\n", self._start)
            if newline < 0:
                buffer.clear()
                self._start = 0
                return None
            self._discarding = False
            self._start = newline + 1
        start = self._start
        newline = buffer.find(b"\n", start)
        if newline >= 0:
            end = newline - 1 if newline > start and buffer[newline - 1] == 13 else newline
            self._start = newline + 1
            return TOO_LONG if end - start > self.max_line_bytes else bytes(buffer[start:end])
        del buffer[:start]
        self._start = 0
        # +1: a line of exactly the limit may wait here for the "\n" after its "\r".
        if len(buffer) > self.max_line_bytes + 1:
            buffer.clear()
            self._discarding = True
            return TOO_LONG
        return None


# --- statistics ------------------------------------------------------------------------------------


@dataclass
class IngestStats:
    """Counters of a running server (read by tests, the stats line and benchmarks)."""

    connections: int = 0
    connections_total: int = 0
    events_received: int = 0
    #: Events acknowledged: committed now or found already stored (a resend is acknowledged again).
    events_acknowledged: int = 0
    #: Rows newly inserted: an acknowledged resend is not stored twice, so it is not counted here.
    events_stored: int = 0
    batches: int = 0
    db_retries: int = 0
    #: Wall time of successful batch writes (insert, rollups, commit), seconds.
    store_seconds: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    max_line_buffer_bytes: int = 0
    #: Connections closed to make room (silent before their hello, or holding an unfinished line).
    connections_shed: int = 0

    def line(self, *, queued: int, events_per_second: float) -> str:
        errors = ",".join(f"{code}:{count}" for code, count in sorted(self.errors.items())) or "none"
        return (
            f"ingest stats connections={self.connections} events_per_s={events_per_second:.1f} "
            f"received={self.events_received} acknowledged={self.events_acknowledged} "
            f"stored={self.events_stored} queued={queued} "
            f"batches={self.batches} db_retries={self.db_retries} errors={errors}"
        )


class RepeatedLog:
    """Logs each kind of repeated event (one bad input, one slow client…) a few times a minute at most.

    What is not logged is counted, and the next line of that kind says how many were left out, so
    a client sending bad lines at line rate cannot flood the log (the stats line counts them all).
    """

    def __init__(
        self,
        logger: logging.Logger,
        per_minute: int = LOG_REPEATS_PER_MINUTE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._per_minute = per_minute
        self._clock = clock
        #: Per kind: start of its current minute, lines logged in it, events left out since the last line.
        self._kinds: dict[str, list[float]] = {}

    def info(self, kind: str, message: str, *args: Any) -> None:
        self._log(logging.INFO, kind, message, args)

    def warning(self, kind: str, message: str, *args: Any) -> None:
        self._log(logging.WARNING, kind, message, args)

    def _log(self, level: int, kind: str, message: str, args: tuple[Any, ...]) -> None:
        now = self._clock()
        state = self._kinds.setdefault(kind, [now, 0, 0])
        if now - state[0] >= 60.0:
            state[0], state[1] = now, 0
        if state[1] >= self._per_minute:
            state[2] += 1
            return
        state[1] += 1
        if state[2]:
            message += " (and %d more like it not logged)"
            args = (*args, int(state[2]))
            state[2] = 0
        if self._logger.isEnabledFor(level):
            self._logger.log(level, message, *args)


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
                        "internal_error",
                        "the server could not store this event; resend it later",
                        event_id=row["ack_id"],
                    )

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
                stored = await store_events(
                    session=session,
                    events=[row for row, _ in batch],
                    max_rollup_keys=self._limits.rollup_max_keys_per_bucket,
                )
                await session.commit()
            except Exception as error:  # noqa: BLE001 - every failure is sorted below, none escapes
                if is_refused_data(error):
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
        self._stats.events_acknowledged += len(batch)
        self._stats.events_stored += stored.inserted
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
                event_id=row["ack_id"],
            )
            return
        middle = len(batch) // 2
        await self._store(batch[:middle])
        await self._store(batch[middle:])


def _acknowledge(batch: Sequence[tuple[dict[str, Any], Connection]]) -> None:
    by_connection: dict[Connection, list[str]] = {}
    for row, connection in batch:
        # Acknowledged under the id exactly as the agent sent it (upper case, braces, urn:uuid: …).
        by_connection.setdefault(connection, []).append(row["ack_id"])
    for connection, ids in by_connection.items():
        connection.acknowledge(ids)


async def _close_quietly(session: AsyncSession) -> None:
    with contextlib.suppress(Exception):
        await session.close()


def _one_line(error: BaseException) -> str:
    return error_reason(error)[:300]


# --- one connection --------------------------------------------------------------------------------


class _Close(Exception):
    """Ends a connection: with one error line when ``code`` is set, else silently."""

    def __init__(self, code: str | None = None, message: str = "") -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


class Connection:
    """One agent connection: hello, then lines of events and requests, until it or the server ends it.

    Its phase decides which budget it uses (see :class:`IngestServer`): ``pre_hello`` until
    the hello is accepted, then ``open``, and ``lingering`` once the client has closed its
    sending side and only waits for its acks.
    """

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
        self._lines = LineReader(self._read_chunk, self._limits.hello_max_line_bytes, self._loop.time)
        self.opened_at = self._loop.time()
        self._last_line_at = self.opened_at
        #: What the handler waits for where it may be interrupted ("read", "submit", "acks", …), or "".
        self._waiting_for = ""
        self._interrupted = False
        self._stopping = False
        self._closed = False
        #: Why the server ended this connection (shed, replaced); None while it may go on.
        self._ended: _Close | None = None
        self._gone = False
        #: Until the TLS handshake is done, nothing may be written in clear.
        self._tls_pending = server.tls_context is not None
        self._in_flight = 0
        self._acked = asyncio.Event()
        self.line_number = 0
        self.phase = "pre_hello"
        self.task: asyncio.Task[None] | None = None
        self.hello: Hello | None = None
        #: The organisation's log_metadata keys, as told to the agent in welcome and config.
        self.metadata_keys: dict[str, Shape] | None = None
        self.token_key: tuple[str, str] | None = None
        self.peer = _describe_peer(writer)
        writer.transport.set_write_buffer_limits(high=self._limits.max_output_bytes)
        if hasattr(writer.transport, "max_size"):
            # asyncio's socket transport receives up to 256 KiB at once into the stream's buffer:
            # one chunk at a time keeps a connection that is not being read at one chunk.
            writer.transport.max_size = READ_CHUNK_BYTES
        # A reset or a failed write must free the slot at once, even while the handler is not
        # reading (waiting for acks or for room in the queue): wait_closed() ends on connection loss.
        watcher = self._loop.create_task(writer.wait_closed())
        watcher.add_done_callback(self._on_connection_lost)

    @property
    def unfinished_line_since(self) -> float | None:
        """When the server started waiting for the rest of a line, or None between lines."""
        return self._lines.unfinished_since

    def _on_connection_lost(self, watcher: asyncio.Task[None]) -> None:
        if not watcher.cancelled():
            watcher.exception()  # retrieved: a reset is not worth a "never retrieved" traceback
        self._gone = True
        self._closed = True
        self._server.forget(self)
        self._interrupt()

    # -- output --

    def send(self, message: dict[str, Any]) -> None:
        """Queue one line for the client; dropped once the connection is closed (late acks included)."""
        self.send_line(orjson.dumps(message) + b"\n")

    def send_line(self, line: bytes) -> None:
        """Queue one encoded line (newline included), as :meth:`send` does."""
        if self._closed or self._writer.is_closing():
            return
        self._writer.write(line)

    def send_error(self, code: str, message: str, *, event_id: Any = None, line: int | None = None) -> None:
        self._server.stats.errors[code] += 1
        error: dict[str, Any] = {"type": "error", "code": code, "message": message}
        error["line"] = self.line_number if line is None else line
        if isinstance(event_id, str) and len(event_id) <= 64:
            error["id"] = event_id
        self._server.repeated_log.info(
            code, "%s from %s on line %d: %s", code, self.peer, error["line"], message
        )
        self.send(error)

    def acknowledge(self, ids: list[str]) -> None:
        """Called by the writer once these events are committed."""
        self.send({"type": "ack", "ids": ids})
        self.release(len(ids))

    def release(self, count: int) -> None:
        self._in_flight -= count
        self._acked.set()

    async def _drain_output(self) -> None:
        """Read nothing more while the client leaves its answers unread; close it if it never reads."""
        # A stream over TCP or TLS: a full transport (StreamWriter types it as write-only).
        transport = cast(asyncio.Transport, self._writer.transport)
        if transport.get_write_buffer_size() <= self._limits.max_output_bytes:
            return
        # Not even into the stream's buffer: a client that does not read must not fill one either.
        transport.pause_reading()
        self._waiting_for = "drain"
        try:
            async with asyncio.timeout(self._limits.output_timeout_seconds):
                await self._writer.drain()
        except TimeoutError:
            self._server.repeated_log.info(
                "output_timeout",
                "closing %s: it left its answers unread for %g seconds",
                self.peer,
                self._limits.output_timeout_seconds,
            )
            raise _Close() from None
        except asyncio.CancelledError:
            if not self._absorb_interrupt():
                raise
        finally:
            self._waiting_for = ""
            if not transport.is_closing():
                transport.resume_reading()

    # -- interruptions: shutdown, shedding, replacement, connection loss --

    def _interrupt(self, *, unless: str = "") -> None:
        task = self.task
        waiting = self._waiting_for
        if waiting and waiting != unless and not self._interrupted and task is not asyncio.current_task():
            if task is not None:
                self._interrupted = True
                task.cancel()

    def _absorb_interrupt(self) -> bool:
        """In ``except CancelledError``: True if the cancellation was ours (then raise _Close if ended)."""
        task = asyncio.current_task()
        if not self._interrupted or task is None or task.uncancel() > 0:
            return False
        self._interrupted = False
        if self._ended is not None or self._gone:
            raise _Close()
        return True

    def stop_reading(self) -> None:
        """Shutdown: read no more, finish what was read (the handler then waits for its acks)."""
        self._stopping = True
        self._acked.set()  # an ack wait re-reads its deadline: the shutdown grace now bounds it
        self._interrupt(unless="acks")

    def end(self, code: str | None, message: str = "") -> None:
        """The server closes this connection now (shed, replaced): one error line, the slot freed at once."""
        if self._ended is not None or self._closed:
            return
        self._ended = _Close(code, message)
        self._server.forget(self)
        if code is not None and not self._tls_pending:
            self.send_error(code, message)
        self._closed = True
        transport = self._writer.transport
        # A client that does not read would keep a graceful close (and its descriptor) waiting.
        if transport.get_write_buffer_size() > 0:
            transport.abort()
        else:
            transport.close()
        self._interrupt()

    # -- input --

    def _read_deadline(self) -> tuple[float, str]:
        if self.hello is None:
            return self.opened_at + self._limits.hello_timeout_seconds, "hello_timeout"
        idle = self._last_line_at + self._limits.idle_timeout_seconds
        started = self._lines.unfinished_since
        if started is not None and started + self._limits.line_timeout_seconds < idle:
            return started + self._limits.line_timeout_seconds, "line_timeout"
        return idle, "idle_timeout"

    async def _read_chunk(self) -> bytes:
        if self._stopping:
            return b""
        if self._ended is not None:
            raise _Close()
        await self._drain_output()
        stats = self._server.stats
        if self._lines.high_water_bytes > stats.max_line_buffer_bytes:
            stats.max_line_buffer_bytes = self._lines.high_water_bytes
        deadline, code = self._read_deadline()
        self._waiting_for = "read"
        try:
            async with asyncio.timeout_at(deadline):
                return await self._reader.read(READ_CHUNK_BYTES)
        except TimeoutError:
            raise _Close(code, self._timeout_message(code)) from None
        except asyncio.CancelledError:
            if self._absorb_interrupt():
                return b""  # stopping: what was read is finished, nothing more is read
            raise
        finally:
            self._waiting_for = ""

    def _timeout_message(self, code: str) -> str:
        limits = self._limits
        if code == "hello_timeout":
            return f"no hello within {limits.hello_timeout_seconds:g} seconds; closing"
        if code == "line_timeout":
            return f"a line did not end within {limits.line_timeout_seconds:g} seconds; closing"
        return f"no complete line for {limits.idle_timeout_seconds:g} seconds; closing"

    # -- the conversation --

    async def run(self) -> None:
        stats = self._server.stats
        stats.connections += 1
        stats.connections_total += 1
        try:
            if self._server.tls_context is not None:
                await self._start_tls(self._server.tls_context)
            if await self._greet():
                await self._stream()
        except _Close as close:
            if close.code is not None and not self._tls_pending:
                self.send_error(close.code, close.message)
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self._interrupted or task is None or task.uncancel() > 0:
                raise
        finally:
            self._server.forget(self)
            stats.connections -= 1
            stats.max_line_buffer_bytes = max(stats.max_line_buffer_bytes, self._lines.high_water_bytes)
            await self._close()

    async def _start_tls(self, context: ssl.SSLContext) -> None:
        # TLS is started here rather than by the listener so that a pending handshake holds a
        # pre-hello slot (and can be shed like one), under its own short timeout.
        self._waiting_for = "tls"
        try:
            await self._writer.start_tls(
                context, ssl_handshake_timeout=self._limits.tls_handshake_timeout_seconds
            )
        except asyncio.CancelledError:
            if not self._absorb_interrupt():
                raise
            raise _Close() from None
        except (ConnectionError, OSError, TimeoutError):
            raise _Close() from None
        finally:
            self._waiting_for = ""
        self._tls_pending = False
        self._writer.transport.set_write_buffer_limits(high=self._limits.max_output_bytes)

    async def _close(self) -> None:
        self._closed = True
        with contextlib.suppress(Exception):
            self._writer.close()
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)
        # A client that reads nothing would keep a graceful close, and its descriptor, forever.
        self._writer.transport.abort()

    async def _greet(self) -> bool:
        """Read and check the hello; True if the connection may go on."""
        while True:
            line = await self._lines.next_line()
            if line is None:
                return False
            self.line_number += 1  # every line received counts, blank ones too
            if line is TOO_LONG or not _is_blank(line):
                break
        message = self._parse(line)
        if message is None:
            return False
        if message.get("type") != "hello":
            self.send_error("hello_required", 'the first message must be {"type":"hello", ...}')
            return False
        self._server.hello_received(self)
        try:
            hello = validate_hello(message)
        except EventError as error:
            # invalid_hello or content_not_allowed: either way the hello is refused and the connection closed.
            self.send_error(error.code, error.message)
            return False
        try:
            async with asyncio.timeout(DB_REQUEST_TIMEOUT_SECONDS):
                hello, config = await self._server.admit(hello)
        except DeviceRefused as refused:
            self.send_error(refused.code, refused.message)
            return False
        except PermissionError as error:
            self.send_error("unauthorized", str(error))
            return False
        except Exception as error:  # noqa: BLE001 - the database being away must not kill the server
            self._server.repeated_log.warning(
                "hello_unavailable", "hello refused, database unavailable: %s", _one_line(error)
            )
            self.send_error("unavailable", "the database cannot be reached right now; retry later")
            return False
        if self._ended is not None:
            return False  # shed while its hello was being checked
        try:
            welcome = answer_line(welcome_message(config, self._limits), self._limits)
        except UnsendableConfig as error:
            # Never a line longer than the limit the welcome announces: an agent would drop it.
            self._server.repeated_log.warning("config_too_large", "hello refused: %s", error)
            self.send_error("config_too_large", str(error))
            return False
        refusal = self._server.promote(self, hello)
        if refusal is not None:
            self.send_error("overloaded", refusal)
            return False
        self.hello = hello
        self._lines.max_line_bytes = self._limits.max_line_bytes
        self.metadata_keys = shapes_from_agent(config.get("metadata_keys"))
        self.send_line(welcome)
        return True

    def _parse(self, line: Any) -> dict[str, Any] | None:
        """The line as a JSON object, or None after answering with an error."""
        if line is TOO_LONG:
            self.send_error(
                "line_too_long",
                f"line longer than {self._lines.max_line_bytes} bytes; it was discarded up to its newline",
            )
            return None
        try:
            message = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            if "UTF-8" in error.msg:
                self.send_error("invalid_json", "the line is not valid UTF-8 text")
            elif "depth limit" in error.msg or "ecursion" in error.msg:
                self.send_error("invalid_json", f"the line is nested too deeply (column {error.colno})")
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
        max_output = self._limits.max_output_bytes
        while True:
            # Errors and pongs included: while the client leaves its answers unread, read no more.
            if self._writer.transport.get_write_buffer_size() > max_output:
                await self._drain_output()
            self._last_line_at = self._loop.time()
            line = await self._lines.next_line()
            if line is None:
                break
            self.line_number += 1  # every line received counts, blank ones too
            if line is not TOO_LONG and _is_blank(line):
                continue  # blank and whitespace-only lines alike are keep-alives
            if self.line_number % LINES_PER_TURN == 0:
                # A chunk holds hundreds of lines; yield now and then so the writer's database
                # round trips are not queued behind every connection's whole chunk.
                await asyncio.sleep(0)
            message = self._parse(line)
            if message is None:
                continue
            kind = message.get("type")
            if kind == "log":
                try:
                    row = validate_log(message, hello=hello, metadata_keys=self.metadata_keys)
                except EventError as error:
                    self.send_error(error.code, error.message, event_id=message.get("id"))
                    continue
                except Exception as error:  # a validator bug must cost one event, not the connection
                    # One line, no traceback: the input that triggers it may repeat at line rate.
                    self._server.repeated_log.warning(
                        "validator_fault",
                        "unexpected error validating line %d from %s: %s: %s",
                        self.line_number,
                        self.peer,
                        type(error).__name__,
                        _one_line(error),
                    )
                    self.send_error(
                        "internal_error",
                        "the server could not check this event; it was not stored",
                        event_id=message.get("id"),
                    )
                    continue
                await self._submit(row)
            elif kind == "ping":
                pong: dict[str, Any] = {"type": "pong"}
                if "id" in message and isinstance(message["id"], str | int) and len(str(message["id"])) <= 64:
                    pong["id"] = message["id"]
                self.send(pong)
            elif kind == "config":
                await self._send_config(hello)
            elif kind == "hello":
                self.send_error("unexpected_hello", "this connection already said hello")
            else:
                self.send_error("unknown_type", _describe_unknown_type(kind))
        if self._stopping:
            await self._wait_for_acks()
            self.send_error("shutting_down", "the server is stopping; acknowledged events are stored")
        elif self._in_flight > 0 and self._server.linger(self):
            # The client closed its sending side (as socat does) and waits for its acks: it keeps
            # waiting from the small lingering budget, for a bounded time, not from a full slot.
            await self._wait_for_acks()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer.drain(), 1.0)

    async def _submit(self, row: dict[str, Any]) -> None:
        limit = self._limits.max_in_flight_per_connection
        queue = self._server.writer.queue
        if self._in_flight >= limit or queue.full():
            if self._stopping:
                return  # not queued, so not acknowledged: the agent resends it
            self._waiting_for = "submit"
            try:
                while self._in_flight >= limit:
                    # Stop reading this socket until the writer has acknowledged enough.
                    self._acked.clear()
                    await self._acked.wait()
                # The writer is behind: wait here, reading nothing more.
                await queue.put((row, self))
            except asyncio.CancelledError:
                if self._absorb_interrupt():
                    return  # stopping: the row was not queued and will not be acknowledged
                raise
            finally:
                self._waiting_for = ""
        else:
            queue.put_nowait((row, self))
        self._in_flight += 1
        self._server.stats.events_received += 1

    async def _wait_for_acks(self) -> None:
        """After the client's end of stream or at shutdown: let the acks of what was read go out.

        A lingering client waits ``INGEST_LINGER_TIMEOUT_SECONDS`` at most; at shutdown the
        grace period bounds the wait, so ``shutting_down`` is sent even when the writer is stuck.
        """
        deadline = self._loop.time() + self._limits.linger_timeout_seconds
        self._waiting_for = "acks"
        try:
            while self._in_flight > 0:
                if self._stopping:
                    deadline = min(deadline, self._server.grace_deadline)
                remaining = deadline - self._loop.time()
                if remaining <= 0:
                    break
                self._acked.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._acked.wait(), remaining)
        except asyncio.CancelledError:
            if not self._absorb_interrupt():
                raise
        finally:
            self._waiting_for = ""

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
        try:
            answer = answer_line({"type": "config", "config": config}, self._limits)
        except UnsendableConfig as error:
            self._server.repeated_log.warning("config_too_large", "config not sent: %s", error)
            self.send_error("config_too_large", f"{error}; keep the last configuration")
            return
        self.metadata_keys = shapes_from_agent(config.get("metadata_keys"))
        self.send_line(answer)


def welcome_message(config: dict[str, Any], limits: IngestLimits) -> dict[str, Any]:
    """The ``welcome`` answer to a good hello: the configuration and the limits the agent must keep."""
    return {
        "type": "welcome",
        "config": config,
        "limits": {
            "max_line_bytes": limits.max_line_bytes,
            "max_in_flight": limits.max_in_flight_per_connection,
            "idle_timeout_seconds": limits.idle_timeout_seconds,
        },
    }


class UnsendableConfig(Exception):
    """A welcome or config answer cannot go to the agent as one line; the message says why."""


def answer_line(answer: dict[str, Any], limits: IngestLimits) -> bytes:
    """``answer`` (a welcome or a config) as the line to send, newline included, encoded once.

    Raises UnsendableConfig when it would pass ``max_line_bytes`` or holds text that is not
    Unicode. The console's validators keep every configuration within the limit
    (db/configs.py); this catches one written around them (by SQL).
    """
    try:
        encoded = orjson.dumps(answer)
    except orjson.JSONEncodeError:  # a lone surrogate stored around the validators (SQLite's JSON text)
        raise UnsendableConfig(
            "the organisation's configuration holds text that is not valid Unicode; an administrator must fix it"
        ) from None
    if len(encoded) > limits.max_line_bytes:
        raise UnsendableConfig(
            f"the organisation's configuration makes a {len(encoded):,}-byte line, over the "
            f"{limits.max_line_bytes:,}-byte line limit; an administrator must remove or shorten "
            "custom patterns, monitored tools or metadata keys"
        )
    return encoded + b"\n"


async def _config_for_agent(
    session: AsyncSession, organization_id: str, row: FirewallConfig | None
) -> dict[str, Any]:
    """The configuration as agents get it in ``welcome`` and ``config``, with the organisation's metadata keys."""
    config = effective_config(organization_id, row).for_agent()
    config["metadata_keys"] = keys_for_agent(
        await organization_shapes(session=session, organization_id=organization_id)
    )
    return config


def _is_blank(line: bytes) -> bool:
    return not line or line.isspace()


def _describe_peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return "a client"


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
        #: Every connection with a running handler (shutdown stops them all).
        self.connections: set[Connection] = set()
        # The budgets, each oldest first (dicts keep insertion order): connections before their
        # hello, authenticated ones, and those whose client closed its side and waits for acks.
        self._pre_hello: dict[Connection, None] = {}
        self._open: dict[Connection, None] = {}
        self._lingering: dict[Connection, None] = {}
        self._devices: dict[tuple[str, str], Connection] = {}
        self._per_token: Counter[tuple[str, str]] = Counter()
        self._trim_timer: asyncio.TimerHandle | None = None
        self.repeated_log = RepeatedLog(log)
        self.tls_context: ssl.SSLContext | None = None
        #: When the shutdown grace period ends (loop time); infinite until stop().
        self.grace_deadline = float("inf")
        self._listener: asyncio.Server | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._accepting = True

    async def admit(self, hello: Hello) -> tuple[Hello, dict[str, Any]]:
        """Check the token, register or touch the device; return the hello under the organisation id
        as created (it is looked up regardless of case) and the config for the welcome."""
        async with self.sessions() as session:
            row = await get_config(session=session, organization_id=hello.organization_id)
            if row is not None:
                # Events, devices and rollups are keyed by the id as created, whatever case the agent used.
                hello = replace(hello, organization_id=row.organization_id)
            token = await verify(session=session, organization_id=hello.organization_id, token=hello.token)
            if token is None:
                raise PermissionError(
                    f"the token is not valid for organisation {hello.organization_id!r} "
                    "(unknown organisation, wrong token or revoked token)"
                )
            await register_or_touch_device(
                session=session,
                organization_id=hello.organization_id,
                device_id=hello.device_id,
                user_id=hello.user_id,
                device_type=hello.device_type,
                agent_version=hello.agent_version,
                max_new_per_hour=self.settings.ingest.max_new_devices_per_hour,
            )
            config = await _config_for_agent(session, hello.organization_id, row)
            await session.commit()
            return hello, config

    async def current_config(self, organization_id: str) -> dict[str, Any]:
        async with self.sessions() as session:
            row = await get_config(session=session, organization_id=organization_id)
            return await _config_for_agent(session, organization_id, row)

    # -- slots --

    def _make_room(self) -> bool:
        """Room for one more connection, shedding the least useful one if needed; False if full."""
        limits = self.settings.ingest
        if len(self._pre_hello) >= limits.max_pre_hello_connections:
            self._trim_pre_hello()
        if len(self._pre_hello) + len(self._open) < limits.max_connections:
            return True
        # Full. An agent's line completes in milliseconds: a connection still silent, or with a
        # line unfinished for long, is the least useful. Authenticated connections between lines
        # are never shed (the idle timeout ends them).
        victim = next(iter(self._pre_hello), None) or min(
            (c for c in self._open if c.unfinished_line_since is not None),
            key=lambda c: c.unfinished_line_since or 0.0,
            default=None,
        )
        if victim is None:
            return False
        self._shed(victim)
        return True

    def _trim_pre_hello(self) -> None:
        """Shed the oldest pre-hello connections past their budget, except those within their grace.

        Connections younger than ``pre_hello_grace_seconds`` are kept even past the budget (until
        ``max_connections``): a flood that reconnects as fast as it is shed must not push out an
        agent whose hello is on its way; a timer trims them once their grace is over.
        """
        limits = self.settings.ingest
        now = asyncio.get_running_loop().time()
        while len(self._pre_hello) >= limits.max_pre_hello_connections:
            oldest = next(iter(self._pre_hello))
            if now - oldest.opened_at < limits.pre_hello_grace_seconds:
                if self._trim_timer is None:
                    self._trim_timer = asyncio.get_running_loop().call_at(
                        oldest.opened_at + limits.pre_hello_grace_seconds, self._trim_later
                    )
                return
            self._shed(oldest)

    def _trim_later(self) -> None:
        self._trim_timer = None
        if len(self._pre_hello) > self.settings.ingest.max_pre_hello_connections:
            self._trim_pre_hello()

    def _shed(self, victim: Connection) -> None:
        self.forget(victim)
        self.stats.connections_shed += 1
        self.repeated_log.info(
            "shed", "closing %s (%s) to make room", victim.peer, victim.phase.replace("_", "-")
        )
        victim.end(
            "overloaded", "the server is full and this connection was the least active; retry with backoff"
        )

    def hello_received(self, connection: Connection) -> None:
        """The connection sent its hello: it is no longer silent, and not shed while it is checked."""
        if self._pre_hello.pop(connection, 0) is None:
            self._open[connection] = None
            connection.phase = "hello"

    def promote(self, connection: Connection, hello: Hello) -> str | None:
        """The hello was accepted: move the connection to the open budget, or say why it cannot."""
        limits = self.settings.ingest
        token_key = (hello.organization_id, hello.token)
        device_key = (hello.organization_id, hello.device_id)
        older = self._devices.get(device_key)
        replacing = older is not None and older.token_key == token_key and older in self._open
        if self._per_token[token_key] - replacing >= limits.max_connections_per_token:
            return (
                f"this ingest token already has {limits.max_connections_per_token} connections on this "
                "server (INGEST_MAX_CONNECTIONS_PER_TOKEN); retry later with backoff"
            )
        if older is not None and older is not connection:
            older.end("replaced", "a newer connection of this device said hello; this one is closed")
        self._pre_hello.pop(connection, None)
        self._open[connection] = None  # already there since its hello was received
        self._devices[device_key] = connection
        self._per_token[token_key] += 1
        connection.token_key = token_key
        connection.phase = "open"
        return None

    def linger(self, connection: Connection) -> bool:
        """The client closed its sending side with events in flight: move it to the lingering budget."""
        if connection not in self._open or self.settings.ingest.max_lingering_connections == 0:
            return False
        self._release_open(connection)
        if len(self._lingering) >= self.settings.ingest.max_lingering_connections:
            next(iter(self._lingering)).end(None)  # the oldest waited longest; its agent resends
        self._lingering[connection] = None
        connection.phase = "lingering"
        return True

    def forget(self, connection: Connection) -> None:
        """The connection is closing: its slot is free from now on."""
        self._pre_hello.pop(connection, None)
        self._lingering.pop(connection, None)
        self._release_open(connection)
        hello = connection.hello
        if hello is not None:
            device_key = (hello.organization_id, hello.device_id)
            if self._devices.get(device_key) is connection:
                del self._devices[device_key]

    def _release_open(self, connection: Connection) -> None:
        if connection not in self._open:
            return
        del self._open[connection]
        if connection.token_key is not None:
            self._per_token[connection.token_key] -= 1
            if self._per_token[connection.token_key] <= 0:
                del self._per_token[connection.token_key]

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = Connection(self, reader, writer)
        refusal = None
        if not self._accepting:
            refusal = ("shutting_down", "the server is stopping; reconnect later")
        elif not self._make_room():
            refusal = ("overloaded", "the server has too many connections; retry later with backoff")
        if refusal is not None:
            connection.end(*refusal)
            await connection._close()
            return
        connection.task = asyncio.current_task()
        self._pre_hello[connection] = None
        self.connections.add(connection)
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)

    async def start(self) -> RunningServer:
        context = tls_context(self.settings)
        # Each connection starts its own TLS handshake, so that a pending one holds a pre-hello slot.
        self.tls_context = context
        ensure_file_limit(self.settings.ingest)
        self._writer_task = asyncio.create_task(self.writer.run(), name="ingest-writer")
        self._listener = await asyncio.start_server(
            self._on_connect,
            host=self.settings.ingest_host,
            port=self.settings.ingest_port,
            limit=READ_CHUNK_BYTES,
            backlog=min(self.settings.ingest.max_connections, 4096),
        )
        socket_name = self._listener.sockets[0].getsockname()
        return RunningServer(
            host=socket_name[0], port=socket_name[1], tls=context is not None, stats=self.stats
        )

    async def stop(self) -> None:
        """Stop accepting, finish and acknowledge what was read, close clients, within the grace period.

        Every connection is told ``shutting_down`` by the end of the grace period, acknowledged or
        not: a stuck writer delays the acks, not the goodbye.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.ingest.shutdown_grace_seconds
        self.grace_deadline = deadline
        self._accepting = False
        if self._listener is not None:
            self._listener.close()
        if self._trim_timer is not None:
            self._trim_timer.cancel()
        for connection in list(self.connections):
            connection.stop_reading()
        handlers = [c.task for c in self.connections if c.task is not None]
        if handlers:
            # The handlers end by the deadline themselves; the margin lets them say goodbye.
            _, late = await asyncio.wait(handlers, timeout=max(0.0, deadline - loop.time()) + 0.5)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1.0)
        if self._writer_task is not None:
            if self.writer.queue.full():
                self.writer.abandon()  # the writer is stuck: no room even for the stop marker
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


def ensure_file_limit(limits: IngestLimits) -> None:
    """Raise the soft open-file limit to what the connection limits need; warn if the hard limit forbids."""
    needed = limits.max_connections + limits.max_lingering_connections + SPARE_FILE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            log.info("raised the open-file limit from %d to %d", soft, raised)
            soft = raised
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "the open-file limit is %d but INGEST_MAX_CONNECTIONS=%d (+%d lingering) needs about %d: "
            "the server cannot serve its connection maximum; raise the limit (LimitNOFILE= in systemd, "
            "ulimit -n) or lower INGEST_MAX_CONNECTIONS",
            soft,
            limits.max_connections,
            limits.max_lingering_connections,
            needed,
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
    # The rate is of acknowledged events: resends are work the server did too.
    last_acked, last_errors, last_connections = stats.events_acknowledged, sum(stats.errors.values()), 0
    last_time = time.monotonic()
    while True:
        await asyncio.sleep(interval)
        now = time.monotonic()
        errors = sum(stats.errors.values())
        if (stats.events_acknowledged, errors, stats.connections) != (
            last_acked,
            last_errors,
            last_connections,
        ):
            rate = (stats.events_acknowledged - last_acked) / max(now - last_time, 1e-9)
            log.info(stats.line(queued=server.writer.queue.qsize(), events_per_second=rate))
        last_acked, last_errors, last_connections, last_time = (
            stats.events_acknowledged,
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
        "ingest server stopped (acknowledged %d events, %d of them new, in %d batches, "
        "%.1f s writing to the database)",
        stats.events_acknowledged,
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
    parser = OneLineArgumentParser(
        prog="aifw-ingest",
        description="AI Usage Firewall ingest server: agents stream NDJSON events over TCP (docs/protocol.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--host", default=settings.ingest_host, help="address to listen on (INGEST_HOST)")
    add(
        "--port",
        type=port_number,
        default=settings.ingest_port,
        help="TCP port, 0 for any free port (INGEST_PORT)",
    )
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
        "--max-pre-hello",
        type=int,
        default=limits.max_pre_hello_connections,
        help="of the connections, how many may be before their hello; past it the oldest is closed "
        "(INGEST_MAX_PRE_HELLO_CONNECTIONS)",
    )
    add(
        "--pre-hello-grace",
        type=float,
        default=limits.pre_hello_grace_seconds,
        help="seconds a new connection is never shed, its hello being on the way (INGEST_PRE_HELLO_GRACE_SECONDS)",
    )
    add(
        "--hello-max-line-bytes",
        type=int,
        default=limits.hello_max_line_bytes,
        help="longest line before the hello (INGEST_HELLO_MAX_LINE_BYTES)",
    )
    add(
        "--tls-handshake-timeout",
        type=float,
        default=limits.tls_handshake_timeout_seconds,
        help="seconds a TLS handshake may take (INGEST_TLS_HANDSHAKE_TIMEOUT_SECONDS)",
    )
    add(
        "--line-timeout",
        type=float,
        default=limits.line_timeout_seconds,
        help="seconds from a line's first byte to its newline before closing (INGEST_LINE_TIMEOUT_SECONDS)",
    )
    add(
        "--max-connections-per-token",
        type=int,
        default=limits.max_connections_per_token,
        help="authenticated connections of one ingest token at once (INGEST_MAX_CONNECTIONS_PER_TOKEN)",
    )
    add(
        "--max-lingering",
        type=int,
        default=limits.max_lingering_connections,
        help="half-closed clients waiting for their acks, besides --max-connections "
        "(INGEST_MAX_LINGERING_CONNECTIONS)",
    )
    add(
        "--linger-timeout",
        type=float,
        default=limits.linger_timeout_seconds,
        help="seconds a half-closed client waits for its acks (INGEST_LINGER_TIMEOUT_SECONDS)",
    )
    add(
        "--max-output-bytes",
        type=int,
        default=limits.max_output_bytes,
        help="unread answers per connection before it is no longer read (INGEST_MAX_OUTPUT_BYTES)",
    )
    add(
        "--output-timeout",
        type=float,
        default=limits.output_timeout_seconds,
        help="seconds a client may leave its answers unread before it is closed (INGEST_OUTPUT_TIMEOUT_SECONDS)",
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
        "--max-line-bytes": (args.max_line_bytes, args.max_line_bytes >= MIN_MAX_LINE_BYTES),
        "--max-connections": (args.max_connections, args.max_connections >= 1),
        "--hello-timeout": (args.hello_timeout, args.hello_timeout > 0),
        "--idle-timeout": (args.idle_timeout, args.idle_timeout > 0),
        "--max-pre-hello": (args.max_pre_hello, args.max_pre_hello >= 1),
        "--pre-hello-grace": (args.pre_hello_grace, args.pre_hello_grace >= 0),
        "--hello-max-line-bytes": (args.hello_max_line_bytes, args.hello_max_line_bytes >= 1024),
        "--tls-handshake-timeout": (args.tls_handshake_timeout, args.tls_handshake_timeout > 0),
        "--line-timeout": (args.line_timeout, args.line_timeout > 0),
        "--max-connections-per-token": (args.max_connections_per_token, args.max_connections_per_token >= 1),
        "--max-lingering": (args.max_lingering, args.max_lingering >= 0),
        "--linger-timeout": (args.linger_timeout, args.linger_timeout >= 0),
        "--max-output-bytes": (args.max_output_bytes, args.max_output_bytes >= 4096),
        "--output-timeout": (args.output_timeout, args.output_timeout > 0),
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
        max_pre_hello_connections=args.max_pre_hello,
        pre_hello_grace_seconds=args.pre_hello_grace,
        hello_max_line_bytes=args.hello_max_line_bytes,
        tls_handshake_timeout_seconds=args.tls_handshake_timeout,
        line_timeout_seconds=args.line_timeout,
        max_connections_per_token=args.max_connections_per_token,
        max_lingering_connections=args.max_lingering,
        linger_timeout_seconds=args.linger_timeout,
        max_output_bytes=args.max_output_bytes,
        output_timeout_seconds=args.output_timeout,
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
        args = build_parser(settings).parse_args(argv)
    except SettingsError as error:  # a bad setting, or a bad argument (UsageError)
        print(f"error: {error}", file=sys.stderr)
        return 2
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
