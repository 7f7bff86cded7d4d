"""Leases: one worker at a time for a job, however many processes could do it.

The alert evaluator and each destination's forwarder run in whichever process holds
their lease. A lease is a ``work_leases`` row: a holder, an expiry and an ``epoch``
that grows with each new holder.

- :func:`acquire` takes a lease that is free, expired or already ours, and renews it;
- every transaction that writes the job's results calls :func:`fence` first: it renews the
  lease *only if this holder at this epoch still has it*, and raises :class:`LeaseLost`
  otherwise, so the transaction rolls back. A holder that hung (``SIGSTOP``, a long pause)
  past its expiry and resumes after another took over can therefore write nothing: the
  row lock (PostgreSQL) or the write lock (SQLite) orders the two, and the epoch tells.

Expiry uses this host's clock (UTC). Clocks of servers sharing a database should agree to
well within the lease time (NTP does); a skew only delays or hastens a takeover, it never
lets two holders write, since the epoch decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import String, bindparam, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.base import utcnow
from db.engine import insert_for
from db.models import WorkLease

#: How long a lease lasts without renewal: a takeover after a crash or a hang waits this long.
DEFAULT_LEASE_SECONDS = 10.0


class LeaseLost(Exception):
    """Another holder has the lease now: what this transaction was about to write must not be written."""


@dataclass(frozen=True)
class Lease:
    name: str
    holder: str
    epoch: int
    seconds: float = DEFAULT_LEASE_SECONDS


async def acquire(
    session: AsyncSession, *, name: str, holder: str, seconds: float = DEFAULT_LEASE_SECONDS
) -> Lease | None:
    """Take or renew the lease ``name`` for ``holder`` if free, expired or already theirs (commit after).

    Returns the lease (a new epoch when it changed hands), or None while another holds it.
    """
    await _end_if_stalled(session, seconds)
    now = utcnow()
    await session.execute(
        insert_for(session)(WorkLease)
        .values(name=name, holder="", epoch=0, expires_at=now - timedelta(seconds=1), renewed_at=now)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    result = await session.execute(
        update(WorkLease)
        .where(WorkLease.name == name, or_(WorkLease.holder == holder, WorkLease.expires_at < now))
        .values(
            holder=holder,
            epoch=case((WorkLease.holder == holder, WorkLease.epoch), else_=WorkLease.epoch + 1),
            expires_at=now + timedelta(seconds=seconds),
            renewed_at=now,
        )
        .returning(WorkLease.epoch)
    )
    epoch = result.scalar_one_or_none()
    return None if epoch is None else Lease(name=name, holder=holder, epoch=int(epoch), seconds=seconds)


async def fence(session: AsyncSession, lease: Lease) -> None:
    """Renew ``lease`` in this transaction if it is still ours, else raise :class:`LeaseLost`.

    Call it first in every transaction that writes the job's results: it holds the lease row
    until the commit, so nobody can take the lease between the check and the commit.
    """
    postgresql = session.get_bind().dialect.name == "postgresql"
    result = await session.execute(
        _FENCE_POSTGRESQL if postgresql else _FENCE, fence_parameters(lease, postgresql=postgresql)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise lease_lost(lease)


def lease_lost(lease: Lease) -> LeaseLost:
    return LeaseLost(f"lease {lease.name!r} was taken over")


def fence_parameters(lease: Lease, *, postgresql: bool) -> dict[str, Any]:
    """The bind parameters of :func:`fence`'s statement (and of :func:`fence_cte`'s, ``postgresql``)."""
    now = utcnow()
    parameters: dict[str, Any] = {
        "lease_name": lease.name,
        "lease_holder": lease.holder,
        "lease_epoch": lease.epoch,
        "lease_expires_at": now + timedelta(seconds=lease.seconds),
        "lease_renewed_at": now,
    }
    if postgresql:
        parameters["lease_stall_ms"] = _stall_milliseconds(lease.seconds)
    return parameters


def fence_cte(name: str = "fence") -> Any:
    """:func:`fence` on PostgreSQL as a common table expression: one row when the lease is still ours.

    For a write that fits in one statement (run in AUTOCOMMIT): its other parts write only if this CTE
    has a row, and the caller raises :func:`lease_lost` if it has none. The UPDATE locks the lease row
    as :func:`fence` does, so a takeover and the statement are ordered the same way.
    """
    return _FENCE_POSTGRESQL.returning(WorkLease.epoch).cte(name)


def _fence_statement(*, postgresql: bool) -> Any:
    """:func:`fence`'s UPDATE, built once: the lease and the times are bind parameters, so SQLAlchemy
    neither builds nor keys it again for each of the several writes a second of a lease holder."""
    ours = [
        WorkLease.name == bindparam("lease_name"),
        WorkLease.holder == bindparam("lease_holder"),
        WorkLease.epoch == bindparam("lease_epoch"),
    ]
    if postgresql:
        # _end_if_stalled's setting, taken by the same statement: one round trip less for every write
        # a lease holder makes (evaluator and forwarders write several times a second).
        ours.append(_stall_timeout(bindparam("lease_stall_ms", type_=String)).is_not(None))
    return (
        update(WorkLease)
        .where(*ours)
        .values(expires_at=bindparam("lease_expires_at"), renewed_at=bindparam("lease_renewed_at"))
        .execution_options(synchronize_session=False)
    )


async def _end_if_stalled(session: AsyncSession, seconds: float) -> None:
    """On PostgreSQL, have the server end this transaction if its holder stalls in it past the lease.

    A holder stopped (``SIGSTOP``) inside a write transaction keeps the lease row locked, and its
    successor's :func:`acquire` would wait on that lock for as long as the stop lasts. The session
    is ended after ``seconds`` idle in the transaction instead, which releases the lock; the
    stopped holder finds its connection gone (and its lease taken) when it resumes.
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(_stall_timeout(_stall_milliseconds(seconds))))


def _stall_milliseconds(seconds: float) -> str:
    return str(max(1000, int(seconds * 1000)))


def _stall_timeout(milliseconds: Any) -> Any:
    """``SET LOCAL idle_in_transaction_session_timeout`` as an expression (``set_config``, local)."""
    return func.set_config("idle_in_transaction_session_timeout", milliseconds, True)


_FENCE = _fence_statement(postgresql=False)
_FENCE_POSTGRESQL = _fence_statement(postgresql=True)


async def release(session: AsyncSession, lease: Lease) -> None:
    """Give the lease up now (a clean shutdown), so another can take it at once (commit after)."""
    await session.execute(
        update(WorkLease)
        .where(WorkLease.name == lease.name, WorkLease.holder == lease.holder, WorkLease.epoch == lease.epoch)
        .values(expires_at=utcnow() - timedelta(seconds=1))
    )
