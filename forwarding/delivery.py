"""One destination's delivery loop: from its durable cursors to its transport, losing nothing.

The loop runs only while its process holds the destination's lease (db/leases.py). Each round
it sends the dead letters an administrator asked to retry, then a page of alert changes (if the
destination forwards alerts), then a page of events (of its risk levels), each page formatted
(forwarding/formats), sent (forwarding/transports) and then recorded in one transaction that
fences the lease, saves the cursor, adds the refused messages as dead letters and marks the
destination active (db/deliveries.py).

What survives what:

- a crash or a kill between sending and recording resends that page on restart (duplicates
  only within one batch);
- over transports that only say "accepted by the connection" (TCP and TLS syslog, UDP) the
  cursor's ``resend_from`` stays at the start of the last batch, and the loop starts there
  again after any failure or restart, so the batch a dying connection may have swallowed is
  sent again; over acknowledged transports (RELP, HEC with acks, webhooks) it moves on;
- a destination down (DestinationDown) pauses it, raises its forwarding alert and retries with a
  delay doubling from ``retry_first_seconds`` to ``retry_most_seconds``; a passing fault
  (RetryLater) marks it retrying and honours the receiver's ``retry_after``;
- a database outage is retried with the same backoff, logged once per outage;
- a lost lease (:class:`~db.leases.LeaseLost`) stops the loop at once, having written nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import cast

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.commit_order import is_postgresql
from db.deliveries import (
    DeliveredBatch,
    FaultState,
    Refusal,
    StreamName,
    dead_letters_to_retry,
    record_dead_letter_results,
    record_delivery,
    record_fault,
    record_position,
    renew,
    start_round,
    stored_alert_change,
    stored_event,
)
from db.destinations import alerts_cursor_name, events_cursor_name, find_destination
from db.engine import reading
from db.errors import is_connection_error
from db.leases import Lease, LeaseLost
from db.models import ForwardDestination
from db.secrets import SecretBox, SecretUnreadable
from db.streams import (
    EventLines,
    Page,
    Position,
    load_cursor,
    read_alert_changes,
    read_events,
)
from forwarding.formats import BodyFormat, render_body, syslog_severity
from forwarding.formats.syslog_sql import event_message_sql
from forwarding.items import AlertItem, ForwardItem
from forwarding.reading import alert_item, event_item
from forwarding.transport import DestinationDown, Message, RetryLater, Transport, TransportConfig
from forwarding.transports import open_transport
from forwarding.transports.syslog import SyslogStreamTransport, octet_counted

log = logging.getLogger("aifw.forward")

#: Rows read (and sent) per batch: the most a restart or a reconnect sends twice.
PAGE_ROWS = 2000
#: Events per batch where PostgreSQL builds the syslog frames (:meth:`DestinationForwarder._frames_for`):
#: reading a page costs about 15 ms whatever its size (every weekly partition is opened), which at
#: 2,000 rows would cost more than building them; 20,000 frames are about 12 MB.
FRAME_PAGE_ROWS = 20_000
DEAD_LETTER_BATCH = 100
#: The longest a receiver's Retry-After is honoured; a larger one is read as this.
MAX_RETRY_AFTER_SECONDS = 300.0
PACKAGE_NAME = "ai-usage-firewall"
FALLBACK_VERSION = "0.1.0"


def product_version() -> str:
    """The installed package's version, as formats name the product (``metadata.version``)."""
    try:
        return metadata.version(PACKAGE_NAME)
    except metadata.PackageNotFoundError:
        return FALLBACK_VERSION


def transport_config(destination: ForwardDestination, secrets: SecretBox) -> TransportConfig:
    """The destination's transport settings with its secret decrypted (SecretUnreadable if it cannot be)."""
    secret = secrets.decrypt(destination.secret_ciphertext) if destination.secret_ciphertext else None
    return TransportConfig(
        transport=destination.transport,
        address=destination.address,
        options=dict(destination.options or {}),
        secret=secret,
    )


def format_message(item: ForwardItem, fmt: str, *, version: str) -> Message:
    """The item formatted for a destination (ValueError if the format cannot carry it)."""
    body = render_body(item, cast(BodyFormat, fmt), product_version=version)
    return Message(item=item, body=body, syslog_severity=syslog_severity(item))


