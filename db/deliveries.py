"""What a destination's forwarder writes: its progress, its state, its dead letters.

Every function here is called by the forwarder holding the destination's lease
(db/leases.py) and fences it first, so a forwarder that lost its lease (a hang, a
takeover) writes nothing: :class:`~db.leases.LeaseLost` rolls the transaction back.
The caller commits, except after :func:`record_delivery`, which commits itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Integer, bindparam, delete, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db import alerts
from db.base import UTCDateTime, utcnow
from db.commit_order import is_postgresql, postgresql_bound_column
from db.destinations import alerts_cursor_name, events_cursor_name
from db.engine import autocommit
from db.leases import Lease, fence, fence_cte, fence_parameters, lease_lost
from db.models import AlertChange, DeadLetter, ForwardDestination, LogEntry
from db.streams import Position, cursor_arrays, fenced_cursors_upsert, save_cursor, save_cursors

StreamName = Literal["event", "alert"]
#: A destination's state while its forwarder fails: ``paused`` (destination down), ``retrying`` (passing).
FaultState = Literal["paused", "retrying"]
#: The longest error text kept on a destination or a dead letter.
MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class Refusal:
    """One message a destination refused on its own: it becomes a dead letter."""

    stream: StreamName
    item_id: str
    revision: int | None
    payload: str
    error: str


def _cursor_name(destination_id: uuid.UUID, stream: StreamName) -> str:
    return events_cursor_name(destination_id) if stream == "event" else alerts_cursor_name(destination_id)


def _short(error: str) -> str:
    return error if len(error) <= MAX_ERROR_CHARS else error[: MAX_ERROR_CHARS - 1] + "…"


async def _mark_active(session: AsyncSession, destination: ForwardDestination, *, delivered: int) -> None:
    was_failing = destination.state in _FAILING
    values: dict[str, object] = {"state": "active", "last_error": None}
    if delivered:
        values["last_delivered_at"] = utcnow()
        values["delivered_count"] = ForwardDestination.delivered_count + delivered
    await session.execute(
        update(ForwardDestination)
        .where(ForwardDestination.id == destination.id, ForwardDestination.enabled.is_(True))
        .values(**values)
    )
    if was_failing:
        await alerts.resolve_system_alert(
            session=session,
            organization_id=destination.organization_id,
            kind="forwarding",
            group_key=destination.name,
        )


@dataclass(frozen=True)
class DeliveredBatch:
    """One stream's batch that went out: where its cursor moves, and what the receiver refused."""

    stream: StreamName
    position: Position
    resend_from: Position
    delivered: int
    refused: Sequence[Refusal] = ()


async def record_delivery(
    *,
    sessions: async_sessionmaker[AsyncSession],
    lease: Lease,
    destination: ForwardDestination,
    batches: Sequence[DeliveredBatch],
) -> None:
    """Batches went out (a round's alert changes and events): save each stream's cursor, add the refusals
    as dead letters, mark the destination active once (resolving its forwarding alert if it was failing)
    and count what was delivered; commit.

    On PostgreSQL a round with nothing refused by a destination that was not failing (nearly every
    round) is one statement in AUTOCOMMIT: five round trips (BEGIN, the fence, the cursors, the
    destination, COMMIT) become one, for a loop that records a round a second per destination.
    """
    async with sessions() as session:
        if is_postgresql(session) and _plain(destination, batches):
            await autocommit(session)
            await _record_plain_round(session, lease, destination, batches)
            return
        await _record_round(session, lease, destination, batches)
        await session.commit()


def _cursors(
    destination: ForwardDestination, batches: Sequence[DeliveredBatch]
) -> list[tuple[str, Position, Position | None]]:
    """Each batch's cursor as the cursor writers take it: (name, position, resend_from)."""
    return [
        (_cursor_name(destination.id, batch.stream), batch.position, batch.resend_from) for batch in batches
    ]


def _plain(destination: ForwardDestination, batches: Sequence[DeliveredBatch]) -> bool:
    """Only cursors and counters to write: nothing refused, every batch delivered, no alert to resolve."""
    return destination.state not in _FAILING and all(
        batch.delivered and not batch.refused for batch in batches
    )


