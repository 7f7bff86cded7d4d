"""One cleanup at a time: two engines in one process, and a second process holding the lock."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db.engine import new_engine, new_sessionmaker
from db.models import AuditEvent, RetentionRun
from db.retention import (
    AUDIT_ACTION,
    FAILED,
    LOST_LOCK_MESSAGE,
    SUCCEEDED,
    RetentionAlreadyRunning,
    run_retention,
)
from db.retention_lock import ADVISORY_LOCK_KEY, _Waiting
from db.settings import Settings
from tests.support.database import count_events
from tests.support.retention import CLI, AddLogs, add_config, days_ago, start_lock_holder

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
def lock_waited(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set when a run finds the lock held and starts waiting for it (its first pause between two tries)."""
    waited = asyncio.Event()
    pause = _Waiting.pause_or_raise

    async def pause_and_tell(self: _Waiting) -> None:
        waited.set()
        await pause(self)

    monkeypatch.setattr(_Waiting, "pause_or_raise", pause_and_tell)
    return waited


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
        run_retention(sessions=sessions, actor=None, batch_size=2, now=now, progress=pause_after_first_batch)
    )
    other_engine = new_engine(settings)
    try:
        await asyncio.wait_for(inside_first_run.wait(), 10)
        with pytest.raises(RetentionAlreadyRunning, match="already running"):
            await run_retention(sessions=new_sessionmaker(other_engine), actor=CLI, now=now)
    finally:
        let_first_run_finish.set()
        summary = await first
        await other_engine.dispose()

    assert (summary.status, summary.total_rows) == (SUCCEEDED, 6)


async def test_second_run_with_wait_starts_when_the_first_ends(
    settings: Settings, sessions: Sessions, add_logs: AddLogs, now: datetime, lock_waited: asyncio.Event
) -> None:
    await add_config(sessions, "acme", 30)
    await add_logs("acme", [days_ago(now, 40 + i) for i in range(4)])
    inside_first_run = asyncio.Event()
    let_first_run_finish = asyncio.Event()

    async def pause(_org: str, _rows: int) -> None:
        inside_first_run.set()
        await let_first_run_finish.wait()

    first = asyncio.create_task(
        run_retention(sessions=sessions, actor=None, batch_size=2, now=now, progress=pause)
    )
    other_engine = new_engine(settings)
    try:
        await asyncio.wait_for(inside_first_run.wait(), 10)
        second = asyncio.create_task(
            run_retention(
                sessions=new_sessionmaker(other_engine), actor=CLI, now=now, wait=True, wait_timeout=20
            )
        )
        await asyncio.wait_for(lock_waited.wait(), 10)
        assert not second.done()
        let_first_run_finish.set()
        first_summary, second_summary = await asyncio.gather(first, second)
    finally:
        let_first_run_finish.set()
        await other_engine.dispose()

    assert (first_summary.total_rows, second_summary.total_rows) == (4, 0)
    assert second_summary.status == SUCCEEDED


async def test_lock_held_by_another_process_refuses_and_is_released_when_it_dies(
    engine: AsyncEngine, sessions: Sessions, add_logs: AddLogs, now: datetime, subprocess_env: dict[str, str]
) -> None:
    await add_config(sessions, "acme", 30)
    await add_logs("acme", [days_ago(now, 40)])
    holder = await start_lock_holder(subprocess_env)
    try:
        with pytest.raises(RetentionAlreadyRunning):
            await run_retention(sessions=sessions, actor=CLI, now=now)
        assert await count_events(engine, "acme") == 1
    finally:
        holder.kill()  # no clean-up code runs: the OS / the server must release the lock
        await holder.wait()

    summary = await run_retention(sessions=sessions, actor=CLI, now=now, wait=True, wait_timeout=20)
    assert (summary.status, summary.total_rows) == (SUCCEEDED, 1)


async def test_waiting_run_stops_waiting_when_cancelled(
    engine: AsyncEngine,
    sessions: Sessions,
    add_logs: AddLogs,
    now: datetime,
    subprocess_env: dict[str, str],
    lock_waited: asyncio.Event,
) -> None:
    await add_config(sessions, "acme", 30)
    await add_logs("acme", [days_ago(now, 40)])
    holder = await start_lock_holder(subprocess_env)
    cancel = asyncio.Event()
    try:
        waiting = asyncio.create_task(
            run_retention(sessions=sessions, actor=CLI, now=now, wait=True, wait_timeout=60, cancel=cancel)
        )
        await asyncio.wait_for(lock_waited.wait(), 10)
        assert not waiting.done()
        cancel.set()
        with pytest.raises(RetentionAlreadyRunning, match="stopped waiting"):
            await asyncio.wait_for(waiting, 10)
    finally:
        holder.kill()
        await holder.wait()
    assert await count_events(engine, "acme") == 1


