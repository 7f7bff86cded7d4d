"""``rollups.rebuild``: every bucket from each organisation's retention cutoff on is recounted from the raw
rows, exactly as the database counts them; older buckets stay; each bucket commits on its own."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from db import rollups
from db.base import utcnow
from db.configs import create_organization
from db.engine import new_engine, new_sessionmaker
from db.models import AuditEvent, LogDailyCount, LogEntry, LogHourlyCount, LogWeeklyCount
from db.rights import Actor
from db.settings import Settings
from tests.db_tests.rollup_rows import ROLLUPS, expected_counts, insert_rows, log_row, stored_counts

NOW = utcnow()
CLI = Actor(name="carol", source="cli")


def spread_rows(organization_id: str, *, days: int = 20, start_days_back: int = 20) -> list[dict[str, Any]]:
    """Rows every 7 hours over ``days`` days ending a little before now, keys varied."""
    first = NOW - timedelta(days=start_days_back)
    return [
        log_row(
            first + timedelta(hours=7 * n, minutes=n % 60),
            organization_id=organization_id,
            tool_name=("ChatGPT", "Claude", "Gemini", "Mistral")[n % 4],
            user_id=("ann", "bob", "cyd")[n % 3],
            risk_level=("green", "amber", "red")[n % 3],
            entities=[["EMAIL"], ["IBAN", "EMAIL", "IBAN"], []][n % 3],
        )
        for n in range(days * 24 // 7)
        if first + timedelta(hours=7 * n) < NOW - timedelta(minutes=5)
    ]


async def counted(session: AsyncSession, organization_id: str) -> dict[Any, Counter[Any]]:
    return {table: await stored_counts(session, table, organization_id) for table in ROLLUPS}


async def test_rows_inserted_with_counting_paused_are_counted_by_the_rebuild_as_the_trigger_counts(
    session: AsyncSession,
) -> None:
    rows = spread_rows("acme")
    await insert_rows(session, rows)
    await session.commit()
    by_trigger = await counted(session, "acme")
    async with rollups.counting_paused(session):
        await insert_rows(session, [{**row, "organization_id": "globex"} for row in rows])
    await session.commit()
    assert await stored_counts(session, LogHourlyCount, "globex") == Counter()

    report = await rollups.rebuild(session=session, actor=CLI, organization_id="globex", now=NOW)

    rebuilt = await counted(session, "globex")
    for table in ROLLUPS:
        renamed = Counter({(b, "acme", *rest): n for (b, _, *rest), n in rebuilt[table].items()})
        assert renamed == by_trigger[table], table.__tablename__
    assert [org.organization_id for org in report.organizations] == ["globex"]
    assert report.organizations[0].events == len(rows)


async def test_drifted_counts_are_put_right_and_other_organisations_untouched(session: AsyncSession) -> None:
    rows = spread_rows("acme") + spread_rows("globex", days=3, start_days_back=3)
    await insert_rows(session, rows)
    await session.commit()
    before = await counted(session, "globex")
    # Drift: a lost bucket, a bogus key, an inflated count.
    await session.execute(
        delete(LogDailyCount)
        .where(LogDailyCount.organization_id == "acme")
        .where(LogDailyCount.bucket_start == rollups.day_of(NOW - timedelta(days=5)))
    )
    await session.execute(
        update(LogHourlyCount)
        .where(LogHourlyCount.organization_id == "acme")
        .values(event_count=LogHourlyCount.event_count + 3)
    )
    session.add(
        LogWeeklyCount(
            bucket_start=rollups.week_of(NOW),
            organization_id="acme",
            dimension="tool",
            key="Bogus",
            risk_level="red",
            event_count=9,
        )
    )
    await session.commit()

    await rollups.rebuild(session=session, actor=CLI, organization_id="acme", now=NOW)

    acme = [row for row in rows if row["organization_id"] == "acme"]
    for table in ROLLUPS:
        assert await stored_counts(session, table, "acme") == expected_counts(acme, table), (
            table.__tablename__
        )
        # The bogus key's row is gone, not left at zero (a Counter compares zero as missing).
        left_at_zero = select(func.count()).select_from(table).where(table.event_count == 0)
        assert await session.scalar(left_at_zero) == 0, table.__tablename__
    assert await session.scalar(select(func.count()).where(LogWeeklyCount.key == "Bogus")) == 0
    assert await counted(session, "globex") == before


async def test_buckets_before_the_cutoff_are_kept_and_those_after_it_recounted(session: AsyncSession) -> None:
    await create_organization(session=session, organization_id="acme", actor=CLI, log_retention_days=30)
    await session.commit()
    old = log_row(NOW - timedelta(days=40), tool_name="Claude")
    recent = log_row(NOW - timedelta(days=2), tool_name="Gemini")
    await insert_rows(session, [old, recent])
    await session.commit()
    # Retention deleted the old row; its counts stay. The recent row's counts drifted.
    await session.execute(delete(LogEntry).where(LogEntry.id == old["id"]))
    await session.execute(update(LogHourlyCount).values(event_count=LogHourlyCount.event_count * 10))
    await session.commit()

    report = await rollups.rebuild(session=session, actor=CLI, now=NOW)

    # The cutoff moves on with the clock while the rebuild runs.
    assert timedelta(0) <= report.organizations[0].cutoff - (NOW - timedelta(days=30)) < timedelta(minutes=1)
    hourly = await stored_counts(session, LogHourlyCount, "acme")
    old_hour = rollups.hour_of(old["timestamp"])
    assert {key: n for key, n in hourly.items() if key[0] == old_hour} == {
        key: 10 * n for key, n in expected_counts([old], LogHourlyCount).items()
    }
    assert {key: n for key, n in hourly.items() if key[0] != old_hour} == expected_counts(
        [recent], LogHourlyCount
    )
    for table in (LogDailyCount, LogWeeklyCount):
        assert await stored_counts(session, table, "acme") == expected_counts([old, recent], table)


async def test_an_organisation_without_config_keeps_the_default_retention(session: AsyncSession) -> None:
    old = log_row(NOW - timedelta(days=100), organization_id="orphan")
    await insert_rows(session, [old])
    await session.commit()
    await session.execute(delete(LogEntry))
    await session.commit()
    report = await rollups.rebuild(session=session, actor=CLI, now=NOW)
    assert [(org.organization_id, org.retention_days) for org in report.organizations] == [("orphan", 90)]
    assert await stored_counts(session, LogHourlyCount) == expected_counts([old], LogHourlyCount)


async def test_past_the_cap_the_rebuild_keeps_the_most_frequent_keys(session: AsyncSession) -> None:
    moment = rollups.hour_of(NOW - timedelta(days=1))
    tools = ["aardvark"] + ["bison"] * 5 + ["cougar"] * 3
    async with rollups.counting_paused(session):
        await insert_rows(session, [log_row(moment, tool_name=tool) for tool in tools])
    await rollups.set_key_cap(session=session, actor=CLI, max_keys=2)
    await session.commit()
    await rollups.rebuild(session=session, actor=CLI, now=NOW)
    for table in ROLLUPS:
        keys = await session.execute(
            select(table.key, table.event_count).where(table.dimension == "tool").order_by(table.key)
        )
        assert keys.all() == [(rollups.OVERFLOW_KEY, 1), ("bison", 5), ("cougar", 3)], table.__tablename__


async def test_past_the_cap_keys_as_frequent_as_each_other_are_kept_in_code_point_order(
    session: AsyncSession,
) -> None:
    moment = rollups.hour_of(NOW - timedelta(days=1))
    async with rollups.counting_paused(session):
        await insert_rows(
            session, [log_row(moment, tool_name=tool) for tool in ["beta", "Zeta", "alpha"] * 2]
        )
    await rollups.set_key_cap(session=session, actor=CLI, max_keys=2)
    await session.commit()
    await rollups.rebuild(session=session, actor=CLI, now=NOW)
    for table in ROLLUPS:
        keys = await session.execute(
            select(table.key, table.event_count).where(table.dimension == "tool").order_by(table.event_count)
        )
        # "Zeta" < "alpha" < "beta" by code point, whatever the database's collation says.
        assert sorted(keys.all()) == [(rollups.OVERFLOW_KEY, 2), ("Zeta", 2), ("alpha", 2)], (
            table.__tablename__
        )


async def test_each_bucket_is_committed_before_its_progress_is_reported_and_the_run_audited(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    rows = spread_rows("acme", days=10, start_days_back=10)
    async with rollups.counting_paused(session):
        await insert_rows(session, rows)
    await session.commit()
    seen: list[tuple[str, int, int, int]] = []

    async def progress(step: rollups.RebuildProgress) -> None:
        # Another connection already sees the bucket's counts.
        async with new_sessionmaker(engine)() as other:
            table = LogDailyCount if step.grain == "day" else LogWeeklyCount
            stored = await other.scalar(
                select(func.coalesce(func.sum(table.event_count), 0)).where(
                    table.bucket_start == step.bucket_start, table.dimension == "risk"
                )
            )
        seen.append((step.grain, step.done, step.total, int(stored or 0)))

    report = await rollups.rebuild(session=session, actor=CLI, now=NOW, progress=progress)

    days = {rollups.day_of(row["timestamp"]) for row in rows}
    weeks = {rollups.week_of(day) for day in days}
    assert [step[1] for step in seen] == list(range(1, len(days) + len(weeks) + 1))
    assert {step[2] for step in seen} == {len(days) + len(weeks)}
    assert [step[3] for step in seen if step[0] == "day"] == [
        sum(1 for row in rows if rollups.day_of(row["timestamp"]) == day) for day in sorted(days)
    ]
    assert (report.organizations[0].days, report.organizations[0].weeks) == (len(days), len(weeks))
    audit = (await session.scalars(select(AuditEvent))).all()
    assert [(a.action, a.actor, a.entity_id) for a in audit] == [("rollups.rebuild", "carol", "*")]


@pytest.mark.postgres_only
async def test_a_rebuild_beside_concurrent_inserts_ends_exact(engine: AsyncEngine, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite has one writer")
    batches = [spread_rows("acme", days=4, start_days_back=4) for _ in range(15)]
    # Counts that drifted before the run: the rebuild writes differences into the rows the writer adds to.
    async with new_sessionmaker(engine)() as session:
        async with rollups.counting_paused(session):
            await insert_rows(session, batches[0])
        await session.execute(update(LogHourlyCount).values(event_count=LogHourlyCount.event_count + 2))
        await session.commit()

    async def write() -> None:
        async with new_sessionmaker(engine)() as session:
            for rows in batches[1:]:
                await insert_rows(session, rows)
                await session.commit()
                await asyncio.sleep(0)

    async def rebuild_twice() -> None:
        async with new_sessionmaker(engine)() as session:
            for _ in range(2):
                await rollups.rebuild(session=session, actor=CLI, now=NOW)

    await asyncio.wait_for(asyncio.gather(write(), rebuild_twice()), timeout=120)
    every = [row for rows in batches for row in rows]
    async with new_sessionmaker(engine)() as session:
        for table in ROLLUPS:
            assert await stored_counts(session, table) == expected_counts(every, table), table.__tablename__


@pytest.mark.postgres_only
async def test_a_rebuild_takes_no_lock_an_open_insert_holds_and_both_end_exact(
    engine: AsyncEngine, settings: Settings, backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite has one writer")
    moment = rollups.hour_of(NOW - timedelta(days=1)) + timedelta(minutes=10)
    # Drifted: red rows stored without their counts.
    drifted = [log_row(moment, tool_name="Claude", risk_level="red", entities=["EMAIL"]) for _ in range(3)]
    async with new_sessionmaker(engine)() as session:
        async with rollups.counting_paused(session):
            await insert_rows(session, drifted)
        await session.commit()
    # An insert into the same hour, day and week, counted but not yet committed: it holds ROW EXCLUSIVE
    # on log_entries and on every rollup table, and its own rollup rows.
    pending = [log_row(moment, tool_name="Gemini", user_id="bob", entities=["IBAN"]) for _ in range(2)]
    impatient = new_engine(
        settings,
        connect_args={
            "timeout": 10,
            "server_settings": {"lock_timeout": "200", "statement_timeout": "10000"},
        },
    )
    try:
        async with new_sessionmaker(engine)() as writer:
            await insert_rows(writer, pending)
            async with new_sessionmaker(impatient)() as session:
                # A table lock (the old design's EXCLUSIVE mode) would wait for the writer and time out.
                report = await rollups.rebuild(session=session, actor=CLI, organization_id="acme", now=NOW)
                assert report.organizations[0].events == len(drifted)
                for table in ROLLUPS:
                    assert await stored_counts(session, table) == expected_counts(drifted, table), (
                        table.__tablename__
                    )
            await writer.commit()
    finally:
        await impatient.dispose()
    async with new_sessionmaker(engine)() as session:
        for table in ROLLUPS:
            assert await stored_counts(session, table) == expected_counts(drifted + pending, table), (
                table.__tablename__
            )