async def _record_plain_round(
    session: AsyncSession, lease: Lease, destination: ForwardDestination, batches: Sequence[DeliveredBatch]
) -> None:
    fenced, _, _ = (
        await session.execute(
            _PLAIN_ROUND,
            {
                **fence_parameters(lease, postgresql=True),
                **cursor_arrays(_cursors(destination, batches)),
                "now": utcnow(),
                "destination_id": destination.id,
                "delivered": sum(batch.delivered for batch in batches),
            },
        )
    ).one()
    if not fenced:
        raise lease_lost(lease)


def _plain_round_statement() -> Any:
    """:func:`_record_plain_round`'s statement, built once: the fence as a CTE, then the cursors' upsert
    and the destination's update, each only if the fence has its row. It returns whether it had."""
    fence = fence_cte()
    fenced = exists(select(fence.c.epoch))
    saved = fenced_cursors_upsert(fenced)
    counted = (
        update(ForwardDestination)
        .where(
            ForwardDestination.id == bindparam("destination_id"), ForwardDestination.enabled.is_(True), fenced
        )
        .values(
            state="active",
            last_error=None,
            last_delivered_at=bindparam("now", type_=UTCDateTime),
            delivered_count=ForwardDestination.delivered_count + bindparam("delivered", type_=Integer),
        )
        .returning(ForwardDestination.id)
        .cte("counted")
    )
    # SQLAlchemy renders only the CTEs a statement names: the count of each names them.
    return select(
        fenced,
        select(func.count()).select_from(saved).scalar_subquery(),
        select(func.count()).select_from(counted).scalar_subquery(),
    )


_FAILING = ("paused", "retrying")
_PLAIN_ROUND = _plain_round_statement()


async def _record_round(
    session: AsyncSession, lease: Lease, destination: ForwardDestination, batches: Sequence[DeliveredBatch]
) -> None:
    await fence(session, lease)
    await save_cursors(session, _cursors(destination, batches))
    for batch in batches:
        for refusal in batch.refused:
            session.add(
                DeadLetter(
                    destination_id=destination.id,
                    organization_id=destination.organization_id,
                    stream=refusal.stream,
                    item_id=refusal.item_id,
                    revision=refusal.revision,
                    payload=refusal.payload,
                    error=_short(refusal.error),
                    attempts=1,
                    retry_requested=False,
                    created_at=utcnow(),
                )
            )
    await _mark_active(session, destination, delivered=sum(batch.delivered for batch in batches))
    await session.flush()


async def record_position(
    *,
    session: AsyncSession,
    lease: Lease,
    destination_id: uuid.UUID,
    stream: StreamName,
    position: Position,
    resend_from: Position,
) -> None:
    """Save a cursor that moved past rows the filter skipped (nothing was sent), renewing the lease."""
    await fence(session, lease)
    await save_cursor(
        session, name=_cursor_name(destination_id, stream), position=position, resend_from=resend_from
    )


async def record_fault(
    *, session: AsyncSession, lease: Lease, destination: ForwardDestination, state: FaultState, error: str
) -> None:
    """Delivery failed: show ``state`` and ``error`` on the destination; a paused one (destination down)
    raises or updates the organisation's forwarding alert for it."""
    await fence(session, lease)
    now = utcnow()
    await session.execute(
        update(ForwardDestination)
        .where(ForwardDestination.id == destination.id, ForwardDestination.enabled.is_(True))
        .values(state=state, last_error=_short(error), last_error_at=now)
    )
    if state == "paused":
        await alerts.raise_or_update_system_alert(
            session=session,
            organization_id=destination.organization_id,
            kind="forwarding",
            group_key=destination.name,
            details={"destination_id": str(destination.id), "error": _short(error)},
        )


async def renew(*, session: AsyncSession, lease: Lease) -> None:
    """Keep the lease while there is nothing to write (idle, or waiting to retry)."""
    await fence(session, lease)


