"""The retention scheduler: off unless enabled, fires on its interval, records, survives failures."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db.base import utcnow
from db.engine import new_engine, new_sessionmaker
from db.models import RetentionRun
from db.retention import FAILED, SUCCEEDED
from db.scheduler import RetentionScheduler, maybe_start_retention_scheduler, start_retention_scheduler
from db.settings import Settings
from tests.support.database import count_events, settings_for
from tests.support.retention import AddLogs, add_config, days_ago

Sessions = async_sessionmaker[AsyncSession]
WAIT_SECONDS = 20


async def scheduler_runs(sessions: Sessions) -> list[RetentionRun]:
    async with sessions() as session:
        query = (
            select(RetentionRun).where(RetentionRun.trigger == "scheduler").order_by(RetentionRun.started_at)
        )
        return list((await session.scalars(query)).all())


async def wait_for_runs(scheduler: RetentionScheduler, count: int) -> None:
    await asyncio.wait_for(scheduler.wait_for_runs(count), WAIT_SECONDS)


def test_scheduler_is_not_started_unless_enabled(settings: Settings, sessions: Sessions) -> None:
    assert (
        maybe_start_retention_scheduler(replace(settings, enable_retention_scheduler=False), sessions) is None
    )


async def test_enabled_scheduler_uses_the_configured_interval(settings: Settings, sessions: Sessions) -> None:
    enabled = replace(settings, enable_retention_scheduler=True, retention_cleanup_interval_hours=0.5)
    scheduler = maybe_start_retention_scheduler(enabled, sessions)
    assert scheduler is not None
    try:
        assert scheduler.interval_hours == 0.5
        next_run = scheduler.next_run_time
        assert next_run is not None
        assert utcnow() < next_run <= utcnow() + timedelta(minutes=1)
    finally:
        await scheduler.shutdown()
    assert scheduler.next_run_time is None


async def test_scheduler_fires_on_a_short_interval_and_records_its_runs(
    settings: Settings, engine: AsyncEngine, sessions: Sessions, add_logs: AddLogs
) -> None:
    await add_config(sessions, "acme", 30)
    await add_logs("acme", [days_ago(utcnow(), 40), days_ago(utcnow(), 1)])
    scheduler = maybe_start_retention_scheduler(
        replace(settings, enable_retention_scheduler=True), sessions, seconds=0.2
    )
    assert scheduler is not None
    try:
        await wait_for_runs(scheduler, 2)
    finally:
        await scheduler.shutdown()

    runs = await scheduler_runs(sessions)
    assert len(runs) >= 2
    assert all((run.organization_id, run.status) == ("acme", SUCCEEDED) for run in runs)
    assert runs[0].rows_deleted == 1
    assert await count_events(engine, "acme") == 1
    assert scheduler.last_summary is not None
    assert scheduler.last_error is None


async def test_a_failed_scheduled_run_is_recorded_and_the_next_still_happens(
    sessions: Sessions, add_logs: AddLogs, refuse_deletes: str
) -> None:
    await add_config(sessions, refuse_deletes, 30)
    await add_logs(refuse_deletes, [days_ago(utcnow(), 40)])
    scheduler = start_retention_scheduler(sessions, seconds=0.2)
    try:
        await wait_for_runs(scheduler, 2)
    finally:
        await scheduler.shutdown()

    runs = await scheduler_runs(sessions)
    assert len(runs) >= 2
    assert all(run.status == FAILED and "deletes refused" in (run.error or "") for run in runs)


async def test_scheduler_waits_one_interval_after_the_last_scheduled_run_across_restarts(
    engine: AsyncEngine, sessions: Sessions, add_logs: AddLogs
) -> None:
    last = utcnow() - timedelta(minutes=10)
    async with sessions() as session, session.begin():
        session.add(
            RetentionRun(
                organization_id="acme",
                retention_days=30,
                cutoff=last - timedelta(days=30),
                rows_deleted=0,
                dry_run=False,
                trigger="scheduler",
                status=SUCCEEDED,
                started_at=last,
                finished_at=last,
            )
        )
    await add_logs("acme", [days_ago(utcnow(), 100)])
    scheduler = RetentionScheduler(sessions, interval_seconds=3600, startup_delay_seconds=0.05)
    scheduler.start()
    try:
        await wait_for_runs(scheduler, 1)
        next_run: datetime | None = scheduler.next_run_time
    finally:
        await scheduler.shutdown()

    assert next_run is not None
    assert abs((next_run - (last + timedelta(hours=1))).total_seconds()) < 1
    assert len(await scheduler_runs(sessions)) == 1  # nothing ran: not due yet
    assert await count_events(engine, "acme") == 1


@pytest.mark.parametrize(
    "unreachable_url",
    [
        "sqlite+aiosqlite:////nonexistent-directory/firewall.db",
        "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere",
    ],
)
async def test_scheduler_keeps_running_when_the_database_is_unreachable(unreachable_url: str) -> None:
    engine = new_engine(settings_for(unreachable_url), connect_args={"timeout": 2})
    scheduler = start_retention_scheduler(new_sessionmaker(engine), seconds=0.2)
    try:
        await wait_for_runs(scheduler, 2)
        assert scheduler.last_error
        assert scheduler.next_run_time is not None
    finally:
        await scheduler.shutdown()
        await engine.dispose()
