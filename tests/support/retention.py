"""Rows the retention tests start from (an organisation's retention, logs at chosen times), the actor of a
run, and another process holding the retention lock."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import FirewallConfig, LogEntry
from db.rights import Actor
from db.settings import REPO_ROOT

#: The ``add_logs`` fixture: one log of the organisation at each given time.
AddLogs = Callable[[str, Iterable[datetime]], Awaitable[None]]

#: The command line as the actor of a run: audited, never refused.
CLI = Actor.cli()

#: The program of :func:`start_lock_holder`'s process.
HOLD_LOCK = """
import asyncio, sys
from db.engine import new_engine
from db.retention_lock import retention_lock
from db.settings import load_settings

async def main():
    engine = new_engine(load_settings())
    async with retention_lock(engine):
        print("locked", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await engine.dispose()

asyncio.run(main())
"""


async def add_config(sessions: async_sessionmaker[AsyncSession], organization_id: str, days: int) -> None:
    """Give the organisation a configuration row keeping its logs ``days`` days."""
    async with sessions() as session, session.begin():
        session.add(FirewallConfig(organization_id=organization_id, log_retention_days=days))


async def log_times(sessions: async_sessionmaker[AsyncSession], organization_id: str) -> list[datetime]:
    """The times of the organisation's stored logs, oldest first."""
    async with sessions() as session:
        query = select(LogEntry.timestamp).where(LogEntry.organization_id == organization_id)
        return sorted((await session.scalars(query)).all())


def days_ago(now: datetime, days: int, seconds: int = 0) -> datetime:
    """``days`` days before ``now``, then ``seconds`` later (negative: earlier)."""
    return now - timedelta(days=days) + timedelta(seconds=seconds)


async def start_lock_holder(env: dict[str, str]) -> asyncio.subprocess.Process:
    """Another process that takes the retention lock and keeps it until killed or its stdin closes."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLD_LOCK,
        cwd=REPO_ROOT,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 20)
    assert line.strip() == b"locked"
    return process
