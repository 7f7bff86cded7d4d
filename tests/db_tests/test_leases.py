"""One holder of a lease at a time, and a holder that lost it can write nothing."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from db.engine import new_sessionmaker
from db.leases import LeaseLost, acquire, fence, release


async def test_a_held_lease_is_refused_to_another_holder(session: AsyncSession) -> None:
    first = await acquire(session, name="job", holder="a")
    await session.commit()
    second = await acquire(session, name="job", holder="b")
    await session.commit()

    assert first is not None
    assert first.epoch == 1
    assert second is None


async def test_renewing_keeps_the_epoch(session: AsyncSession) -> None:
    first = await acquire(session, name="job", holder="a")
    again = await acquire(session, name="job", holder="a")
    await session.commit()

    assert first is not None
    assert again is not None
    assert again.epoch == first.epoch


async def test_an_expired_lease_changes_hands_and_fences_the_old_holder(session: AsyncSession) -> None:
    old = await acquire(session, name="job", holder="a", seconds=0.2)
    await session.commit()
    await asyncio.sleep(0.3)
    new = await acquire(session, name="job", holder="b")
    await session.commit()

    assert old is not None
    assert new is not None
    assert new.epoch == old.epoch + 1
    with pytest.raises(LeaseLost):
        await fence(session, old)
    await session.rollback()
    await fence(session, new)
    await session.commit()


async def test_a_released_lease_is_free_at_once(session: AsyncSession) -> None:
    held = await acquire(session, name="job", holder="a")
    assert held is not None
    await release(session, held)
    await session.commit()

    assert await acquire(session, name="job", holder="b") is not None


async def test_two_racing_acquirers_get_one_lease(engine: AsyncEngine) -> None:
    sessions = new_sessionmaker(engine)

    async def take(holder: str) -> bool:
        async with sessions() as session:
            for _ in range(50):
                try:
                    lease = await acquire(session, name="race", holder=holder)
                    await session.commit()
                    return lease is not None
                except Exception:  # noqa: BLE001 - SQLite's busy writer: try again, as the workers do
                    await session.rollback()
                    await asyncio.sleep(0.01)
            return False

    results = await asyncio.gather(*(take(f"h{i}") for i in range(5)))

    assert sum(results) == 1
