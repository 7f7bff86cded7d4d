"""The ingest server: the listener, the connection budgets, TLS, and shutdown in order; ``serve()``.

``serve(settings)`` runs an ``asyncio.start_server`` listener. Each connection says ``hello``
(token, device), then sends ``log`` events, ``config`` and ``ping`` requests
(ingest/connection.py, ingest/protocol.py). Events go through a bounded queue to one batching
writer (ingest/writer.py); an ``ack`` is sent only after the batch is committed. When the
queue is full the connection handlers block, stop reading their sockets, and TCP pushes back
on the agents. With ``INGEST_DISPATCH`` on, the dispatcher (alert evaluation and forwarding,
dispatch/service.py) runs in the same event loop. Shutdown: stop accepting, let connections
finish what they read within the grace period, close them, flush the writer, stop the
dispatcher (it releases its leases), dispose of the engines.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import resource
import signal
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db.configs import effective_config, get_config
from db.devices import DeviceRefused, register_or_touch_device
from db.engine import check_database, new_engine, new_sessionmaker
from db.event_schema import Hello
from db.metadata_keys import keys_for_agent, organization_shapes
from db.models import FirewallConfig
from db.secrets import SecretKeyError
from db.settings import IngestLimits, Settings, SettingsError
from db.tokens import verify
from dispatch.service import Dispatcher, dispatcher_secrets
from ingest.connection import Connection, ConnectionContext, DeviceHeartbeat
from ingest.framing import READ_CHUNK_BYTES
from ingest.protocol import (
    ProtocolError,
    not_accepting,
    replaced,
    server_full,
    shed,
    token_full,
    unauthorized,
)
from ingest.stats import IngestStats, RepeatedLog, report_stats
from ingest.writer import BatchWriter

log = logging.getLogger("aifw.ingest")

#: File descriptors the server needs besides its connections: listener, two database pools, logs.
SPARE_FILE_DESCRIPTORS: Final = 128
#: How long a stopping server waits for a partition maintenance step or the overview sums under way.
HOUSEKEEPING_STOP_SECONDS: Final = 10


@dataclass(frozen=True)
class RunningServer:
    """Handed to ``serve(ready=…)`` once the server listens: where, and its live counters."""

    host: str
    port: int
    tls: bool
    stats: IngestStats
    #: The retention scheduler running inside the server (ENABLE_RETENTION_SCHEDULER), or None.
    retention_scheduler: Any = None
    #: The dispatcher running inside the server (INGEST_DISPATCH), or None.
    dispatcher: Dispatcher | None = None


class IngestServer:
    """The listener, its connections, the writer, the engine: started and stopped in order."""

    def __init__(self, settings: Settings, engine: AsyncEngine) -> None:
        self.settings = settings
        self.engine = engine
        self.sessions = new_sessionmaker(engine)
        #: Keeps devices.last_seen current for long-lived connections (any line counts).
        self.heartbeat = DeviceHeartbeat(self.sessions)
        self.stats = IngestStats()
        # The writer's own pool has no ping per checkout (db.engine.new_engine; it would be three round
        # trips per batch): a dead connection fails its batch, which is retried on a fresh one anyway.
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
        self._context = self._connection_context()

    def _connection_context(self) -> ConnectionContext:
        return ConnectionContext(
            limits=self.settings.ingest,
            stats=self.stats,
            repeated_log=self.repeated_log,
            events=self.writer.queue,
            room=self,
            admit=self.admit,
            current_config=self.current_config,
            tls_context=self.tls_context,
            heartbeat=self.heartbeat,
        )

    async def admit(self, hello: Hello) -> tuple[Hello, dict[str, Any]]:
        """Check the token, register or touch the device; return the hello under the organisation id
        as created (it is looked up regardless of case) and the config for the welcome.

        Raises ProtocolError ``unauthorized`` or the device's refusal (``device_disabled``,
        ``device_conflict``, ``too_many_devices``); anything else means the database is away.
        """
        async with self.sessions() as session:
            row = await get_config(session=session, organization_id=hello.organization_id)
            if row is not None:
                # Events, devices and rollups are keyed by the id as created, whatever case the agent used.
                hello = replace(hello, organization_id=row.organization_id)
            token = await verify(session=session, organization_id=hello.organization_id, token=hello.token)
            if token is None:
                raise unauthorized(hello.organization_id)
            try:
                await register_or_touch_device(
                    session=session,
                    organization_id=hello.organization_id,
                    device_id=hello.device_id,
                    user_id=hello.user_id,
                    device_type=hello.device_type,
                    agent_version=hello.agent_version,
                    max_new_per_hour=self.settings.ingest.max_new_devices_per_hour,
                )
            except DeviceRefused as refused:  # the database's refusal, as the protocol says it
                raise ProtocolError(refused.code, refused.message) from None
            config = await _config_for_agent(session, hello.organization_id, row)
            await session.commit()
            return hello, config

    async def current_config(self, organization_id: str) -> dict[str, Any]:
        """The organisation's configuration as agents get it (answer to a ``config`` request)."""
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
        victim.end(shed())

    def hello_received(self, connection: Connection) -> None:
        """The connection sent its hello: it is no longer silent, and not shed while it is checked."""
        if self._pre_hello.pop(connection, 0) is None:
            self._open[connection] = None
            connection.phase = "hello"

    def promote(self, connection: Connection, hello: Hello) -> ProtocolError | None:
        """The hello was accepted: move the connection to the open budget, or say why it cannot."""
        limits = self.settings.ingest
        token_key = (hello.organization_id, hello.token)
        device_key = (hello.organization_id, hello.device_id)
        older = self._devices.get(device_key)
        replacing = older is not None and older.token_key == token_key and older in self._open
        if self._per_token[token_key] - replacing >= limits.max_connections_per_token:
            return token_full(limits.max_connections_per_token)
        if older is not None and older is not connection:
            older.end(replaced())
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
        connection = Connection(self._context, reader, writer)
        refusal = None
        if not self._accepting:
            refusal = not_accepting()
        elif not self._make_room():
            refusal = server_full()
        if refusal is not None:
            connection.end(refusal)
            await connection.close()
            return
        connection.task = asyncio.current_task()
        self._pre_hello[connection] = None
        self.connections.add(connection)
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)

    async def start(self) -> RunningServer:
        """Start the writer and listen; the TLS context is loaded first (SettingsError if unusable)."""
        context = tls_context(self.settings)
        # Each connection starts its own TLS handshake, so that a pending one holds a pre-hello slot.
        self.tls_context = context
        self._context = self._connection_context()
        ensure_file_limit(self.settings.ingest)
        # SQLite has one write lock: a second batch in flight would only wait for it.
        writers = self.settings.ingest.writers if self.settings.is_postgresql else 1
        self._writer_task = asyncio.create_task(self.writer.run(concurrent=writers), name="ingest-writer")
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
        self.heartbeat.cancel()  # the connections are gone: nothing more to report
        if self._writer_task is not None:
            if self.writer.queue.full():
                self.writer.abandon()  # the writer is stuck: no room even for the stop marker
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.writer.finish(), max(0.0, deadline - loop.time()))
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


