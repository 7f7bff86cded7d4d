"""One agent connection: the transport side of the protocol (reading, writing, timeouts, interruptions).

A connection is handed what it needs in a :class:`ConnectionContext`: the limits, the counters,
the writer's queue, the two database requests (admit a hello, read a configuration) and the
:class:`Room` that keeps the server's budgets. What a line means and what to answer is
ingest/protocol.py's; this module moves bytes and waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, Protocol, cast

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db import devices
from db.event_schema import Hello
from db.metadata_keys import Shape, shapes_from_agent
from db.settings import IngestLimits
from ingest.framing import READ_CHUNK_BYTES, TOO_LONG, LineReader, is_blank
from ingest.protocol import (
    HEALTH_LINE,
    EventRow,
    EventTimes,
    ProtocolError,
    ack_line,
    check_hello,
    check_log,
    config_line,
    config_unavailable,
    error_line,
    hello_unavailable,
    parse_line,
    pong_line,
    refuse_type,
    stopping,
    timed_out,
    welcome_line,
)
from ingest.proxy_protocol import (
    ProxyHeaderError,
    describe,
    proxy_refused,
    read_proxy_header,
    socket_reader,
    untrusted,
)
from ingest.stats import IngestStats, RepeatedLog, short_reason
from ingest.writer import EventQueue

log = logging.getLogger("aifw.ingest")

#: Database work during hello and config requests may take this long before the client is told so.
DB_REQUEST_TIMEOUT_SECONDS: Final = 10.0
#: Lines a connection handles before letting other tasks (the writer above all) run.
LINES_PER_TURN: Final = 16
#: The first line of a load balancer's health check (docs/protocol.md, "Health probe").
HEALTH_PROBE_TYPE: Final = "health"


class Room(Protocol):
    """The server's bookkeeping of connections: which budget each one uses, and the shutdown deadline."""

    #: When the shutdown grace period ends (loop time); infinite while the server runs.
    grace_deadline: float

    def hello_received(self, connection: Connection) -> None:
        """The connection sent its hello: it is no longer silent."""

    def promote(self, connection: Connection, hello: Hello) -> ProtocolError | None:
        """The hello was accepted: give it an open slot, or say why it cannot have one."""

    def linger(self, connection: Connection) -> bool:
        """The client closed its side with events in flight: may it wait for its acks?"""

    def forget(self, connection: Connection) -> None:
        """The connection is closing: its slot is free from now on."""


class DeviceHeartbeat:
    """Keeps ``devices.last_seen`` current for long-lived connections, cheaply.

    Each connection reports its device at most every ``every_seconds`` (a clock read per line,
    no database work); the devices reported are written together, in one statement per
    thousand devices, ``flush_delay_seconds`` after the first of them. A database that is away
    loses that update only: the next report brings it back.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        every_seconds: float | None = None,
        flush_delay_seconds: float = 1.0,
    ) -> None:
        self._sessions = sessions
        self.every_seconds = devices.HEARD_FROM_EVERY_SECONDS if every_seconds is None else every_seconds
        self._flush_delay = flush_delay_seconds
        self._pending: set[str] = set()
        self._flush: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def heard(self, device_id: str) -> None:
        """The device sent a line: write its ``last_seen`` with the next batch."""
        self._pending.add(device_id)
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(self._flush_delay, self._start_flush)

    def _start_flush(self) -> None:
        self._flush = None
        ids, self._pending = self._pending, set()
        task = asyncio.get_running_loop().create_task(self._write(ids), name="ingest-devices-heard")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, device_ids: set[str]) -> None:
        try:
            async with self._sessions() as session:
                await devices.mark_devices_heard(session=session, device_ids=device_ids)
                await session.commit()
        except Exception as error:  # noqa: BLE001 - a lost update of last_seen must not end anything
            log.warning("could not record %d devices as seen: %s", len(device_ids), short_reason(error))

    def cancel(self) -> None:
        """Shutdown: drop what is pending (the devices said hello; at most one period is lost)."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        self._pending.clear()


