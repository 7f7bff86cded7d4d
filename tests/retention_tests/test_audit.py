"""A person's cleanup is audited from its start: one row per organisation, created with the run
record, updated with every batch and completed however the run ends; the scheduler's runs are not."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db.models import AuditEvent, RetentionRun, User
from db.retention import (
    AUDIT_ACTION,
    CANCELLED,
    FAILED,
    INTERRUPTED_ERROR,
    RUNNING,
    SUCCEEDED,
    OrganizationCleanup,
    run_retention,
)
from db.rights import Actor, NotAllowed
from tests.support.database import count_events
from tests.support.retention import CLI, AddLogs, add_config, days_ago

Sessions = async_sessionmaker[AsyncSession]


class ProcessDied(BaseException):
    """Stands for the process being killed: nothing after it runs, not even ``except Exception``."""


async def audit_rows(sessions: Sessions) -> list[AuditEvent]:
    async with sessions() as session:
        query = select(AuditEvent).where(AuditEvent.action == AUDIT_ACTION).order_by(AuditEvent.entity_id)
        return list((await session.scalars(query)).all())


async def run_records(sessions: Sessions) -> list[RetentionRun]:
    async with sessions() as session:
        query = select(RetentionRun).order_by(RetentionRun.organization_id, RetentionRun.started_at)
        return list((await session.scalars(query)).all())


async def add_console_user(sessions: Sessions, username: str, *, is_admin: bool) -> Actor:
    async with sessions() as session, session.begin():
        session.add(
            User(username=username, email=f"{username}@example.com", hashed_password="x", is_admin=is_admin)
        )
    return Actor.console(username)


def after(changes: dict[str, Any], name: str) -> Any:
    return changes[name]["after"]


async def seed(sessions: Sessions, add_logs: AddLogs, now: datetime, **rows_per_org: int) -> None:
    for organization_id, rows in rows_per_org.items():
        await add_config(sessions, organization_id, 30)
        await add_logs(organization_id, [days_ago(now, 40, seconds=-i) for i in range(rows)])


async def test_the_audit_row_exists_from_the_start_and_follows_every_batch(
    sessions: Sessions, add_logs: AddLogs, now: datetime
) -> None:
    await seed(sessions, add_logs, now, acme=7)
    seen: list[tuple[str, int, int, int]] = []

    async def look(_org: str, rows: int) -> None:
        [audit] = await audit_rows(sessions)
        [run] = await run_records(sessions)
        seen.append(
            (after(audit.changes, "status"), after(audit.changes, "rows_deleted"), run.rows_deleted, rows)
        )

    summary = await run_retention(
        by_partition=False,  # the batched path: a whole partition would go at once
        sessions=sessions,
        actor=CLI,
        batch_size=3,
        now=now,
        progress=look,
    )

    assert seen == [(RUNNING, 3, 3, 3), (RUNNING, 6, 6, 6), (RUNNING, 7, 7, 7)]
    [audit] = await audit_rows(sessions)
    [result] = summary.results
    assert (audit.actor, audit.source, audit.entity_type, audit.entity_id) == (
        CLI.name,
        "cli",
        "retention",
        "acme",
    )
    assert after(audit.changes, "run_id") == str(result.run_id)
    assert (after(audit.changes, "status"), after(audit.changes, "rows_deleted")) == (SUCCEEDED, 7)
    assert after(audit.changes, "retention_days") == 30
    assert after(audit.changes, "cutoff") == result.cutoff.isoformat()


async def test_a_console_administrator_is_audited_under_their_name(
    sessions: Sessions, add_logs: AddLogs, now: datetime
) -> None:
    await seed(sessions, add_logs, now, acme=2, zeta=1)
    alice = await add_console_user(sessions, "alice", is_admin=True)

    summary = await run_retention(sessions=sessions, actor=alice, now=now)

    assert summary.trigger == "console"
    audits = await audit_rows(sessions)
    assert [(a.actor, a.source, a.entity_id, after(a.changes, "rows_deleted")) for a in audits] == [
        ("alice", "console", "acme", 2),
        ("alice", "console", "zeta", 1),
    ]
    assert {run.trigger for run in await run_records(sessions)} == {"console"}


async def test_a_console_viewer_may_not_clean_and_nothing_is_recorded(
    engine: AsyncEngine, sessions: Sessions, add_logs: AddLogs, now: datetime
) -> None:
    await seed(sessions, add_logs, now, acme=2)
    victor = await add_console_user(sessions, "victor", is_admin=False)

    with pytest.raises(NotAllowed, match="only administrators can run a retention cleanup"):
        await run_retention(sessions=sessions, actor=victor, now=now)

    assert await count_events(engine, "acme") == 2
    assert await run_records(sessions) == []
    assert await audit_rows(sessions) == []


async def test_an_administrator_demoted_during_a_run_is_refused_at_the_next_organisation(
    engine: AsyncEngine, sessions: Sessions, add_logs: AddLogs, now: datetime
) -> None:
    await seed(sessions, add_logs, now, acme=2, zeta=3)
    alice = await add_console_user(sessions, "alice", is_admin=True)

    async def demote(_result: OrganizationCleanup) -> None:
        async with sessions() as session, session.begin():
            await session.execute(update(User).where(User.username == "alice").values(is_admin=False))

    with pytest.raises(NotAllowed):
        await run_retention(
            by_partition=False,  # the batched path: a whole partition would go at once
            sessions=sessions,
            actor=alice,
            now=now,
            on_result=demote,
        )

    assert (await count_events(engine, "acme"), await count_events(engine, "zeta")) == (0, 3)
    assert [(run.organization_id, run.status) for run in await run_records(sessions)] == [("acme", SUCCEEDED)]
    assert [audit.entity_id for audit in await audit_rows(sessions)] == ["acme"]


async def test_scheduled_runs_and_dry_runs_are_recorded_but_not_audited(
    sessions: Sessions, add_logs: AddLogs, now: datetime
) -> None:
    await seed(sessions, add_logs, now, acme=2)

    await run_retention(sessions=sessions, actor=CLI, dry_run=True, now=now)
    await run_retention(sessions=sessions, actor=None, now=now)

    assert [(run.trigger, run.dry_run) for run in await run_records(sessions)] == [
        ("cli", True),
        ("scheduler", False),
    ]
    assert await audit_rows(sessions) == []


async def test_a_cancelled_task_finishes_its_records_and_audit_rows_exactly(
    engine: AsyncEngine, sessions: Sessions, add_logs: AddLogs, now: datetime
) -> None:
    await seed(sessions, add_logs, now, acme=5, zeta=2)

    def cancel_the_task_after_the_first_batch(_org: str, _rows: int) -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()

    task = asyncio.create_task(
        run_retention(
            by_partition=False,  # the batched path: a whole partition would go at once
            sessions=sessions,
            actor=CLI,
            batch_size=2,
            now=now,
            progress=cancel_the_task_after_the_first_batch,
        )
    )
    with pytest.raises(asyncio.CancelledError):
        await task

    [run] = await run_records(sessions)
    [audit] = await audit_rows(sessions)
    gone = 5 - await count_events(engine, "acme")
    assert gone == 2
    assert (run.status, run.rows_deleted, run.finished_at is not None) == (CANCELLED, gone, True)
    assert (after(audit.changes, "status"), after(audit.changes, "rows_deleted")) == (CANCELLED, gone)


async def test_a_run_whose_process_died_has_its_record_and_audit_row_failed_by_the_next_run(
    sessions: Sessions, add_logs: AddLogs, now: datetime
) -> None:
    await seed(sessions, add_logs, now, acme=5)

    def die(_org: str, _rows: int) -> None:
        raise ProcessDied

    with pytest.raises(ProcessDied):
        await run_retention(
            by_partition=False,  # the batched path: a whole partition would go at once
            sessions=sessions,
            actor=CLI,
            batch_size=2,
            now=now,
            progress=die,
        )
    [audit] = await audit_rows(sessions)
    assert (after(audit.changes, "status"), after(audit.changes, "rows_deleted")) == (RUNNING, 2)

    await run_retention(sessions=sessions, actor=CLI, now=now - timedelta(days=365))  # deletes nothing

    died, _next = await run_records(sessions)
    first_audit = next(a for a in await audit_rows(sessions) if after(a.changes, "run_id") == str(died.id))
    assert (died.status, died.error, died.rows_deleted) == (FAILED, INTERRUPTED_ERROR, 2)
    assert after(first_audit.changes, "status") == FAILED
    assert after(first_audit.changes, "error") == INTERRUPTED_ERROR
    assert after(first_audit.changes, "rows_deleted") == 2
