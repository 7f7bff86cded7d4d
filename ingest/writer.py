"""The batching writer: one task stores queued events in batches and acknowledges them once committed.

It knows nothing of connections: each queued event carries the :class:`Acknowledger` to tell
(a connection, in the server; a fake, in a unit test), and the store function and the session
factory are handed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from db.errors import is_connection_error, is_refused_data
from db.events import StoredBatch, store_events
from db.settings import IngestLimits
from ingest.protocol import EventRow, ProtocolError, refused_by_database, store_fault
from ingest.stats import IngestStats, short_reason

log = logging.getLogger("aifw.ingest")

DB_RETRY_FIRST_SECONDS: Final = 0.05


class Acknowledger(Protocol):
    """Where a queued event's outcome goes: the connection it came from."""

    def acknowledge(self, ids: list[str]) -> None:
        """These events are committed (or were already stored): ack them under these ids."""

    def refuse(self, error: ProtocolError) -> None:
        """This one event will not be stored (``error.event_id``): tell the agent why."""


class Stop(enum.Enum):
    """The marker that ends the writer once what was queued before it is stored."""

    STOP = "stop"


#: The marker itself: a module global, because an enum member's attribute lookup (``Stop.STOP``) costs
#: about ten times an ``is`` test, and the writer makes that test once per event.
STOP = Stop.STOP


#: One queued event: its row and where its acknowledgement goes (a plain tuple: no copy per event).
QueuedEvent = tuple[EventRow, Acknowledger]
EventQueue = asyncio.Queue[QueuedEvent | Stop]
StoreEvents = Callable[..., Awaitable[StoredBatch]]


class BatchWriter:
    """The single task that stores queued events in batches, retries while the database is away,
    and acknowledges each event to its connection only after its batch is committed."""

    def __init__(
        self,
        sessions: Callable[[], AsyncSession],
        limits: IngestLimits,
        stats: IngestStats,
        *,
        store: StoreEvents = store_events,
    ) -> None:
        self.queue: EventQueue = asyncio.Queue(maxsize=limits.queue_max_events)
        self._sessions = sessions
        self._store_events = store
        self._limits = limits
        self._stats = stats
        self._abandon = asyncio.Event()
        self._outage_reported = False
        #: The tasks of :meth:`run` still storing.
        self._running = 0

    def abandon(self) -> None:
        """Stop retrying (shutdown grace is over): what is not committed is not acknowledged."""
        self._abandon.set()

    async def finish(self) -> None:
        """Queue the stop marker (waits for room): :meth:`run` ends once what was queued is stored."""
        await self.queue.put(STOP)

    async def run(self, *, concurrent: int = 1) -> None:
        """Store batches until the stop marker; never raises for a failed batch.

        With ``concurrent`` above 1, that many batches may be in flight at once, each in its own
        transaction: while one commits, the next is already being written, so an event waits for
        the commit of its own batch only, not also for the one before it. Acks may then come out of
        order between batches, which the protocol allows (docs/protocol.md).
        """
        self._running = max(1, concurrent)
        await asyncio.gather(*(self._run_one() for _ in range(self._running)))

    async def _run_one(self) -> None:
        limits = self._limits
        queue = self.queue
        stopping = False
        while not stopping:
            first = await queue.get()
            if first is STOP:
                stopping = True
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
                        item = await asyncio.wait_for(queue.get(), remaining)
                    except TimeoutError:
                        break
                    if item is STOP:
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
                for row, source in batch:
                    source.refuse(store_fault(row["ack_id"]))
        # The marker is met once, by one task: it is passed on while another task runs, so every task
        # ends once what was queued before it is taken, and the last leaves the queue empty. Nothing
        # is queued after the marker, so there is room for it.
        self._running -= 1
        if self._running:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(STOP)

    def _drain_into(self, batch: list[QueuedEvent]) -> bool:
        """Move what is queued into ``batch`` up to its limit; True if the stop marker was met."""
        limit = self._limits.batch_max_events
        queue = self.queue
        while len(batch) < limit:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                return False
            if item is STOP:
                return True
            batch.append(item)
        return False

    async def _store(self, batch: list[QueuedEvent]) -> None:
        delay = DB_RETRY_FIRST_SECONDS
        while True:
            session = self._sessions()
            started = time.perf_counter()
            try:
                stored = await self._store_events(session=session, events=[row for row, _ in batch])
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
                    self._report_outage(error, len(batch) + self.queue.qsize())
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

    def _report_outage(self, error: Exception, held: int) -> None:
        """Once per outage: events are held unacknowledged and retried (the agents keep them)."""
        if is_connection_error(error):
            log.warning(
                "database unavailable (%s); holding %d events unacknowledged and retrying",
                short_reason(error),
                held,
            )
        else:
            # Neither a lost connection nor refused rows: still retried (the rows were valid), but
            # what it was is worth a traceback in the log.
            log.warning(
                "unexpected database error (%s); holding %d events unacknowledged and retrying",
                short_reason(error),
                held,
                exc_info=error,
            )
        self._outage_reported = True

    async def _store_bad_batch(self, batch: list[QueuedEvent], error: Exception) -> None:
        # Split until the refused rows are alone; refuse them, store the rest.
        if len(batch) == 1:
            row, source = batch[0]
            source.refuse(refused_by_database(row["ack_id"], short_reason(error)))
            return
        middle = len(batch) // 2
        await self._store(batch[:middle])
        await self._store(batch[middle:])


def _acknowledge(batch: Sequence[QueuedEvent]) -> None:
    by_source: dict[Acknowledger, list[str]] = {}
    for row, source in batch:
        # Acknowledged under the id exactly as the agent sent it (upper case, braces, urn:uuid: …).
        by_source.setdefault(source, []).append(row["ack_id"])
    for source, ids in by_source.items():
        source.acknowledge(ids)


async def _close_quietly(session: AsyncSession) -> None:
    with contextlib.suppress(Exception):
        await session.close()
