"""One cleanup at a time: two engines in one process, and a second process holding the lock."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.engine import new_engine, new_sessionmaker
from db.retention import SUCCEEDED, RetentionAlreadyRunning, run_retention
from db.settings import REPO_ROOT, Settings
from tests.retention_tests.conftest import AddLogs, add_config, count_logs, days_ago

Sessions = async_sessionmaker[AsyncSession]

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


async def test_second_concurrent_run_on_another_engine_is_refused(
    settings: Settings, sessions: Sessions, add_logs: AddLogs, now: datetime
) -> None:
    await add_config(sessions, "acme", 30)
    await add_logs("acme", [days_ago(now, 40 + i) for i in range(6)])
    inside_first_run = asyncio.Event()
    let_first_run_finish = asyncio.Event()

    async def pause_after_first_batch(_org: str, _rows: int) -> None:
        inside_first_run.set()
        await let_first_run_finish.wait()

    first = asyncio.create_task(
        run_retention(
            sessions=sessions, trigger="scheduler", batch_size=2, now=now, progress=pause_after_first_batch
        )
    )
    other_engine = new_engine(settings)
    try:
        await asyncio.wait_for(inside_first_run.wait(), 10)
        with pytest.raises(RetentionAlreadyRunning, match="already running"):
            await run_retention(sessions=new_sessionmaker(other_engine), trigger="cli", now=now)
    finally:
        let_first_run_finish.set()
        summary = await first
        await other_engine.dispose()

    assert (summary.status, summary.total_rows) == (SUCCEEDED, 6)


async def test_second_run_with_wait_starts_when_the_first_ends(
    settings: Settings, sessions: Sessions, add_logs: AddLogs, now: datetime
) -> None:
    await add_config(sessions, "acme", 30)
    await add_logs("acme", [days_ago(now, 40 + i) for i in range(4)])
    inside_first_run = asyncio.Event()
    let_first_run_finish = asyncio.Event()

    async def pause(_org: str, _rows: int) -> None:
        inside_first_run.set()
        await let_first_run_finish.wait()

    first = asyncio.create_task(
        run_retention(sessions=sessions, trigger="scheduler", batch_size=2, now=now, progress=pause)
    )
    other_engine = new_engine(settings)
    try:
        await asyncio.wait_for(inside_first_run.wait(), 10)
        second = asyncio.create_task(
            run_retention(
                sessions=new_sessionmaker(other_engine), trigger="cli", now=now, wait=True, wait_timeout=20
            )
        )
        await asyncio.sleep(0.3)
        assert not second.done()
        let_first_run_finish.set()
        first_summary, second_summary = await asyncio.gather(first, second)
    finally:
        let_first_run_finish.set()
        await other_engine.dispose()

    assert (first_summary.total_rows, second_summary.total_rows) == (4, 0)
    assert second_summary.status == SUCCEEDED


async def test_lock_held_by_another_process_refuses_and_is_released_when_it_dies(
    sessions: Sessions, add_logs: AddLogs, now: datetime, subprocess_env: dict[str, str]
) -> None:
    await add_config(sessions, "acme", 30)
    await add_logs("acme", [days_ago(now, 40)])
    holder = await start_lock_holder(subprocess_env)
    try:
        with pytest.raises(RetentionAlreadyRunning):
            await run_retention(sessions=sessions, trigger="cli", now=now)
        assert await count_logs(sessions, "acme") == 1
    finally:
        holder.kill()  # no clean-up code runs: the OS / the server must release the lock
        await holder.wait()

    summary = await run_retention(sessions=sessions, trigger="cli", now=now, wait=True, wait_timeout=20)
    assert (summary.status, summary.total_rows) == (SUCCEEDED, 1)


async def test_waiting_run_stops_waiting_when_cancelled(
    sessions: Sessions, add_logs: AddLogs, now: datetime, subprocess_env: dict[str, str]
) -> None:
    await add_config(sessions, "acme", 30)
    await add_logs("acme", [days_ago(now, 40)])
    holder = await start_lock_holder(subprocess_env)
    cancel = asyncio.Event()
    try:
        waiting = asyncio.create_task(
            run_retention(
                sessions=sessions, trigger="cli", now=now, wait=True, wait_timeout=60, cancel=cancel
            )
        )
        await asyncio.sleep(0.3)
        assert not waiting.done()
        cancel.set()
        with pytest.raises(RetentionAlreadyRunning, match="stopped waiting"):
            await asyncio.wait_for(waiting, 10)
    finally:
        holder.kill()
        await holder.wait()
    assert await count_logs(sessions, "acme") == 1
