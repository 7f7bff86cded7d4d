"""Partition maintenance and retention by partition (db/partitions.py, db/retention.py) on PostgreSQL.

Each PostgreSQL test gets a database of its own: the tests drop and create partitions, which the
shared test database's other tests rely on.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from sqlalchemy import insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from console.commands.partitions import register
from db.base import utcnow
from db.configs import create_organization
from db.engine import new_engine, new_sessionmaker
from db.models import LogEntry, RetentionRun
from db.partition_layout import WEEK, bound_literal, partition_name, wanted_weeks, week_start
from db.partitions import (
    COUNTED,
    EXPIRING,
    LOCK_TIMEOUT_MS,
    detach_and_drop,
    list_partitions,
    maintain_partitions,
    maintainer_connection,
)
from db.retention import run_retention
from db.rights import Actor
from db.scheduler import run_partition_maintainer
from tests.support.database import (
    add_organization,
    admin_execute,
    asyncpg_dsn,
    create_postgres_database,
    drop_postgres_database,
    migrate_url,
    new_database_url,
    run_alembic,
    settings_for,
)

#: How long any insert may wait while maintenance runs (the ingest target).
INSERT_STALL_LIMIT = 0.100


@pytest.fixture(scope="module")
def migrated_template() -> Iterator[str]:
    """One migrated database per module; each test gets a copy (CREATE DATABASE … TEMPLATE is a file copy)."""
    url = create_postgres_database("aifw_partitions_template")
    asyncio.run(migrate_url(url))
    yield url
    drop_postgres_database(url)


@pytest.fixture
def pg_url(migrated_template: str) -> Iterator[str]:
    url = make_url(migrated_template).set(database=f"aifw_partitions_{uuid.uuid4().hex[:12]}")
    asyncio.run(
        admin_execute(f'CREATE DATABASE "{url.database}" TEMPLATE "{make_url(migrated_template).database}"')
    )
    rendered = url.render_as_string(hide_password=False)
    yield rendered
    drop_postgres_database(rendered)


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[AsyncEngine]:
    engine = new_engine(settings_for(pg_url))
    yield engine
    await engine.dispose()


def _row(moment: datetime, organization_id: str = "default", **overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "timestamp": moment,
        "device_id": "dev-1",
        "user_id": "alice",
        "tool_name": "ChatGPT",
        "tool_type": "web",
        "risk_level": "green",
        "organization_id": organization_id,
    }
    row.update(overrides)
    return row


async def _insert(engine: AsyncEngine, rows: list[dict[str, object]]) -> None:
    async with engine.begin() as connection:
        await connection.execute(insert(LogEntry), rows)


async def _names(engine: AsyncEngine) -> dict[str, str]:
    async with engine.connect() as connection:
        return {info.name: info.state for info in await list_partitions(connection)}


async def _rollup_rows(engine: AsyncEngine) -> list[tuple[object, ...]]:
    async with engine.connect() as connection:
        result = await connection.execute(
            text(
                "SELECT 'h', bucket_start, organization_id, dimension, key, risk_level, event_count "
                "FROM log_hourly_counts UNION ALL "
                "SELECT 'd', bucket_start, organization_id, dimension, key, risk_level, event_count "
                "FROM log_daily_counts UNION ALL "
                "SELECT 'w', bucket_start, organization_id, dimension, key, risk_level, event_count "
                "FROM log_weekly_counts ORDER BY 1, 2, 3, 4, 5, 6"
            )
        )
        return [tuple(row) for row in result]


# --- maintenance -----------------------------------------------------------------------------------


async def test_maintenance_creates_the_missing_weeks_as_counted_partitions(pg: AsyncEngine) -> None:
    now = utcnow()
    ahead, behind = week_start(now) + WEEK, week_start(now) - 10 * WEEK
    for start in (ahead, behind):
        await detach_and_drop(pg, partition_name(start))
    assert partition_name(ahead) not in await _names(pg)

    report = await maintain_partitions(pg, now=now)

    assert sorted(report.created) == sorted([partition_name(behind), partition_name(ahead)])
    names = await _names(pg)
    assert all(names[partition_name(start)] == "attached" for start in wanted_weeks(now))
    # The new partitions take rows, and their counting trigger counts them once.
    await _insert(pg, [_row(ahead + timedelta(hours=1)), _row(behind + timedelta(hours=1))])
    async with pg.connect() as connection:
        counted = await connection.scalar(
            text("SELECT sum(event_count) FROM log_hourly_counts WHERE dimension = 'risk'")
        )
        checks = await connection.scalar(
            text("SELECT count(*) FROM pg_constraint WHERE conname LIKE 'log_entries_p%_range'")
        )
    assert counted == 2
    assert checks == 0  # the helper constraint went with the attach
    assert (await maintain_partitions(pg, now=now)).created == []


async def test_maintenance_leaves_out_weeks_the_legacy_partition_covers(pg: AsyncEngine) -> None:
    now = utcnow()
    first = wanted_weeks(now)[0]
    # A legacy partition (as migration 0015 makes of an old table) covering the first four weeks.
    for start in wanted_weeks(now)[:4]:
        await detach_and_drop(pg, partition_name(start))
    end = bound_literal(first + 3 * WEEK + timedelta(days=2))
    async with pg.begin() as connection:
        await connection.execute(
            text(
                "CREATE TABLE log_entries_legacy PARTITION OF log_entries "
                f"FOR VALUES FROM (MINVALUE) TO ({end})"
            )
        )

    report = await maintain_partitions(pg, now=now)

    assert report.created == []
    assert report.overlapping == [partition_name(start) for start in wanted_weeks(now)[:4]]
    assert partition_name(first) not in await _names(pg)


async def test_maintenance_on_sqlite_does_nothing(tmp_path: Path) -> None:
    url = new_database_url("sqlite", tmp_path)
    await migrate_url(url)
    engine = new_engine(settings_for(url))
    try:
        report = await maintain_partitions(engine)
        async with engine.connect() as connection:
            assert await list_partitions(connection) == []
    finally:
        await engine.dispose()
    assert report.skipped
    assert report.created == []


async def test_a_second_maintainer_skips_while_one_runs(pg: AsyncEngine) -> None:
    await detach_and_drop(pg, partition_name(week_start(utcnow()) + WEEK))
    async with maintainer_connection(pg) as held:
        assert held is not None
        report = await maintain_partitions(pg)
    assert report.skipped
    assert report.created == []
    assert "another maintainer" in (report.reason or "")
    assert (await maintain_partitions(pg)).created == [partition_name(week_start(utcnow()) + WEEK)]


async def test_attach_waits_out_a_held_lock_in_short_tries_while_inserts_go_on(pg: AsyncEngine) -> None:
    ahead = week_start(utcnow()) + 2 * WEEK
    await detach_and_drop(pg, partition_name(ahead))
    latencies: list[float] = []
    stop = asyncio.Event()

    async def ingest() -> None:
        # The ingest server's shape: one short transaction per insert, into this week's partition.
        while not stop.is_set():
            started = time.perf_counter()
            await _insert(pg, [_row(utcnow() - timedelta(minutes=1))])
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.005)

    await _insert(pg, [_row(utcnow() - timedelta(minutes=2))])  # the pool's first connection, not timed
    blocker = await asyncpg.connect(asyncpg_dsn(str(pg.url.render_as_string(hide_password=False))))
    writer = asyncio.create_task(ingest())
    try:
        # Somebody else's DDL on the parent: its SHARE UPDATE EXCLUSIVE lock conflicts with ATTACH.
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("LOCK TABLE log_entries IN SHARE UPDATE EXCLUSIVE MODE")
        maintainer = asyncio.create_task(maintain_partitions(pg))
        await asyncio.sleep(5 * LOCK_TIMEOUT_MS / 1000)
        assert not maintainer.done()
        await transaction.rollback()
        report = await asyncio.wait_for(maintainer, 30)
    finally:
        stop.set()
        await writer
        await blocker.close()
    assert report.created == [partition_name(ahead)]
    assert report.retries >= 1
    assert len(latencies) > 20
    assert max(latencies) < INSERT_STALL_LIMIT


async def test_an_interrupted_detach_is_finished_and_dropped_by_the_next_run(pg: AsyncEngine) -> None:
    now = utcnow()
    old = week_start(now) - 20 * WEEK
    name = partition_name(old)
    await _insert(pg, [_row(old + timedelta(hours=1))])
    dsn = asyncpg_dsn(pg.url.render_as_string(hide_password=False))
    reader, detacher, admin = [await asyncpg.connect(dsn) for _ in range(3)]
    try:
        await admin.execute(
            f"COMMENT ON TABLE {name} IS '{COUNTED} FOR VALUES FROM (MINVALUE) TO (MAXVALUE)'"
        )
        # A reader whose snapshot may still see the partition makes DETACH … CONCURRENTLY wait in its
        # second transaction; killing it there leaves the detach pending, as a killed process would.
        transaction = reader.transaction(isolation="repeatable_read")
        await transaction.start()
        await reader.fetch("SELECT count(*) FROM log_entries")
        pid = await detacher.fetchval("SELECT pg_backend_pid()")
        detach = asyncio.create_task(
            detacher.execute(f"ALTER TABLE log_entries DETACH PARTITION {name} CONCURRENTLY")
        )
        for _ in range(100):
            if await admin.fetchval(
                "SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = to_regclass($1)", name
            ):
                break
            await asyncio.sleep(0.05)
        await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(asyncpg.PostgresConnectionError):
            await detach
        await transaction.rollback()
    finally:
        for connection in (reader, detacher, admin):
            if not connection.is_closed():
                await connection.close()
    assert (await _names(pg))[name] == "detach pending"

    report = await maintain_partitions(pg, now=now)

    assert report.finalized == [name]
    assert report.dropped == [name]
    assert report.created == [name]  # the week is still wanted: it comes back, empty
    async with pg.connect() as connection:
        assert await connection.scalar(text(f"SELECT count(*) FROM {name}")) == 0


async def test_a_partition_detached_but_never_counted_is_attached_back_with_its_rows(pg: AsyncEngine) -> None:
    now = utcnow()
    old = week_start(now) - 30 * WEEK
    name = partition_name(old)
    await _insert(pg, [_row(old + timedelta(hours=1)), _row(old + timedelta(hours=2))])
    async with pg.begin() as connection:
        bound = await connection.scalar(
            text("SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = :name"), {"name": name}
        )
        mark = f"{EXPIRING} {bound}".replace("'", "''")
        await connection.execute(text(f"COMMENT ON TABLE {name} IS '{mark}'"))
        await connection.execute(text(f"ALTER TABLE log_entries DETACH PARTITION {name}"))

    report = await maintain_partitions(pg, now=now)

    assert report.reattached == [name]
    assert report.dropped == []
    async with pg.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM log_entries")) == 2


async def test_alembic_check_stays_clean_after_maintenance(pg: AsyncEngine, pg_url: str) -> None:
    await detach_and_drop(pg, partition_name(week_start(utcnow()) + WEEK))
    assert (await maintain_partitions(pg)).created

    await asyncio.to_thread(run_alembic, pg_url, lambda config, _connection: command.check(config))


# --- retention by partition ------------------------------------------------------------------------


async def test_retention_drops_a_fully_expired_partition_after_recording_each_count(pg: AsyncEngine) -> None:
    now = utcnow()
    sessions = new_sessionmaker(pg)
    async with sessions() as session:
        await add_organization(session, "short")  # the default retention, 90 days
        await create_organization(
            session=session, organization_id="keeper", actor=Actor.cli(), log_retention_days=365
        )
        await session.commit()
    expired_week = week_start(now - timedelta(days=120))
    shared_week = week_start(now - timedelta(days=150))
    await _insert(
        pg,
        [_row(expired_week + timedelta(hours=hour), "short") for hour in range(30)]
        + [_row(expired_week + timedelta(hours=hour), "default") for hour in range(5)]
        + [_row(shared_week + timedelta(hours=hour), "short") for hour in range(7)]
        + [_row(shared_week + timedelta(hours=hour), "keeper") for hour in range(3)],
    )
    rollups = await _rollup_rows(pg)
    # Proof of the order: at the DROP of a partition, the run records must already hold its rows.
    async with pg.begin() as connection:
        await connection.execute(text("CREATE TABLE drop_witness (organization_id text, rows_deleted int)"))
        await connection.execute(
            text(
                "CREATE FUNCTION witness_drop() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF EXISTS (SELECT 1 FROM pg_event_trigger_dropped_objects() "
                "           WHERE object_type = 'table' AND object_name LIKE 'log_entries_p%') THEN "
                "  INSERT INTO drop_witness SELECT organization_id, rows_deleted FROM retention_runs "
                "  WHERE status = 'running'; "
                "END IF; END $$"
            )
        )
        await connection.execute(
            text("CREATE EVENT TRIGGER witness ON sql_drop EXECUTE FUNCTION witness_drop()")
        )

    summary = await run_retention(sessions=sessions, actor=Actor.cli(), now=now)

    names = await _names(pg)
    async with pg.connect() as connection:
        witnessed = sorted(tuple(row) for row in await connection.execute(text("SELECT * FROM drop_witness")))
        await connection.execute(text("DROP EVENT TRIGGER witness"))
        await connection.commit()
        left = sorted(
            tuple(row)
            for row in await connection.execute(
                select(LogEntry.organization_id, LogEntry.timestamp).order_by(LogEntry.timestamp)
            )
        )
        records = dict(
            (await connection.execute(select(RetentionRun.organization_id, RetentionRun.rows_deleted))).all()
        )
    rows = {result.organization_id: result.rows for result in summary.results}
    assert rows == {"default": 5, "short": 37, "keeper": 0}
    assert records == rows
    # The drop saw the fully expired week's counts already committed (the other runs' rows were 0).
    assert ("default", 5) in witnessed
    assert ("short", 30) in witnessed
    # The shared week stays (keeper's rows are kept); short's rows in it went by the batched delete.
    assert [org for org, _moment in left] == ["keeper"] * 3
    assert names[partition_name(shared_week)] == "attached"
    assert names[partition_name(expired_week)] == "attached"  # recreated, empty, for late events
    assert await _rollup_rows(pg) == rollups


async def test_retention_for_one_organisation_keeps_the_batched_path(pg: AsyncEngine) -> None:
    now = utcnow()
    sessions = new_sessionmaker(pg)
    week = week_start(now - timedelta(days=120))
    await _insert(pg, [_row(week + timedelta(hours=hour)) for hour in range(4)])
    async with pg.connect() as connection:
        oid = await connection.scalar(text(f"SELECT to_regclass('{partition_name(week)}')::oid"))

    summary = await run_retention(sessions=sessions, actor=None, organization_id="default", now=now)

    assert summary.total_rows == 4
    async with pg.connect() as connection:
        assert await connection.scalar(text(f"SELECT to_regclass('{partition_name(week)}')::oid")) == oid


async def test_rows_older_than_every_partition_are_refused(pg: AsyncEngine) -> None:
    too_old = utcnow() - timedelta(days=400)
    with pytest.raises(Exception, match="no partition of relation"):
        await _insert(pg, [_row(too_old)])


# --- the server's loop and the command -------------------------------------------------------------


async def test_the_server_loop_maintains_at_start_and_stops_when_asked(pg: AsyncEngine) -> None:
    ahead = partition_name(week_start(utcnow()) + WEEK)
    await detach_and_drop(pg, ahead)
    stop = asyncio.Event()
    loop = asyncio.create_task(run_partition_maintainer(pg, stop, interval=3600))
    for _ in range(200):
        if (await _names(pg)).get(ahead) == "attached":
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(loop, 10)
    assert (await _names(pg))[ahead] == "attached"


def test_partitions_status_lists_each_week_with_its_bounds(
    pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["partitions", "status"])

    assert args.handler(args, settings_for(pg_url)) == 0

    output = capsys.readouterr().out
    start = week_start(utcnow())
    line = next(line for line in output.splitlines() if line.startswith(partition_name(start)))
    assert f"{start:%Y-%m-%d} 00:00" in line
    assert f"{start + WEEK:%Y-%m-%d} 00:00" in line
    assert line.endswith("attached")