async def _config_for_agent(
    session: AsyncSession, organization_id: str, row: FirewallConfig | None
) -> dict[str, Any]:
    """The configuration as agents get it in ``welcome`` and ``config``, with the organisation's metadata
    keys."""
    config = effective_config(organization_id, row).for_agent()
    config["metadata_keys"] = keys_for_agent(
        await organization_shapes(session=session, organization_id=organization_id)
    )
    return config


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
    dispatcher: Dispatcher | None = None
    housekeeping_stop = asyncio.Event()
    partitions_task: asyncio.Task[None] | None = None
    sums_task: asyncio.Task[None] | None = None
    # The dispatcher's own pool on PostgreSQL: its forwarders never hold up an agent's hello. No ping
    # per checkout (db.engine.new_engine): its workers check out a connection several times a second.
    dispatch_engine = new_engine(settings, pool_pre_ping=False) if settings.is_postgresql else engine
    server = IngestServer(settings, engine)
    try:
        await check_database(engine, settings)
        # PostgreSQL: the weeks ahead get their partitions now and hourly (db/partitions.py).
        partitions_task = asyncio.create_task(
            _maintain_partitions(engine, housekeeping_stop), name="partition-maintainer"
        )
        # The overview's timeline and top lists over closed hours, read once an hour for every console.
        sums_task = asyncio.create_task(_keep_overview_sums(engine, housekeeping_stop), name="overview-sums")
        dispatcher = _new_dispatcher(settings, dispatch_engine)
        running = await server.start()
        # What start-up made (modules, models, pools, connections) lives as long as the server: out of
        # the collector's sight, a full collection pauses the loop (and every ack) about a third as long.
        # (Objects that die later are still freed; only cycles among them are left to the process end.)
        gc.freeze()
        proxies = settings.ingest.trusted_proxies if settings.ingest.proxy_protocol else None
        log.info(
            "ingest server listening on %s:%d%s%s, writing to %s",
            running.host,
            running.port,
            " (TLS)" if running.tls else "",
            f" (PROXY protocol from {proxies})" if proxies is not None else "",
            settings.describe_database(),
        )
        # Retention scheduler (ENABLE_RETENTION_SCHEDULER): started once the database is ready.
        scheduler = _start_retention_scheduler(settings, server.sessions)
        if settings.ingest.stats_interval_seconds > 0:
            stats_task = asyncio.create_task(
                report_stats(server.stats, server.writer.queue.qsize, settings.ingest.stats_interval_seconds)
            )
        if dispatcher is not None:
            dispatcher.start()
        if ready is not None:
            ready(replace(running, retention_scheduler=scheduler, dispatcher=dispatcher))
        if shutdown_trigger is None:
            await _wait_for_signal()
        else:
            await shutdown_trigger()
        log.info("ingest server stopping: finishing what was read")
        await server.stop()
    finally:
        if stats_task is not None:
            stats_task.cancel()
        housekeeping_stop.set()
        for task in (partitions_task, sums_task):
            if task is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(task, HOUSEKEEPING_STOP_SECONDS)
        # After the writer's flush: what it committed last is the evaluator's to see next time.
        if dispatcher is not None:
            await dispatcher.stop_and_wait()
        if scheduler is not None:
            await scheduler.shutdown()
        await server.writer_engine.dispose()
        if dispatch_engine is not engine:
            await dispatch_engine.dispose()
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


def _new_dispatcher(settings: Settings, engine: AsyncEngine) -> Dispatcher | None:
    """The dispatcher to run inside the server (INGEST_DISPATCH), or None; SettingsError if AIFW_SECRET_KEY
    is not a key."""
    if not settings.dispatch.run_in_ingest_server:
        return None
    try:
        box = dispatcher_secrets(settings)
    except SecretKeyError as error:
        raise SettingsError(f"{error} (or set INGEST_DISPATCH=false)") from None
    return Dispatcher(new_sessionmaker(engine), settings.dispatch, secrets=box)


async def _maintain_partitions(engine: AsyncEngine, stop: asyncio.Event) -> None:
    from db.scheduler import run_partition_maintainer

    await run_partition_maintainer(engine, stop)


async def _keep_overview_sums(engine: AsyncEngine, stop: asyncio.Event) -> None:
    from db.scheduler import run_overview_sums_keeper

    await run_overview_sums_keeper(new_sessionmaker(engine), stop)


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