def advisory_lock_holder_sql() -> str:
    """The backend holding the retention lock, from pg_locks (a bigint key is split into classid, objid)."""
    key = ADVISORY_LOCK_KEY & 0xFFFF_FFFF_FFFF_FFFF
    return (
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
        f" AND classid = {key >> 32} AND objid = {key & 0xFFFF_FFFF}"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )


@pytest.mark.parametrize("by_partition", [False, True], ids=["batches", "partitions"])
async def test_terminating_the_lock_backend_stops_the_run_and_its_records_stay_exact_and_final(
    backend: str,
    engine: AsyncEngine,
    sessions: Sessions,
    add_logs: AddLogs,
    now: datetime,
    by_partition: bool,
) -> None:
    if backend != "postgresql":
        pytest.skip("the advisory lock and its connection are PostgreSQL's")
    for organization_id, rows in (("acme", 12), ("zeta", 4)):
        await add_config(sessions, organization_id, 30)
        await add_logs(organization_id, [days_ago(now, 40 + i) for i in range(rows)])
    terminated: list[int] = []

    async def terminate_the_lock_backend(_org: str, _rows: int) -> None:
        if terminated:
            return
        async with sessions() as session:
            pid = await session.scalar(text(advisory_lock_holder_sql()))
            await session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        terminated.append(pid)

    summary = await run_retention(
        sessions=sessions,
        actor=CLI,
        batch_size=4,
        now=now,
        progress=terminate_the_lock_backend,
        by_partition=by_partition,
    )

    # The first step deleted one batch of 4, or the oldest week whole: how many of the 12 rows that week
    # holds depends on the weekday the test runs, so the records are held to what is really gone.
    acme_deleted = 12 - await count_events(engine, "acme")
    assert (acme_deleted == 4) if not by_partition else (0 < acme_deleted < 12)
    assert summary.status == FAILED
    assert [(r.organization_id, r.status, r.rows) for r in summary.results] == [
        ("acme", FAILED, acme_deleted),
        ("zeta", FAILED, 0),
    ]
    assert all((r.error or "").startswith(LOST_LOCK_MESSAGE) for r in summary.results)
    assert await count_events(engine, "zeta") == 4
    async with sessions() as session:
        runs = {run.organization_id: run for run in (await session.scalars(select(RetentionRun))).all()}
        audits = {
            audit.entity_id: audit.changes
            for audit in (
                await session.scalars(select(AuditEvent).where(AuditEvent.action == AUDIT_ACTION))
            ).all()
        }
    for organization_id, rows in (("acme", acme_deleted), ("zeta", 0)):
        run = runs[organization_id]
        assert (run.status, run.rows_deleted, run.finished_at is not None) == (FAILED, rows, True)
        assert (run.error or "").startswith(LOST_LOCK_MESSAGE)
        assert audits[organization_id]["status"] == {"after": FAILED}
        assert audits[organization_id]["rows_deleted"] == {"after": rows}
    # The lock went with its connection: the next cleanup runs, and finishes the job.
    again = await run_retention(sessions=sessions, actor=CLI, now=now)
    assert (again.status, again.total_rows) == (SUCCEEDED, 16 - acme_deleted)


async def test_idle_session_timeout_cannot_free_the_lock_while_a_run_is_busy(
    backend: str, settings: Settings, sessions: Sessions, add_logs: AddLogs, now: datetime
) -> None:
    if backend != "postgresql":
        pytest.skip("idle_session_timeout is PostgreSQL's")
    await add_config(sessions, "acme", 30)
    await add_logs("acme", [days_ago(now, 40 + i) for i in range(6)])
    # Every connection of the first run's engine is ended by the server after 200 ms idle.
    impatient = new_engine(
        settings, connect_args={"timeout": 10, "server_settings": {"idle_session_timeout": "200"}}
    )
    second_runs: list[str] = []

    async def busy_elsewhere_then_try_a_second_run(_org: str, _rows: int) -> None:
        await asyncio.sleep(0.6)  # the lock's connection waits three timeouts between two batches
        try:
            await run_retention(sessions=sessions, actor=CLI, now=now)
        except RetentionAlreadyRunning:
            second_runs.append("refused")
        else:
            second_runs.append("ran")

    try:
        summary = await run_retention(
            by_partition=False,  # the batched path: a whole partition would go at once
            sessions=new_sessionmaker(impatient),
            actor=CLI,
            batch_size=2,
            now=now,
            progress=busy_elsewhere_then_try_a_second_run,
        )
    finally:
        await impatient.dispose()

    assert second_runs == ["refused"] * 3
    assert (summary.status, summary.total_rows) == (SUCCEEDED, 6)
    async with sessions() as session:
        [run] = (await session.scalars(select(RetentionRun))).all()
    assert (run.status, run.rows_deleted) == (SUCCEEDED, 6)
