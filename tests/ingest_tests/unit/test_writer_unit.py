"""The batching writer with a fake store and fake connections: commit before ack, refusals, retries."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from db.events import StoredBatch
from db.settings import IngestLimits
from ingest.protocol import EventRow, ProtocolError
from ingest.stats import IngestStats
from ingest.writer import BatchWriter
from tests.support.waiting import wait_until

LIMITS = replace(IngestLimits(), batch_max_wait_ms=0, db_retry_max_seconds=0.01, queue_max_events=1000)


class FakeSession:
    """Records what the writer does with it in the shared journal."""

    def __init__(self, journal: list[str]) -> None:
        self.journal = journal

    async def commit(self) -> None:
        self.journal.append("commit")

    async def close(self) -> None:
        self.journal.append("close")

    async def invalidate(self) -> None:
        self.journal.append("invalidate")


@dataclass
class FakeStore:
    """store_events without a database: ``failures`` raised first, rows whose ack id is in ``refused``
    make the whole batch fail as a constraint would."""

    journal: list[str]
    failures: list[Exception] = field(default_factory=list)
    refused: set[str] = field(default_factory=set)
    batches: list[list[str]] = field(default_factory=list)

    async def __call__(self, *, session: Any, events: Sequence[Mapping[str, Any]]) -> StoredBatch:
        ids = [event["ack_id"] for event in events]
        self.journal.append(f"store {','.join(ids)}")
        if self.failures:
            raise self.failures.pop(0)
        if self.refused & set(ids):
            raise IntegrityError("INSERT …", {}, Exception("violates check constraint ck_risk_level"))
        self.batches.append(ids)
        return StoredBatch(events=len(ids), inserted=len(ids))


@dataclass(eq=False)
class FakeConnection:
    """An Acknowledger that writes what it is told into the shared journal."""

    name: str
    journal: list[str]
    acked: list[str] = field(default_factory=list)
    refused: list[ProtocolError] = field(default_factory=list)

    def acknowledge(self, ids: list[str]) -> None:
        self.journal.append(f"ack {self.name} {','.join(ids)}")
        self.acked.extend(ids)

    def refuse(self, error: ProtocolError) -> None:
        self.journal.append(f"refuse {self.name} {error.event_id}")
        self.refused.append(error)


def row(ack_id: str) -> EventRow:
    return cast(EventRow, {"ack_id": ack_id})


@dataclass
class Harness:
    writer: BatchWriter
    store: FakeStore
    stats: IngestStats
    journal: list[str]
    connection: Callable[[str], FakeConnection]

    async def stop(self) -> None:
        await self.writer.finish()


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    journal: list[str] = []
    store = FakeStore(journal)
    stats = IngestStats()
    writer = BatchWriter(lambda: cast(Any, FakeSession(journal)), LIMITS, stats, store=store)
    task = asyncio.create_task(writer.run())
    yield Harness(writer, store, stats, journal, lambda name: FakeConnection(name, journal))
    if not task.done():
        writer.abandon()
        await writer.finish()
    async with asyncio.timeout(5):
        await task


async def test_events_are_acknowledged_after_their_batch_is_committed_grouped_by_connection(
    harness: Harness,
) -> None:
    one, two = harness.connection("one"), harness.connection("two")
    for item in [(row("a"), one), (row("b"), two), (row("c"), one)]:
        harness.writer.queue.put_nowait(item)
    await harness.stop()
    await wait_until(lambda: len(one.acked) + len(two.acked) >= 3, timeout=5)
    assert harness.journal[:2] == ["store a,b,c", "commit"]
    assert set(harness.journal[3:]) == {"ack one a,c", "ack two b"}
    assert (harness.stats.batches, harness.stats.events_acknowledged, harness.stats.events_stored) == (
        1,
        3,
        3,
    )


async def ten_events_then_the_stop_marker() -> tuple[BatchWriter, FakeStore, FakeConnection]:
    """A writer of batches of at most 4, with ten events of one connection queued, then the stop marker."""
    journal: list[str] = []
    store = FakeStore(journal)
    writer = BatchWriter(
        lambda: cast(Any, FakeSession(journal)),
        replace(LIMITS, batch_max_events=4),
        IngestStats(),
        store=store,
    )
    connection = FakeConnection("c", journal)
    for index in range(10):
        writer.queue.put_nowait((row(str(index)), connection))
    await writer.finish()
    return writer, store, connection


async def test_batches_never_exceed_their_limit() -> None:
    writer, store, connection = await ten_events_then_the_stop_marker()
    async with asyncio.timeout(5):
        await writer.run()
    assert [len(batch) for batch in store.batches] == [4, 4, 2]
    assert connection.acked == [str(index) for index in range(10)]


async def test_a_row_the_database_refuses_is_refused_alone_and_the_rest_of_its_batch_stored(
    harness: Harness,
) -> None:
    harness.store.refused = {"c"}
    connection = harness.connection("x")
    for ack_id in "abcde":
        harness.writer.queue.put_nowait((row(ack_id), connection))
    await wait_until(lambda: len(connection.acked) + len(connection.refused) >= 5, timeout=5)
    assert sorted(connection.acked) == ["a", "b", "d", "e"]
    [refusal] = connection.refused
    assert (refusal.code, refusal.event_id) == ("invalid_event", "c")
    assert "violates check constraint" in refusal.message
    assert harness.stats.db_retries == 0, "refused data is not retried"
    assert sorted(i for batch in harness.store.batches for i in batch) == ["a", "b", "d", "e"]


async def test_a_lost_connection_is_retried_and_nothing_acknowledged_until_the_commit(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aifw.ingest")
    lost = OperationalError("INSERT …", {}, ConnectionResetError("connection reset by peer"))
    harness.store.failures = [lost, lost]
    connection = harness.connection("x")
    harness.writer.queue.put_nowait((row("a"), connection))
    await wait_until(lambda: bool(connection.acked), timeout=5)
    assert harness.journal == [
        "store a",
        "invalidate",
        "store a",
        "invalidate",
        "store a",
        "commit",
        "close",
        "ack x a",
    ]
    assert harness.stats.db_retries == 2
    messages = [record.getMessage() for record in caplog.records]
    assert sum("database unavailable" in message for message in messages) == 1, "said once per outage"
    assert any("database reachable again" in message for message in messages)


async def test_an_unexpected_database_error_is_retried_and_logged_with_its_traceback(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aifw.ingest")
    harness.store.failures = [ProgrammingError("INSERT …", {}, Exception("no such column"))]
    connection = harness.connection("x")
    harness.writer.queue.put_nowait((row("a"), connection))
    await wait_until(lambda: bool(connection.acked), timeout=5)
    [record] = [r for r in caplog.records if "unexpected database error" in r.getMessage()]
    assert record.exc_info is not None


async def test_abandoned_writer_stops_retrying_and_acknowledges_nothing() -> None:
    journal: list[str] = []
    lost = OperationalError("INSERT …", {}, ConnectionRefusedError("refused"))
    store = FakeStore(journal, failures=[lost] * 1000)
    writer = BatchWriter(lambda: cast(Any, FakeSession(journal)), LIMITS, IngestStats(), store=store)
    connection = FakeConnection("x", journal)
    writer.queue.put_nowait((row("a"), connection))
    task = asyncio.create_task(writer.run())
    await wait_until(lambda: journal.count("invalidate") >= 3, timeout=5)
    writer.abandon()
    await writer.finish()
    async with asyncio.timeout(5):
        await task
    assert connection.acked == []
    assert connection.refused == [], "not refused either: the agent resends what was not acknowledged"


async def test_a_fault_of_the_writer_itself_refuses_the_batch_as_internal_error_and_the_writer_goes_on(
    harness: Harness,
) -> None:
    class Faulty(FakeConnection):
        def acknowledge(self, ids: list[str]) -> None:
            if ids == ["a"]:
                raise RuntimeError("bug")
            super().acknowledge(ids)

    faulty = Faulty("f", harness.journal)
    harness.writer.queue.put_nowait((row("a"), faulty))
    await wait_until(lambda: bool(faulty.refused), timeout=5)
    assert [(e.code, e.event_id) for e in faulty.refused] == [("internal_error", "a")]
    harness.writer.queue.put_nowait((row("b"), faulty))
    await wait_until(lambda: bool(faulty.acked), timeout=5)
    assert faulty.acked == ["b"]


@dataclass
class GatedStore(FakeStore):
    """A store whose first batch waits until ``gate`` opens, as a slow commit would."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    calls: int = 0

    async def __call__(self, *, session: Any, events: Sequence[Mapping[str, Any]]) -> StoredBatch:
        self.calls += 1
        if self.calls == 1:
            self.journal.append(f"waiting {','.join(event['ack_id'] for event in events)}")
            await self.gate.wait()
        return await super().__call__(session=session, events=events)