@dataclass(frozen=True, slots=True)
class ConnectionContext:
    """What every connection of one server shares."""

    limits: IngestLimits
    stats: IngestStats
    repeated_log: RepeatedLog
    #: The writer's queue: a full queue stops reading (backpressure reaches the agents through TCP).
    events: EventQueue
    room: Room
    #: Check the token and register the device: the hello as stored and the config for the welcome.
    #: Raises ProtocolError for a refusal, anything else when the database is away.
    admit: Callable[[Hello], Awaitable[tuple[Hello, dict[str, Any]]]]
    #: The organisation's configuration as agents get it.
    current_config: Callable[[str], Awaitable[dict[str, Any]]]
    tls_context: ssl.SSLContext | None = None
    #: Where a connection reports that its device is still sending (None: last_seen moves at hello only).
    heartbeat: DeviceHeartbeat | None = None


class Connection:
    """One agent connection: hello, then lines of events and requests, until it or the server ends it.

    Its phase decides which budget it uses (see :class:`ingest.server.IngestServer`): ``pre_hello``
    until the hello is accepted, then ``open``, and ``lingering`` once the client has closed its
    sending side and only waits for its acks.
    """

    def __init__(
        self,
        context: ConnectionContext,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self._context = context
        self._room = context.room
        self._stats = context.stats
        self._repeated_log = context.repeated_log
        self._reader = reader
        self._writer = writer
        self._limits = context.limits
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
        self._ended: ProtocolError | None = None
        self._gone = False
        #: Until the TLS handshake is done, nothing may be written in clear.
        self._tls_pending = context.tls_context is not None
        self._in_flight = 0
        self._acked = asyncio.Event()
        self.line_number = 0
        self.phase = "pre_hello"
        self.task: asyncio.Task[None] | None = None
        self.hello: Hello | None = None
        #: The organisation's log_metadata keys, as told to the agent in welcome and config.
        self.metadata_keys: dict[str, Shape] | None = None
        #: The timestamps accepted: the organisation's retention cutoff (re-read now and then) to a day ahead.
        self.times: EventTimes | None = None
        self.token_key: tuple[str, str] | None = None
        self.peer = _describe_peer(writer)
        writer.transport.set_write_buffer_limits(high=self._limits.max_output_bytes)
        if self._limits.proxy_protocol:
            # Nothing is read into the stream before the PROXY header is taken from the socket.
            cast(asyncio.Transport, writer.transport).pause_reading()
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
        self._room.forget(self)
        self._interrupt()

    # -- output --

    def send_line(self, line: bytes) -> None:
        """Queue one encoded line (newline included); dropped once the connection is closed (late acks
        too)."""
        if self._closed or self._writer.is_closing():
            return
        self._writer.write(line)

    def send_error(self, error: ProtocolError) -> None:
        """Answer the current line with ``error`` (counted, and logged a few times a minute at most)."""
        code = error.code
        if code is None:
            return
        self._stats.errors[code] += 1
        self._repeated_log.info(
            code, "%s from %s on line %d: %s", code, self.peer, self.line_number, error.message
        )
        if not self._tls_pending:  # before the TLS handshake, nothing is written in clear
            self.send_line(error_line(error, self.line_number))

    def acknowledge(self, ids: list[str]) -> None:
        """Called by the writer once these events are committed."""
        self.send_line(ack_line(ids))
        self.release(len(ids))

    def refuse(self, error: ProtocolError) -> None:
        """Called by the writer for one event it will not store: the agent is told why."""
        self.release(1)
        self.send_error(error)

    def release(self, count: int) -> None:
        """``count`` events in flight are answered: room for more."""
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
            self._repeated_log.info(
                "output_timeout",
                "closing %s: it left its answers unread for %g seconds",
                self.peer,
                self._limits.output_timeout_seconds,
            )
            raise ProtocolError(None) from None
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
        """In ``except CancelledError``: True if the cancellation was ours (then a silent
        ProtocolError if the connection was ended)."""
        task = asyncio.current_task()
        if not self._interrupted or task is None or task.uncancel() > 0:
            return False
        self._interrupted = False
        if self._ended is not None or self._gone:
            raise ProtocolError(None)
        return True

    def stop_reading(self) -> None:
        """Shutdown: read no more, finish what was read (the handler then waits for its acks)."""
        self._stopping = True
        self._acked.set()  # an ack wait re-reads its deadline: the shutdown grace now bounds it
        self._interrupt(unless="acks")

    def end(self, error: ProtocolError | None) -> None:
        """The server closes this connection now (shed, replaced): ``error`` sent if given, the slot freed."""
        if self._ended is not None or self._closed:
            return
        self._ended = error or ProtocolError(None)
        self._room.forget(self)
        if error is not None and not self._tls_pending:
            self.send_error(error)
        self._closed = True
        transport = self._writer.transport
        # A client that does not read would keep a graceful close (and its descriptor) waiting.
        if transport.get_write_buffer_size() > 0:
            transport.abort()
        else:
            transport.close()
        self._interrupt()

    async def close(self) -> None:
        """Close the socket: gracefully within a second, then abort (a client that reads nothing
        would keep a graceful close, and its descriptor, forever)."""
        self._closed = True
        with contextlib.suppress(Exception):
            self._writer.close()
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)
        self._writer.transport.abort()

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
            raise ProtocolError(None)
        await self._drain_output()
        stats = self._stats
        if self._lines.high_water_bytes > stats.max_line_buffer_bytes:
            stats.max_line_buffer_bytes = self._lines.high_water_bytes
        deadline, code = self._read_deadline()
        self._waiting_for = "read"
        try:
            async with asyncio.timeout_at(deadline):
                return await self._reader.read(READ_CHUNK_BYTES)
        except TimeoutError:
            raise timed_out(code, self._limits) from None
        except asyncio.CancelledError:
            if self._absorb_interrupt():
                return b""  # stopping: what was read is finished, nothing more is read
            raise
        finally:
            self._waiting_for = ""

    # -- the conversation --

    async def run(self) -> None:
        """Serve the connection until it ends; closes the socket whatever happens."""
        stats = self._stats
        stats.connections += 1
        stats.connections_total += 1
        try:
            if self._limits.proxy_protocol:
                await self._read_proxy_header()
            if self._context.tls_context is not None:
                await self._start_tls(self._context.tls_context)
            if await self._greet():
                await self._stream()
        except ProtocolError as close:
            self.send_error(close)
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self._interrupted or task is None or task.uncancel() > 0:
                raise
        finally:
            self._room.forget(self)
            stats.connections -= 1
            stats.max_line_buffer_bytes = max(stats.max_line_buffer_bytes, self._lines.high_water_bytes)
            await self.close()

    async def _read_proxy_header(self) -> None:
        """INGEST_PROXY_PROTOCOL: the balancer's header comes first (before TLS) and says who the agent
        is; from then on ``peer`` (the log's name for it) is the agent's address, not the balancer's.

        Raises ProtocolError ``proxy_refused`` for a peer outside INGEST_TRUSTED_PROXIES or a header
        missing, malformed or late; a silent one when the peer closes before sending anything (a
        plain TCP check is no abuse).
        """
        limits = self._limits
        trusted = limits.trusted_proxies
        peer = self._writer.get_extra_info("peername")
        trusted_peer = trusted is not None and isinstance(peer, tuple) and trusted.trust(str(peer[0]))
        # Counted within the hello's time too: a header slower than that is no balancer's.
        deadline = self.opened_at + min(limits.proxy_header_timeout_seconds, limits.hello_timeout_seconds)
        # The header is taken from the socket itself, byte-exact (the transport is paused since the
        # connection opened): what follows it, a TLS ClientHello above all, stays for the transport.
        sock = self._writer.get_extra_info("socket").dup()
        sock.setblocking(False)
        self._waiting_for = "proxy"
        try:
            async with asyncio.timeout_at(deadline):
                header = await read_proxy_header(socket_reader(sock))
        except TimeoutError:
            raise self._proxy_refusal(
                trusted_peer,
                f"no PROXY protocol header within {limits.proxy_header_timeout_seconds:g} seconds",
            ) from None
        except asyncio.IncompleteReadError as ended:
            if not ended.partial:
                raise ProtocolError(None) from None
            raise self._proxy_refusal(trusted_peer, "the connection ended inside its PROXY header") from None
        except ProxyHeaderError as error:
            _discard_arrived(sock)
            raise self._proxy_refusal(
                trusted_peer, f"{error} (this server expects the load balancer's header first)"
            ) from None
        except asyncio.CancelledError:
            if not self._absorb_interrupt():
                raise
            raise ProtocolError(None) from None
        finally:
            self._waiting_for = ""
            sock.close()
        # Read only now, so that a refused peer's bytes are taken off the socket first: closing a
        # socket with unread input resets it, and the client would lose the refusal.
        if not trusted_peer:
            raise untrusted(self.peer, trusted)
        if header.source is not None:
            self.peer = describe(header.source)
        transport = cast(asyncio.Transport, self._writer.transport)
        if not transport.is_closing():
            transport.resume_reading()

    def _proxy_refusal(self, trusted_peer: bool, reason: str) -> ProtocolError:
        # To a peer that may not send a header at all, who it is matters more than what it sent.
        return proxy_refused(reason) if trusted_peer else untrusted(self.peer, self._limits.trusted_proxies)

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
            raise ProtocolError(None) from None
        except (ConnectionError, OSError, TimeoutError):
            raise ProtocolError(None) from None
        finally:
            self._waiting_for = ""
        self._tls_pending = False
        self._writer.transport.set_write_buffer_limits(high=self._limits.max_output_bytes)

    async def _greet(self) -> bool:
        """Read and check the hello; True if the connection may go on."""
        while True:
            line = await self._lines.next_line()
            if line is None:
                return False
            self.line_number += 1  # every line received counts, blank ones too
            if line is TOO_LONG or not is_blank(line):
                break
        try:
            message = parse_line(line, self._lines.max_line_bytes)
            if message.get("type") == HEALTH_PROBE_TYPE:
                # A load balancer's check: answered from memory and closed, neither logged nor counted
                # as an error (the server is up; the database is every server's alike).
                self.send_line(HEALTH_LINE)
                return False
            if message.get("type") == "hello":
                self._room.hello_received(self)
            # invalid_hello or content_not_allowed: either way the hello is refused and the connection closed.
            hello = check_hello(message)
        except ProtocolError as error:
            self.send_error(error)
            return False
        try:
            async with asyncio.timeout(DB_REQUEST_TIMEOUT_SECONDS):
                hello, config = await self._context.admit(hello)
        except ProtocolError as error:
            self.send_error(error)
            return False
        except Exception as error:  # noqa: BLE001 - the database being away must not kill the server
            self._repeated_log.warning(
                "hello_unavailable", "hello refused, database unavailable: %s", short_reason(error)
            )
            self.send_error(hello_unavailable())
            return False
        if self._ended is not None:
            return False  # shed while its hello was being checked
        try:
            welcome = welcome_line(config, self._limits)
        except ProtocolError as error:
            # Never a line longer than the limit the welcome announces: an agent would drop it.
            self._repeated_log.warning("config_too_large", "hello refused: %s", error.message)
            self.send_error(error)
            return False
        refusal = self._room.promote(self, hello)
        if refusal is not None:
            self.send_error(refusal)
            return False
        self.hello = hello
        self._lines.max_line_bytes = self._limits.max_line_bytes
        self.metadata_keys = shapes_from_agent(config.get("metadata_keys"))
        self.times = EventTimes.from_config(config)
        self.send_line(welcome)
        return True

    async def _stream(self) -> None:
        assert self.hello is not None
        assert self.times is not None
        hello, times = self.hello, self.times
        lines = self._lines
        max_output = self._limits.max_output_bytes
        heartbeat = self._context.heartbeat
        clock = self._loop.time
        # The hello set last_seen: the first report is due one period after it.
        heard_due = clock() + heartbeat.every_seconds if heartbeat is not None else float("inf")
        row: EventRow | None
        while True:
            # Errors and pongs included: while the client leaves its answers unread, read no more.
            if self._writer.transport.get_write_buffer_size() > max_output:
                await self._drain_output()
            self._last_line_at = self._loop.time()
            line = await lines.next_line()
            if line is None:
                break
            self.line_number += 1  # every line received counts, blank ones too
            if heartbeat is not None and clock() >= heard_due:
                heard_due = clock() + heartbeat.every_seconds
                heartbeat.heard(hello.device_id)  # any line counts: keep-alives and refused lines too
            if line is not TOO_LONG and is_blank(line):
                continue  # blank and whitespace-only lines alike are keep-alives
            if self.line_number % LINES_PER_TURN == 0:
                # A chunk holds hundreds of lines; yield now and then so the writer's database
                # round trips are not queued behind every connection's whole chunk.
                await asyncio.sleep(0)
            try:
                message = parse_line(line, lines.max_line_bytes)
                kind = message.get("type")
                if kind == "log":
                    if times.refresh_due():  # the retention may have changed: re-read it, once a period
                        await times.refresh(partial(self._context.current_config, hello.organization_id))
                    row = check_log(message, hello=hello, metadata_keys=self.metadata_keys, times=times)
                elif kind == "ping":
                    self.send_line(pong_line(message))
                    continue
                elif kind == "config":
                    row = None
                else:
                    raise refuse_type(kind)
            except ProtocolError as error:
                self._refuse_line(error)
                continue
            if row is not None:
                await self._submit(row)
            else:
                await self._send_config(hello)
        if self._stopping:
            await self._wait_for_acks()
            self.send_error(stopping())
        elif self._in_flight > 0 and self._room.linger(self):
            # The client closed its sending side (as socat does) and waits for its acks: it keeps
            # waiting from the small lingering budget, for a bounded time, not from a full slot.
            await self._wait_for_acks()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer.drain(), 1.0)

    def _refuse_line(self, error: ProtocolError) -> None:
        fault = error.__cause__
        if fault is not None:
            # A validator bug: one line, no traceback (the input that triggers it may repeat at line rate).
            self._repeated_log.warning(
                "validator_fault",
                "unexpected error validating line %d from %s: %s: %s",
                self.line_number,
                self.peer,
                type(fault).__name__,
                short_reason(fault),
            )
        self.send_error(error)

    async def _submit(self, row: EventRow) -> None:
        limit = self._limits.max_in_flight_per_connection
        queue = self._context.events
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
        self._stats.events_received += 1

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
                    deadline = min(deadline, self._room.grace_deadline)
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
                config = await self._context.current_config(hello.organization_id)
        except Exception as error:  # noqa: BLE001 - answered, the connection goes on
            log.warning("config request failed: %s", short_reason(error))
            self.send_error(config_unavailable())
            return
        try:
            answer = config_line(config, self._limits)
        except ProtocolError as error:
            self._repeated_log.warning("config_too_large", "config not sent: %s", error.message)
            self.send_error(error)
            return
        self.metadata_keys = shapes_from_agent(config.get("metadata_keys"))
        if self.times is not None:
            self.times.follow(config)
        self.send_line(answer)


def _discard_arrived(sock: socket.socket) -> None:
    """Take what has already arrived off the socket, up to a chunk: a socket closed with unread input
    is reset, and the client (an agent that skipped the balancer) would lose the line saying why."""
    left = READ_CHUNK_BYTES
    with contextlib.suppress(OSError):  # BlockingIOError: nothing more has arrived
        while left > 0 and (data := sock.recv(left)):
            left -= len(data)


def _describe_peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return "a client"
