"""The retention cleanup on both engines: boundaries, defaults, dry runs, batches, cancel, failures."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db.models import FirewallConfig, RetentionRun
from db.retention import (
    CANCELLED,
    FAILED,
    INTERRUPTED_ERROR,
    RUNNING,
    SUCCEEDED,
    OrganizationCleanup,
    UnknownOrganization,
    cutoff_for,
    recent_runs,
    retention_preview,
    run_retention,
)
from db.vocabulary import DEFAULT_RETENTION_DAYS
from tests.support.database import count_events
from tests.support.retention import CLI, AddLogs, add_config, days_ago, log_times

Sessions = async_sessionmaker[AsyncSession]


async def runs_of(sessions: Sessions, organization_id: str) -> list[RetentionRun]:
    async with sessions() as session:
        query = select(RetentionRun).where(RetentionRun.organization_id == organization_id)
        return list((await session.scalars(query.order_by(RetentionRun.started_at))).all())


async def test_each_organisation_keeps_a_row_one_second_inside_its_window(
    sessions: Sessions, add_logs: AddLogs, now: datetime
) -> None:
    for organization_id, days in (("short", 30), ("long", 365)):
        await add_config(sessions, organization_id, days)
        await add_logs(
            organization_id,
            [days_ago(now, days, seconds=+1), days_ago(now, days), days_ago(now, days, seconds=-1)],
        )

    summary = await run_retention(sessions=sessions, actor=CLI, now=now)

    assert summary.status == SUCCEEDED
    assert {r.organization_id: r.rows for r in summary.results} == {"long": 1, "short": 1}
    for organization_id, days in (("short", 30), ("long", 365)):
        # Inside by one second and exactly at the cutoff stay; outside by one second goes.
        assert await log_times(sessions, organization_id) == [
            days_ago(now, days),
            days_ago(now, days, seconds=+1),
        ]


async def test_organisation_without_config_follows_the_default_retention(
    sessions: Sessions, add_logs: AddLogs, now: datetime
) -> None:
    days = DEFAULT_RETENTION_DAYS
    await add_logs("no-config", [days_ago(now, days, seconds=+1), days_ago(now, days, seconds=-1)])

    summary = await run_retention(sessions=sessions, actor=CLI, now=now)

    [result] = summary.results
    assert (result.organization_id, result.retention_days, result.has_config) == ("no-config", days, False)
    assert result.cutoff == cutoff_for(now, days)
    assert await log_times(sessions, "no-config") == [days_ago(now, days, seconds=+1)]


async def test_cleaning_one_organisation_never_touches_another(
    engine: AsyncEngine, sessions: Sessions, add_logs: AddLogs, now: datetime
) -> None:
    await add_config(sessions, "acme", 30)
    await add_config(sessions, "globex", 30)
    old = [days_ago(now, 100 + i) for i in range(5)]
    await add_logs("acme", old)
    await add_logs("globex", old)

    summary = await run_retention(sessions=sessions, actor=CLI, organization_id="acme", now=now)

    assert [r.organization_id for r in summary.results] == ["acme"]
    assert await count_events(engine, "acme") == 0
    assert await count_events(engine, "globex") == 5


async def test_dry_run_counts_what_the_real_run_then_deletes(
    engine: AsyncEngine, sessions: Sessions, add_logs: AddLogs, now: datetime
) -> None:
    await add_config(sessions, "acme", 45)
    await add_logs("acme", [days_ago(now, day) for day in range(0, 200, 3)])
    await add_logs("other", [days_ago(now, day) for day in range(0, 200, 7)])
    before = await count_events(engine)

    dry = await run_retention(sessions=sessions, actor=CLI, dry_run=True, now=now)
    assert await count_events(engine) == before
    real = await run_retention(sessions=sessions, actor=CLI, now=now)

    assert [(r.organization_id, r.rows) for r in dry.results] == [
        (r.organization_id, r.rows) for r in real.results
    ]
    assert dry.total_rows > 0
    assert before - await count_events(engine) == dry.total_rows
    acme_runs = await runs_of(sessions, "acme")
    assert [(run.dry_run, run.status) for run in acme_runs] == [(True, SUCCEEDED), (False, SUCCEEDED)]


async def test_preview_matches_the_dry_run(sessions: Sessions, add_logs: AddLogs, now: datetime) -> None:
    await add_config(sessions, "acme", 30)
    await add_config(sessions, "empty", 60)
    await add_logs("acme", [days_ago(now, day) for day in (1, 29, 31, 40)])
    await add_logs("legacy", [days_ago(now, day) for day in (89, 91)])

    async with sessions() as session:
        preview = await retention_preview(session, now=now)

    assert [(p.organization_id, p.retention_days, p.rows_to_delete, p.has_config) for p in preview] == [
        ("acme", 30, 2, True),
        ("empty", 60, 0, True),
        ("legacy", DEFAULT_RETENTION_DAYS, 1, False),
    ]
    assert preview[0].cutoff == cutoff_for(now, 30)


async def test_unknown_organisation_is_an_error_not_zero_deleted(sessions: Sessions) -> None:
    with pytest.raises(UnknownOrganization, match="'nobody'"):
        await run_retention(sessions=sessions, actor=CLI, organization_id="nobody")
    async with sessions() as session:
        assert await recent_runs(session) == []


async def test_tiny_batches_delete_every_expired_row(
    sessions: Sessions, add_logs: AddLogs, now: datetime
) -> None:
    await add_config(sessions, "acme", 30)
    # Several rows share a timestamp across a batch boundary; none may be skipped.
    same = days_ago(now, 50)
    await add_logs("acme", [same] * 5 + [days_ago(now, 40 + i) for i in range(12)] + [days_ago(now, 10)])
    seen: list[int] = []

    summary = await run_retention(
        by_partition=False,  # the batched path: a whole partition would go at once
        sessions=sessions,
        actor=CLI,
        batch_size=3,
        now=now,
        progress=lambda _org, rows: seen.append(rows),
    )

    assert summary.total_rows == 17
    assert await log_times(sessions, "acme") == [days_ago(now, 10)]
    steps = [after - before for before, after in zip([0, *seen], seen, strict=False)]
    assert seen[-1] == 17
    assert max(steps) < 2 * 3  # a range between two bounds holds fewer than two batches
    assert len(steps) >= 6
    [run] = await runs_of(sessions, "acme")
    assert (run.status, run.rows_deleted) == (SUCCEEDED, 17)


async def test_more_rows_than_a_batch_sharing_one_timestamp_go_a_batch_at_a_time(
    engine: AsyncEngine, sessions: Sessions, add_logs: AddLogs, now: datetime
) -> None:
    await add_config(sessions, "acme", 30)
    await add_logs("acme", [days_ago(now, 60)] * 2 + [days_ago(now, 50)] * 10 + [days_ago(now, 40)] * 2)
    seen: list[int] = []

    summary = await run_retention(
        by_partition=False,  # the batched path: a whole partition would go at once
        sessions=sessions,
        actor=CLI,
        batch_size=3,
        now=now,
        progress=lambda _org, rows: seen.append(rows),
    )

    assert summary.total_rows == 14
    assert await count_events(engine, "acme") == 0
    assert max(after - before for before, after in zip([0, *seen], seen, strict=False)) <= 3


async def test_cancel_between_batches_keeps_a_consistent_state_and_a_cancelled_record(
    engine: AsyncEngine, sessions: Sessions, add_logs: AddLogs, now: datetime
) -> None:
    await add_config(sessions, "acme", 30)
    await add_config(sessions, "zeta", 30)
    await add_logs("acme", [days_ago(now, 40 + i) for i in range(10)])
    await add_logs("zeta", [days_ago(now, 40 + i) for i in range(4)])
    cancel = asyncio.Event()

    summary = await run_retention(
        by_partition=False,  # the batched path: a whole partition would go at once
        sessions=sessions,
        actor=CLI,
        batch_size=4,
        now=now,
        cancel=cancel,
        progress=lambda _org, _rows: cancel.set(),
    )

    assert summary.status == CANCELLED
    assert [(r.organization_id, r.status, r.rows) for r in summary.results] == [
        ("acme", CANCELLED, 4),
        ("zeta", CANCELLED, 0),
    ]
    # The record says exactly what happened; what is left is what was not yet reached.
    [run] = await runs_of(sessions, "acme")
    assert (run.status, run.rows_deleted, run.finished_at is not None) == (CANCELLED, 4, True)
    assert await count_events(engine, "acme") == 6
    assert await count_events(engine, "zeta") == 4
    again = await run_retention(sessions=sessions, actor=CLI, now=now)
    assert again.total_rows == 10


async def test_failure_in_one_organisation_is_recorded_and_the_others_are_cleaned(
    engine: AsyncEngine, sessions: Sessions, add_logs: AddLogs, now: datetime, refuse_deletes: str
) -> None:
    for organization_id in ("alpha", refuse_deletes, "zulu"):
        await add_config(sessions, organization_id, 30)
        await add_logs(organization_id, [days_ago(now, 40), days_ago(now, 10)])

    summary = await run_retention(sessions=sessions, actor=None, now=now)

    assert summary.status == FAILED
    by_org = {r.organization_id: r for r in summary.results}
    assert (by_org["alpha"].status, by_org["alpha"].rows) == (SUCCEEDED, 1)
    assert (by_org["zulu"].status, by_org["zulu"].rows) == (SUCCEEDED, 1)
    assert by_org[refuse_deletes].status == FAILED
    assert "deletes refused" in (by_org[refuse_deletes].error or "")
    assert await count_events(engine, refuse_deletes) == 2
    [run] = await runs_of(sessions, refuse_deletes)
    assert (run.status, run.rows_deleted, run.trigger) == (FAILED, 0, "scheduler")
    assert "deletes refused" in (run.error or "")


async def test_every_run_is_recorded_with_its_cutoff_and_trigger(
    sessions: Sessions, add_logs: AddLogs, now: datetime
) -> None:
    await add_config(sessions, "acme", 30)
    await add_logs("acme", [days_ago(now, 31), days_ago(now, 32)])

    await run_retention(sessions=sessions, actor=CLI, now=now)
    async with sessions() as session:
        [run] = await recent_runs(session, limit=10)

    assert run.organization_id == "acme"
    assert (run.retention_days, run.cutoff, run.rows_deleted) == (30, cutoff_for(now, 30), 2)
    assert (run.trigger, run.status, run.dry_run, run.error) == ("cli", SUCCEEDED, False, None)
    assert run.started_at <= run.finished_at


async def test_a_run_left_running_by_a_dead_process_is_marked_interrupted(
    sessions: Sessions, add_logs: AddLogs, now: datetime
) -> None:
    await add_config(sessions, "acme", 30)
    async with sessions() as session, session.begin():
        session.add(
            RetentionRun(
                organization_id="acme",
                retention_days=30,
                cutoff=now - timedelta(days=31),
                rows_deleted=7,
                dry_run=False,
                trigger="cli",
                status=RUNNING,
                started_at=now - timedelta(days=1),
            )
        )

    await run_retention(sessions=sessions, actor=CLI, now=now)

    stale, fresh = await runs_of(sessions, "acme")
    assert (stale.status, stale.error, stale.rows_deleted) == (FAILED, INTERRUPTED_ERROR, 7)
    assert fresh.status == SUCCEEDED


@pytest.mark.parametrize("days", [29, 366])
async def test_database_refuses_retention_outside_30_to_365_even_bypassing_validation(
    sessions: Sessions, days: int
) -> None:
    await add_config(sessions, "acme", 30)
    async with sessions() as session:
        with pytest.raises(IntegrityError):
            await session.execute(
                text("UPDATE firewall_configs SET log_retention_days = :days WHERE organization_id = 'acme'"),
                {"days": days},
            )


@pytest.mark.parametrize("days", [30, 365])
async def test_database_accepts_retention_at_both_bounds(sessions: Sessions, days: int) -> None:
    await add_config(sessions, "acme", days)
    async with sessions() as session:
        preview = await retention_preview(session)
    assert [p.retention_days for p in preview] == [days]


async def test_retention_raised_between_batches_protects_its_rows_from_the_next_batch(
    sessions: Sessions, add_logs: AddLogs, now: datetime
) -> None:
    await add_config(sessions, "acme", 30)
    await add_logs("acme", [days_ago(now, age) for age in range(31, 91)])  # 60 rows, all expired at 30 days
    changes: list[int] = []

    async def raise_to_60_days_after_the_first_batch(_org: str, _rows: int) -> None:
        if not changes:
            changes.append(60)
            async with sessions() as session, session.begin():
                await session.execute(
                    update(FirewallConfig)
                    .where(FirewallConfig.organization_id == "acme")
                    .values(log_retention_days=60)
                )

    summary = await run_retention(
        sessions=sessions, actor=CLI, batch_size=5, now=now, progress=raise_to_60_days_after_the_first_batch
    )

    # The first batch took the five oldest (90..86 days) under 30 days; from then on 60 days applied:
    # 85..61 went, and nothing younger than the new cutoff did.
    new_cutoff = cutoff_for(now, 60)
    assert await log_times(sessions, "acme") == [days_ago(now, age) for age in range(60, 30, -1)]
    assert min(await log_times(sessions, "acme")) == new_cutoff
    [result] = summary.results
    assert (result.status, result.rows, result.retention_days, result.cutoff) == (
        SUCCEEDED,
        30,
        60,
        new_cutoff,
    )
    [run] = await runs_of(sessions, "acme")
    assert (run.retention_days, run.cutoff, run.rows_deleted) == (60, new_cutoff, 30)


async def test_retention_raised_to_the_maximum_during_a_run_stops_its_deletes(
    engine: AsyncEngine, sessions: Sessions, add_logs: AddLogs, now: datetime
) -> None:
    await add_config(sessions, "acme", 30)
    await add_logs("acme", [days_ago(now, age) for age in range(31, 51)])

    async def raise_to_365_days(_org: str, _rows: int) -> None:
        async with sessions() as session, session.begin():
            await session.execute(
                update(FirewallConfig)
                .where(FirewallConfig.organization_id == "acme")
                .values(log_retention_days=365)
            )

    summary = await run_retention(
        by_partition=False,  # the batched path: a whole partition would go at once
        sessions=sessions,
        actor=CLI,
        batch_size=4,
        now=now,
        progress=raise_to_365_days,
    )

    assert summary.total_rows == 4
    assert await count_events(engine, "acme") == 16
    [run] = await runs_of(sessions, "acme")
    assert (run.status, run.retention_days, run.rows_deleted) == (SUCCEEDED, 365, 4)


async def test_retention_is_read_when_the_organisations_turn_comes(
    sessions: Sessions, add_logs: AddLogs, now: datetime
) -> None:
    await add_config(sessions, "acme", 30)
    await add_config(sessions, "zeta", 30)
    await add_logs("acme", [days_ago(now, 40)])
    await add_logs("zeta", [days_ago(now, 40), days_ago(now, 100)])

    async def raise_zeta(result: OrganizationCleanup) -> None:
        if result.organization_id == "acme":  # zeta's bounds were walked, its batches not yet run
            async with sessions() as session, session.begin():
                await session.execute(
                    update(FirewallConfig)
                    .where(FirewallConfig.organization_id == "zeta")
                    .values(log_retention_days=90)
                )

    summary = await run_retention(
        by_partition=False,  # the batched path: a whole partition would go at once
        sessions=sessions,
        actor=CLI,
        now=now,
        on_result=raise_zeta,
    )

    assert [(r.organization_id, r.retention_days, r.rows) for r in summary.results] == [
        ("acme", 30, 1),
        ("zeta", 90, 1),
    ]
    assert await log_times(sessions, "zeta") == [days_ago(now, 40)]
