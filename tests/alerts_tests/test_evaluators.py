"""Evaluation across evaluators and processes: one lease holder, takeovers, commit order, rebuilt windows."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from alerts.runner import CURSOR_NAME, LEASE_NAME, AlertEvaluator
from db.base import utcnow
from db.engine import new_sessionmaker
from db.events import store_events
from db.leases import LeaseLost, acquire
from db.models import Alert, AlertChange, WorkLease
from db.settings import REPO_ROOT
from db.streams import load_cursor
from tests.alerts_tests.support import (
    alerts_of,
    count_creates,
    event,
    organization_with_rule,
    recently,
    started_evaluator,
    threshold_rule,
)
from tests.support.database import store_logs
from tests.support.waiting import wait_until

LEASE_SECONDS = 2.0


async def lease_holder(engine: AsyncEngine) -> str | None:
    async with new_sessionmaker(engine)() as session:
        return await session.scalar(select(WorkLease.holder).where(WorkLease.name == LEASE_NAME))


async def alert_groups(engine: AsyncEngine) -> Counter[str]:
    return Counter(alert.group_key for alert in await alerts_of(engine))


async def assert_each_alert_raised_once(engine: AsyncEngine) -> None:
    async with new_sessionmaker(engine)() as session:
        per_group = await session.execute(
            select(Alert.rule_id, Alert.group_key, func.count()).group_by(Alert.rule_id, Alert.group_key)
        )
        assert all(count == 1 for _, _, count in per_group.all())
        revisions = await session.execute(
            select(AlertChange.alert_id, AlertChange.revision, func.count()).group_by(
                AlertChange.alert_id, AlertChange.revision
            )
        )
        assert all(count == 1 for _, _, count in revisions.all())
    assert await count_creates(engine) == len(await alerts_of(engine))


@contextlib.asynccontextmanager
async def running(engine: AsyncEngine, holder: str) -> AsyncIterator[AlertEvaluator]:
    evaluator = AlertEvaluator(
        new_sessionmaker(engine), holder=holder, poll_seconds=0.05, lease_seconds=LEASE_SECONDS
    )
    stop = asyncio.Event()
    task = asyncio.create_task(evaluator.run(stop))
    try:
        yield evaluator
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def burst(engine: AsyncEngine, user: str) -> None:
    t0 = recently(30)
    await store_logs(engine, [event(t0 + timedelta(seconds=i), user=user) for i in range(3)])


async def test_two_evaluators_never_raise_one_alert_twice(engine: AsyncEngine, session: AsyncSession) -> None:
    await organization_with_rule(session, threshold_rule(threshold=3, window_seconds=60))
    async with running(engine, "first") as first, running(engine, "second") as second:
        await wait_until(lambda: first.lease is not None or second.lease is not None, what="a lease holder")
        users = [f"user-{index}" for index in range(6)]
        for user in users:
            await burst(engine, user)
            # More matches while the alert is open: updates, never a second alert.
            await store_logs(engine, [event(recently(5), user=user)])

        async def all_raised() -> bool:
            return set(await alert_groups(engine)) == set(users)

        await wait_until(all_raised, what="an alert per user")
        assert not (first.lease is not None and second.lease is not None)
    await assert_each_alert_raised_once(engine)


async def test_a_burst_straddling_a_takeover_still_raises(engine: AsyncEngine, session: AsyncSession) -> None:
    await organization_with_rule(session, threshold_rule(threshold=3, window_seconds=60))
    evaluator = await started_evaluator(engine, holder="old")
    t0 = recently(30)
    await store_logs(engine, [event(t0, user="ann"), event(t0 + timedelta(seconds=1), user="ann")])
    await evaluator.catch_up()
    await evaluator.run(_already_set())  # stops at once and gives the lease up

    heir = await started_evaluator(engine, holder="heir")
    await store_logs(engine, [event(t0 + timedelta(seconds=2), user="ann")])
    await heir.catch_up()

    [alert] = await alerts_of(engine)
    assert alert.event_count == 3


def _already_set() -> asyncio.Event:
    stop = asyncio.Event()
    stop.set()
    return stop


@pytest.mark.postgres_only
async def test_a_transaction_committed_late_is_evaluated_not_skipped(
    engine: AsyncEngine, session: AsyncSession, backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip(
            "commit order against concurrent writers is PostgreSQL's question (SQLite has one writer)"
        )
    rule_spec = threshold_rule(threshold=1)
    await organization_with_rule(session, rule_spec, org="acme")
    await organization_with_rule(session, rule_spec, org="beta")
    evaluator = await started_evaluator(engine)
    sessions = new_sessionmaker(engine)
    # Two organisations: their rollup rows differ, so neither writer waits for the other's locks.
    async with sessions() as early, sessions() as late:
        await store_events(session=early, events=[event(recently(), org="acme", user="early")])
        await store_events(session=late, events=[event(recently(), org="beta", user="late")])
        await late.commit()

        await evaluator.catch_up()
        assert await alert_groups(engine) == Counter()  # the later transaction waits behind the earlier

        await early.commit()
    await evaluator.catch_up()

    assert await alert_groups(engine) == Counter({"early": 1, "late": 1})


def start_evaluator_process(env: dict[str, str], holder: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.evaluator_process", holder, str(LEASE_SECONDS)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def takeover_after(
    engine: AsyncEngine, session: AsyncSession, subprocess_env: dict[str, str], interrupt: signal.Signals
) -> None:
    await organization_with_rule(session, threshold_rule(threshold=3, window_seconds=60))
    victim = start_evaluator_process(subprocess_env, "victim")
    try:

        async def victim_holds() -> bool:
            return await lease_holder(engine) == "victim"

        await wait_until(victim_holds, timeout=30, what="the evaluator process holding the lease")
        await burst(engine, "before")

        async def raised(user: str) -> bool:
            return user in await alert_groups(engine)

        await wait_until(lambda: raised("before"), what="the victim's alert")
        victim.send_signal(interrupt)
        async with running(engine, "heir") as heir:
            await burst(engine, "after")
            await wait_until(lambda: raised("after"), timeout=4 * LEASE_SECONDS + 5, what="the heir's alert")
            assert heir.lease is not None
            if interrupt == signal.SIGSTOP:
                victim.send_signal(signal.SIGCONT)  # it wakes up to find its lease gone
                await burst(engine, "resumed")
                await wait_until(lambda: raised("resumed"), what="an alert after the victim resumed")
                await asyncio.sleep(LEASE_SECONDS)
                assert await lease_holder(engine) == "heir"
    finally:
        if victim.poll() is None:
            victim.send_signal(signal.SIGCONT)
            victim.terminate()
        victim.wait(15)
    await assert_each_alert_raised_once(engine)
    assert await alert_groups(engine) == Counter(
        {"before": 1, "after": 1} | ({"resumed": 1} if interrupt == signal.SIGSTOP else {})
    )


@pytest.mark.slow
async def test_a_killed_evaluator_is_replaced_within_seconds(
    engine: AsyncEngine, session: AsyncSession, subprocess_env: dict[str, str]
) -> None:
    await takeover_after(engine, session, subprocess_env, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.postgres_only
async def test_a_stopped_evaluator_is_replaced_and_writes_nothing_when_it_resumes(
    engine: AsyncEngine, session: AsyncSession, subprocess_env: dict[str, str], backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip(
            "a process stopped while it holds SQLite's write lock stops every writer: one evaluator there"
        )
    await takeover_after(engine, session, subprocess_env, signal.SIGSTOP)


async def test_an_evaluator_whose_lease_was_taken_writes_neither_alerts_nor_its_cursor(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    await organization_with_rule(session, threshold_rule(threshold=3, window_seconds=60))
    stalled = await started_evaluator(engine, holder="stalled")
    # It hung past its lease: the lease expired and another process took it.
    await session.execute(update(WorkLease).where(WorkLease.name == LEASE_NAME).values(expires_at=utcnow()))
    await session.commit()
    assert await acquire(session, name=LEASE_NAME, holder="other", seconds=30) is not None
    await session.commit()
    before = await load_cursor(session, name=CURSOR_NAME)
    await burst(engine, "mallory")
    with pytest.raises(LeaseLost):
        await stalled.catch_up()
    assert await alerts_of(engine) == []
    assert await load_cursor(session, name=CURSOR_NAME) == before
    assert await lease_holder(engine) == "other"
