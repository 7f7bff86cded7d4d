"""Reading ``work_leases`` in the dispatcher tests: who holds what, and whether it was given up."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from db.base import as_utc, utcnow
from db.engine import new_sessionmaker
from db.models import WorkLease

#: The alert evaluator's lease (alerts/runner.py LEASE_NAME).
EVALUATOR = "alerts:evaluator"


async def leases(engine: AsyncEngine) -> dict[str, WorkLease]:
    """Every lease row by name, as stored now."""
    async with new_sessionmaker(engine)() as session:
        rows = (await session.scalars(select(WorkLease))).all()
        return {row.name: row for row in rows}


def is_held(lease: WorkLease | None, *, holding: str) -> bool:
    """Whether the lease is held now (unexpired) by a holder whose name contains ``holding``."""
    return lease is not None and as_utc(lease.expires_at) > utcnow() and holding in lease.holder


def expired(lease: WorkLease | None) -> bool:
    """Whether the lease is free now (given up, or run out)."""
    return lease is not None and as_utc(lease.expires_at) <= utcnow()