async def test_with_two_writers_a_batch_is_stored_and_acknowledged_while_the_one_before_waits() -> None:
    journal: list[str] = []
    store = GatedStore(journal)
    writer = BatchWriter(lambda: cast(Any, FakeSession(journal)), LIMITS, IngestStats(), store=store)
    connection = FakeConnection("x", journal)
    task = asyncio.create_task(writer.run(concurrent=2))
    writer.queue.put_nowait((row("a"), connection))
    await wait_until(lambda: "waiting a" in journal, timeout=5)
    writer.queue.put_nowait((row("b"), connection))
    await wait_until(lambda: connection.acked == ["b"], timeout=5)
    assert "ack x a" not in journal, "acknowledged before its batch was committed"
    store.gate.set()
    await wait_until(lambda: connection.acked == ["b", "a"], timeout=5)
    assert journal.index("ack x a") > journal.index("store a") + 1 > journal.index("ack x b")
    await writer.finish()
    async with asyncio.timeout(5):
        await task


async def test_every_writer_ends_at_the_stop_marker_once_what_was_queued_before_it_is_stored() -> None:
    writer, _, connection = await ten_events_then_the_stop_marker()
    async with asyncio.timeout(5):
        await writer.run(concurrent=3)
    assert sorted(connection.acked, key=int) == [str(index) for index in range(10)]
    assert len(connection.acked) == 10, "an event acknowledged twice"
    assert writer.queue.empty(), "a stop marker left behind reads as an event not stored"
