"""Fixtures of the retention tests: a sessionmaker, log rows at chosen times, a real delete failure."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db.base import utcnow
from db.engine import new_sessionmaker
from db.models import FirewallConfig, LogEntry
from db.rights import Actor

AddLogs = Callable[[str, Iterable[datetime]], Awaitable[None]]

#: The command line as the actor of a run: audited, never refused.
CLI = Actor.cli()
#: The organisation whose deletes the ``refuse_deletes`` fixture makes fail for real.
BROKEN_ORGANIZATION = "broken"


@pytest.fixture
def now() -> datetime:
    """The pinned clock of a run: a fixed instant, so boundaries are exact to the microsecond."""
    return utcnow().replace(microsecond=0)


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return new_sessionmaker(engine)


@pytest.fixture
def add_logs(sessions: async_sessionmaker[AsyncSession]) -> AddLogs:
    """Insert one log of the organisation at each given time."""

    async def add(organization_id: str, timestamps: Iterable[datetime]) -> None:
        rows = [
            {
                "timestamp": moment,
                "device_id": "dev-1",
                "user_id": "alice",
                "tool_name": "ChatGPT",
                "tool_type": "web",
                "risk_level": "green",
                "organization_id": organization_id,
            }
            for moment in timestamps
        ]
        async with sessions() as session, session.begin():
            await session.execute(insert(LogEntry), rows)

    return add


async def add_config(sessions: async_sessionmaker[AsyncSession], organization_id: str, days: int) -> None:
    async with sessions() as session, session.begin():
        session.add(FirewallConfig(organization_id=organization_id, log_retention_days=days))


async def log_times(sessions: async_sessionmaker[AsyncSession], organization_id: str) -> list[datetime]:
    async with sessions() as session:
        query = select(LogEntry.timestamp).where(LogEntry.organization_id == organization_id)
        return sorted((await session.scalars(query)).all())


async def count_logs(sessions: async_sessionmaker[AsyncSession], organization_id: str | None = None) -> int:
    async with sessions() as session:
        query = select(func.count()).select_from(LogEntry)
        if organization_id is not None:
            query = query.where(LogEntry.organization_id == organization_id)
        return int(await session.scalar(query) or 0)


def days_ago(now: datetime, days: int, seconds: int = 0) -> datetime:
    return now - timedelta(days=days) + timedelta(seconds=seconds)


@pytest.fixture
async def refuse_deletes(engine: AsyncEngine, backend: str) -> AsyncIterator[str]:
    """A database trigger that makes deleting the ``broken`` organisation's logs fail, then removes it."""
    async with engine.begin() as connection:
        if backend == "postgresql":
            await connection.execute(
                text(
                    "CREATE OR REPLACE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'deletes refused for %', OLD.organization_id; END $$"
                )
            )
            await connection.execute(
                text(
                    "CREATE TRIGGER refuse_broken_delete BEFORE DELETE ON log_entries FOR EACH ROW "
                    f"WHEN (OLD.organization_id = '{BROKEN_ORGANIZATION}') EXECUTE FUNCTION refuse_delete()"
                )
            )
        else:
            await connection.execute(
                text(
                    "CREATE TRIGGER refuse_broken_delete BEFORE DELETE ON log_entries "
                    f"WHEN OLD.organization_id = '{BROKEN_ORGANIZATION}' "
                    f"BEGIN SELECT RAISE(ABORT, 'deletes refused for {BROKEN_ORGANIZATION}'); END"
                )
            )
    try:
        yield BROKEN_ORGANIZATION
    finally:
        async with engine.begin() as connection:
            if backend == "postgresql":
                await connection.execute(text("DROP TRIGGER IF EXISTS refuse_broken_delete ON log_entries"))
                await connection.execute(text("DROP FUNCTION IF EXISTS refuse_delete()"))
            else:
                await connection.execute(text("DROP TRIGGER IF EXISTS refuse_broken_delete"))