def _stream_of(item: ForwardItem) -> StreamName:
    return "alert" if isinstance(item, AlertItem) else "event"


def _refusal(item: ForwardItem, payload: str, error: str) -> Refusal:
    if isinstance(item, AlertItem):
        return Refusal(
            stream="alert", item_id=item.alert_id, revision=item.revision, payload=payload, error=error
        )
    return Refusal(stream="event", item_id=item.id, revision=None, payload=payload, error=error)


@dataclass
class _Cursor:
    """A stream's position in memory: where to read next, and where a resend would start."""

    position: Position
    resend_from: Position
    unsaved: bool = False


@dataclass
class _Read:
    """A page read for one stream: items to format here, or frames PostgreSQL built (``frames``)."""

    stream: StreamName
    start: Position
    page: Page
    limit: int
    items: list[ForwardItem] = field(default_factory=list)
    frames: bool = False


@dataclass
class _Sent:
    """A page sent: how many messages went out and which the receiver refused."""

    read: _Read
    delivered: int
    refused: list[Refusal]


@dataclass
class _Letters:
    """The dead letters of a round: to send again, or missing (their item is no longer stored)."""

    pending: list[tuple[uuid.UUID, ForwardItem, str]] = field(default_factory=list)
    missing: list[tuple[uuid.UUID, str]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.pending) + len(self.missing)


class Backoff:
    """A delay that doubles from ``first`` to ``most`` and starts again after a success."""

    def __init__(self, first: float, most: float) -> None:
        self.first, self.most = first, most
        self.next = first

    def take(self, at_least: float = 0.0) -> float:
        delay = max(self.next, at_least)
        self.next = min(self.next * 2, self.most)
        return delay

    def reset(self) -> None:
        self.next = self.first