async def dead_letters_to_retry(
    *, session: AsyncSession, destination_id: uuid.UUID, limit: int
) -> Sequence[DeadLetter]:
    """The destination's dead letters an administrator asked to send again, oldest first."""
    return (await session.scalars(_TO_RETRY, {"destination_id": destination_id, "limit": limit})).all()


# Built once with bind parameters, as the other statements a forwarder sends every round or so.
_TO_RETRY = (
    select(DeadLetter)
    .where(DeadLetter.destination_id == bindparam("destination_id"), DeadLetter.retry_requested.is_(True))
    .order_by(DeadLetter.created_at, DeadLetter.id)
    .limit(bindparam("limit", type_=Integer))
    .execution_options(populate_existing=True)
)


@dataclass(frozen=True)
class RoundStart:
    """What a forwarder's round starts from (:func:`start_round`)."""

    #: The destination as stored now (None: deleted).
    destination: ForwardDestination | None
    #: An administrator asked for some of its dead letters to be sent again.
    letters_to_retry: bool
    #: PostgreSQL: the visible bound of every stream (db/commit_order.py); None on SQLite.
    bound: int | None


async def start_round(*, session: AsyncSession, destination_id: uuid.UUID) -> RoundStart:
    """The destination as stored now, whether it has dead letters to retry and (PostgreSQL) the visible
    bound, in one statement: a forwarder starts a round every second."""
    postgresql = is_postgresql(session)
    statement = _ROUND_START_POSTGRESQL if postgresql else _ROUND_START
    row = (await session.execute(statement, {"destination_id": destination_id})).first()
    if row is None:
        return RoundStart(destination=None, letters_to_retry=False, bound=None)
    return RoundStart(
        destination=row[0], letters_to_retry=bool(row[1]), bound=int(row[2]) if postgresql else None
    )


def _round_start_statement(*, postgresql: bool) -> Any:
    retry = (
        select(DeadLetter.id)
        .where(DeadLetter.destination_id == ForwardDestination.id, DeadLetter.retry_requested.is_(True))
        .exists()
    )
    columns: list[Any] = [ForwardDestination, retry]
    if postgresql:
        columns.append(postgresql_bound_column())
    return (
        select(*columns)
        .where(ForwardDestination.id == bindparam("destination_id"))
        .execution_options(populate_existing=True)
    )


_ROUND_START = _round_start_statement(postgresql=False)
_ROUND_START_POSTGRESQL = _round_start_statement(postgresql=True)


async def stored_event(*, session: AsyncSession, organization_id: str, event_id: str) -> LogEntry | None:
    """The event a dead letter names, if still stored."""
    try:
        key = uuid.UUID(event_id)
    except ValueError:
        return None
    # The key also holds the timestamp, which a dead letter does not name: (organization_id, id) is
    # its prefix, so this stays one index probe per partition.
    statement = (
        select(LogEntry).where(LogEntry.organization_id == organization_id, LogEntry.id == key).limit(1)
    )
    return (await session.scalars(statement)).first()


async def stored_alert_change(
    *, session: AsyncSession, alert_id: str, revision: int | None
) -> AlertChange | None:
    """The alert revision a dead letter names, if still stored."""
    try:
        key = uuid.UUID(alert_id)
    except ValueError:
        return None
    return await session.scalar(
        select(AlertChange)
        .where(AlertChange.alert_id == key, AlertChange.revision == (revision or 0))
        .limit(1)
    )


async def record_dead_letter_results(
    *,
    session: AsyncSession,
    lease: Lease,
    destination: ForwardDestination,
    delivered: Sequence[uuid.UUID],
    refused: Sequence[tuple[uuid.UUID, str]],
) -> None:
    """Retried dead letters: the delivered ones are deleted; the refused ones count one more attempt and
    wait for another request."""
    await fence(session, lease)
    if delivered:
        await session.execute(delete(DeadLetter).where(DeadLetter.id.in_(list(delivered))))
    for dead_letter_id, error in refused:
        await session.execute(
            update(DeadLetter)
            .where(DeadLetter.id == dead_letter_id)
            .values(attempts=DeadLetter.attempts + 1, retry_requested=False, error=_short(error))
        )
    await _mark_active(session, destination, delivered=len(delivered))
    await session.flush()