class DestinationForwarder:
    """Delivers one destination's streams while holding its lease; :meth:`run` until disabled or lost."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        destination_id: uuid.UUID,
        lease: Lease,
        secrets: SecretBox,
        poll_seconds: float = 0.25,
        page_rows: int = PAGE_ROWS,
        frame_page_rows: int = FRAME_PAGE_ROWS,
        retry_first_seconds: float = 1.0,
        retry_most_seconds: float = 60.0,
    ) -> None:
        self.destination_id = destination_id
        self.lease = lease
        self._sessions = sessions
        self._secrets = secrets
        self._poll = poll_seconds
        self._page_rows = page_rows
        self._frame_page_rows = frame_page_rows
        self._postgresql = False
        self._frame_reader: tuple[Transport, frozenset[str], EventLines] | None = None
        self._backoff = Backoff(retry_first_seconds, retry_most_seconds)
        self._version = product_version()
        self._transport: Transport | None = None
        #: The destination as the last round read it (None: load it before the next round).
        self._destination: ForwardDestination | None = None
        self._cursors: dict[StreamName, _Cursor] = {}
        self._renewed_at = time.monotonic()
        self._database_down = False

    # --- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver until the destination is disabled or deleted, or the lease is lost; cancel to stop."""
        try:
            await self._loop()
        except LeaseLost:
            log.info("forwarding to destination %s stopped: another process took over", self.destination_id)
        finally:
            await self._close_transport()

    async def _loop(self) -> None:
        while True:
            destination: ForwardDestination | None = None
            try:
                # Each round reads the destination again (in its read transaction): the first loads it.
                destination = self._destination or await self._load_destination()
                if destination is None or not destination.enabled:
                    return
                if self._transport is None:
                    self._transport = open_transport(transport_config(destination, self._secrets))
                    await self._load_cursors()
                worked = await self._round(self._transport)
                self._backoff.reset()
                if not worked:
                    await self._idle()
            except LeaseLost:
                raise
            except SecretUnreadable as error:
                await self._fail(destination, "paused", str(error))
            except DestinationDown as error:
                await self._fail(destination, "paused", str(error))
            except RetryLater as error:
                wait = min(error.retry_after or 0.0, MAX_RETRY_AFTER_SECONDS)
                await self._fail(destination, "retrying", str(error), at_least=wait)
            except (SQLAlchemyError, OSError) as error:
                self._database_lost(error)
                await self._close_transport()
                await self._wait(self._backoff.take())
            except ValueError as error:
                # A destination's settings a transport cannot use (stored before a validation change).
                await self._fail(destination, "paused", f"cannot use the destination's settings: {error}")
            except Exception:
                # A bug must not end forwarding for good: log it with its traceback, wait, try again.
                log.exception("forwarding to destination %s failed unexpectedly", self.destination_id)
                await self._close_transport()
                await self._wait(self._backoff.take())

    async def _fail(
        self, destination: ForwardDestination | None, state: FaultState, error: str, *, at_least: float = 0.0
    ) -> None:
        """Close the transport (the next round resends from the cursor), show the fault, wait."""
        await self._close_transport()
        if destination is not None:
            log.warning("forwarding to %r %s: %s", destination.name, state, error)
            try:
                async with self._sessions() as session:
                    await record_fault(
                        session=session, lease=self.lease, destination=destination, state=state, error=error
                    )
                    await session.commit()
                self._renewed_at = time.monotonic()
            except LeaseLost:
                raise
            except (SQLAlchemyError, OSError) as database_error:
                self._database_lost(database_error)
            except Exception:
                log.exception("recording the fault of destination %s failed", self.destination_id)
        await self._wait(self._backoff.take(at_least))

    def _database_lost(self, error: BaseException) -> None:
        if not self._database_down:
            self._database_down = True
            what = "cannot reach the database" if is_connection_error(error) else "the database failed"
            log.warning(
                "forwarding to destination %s waits: %s (%s)", self.destination_id, what, type(error).__name__
            )

    def _database_back(self) -> None:
        if self._database_down:
            self._database_down = False
            log.info(
                "forwarding to destination %s resumes: the database is reachable again", self.destination_id
            )

    async def _load_destination(self) -> ForwardDestination | None:
        async with reading(self._sessions) as session:
            destination = await find_destination(session=session, destination_id=self.destination_id)
        self._database_back()
        return destination

    async def _load_cursors(self) -> None:
        """Start again from where a resend starts (the last batch, on unacknowledged transports)."""
        names: dict[StreamName, str] = {
            "event": events_cursor_name(self.destination_id),
            "alert": alerts_cursor_name(self.destination_id),
        }
        self._cursors = {}
        async with self._sessions() as session:
            self._postgresql = is_postgresql(session)
            for stream, name in names.items():
                state = await load_cursor(session, name=name)
                if state is None:
                    raise LeaseLost(f"destination {self.destination_id} has no cursors: it was deleted")
                self._cursors[stream] = _Cursor(position=state.resend_from, resend_from=state.resend_from)

    async def _close_transport(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            try:
                await transport.close()
            except Exception as error:  # closing a broken connection must not stop the loop
                log.debug("closing the transport of %s: %s", self.destination_id, error)

    async def _wait(self, seconds: float) -> None:
        """Sleep, keeping the lease renewed meanwhile (a wait may outlast it)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, self.lease.seconds / 3))
            await self._keep_lease()

    async def _idle(self) -> None:
        await asyncio.sleep(self._poll)
        await self._keep_lease()

    async def _keep_lease(self) -> None:
        """Renew the lease when a third of it has passed, saving cursors that moved past skipped rows."""
        if time.monotonic() - self._renewed_at < self.lease.seconds / 3:
            return
        try:
            async with self._sessions() as session:
                await renew(session=session, lease=self.lease)
                for stream, cursor in self._cursors.items():
                    if cursor.unsaved:
                        await record_position(
                            session=session,
                            lease=self.lease,
                            destination_id=self.destination_id,
                            stream=stream,
                            position=cursor.position,
                            resend_from=cursor.resend_from,
                        )
                await session.commit()
        except (SQLAlchemyError, OSError) as error:
            self._database_lost(error)
            return
        for cursor in self._cursors.values():
            cursor.unsaved = False
        self._renewed_at = time.monotonic()

    # --- one round -----------------------------------------------------------------------------

    async def _round(self, transport: Transport) -> bool:
        """Send what is waiting; True when a page came back full (more waits: the next round follows at once).

        A round reads together (in one statement the destination again, whether it has dead letters to
        retry and the visible bound; then a page of each stream under that bound), sends, and records
        both streams' pages in one transaction: a round costs the same few statements whatever it
        carries. A page that was not full means the stream is caught up: the loop then waits a poll
        before the next round.
        """
        async with reading(self._sessions) as session:
            start = await start_round(session=session, destination_id=self.destination_id)
            fresh = self._destination = start.destination
            if fresh is None or not fresh.enabled:
                return False  # the loop ends at its next turn
            destination = fresh
            letters = (
                await self._read_dead_letters(session, destination) if start.letters_to_retry else _Letters()
            )
            bound = start.bound
            streams: list[StreamName] = ["alert"] if destination.forward_alerts else []
            if destination.event_risk_levels:
                streams.append("event")
            reads = [await self._read_page(session, destination, transport, name, bound) for name in streams]
        worked = await self._retry_dead_letters(destination, transport, letters)
        sent: list[_Sent] = []
        try:
            for read in reads:
                sent.append(await self._send(destination, transport, read))
        except Exception:
            # What went out before the failure is recorded: an acknowledged batch is not sent twice.
            if any(batch.read.page.rows for batch in sent):
                await self._record(destination, transport.acknowledged, sent)
            raise
        return await self._record(destination, transport.acknowledged, sent) or worked

    async def _read_page(
        self,
        session: AsyncSession,
        destination: ForwardDestination,
        transport: Transport,
        stream: StreamName,
        bound: int | None,
    ) -> _Read:
        start = self._cursors[stream].position
        if stream == "alert":
            page = await read_alert_changes(
                session,
                after=start,
                limit=self._page_rows,
                organization_id=destination.organization_id,
                bound=bound,
            )
            return _Read(stream, start, page, self._page_rows, [alert_item(row) for row in page.rows])
        if (frames := self._frames_for(destination, transport)) is not None:
            page = await frames.read(session, after=start, bound=bound)
            return _Read(stream, start, page, self._frame_page_rows, frames=True)
        page = await read_events(
            session,
            after=start,
            limit=self._page_rows,
            organization_id=destination.organization_id,
            risk_levels=list(destination.event_risk_levels),
            bound=bound,
        )
        return _Read(stream, start, page, self._page_rows, [event_item(row) for row in page.rows])

    async def _send(self, destination: ForwardDestination, transport: Transport, read: _Read) -> _Sent:
        """Send one page: frames PostgreSQL built are relayed as they are; items are formatted here."""
        if read.frames:
            assert isinstance(transport, SyslogStreamTransport)
            if read.page.rows:
                await transport.send_frames(b"".join([octet_counted(message) for message in read.page.rows]))
            return _Sent(read, delivered=len(read.page.rows), refused=[])
        messages, refused = self._format(destination, read.items)
        if messages:
            refused += [
                _refusal(message.item, message.body, reason)
                for message, reason in await transport.send(messages)
            ]
        return _Sent(read, delivered=len(read.items) - len(refused), refused=refused)

    async def _record(
        self, destination: ForwardDestination, acknowledged: bool, sent: Sequence[_Sent]
    ) -> bool:
        """Record the pages sent (an empty page only moves the cursor in memory, saved with the lease's
        renewal); True when one was full (more waits)."""
        batches: list[tuple[_Read, DeliveredBatch]] = []
        for batch in sent:
            read, page = batch.read, batch.read.page
            cursor = self._cursors[read.stream]
            if not page.rows:
                if page.next_position != read.start:
                    cursor.position, cursor.unsaved = page.next_position, True
                continue
            resend_from = page.next_position if acknowledged else read.start
            batches.append(
                (
                    read,
                    DeliveredBatch(
                        stream=read.stream,
                        position=page.next_position,
                        resend_from=resend_from,
                        delivered=batch.delivered,
                        refused=batch.refused,
                    ),
                )
            )
        if not batches:
            return False
        await record_delivery(
            sessions=self._sessions,
            lease=self.lease,
            destination=destination,
            batches=[delivered for _, delivered in batches],
        )
        self._renewed_at = time.monotonic()
        for read, delivered in batches:
            self._cursors[read.stream] = _Cursor(delivered.position, delivered.resend_from)
        return any(len(read.page.rows) >= read.limit for read, _ in batches)

    def _frames_for(self, destination: ForwardDestination, transport: Transport) -> EventLines | None:
        """The fast path, where it applies: events in our JSON over syslog TCP or TLS from PostgreSQL.

        PostgreSQL builds each RFC 5424 message as it reads the row (forwarding/formats/syslog_sql.py),
        the same bytes this process would build, and the loop only frames and relays them: about
        7 µs an event in the database instead of about 30 here.
        """
        if destination.format != "json" or not isinstance(transport, SyslogStreamTransport):
            return None
        if not self._postgresql:
            return None  # SQLite: this process builds them
        risk_levels = frozenset(destination.event_risk_levels)
        if self._frame_reader is None or self._frame_reader[:2] != (transport, risk_levels):
            envelope = transport.envelope
            template = event_message_sql(
                hostname=envelope.hostname,
                app_name=envelope.app_name,
                facility=envelope.facility,
                sd_id=envelope.sd_id,
            )
            # Built once for the transport and the risk levels: the statement is then reused.
            lines = EventLines(
                template,
                limit=self._frame_page_rows,
                organization_id=destination.organization_id,
                risk_levels=sorted(risk_levels),
            )
            self._frame_reader = (transport, risk_levels, lines)
        return self._frame_reader[2]

    def _format(
        self, destination: ForwardDestination, items: Sequence[ForwardItem]
    ) -> tuple[list[Message], list[Refusal]]:
        messages, refused = [], []
        for item in items:
            try:
                messages.append(format_message(item, destination.format, version=self._version))
            except ValueError as error:
                refused.append(_refusal(item, "", f"cannot be formatted as {destination.format}: {error}"))
        return messages, refused

    async def _read_dead_letters(self, session: AsyncSession, destination: ForwardDestination) -> _Letters:
        """The dead letters an administrator asked to retry, with the items they were made from."""
        letters = _Letters()
        for letter in await dead_letters_to_retry(
            session=session, destination_id=destination.id, limit=DEAD_LETTER_BATCH
        ):
            item = await self._stored_item(
                session, letter.stream, letter.organization_id, letter.item_id, letter.revision
            )
            if item is None:
                letters.missing.append((letter.id, "no longer stored (deleted by retention)"))
            else:
                letters.pending.append((letter.id, item, letter.payload))
        return letters

    async def _retry_dead_letters(
        self, destination: ForwardDestination, transport: Transport, letters: _Letters
    ) -> bool:
        """Send the dead letters to retry, as they were refused, and record what became of them."""
        if not letters.count:
            return False
        messages = [
            (letter_id, Message(item=item, body=payload, syslog_severity=syslog_severity(item)))
            for letter_id, item, payload in letters.pending
        ]
        answers = await transport.send([message for _, message in messages]) if messages else []
        refused = [(_letter_of(messages, message), reason) for message, reason in answers]
        refused_ids = {letter_id for letter_id, _ in refused}
        delivered = [letter_id for letter_id, _, _ in letters.pending if letter_id not in refused_ids]
        async with self._sessions() as session:
            await record_dead_letter_results(
                session=session,
                lease=self.lease,
                destination=destination,
                delivered=delivered,
                refused=refused + letters.missing,
            )
            await session.commit()
        self._renewed_at = time.monotonic()
        return letters.count >= DEAD_LETTER_BATCH

    @staticmethod
    async def _stored_item(
        session: AsyncSession, stream: str, organization_id: str, item_id: str, revision: int | None
    ) -> ForwardItem | None:
        if stream == "alert":
            change = await stored_alert_change(session=session, alert_id=item_id, revision=revision)
            return None if change is None else alert_item(change)
        row = await stored_event(session=session, organization_id=organization_id, event_id=item_id)
        return None if row is None else event_item(row)


def _letter_of(messages: Sequence[tuple[uuid.UUID, Message]], refused: Message) -> uuid.UUID:
    """The dead letter a refused message was made from (the same object, or an equal one)."""
    for letter_id, message in messages:
        if message is refused:
            return letter_id
    return next(letter_id for letter_id, message in messages if message == refused)
