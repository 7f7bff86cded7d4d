"""Migration 0015 on a database that already holds events: every row kept as it was, nothing counted again,
nothing seen as new, a working downgrade, and a clear refusal of old rows that break a CHECK (PostgreSQL).

Each test brings a fresh database to 0014, writes history the way 0013/0014 left it (rows of several
organisations over 60 days, the oldest without ``commit_seq`` as before 0013, their rollups, and a stream
reader positioned at the end), then upgrades to 0015.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import asyncpg
import pytest
from alembic import command
from sqlalchemy import Table, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from db.base import utcnow
from db.engine import new_engine, new_sessionmaker
from db.models import LogEntry
from db.partition_layout import (
    AHEAD,
    LEGACY,
    WEEK,
    bound_literal,
    partition_name,
    partition_start,
    wanted_weeks,
    week_start,
)
from db.rights import Actor
from db.rollups import TABLES, day_of, hour_of, week_of
from db.scrub import scrub
from db.streams import Position, read_events, start_cursor
from tests.support.database import (
    asyncpg_dsn,
    make_event,
    rollup_total,
    run_alembic,
    settings_for,
    store_logs,
)
from tests.support.legacy import BAD_TOOL, write_legacy_rows

ORGANIZATIONS = ("acme", "globex", "initech")
HISTORY_ROWS = 90
#: The oldest rows were stored before 0013 gave rows a commit order: their commit_seq is NULL.
ROWS_WITHOUT_COMMIT_SEQ = 30
READER = "test-reader"
LOG_TABLE = cast(Table, LogEntry.__table__)
LOG_COLUMNS = (LogEntry.organization_id, LogEntry.id, LogEntry.timestamp, LogEntry.commit_seq)

Row = tuple[str, uuid.UUID, datetime, int | None]


@dataclass(frozen=True)
class History:
    """What a database held at 0014: its rows, its rollups and where a reader of new events stood."""

    rows: frozenset[Row]
    rollups: list[tuple[Any, ...]]
    reader: Position


def upgrade(url: str, revision: str) -> None:
    run_alembic(url, lambda config, _: command.upgrade(config, revision))


def downgrade(url: str, revision: str) -> None:
    run_alembic(url, lambda config, _: command.downgrade(config, revision))


def revision_of(url: str) -> str:
    return str(
        run_alembic(url, lambda _, c: c.exec_driver_sql("SELECT version_num FROM alembic_version").scalar())
    )


def history_rows(now: datetime) -> list[dict[str, Any]]:
    """Rows spread over the last 60 days, the newest a minute ago, oldest first."""
    rows = []
    for index in range(HISTORY_ROWS):
        moment = now - timedelta(days=60) * (1 - index / (HISTORY_ROWS - 1)) - timedelta(minutes=1)
        rows.append(
            {
                "id": uuid.uuid4(),
                "timestamp": moment,
                "device_id": f"dev-{index % 4}",
                "user_id": f"user{index % 5}@example.com",
                "organization_id": ORGANIZATIONS[index % len(ORGANIZATIONS)],
                "tool_name": ("ChatGPT", "Claude")[index % 2],
                "tool_type": "web",
                "risk_level": ("green", "amber", "red")[index % 3],
                "prompt_length": index,
                "detected_entity_types": ["EMAIL"] if index % 4 == 0 else [],
                "entity_count": 1 if index % 4 == 0 else 0,
                "was_sanitized": False,
                "log_metadata": {"os": "linux"},
                "created_at": moment,
            }
        )
    return rows


def _write_history(connection: Connection, rows: list[dict[str, Any]]) -> None:
    # Rows stored since 0013 get their commit_seq as 0013 gives it (PostgreSQL: the transaction id by
    # default; SQLite: the counter, by trigger); the older ones have none.
    connection.execute(insert(LOG_TABLE), rows)
    old = [row["id"] for row in rows[:ROWS_WITHOUT_COMMIT_SEQ]]
    connection.execute(update(LOG_TABLE).where(LogEntry.id.in_(old)).values(commit_seq=None))
    # The rollups 0014's ingest server kept for them (the risk dimension is enough to see a double count).
    for table, bucket_of in zip(TABLES, (hour_of, day_of, week_of), strict=True):
        counts = Counter(
            (bucket_of(row["timestamp"]), row["organization_id"], row["risk_level"]) for row in rows
        )
        connection.execute(
            insert(cast(Table, table.__table__)),
            [
                {
                    "bucket_start": bucket,
                    "organization_id": organization,
                    "dimension": "risk",
                    "key": "",
                    "risk_level": risk,
                    "event_count": count,
                }
                for (bucket, organization, risk), count in counts.items()
            ],
        )


def stored_rows(url: str) -> frozenset[Row]:
    def read(_: Any, connection: Connection) -> frozenset[Row]:
        return frozenset(
            (row.organization_id, row.id, row.timestamp, row.commit_seq)
            for row in connection.execute(select(*LOG_COLUMNS))
        )

    return frozenset(run_alembic(url, read))


def rollup_rows(url: str) -> list[tuple[Any, ...]]:
    def read(_: Any, connection: Connection) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        for table in TABLES:
            columns = list(cast(Table, table.__table__).c)
            query = select(*columns).order_by(*columns)
            rows += [(table.__tablename__, *row) for row in connection.execute(query)]
        return rows

    return list(run_alembic(url, read))


async def _start_reader(url: str) -> Position:
    engine = new_engine(settings_for(url))
    try:
        async with new_sessionmaker(engine)() as session:
            state = await start_cursor(session, name=READER, stream="log_entries")
            await session.commit()
            return state.position
    finally:
        await engine.dispose()


def read_new(url: str, after: Position) -> set[tuple[str, uuid.UUID]]:
    """What a reader standing at ``after`` takes as new events: (organization_id, id)."""

    async def go() -> set[tuple[str, uuid.UUID]]:
        engine = new_engine(settings_for(url))
        try:
            async with new_sessionmaker(engine)() as session:
                page = await read_events(session, after=after, limit=10_000)
                return {(row.organization_id, row.id) for row in page.rows}
        finally:
            await engine.dispose()

    return asyncio.run(go())


def store(url: str, events: list[dict[str, Any]]) -> None:
    async def go() -> None:
        engine = new_engine(settings_for(url))
        try:
            await store_logs(engine, events)
        finally:
            await engine.dispose()

    asyncio.run(go())


def counted(url: str) -> int:
    async def go() -> int:
        engine = new_engine(settings_for(url))
        try:
            return await rollup_total(engine)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def history_at_0014(url: str) -> History:
    upgrade(url, "0014")
    rows = history_rows(utcnow())
    run_alembic(url, lambda _, connection: _write_history(connection, rows))
    reader = asyncio.run(_start_reader(url))
    return History(stored_rows(url), rollup_rows(url), reader)


def new_events(count: int) -> list[dict[str, Any]]:
    return [make_event(index, organization_id=ORGANIZATIONS[index % 2]) for index in range(count)]


# --- the upgrade --------------------------------------------------------------------------------------


def test_upgrade_keeps_every_row_with_its_id_timestamp_and_commit_seq(fresh_url: str) -> None:
    history = history_at_0014(fresh_url)
    assert len(history.rows) == HISTORY_ROWS
    assert sum(1 for row in history.rows if row[3] is None) == ROWS_WITHOUT_COMMIT_SEQ

    upgrade(fresh_url, "0015")

    assert stored_rows(fresh_url) == history.rows


def test_upgrade_counts_nothing_again_and_counts_new_rows_once(fresh_url: str) -> None:
    history = history_at_0014(fresh_url)

    upgrade(fresh_url, "0015")

    assert rollup_rows(fresh_url) == history.rollups
    assert counted(fresh_url) == HISTORY_ROWS
    store(fresh_url, new_events(7))
    assert counted(fresh_url) == HISTORY_ROWS + 7


def test_rows_kept_by_the_upgrade_do_not_look_new_to_a_reader(fresh_url: str) -> None:
    history = history_at_0014(fresh_url)

    upgrade(fresh_url, "0015")

    assert read_new(fresh_url, history.reader) == set()
    events = new_events(5)
    store(fresh_url, events)
    assert read_new(fresh_url, history.reader) == {
        (event["organization_id"], event["id"]) for event in events
    }


def test_resend_of_an_old_row_after_the_upgrade_is_stored_once(fresh_url: str) -> None:
    history = history_at_0014(fresh_url)
    upgrade(fresh_url, "0015")
    organization, event_id, moment, _ = max(history.rows, key=lambda row: row[2])

    store(fresh_url, [make_event(0, id=event_id, organization_id=organization, timestamp=moment)])

    assert stored_rows(fresh_url) == history.rows
    assert counted(fresh_url) == HISTORY_ROWS


def test_upgraded_database_matches_the_models(fresh_url: str) -> None:
    history_at_0014(fresh_url)
    upgrade(fresh_url, "head")
    # command.check raises AutogenerateDiffsDetected when the schema differs from the models.
    run_alembic(fresh_url, lambda config, _: command.check(config))


@pytest.mark.parametrize("fresh_url", ["postgresql"], indirect=True)
def test_old_table_becomes_the_legacy_partition_and_weeks_follow_without_gap(fresh_url: str) -> None:
    history = history_at_0014(fresh_url)
    newest = max(row[2] for row in history.rows)

    upgrade(fresh_url, "0015")

    now = utcnow()
    end = max(week_start(newest), week_start(now)) + WEEK

    def bounds(_: Any, connection: Connection) -> dict[str, str]:
        connection.exec_driver_sql("SET LOCAL TimeZone = 'UTC'")
        rows = connection.exec_driver_sql(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits AS i "
            "JOIN pg_class AS c ON c.oid = i.inhrelid WHERE i.inhparent = 'log_entries'::regclass"
        )
        return {name: bound for name, bound in rows}

    partitions = run_alembic(fresh_url, bounds)
    assert partitions.pop(LEGACY) == f"FOR VALUES FROM (MINVALUE) TO ({bound_literal(end)})"
    weeks = []
    start = end
    while start <= now + AHEAD:
        weeks.append(start)
        start += WEEK
    assert partitions == {
        partition_name(start): f"FOR VALUES FROM ({bound_literal(start)}) TO ({bound_literal(start + WEEK)})"
        for start in weeks
    }
    assert run_alembic(
        fresh_url, lambda _, c: c.exec_driver_sql(f"SELECT count(*) FROM ONLY {LEGACY}").scalar()
    ) == len(history.rows)


#: The preparation docs/upgrading.md gives, run while ingest still runs.
IDENTITY_INDEX_AHEAD = (
    "CREATE UNIQUE INDEX CONCURRENTLY log_entries_identity_0015 "
    "ON log_entries (organization_id, id, timestamp)"
)


async def _outside_transaction(url: str, *statements: str) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


def _index_oid(name: str) -> Callable[[Any, Connection], int | None]:
    return lambda _, c: c.exec_driver_sql(f"SELECT to_regclass('{name}')::oid").scalar()


def _primary_key_index(_: Any, connection: Connection) -> tuple[Any, ...]:
    row = connection.exec_driver_sql(
        "SELECT c.conindid, i.indisvalid FROM pg_constraint AS c "
        "JOIN pg_index AS i ON i.indexrelid = c.conindid "
        f"WHERE c.conrelid = '{LEGACY}'::regclass AND c.contype = 'p' AND c.conname = 'pk_{LEGACY}'"
    ).one()
    return tuple(row)


@pytest.mark.parametrize("fresh_url", ["postgresql"], indirect=True)
def test_identity_index_built_ahead_becomes_the_legacy_primary_key(fresh_url: str) -> None:
    history = history_at_0014(fresh_url)
    asyncio.run(_outside_transaction(fresh_url, IDENTITY_INDEX_AHEAD))
    built_ahead = run_alembic(fresh_url, _index_oid("log_entries_identity_0015"))

    upgrade(fresh_url, "0015")

    assert run_alembic(fresh_url, _primary_key_index) == (built_ahead, True)
    assert run_alembic(fresh_url, _index_oid("log_entries_identity_0015")) is None
    assert stored_rows(fresh_url) == history.rows


@pytest.mark.parametrize("fresh_url", ["postgresql"], indirect=True)
def test_identity_index_left_invalid_by_an_interrupted_build_is_built_again(fresh_url: str) -> None:
    history = history_at_0014(fresh_url)
    # What a CREATE INDEX CONCURRENTLY interrupted half way leaves behind: an index marked invalid.
    asyncio.run(
        _outside_transaction(
            fresh_url,
            IDENTITY_INDEX_AHEAD,
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'log_entries_identity_0015'::regclass",
        )
    )
    left_invalid = run_alembic(fresh_url, _index_oid("log_entries_identity_0015"))

    upgrade(fresh_url, "0015")

    primary_key, valid = run_alembic(fresh_url, _primary_key_index)
    assert valid
    assert primary_key != left_invalid
    assert run_alembic(fresh_url, _index_oid("log_entries_identity_0015")) is None
    assert stored_rows(fresh_url) == history.rows


@pytest.mark.parametrize("fresh_url", ["postgresql"], indirect=True)
def test_empty_old_table_is_replaced_by_weekly_partitions_with_valid_checks(fresh_url: str) -> None:
    upgrade(fresh_url, "0014")

    upgrade(fresh_url, "0015")

    partitions = run_alembic(fresh_url, _partition_names)
    assert LEGACY not in partitions
    assert set(wanted_weeks(utcnow())) <= {partition_start(name) for name in partitions}
    assert run_alembic(fresh_url, _tool_check) == {"log_entries": True}


def _partition_names(_: Any, connection: Connection) -> set[str]:
    rows = connection.exec_driver_sql(
        "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'log_entries'::regclass"
    )
    return {name for (name,) in rows}


# --- the downgrade --------------------------------------------------------------------------------------


def test_downgrade_keeps_the_rows_and_upgrade_again_works(fresh_url: str) -> None:
    history = history_at_0014(fresh_url)
    upgrade(fresh_url, "0015")
    store(fresh_url, new_events(4))
    rows = stored_rows(fresh_url)
    assert len(rows) == HISTORY_ROWS + 4

    downgrade(fresh_url, "0014")

    assert revision_of(fresh_url) == "0014"
    assert stored_rows(fresh_url) == rows
    upgrade(fresh_url, "0015")
    assert stored_rows(fresh_url) == rows
    assert counted(fresh_url) == HISTORY_ROWS + 4
    assert read_new(fresh_url, history.reader) == {(org, event_id) for org, event_id, _, _ in rows} - {
        (org, event_id) for org, event_id, _, _ in history.rows
    }


def test_downgrade_refuses_an_event_id_stored_with_two_timestamps(fresh_url: str) -> None:
    history = history_at_0014(fresh_url)
    upgrade(fresh_url, "0015")
    organization, event_id, moment, _ = min(history.rows, key=lambda row: row[2])
    # Allowed since 0015 (the key holds the timestamp), impossible before it.
    store(fresh_url, [make_event(0, id=event_id, organization_id=organization, timestamp=moment + WEEK)])

    with pytest.raises(RuntimeError, match=r"1 event ids are stored more than once in one organisation"):
        downgrade(fresh_url, "0014")

    assert revision_of(fresh_url) == "0015"
    assert len(stored_rows(fresh_url)) == HISTORY_ROWS + 1


# --- old rows that break a CHECK (PostgreSQL) -----------------------------------------------------------

TOOL_CHECK = "ck_log_entries_tool_name_identifier"


def _tool_check(_: Any, connection: Connection) -> dict[str, bool]:
    """Which tables of log_entries carry the tool name CHECK, and whether it is validated there."""
    rows = connection.exec_driver_sql(
        "SELECT conrelid::regclass::text, convalidated FROM pg_constraint "
        f"WHERE conname = '{TOOL_CHECK}' AND conrelid::regclass::text IN ('log_entries', '{LEGACY}')"
    )
    return {table: validated for table, validated in rows}


def _insert_bad_tool_name(_: Any, connection: Connection) -> None:
    row = history_rows(utcnow())[-1]
    connection.execute(insert(LOG_TABLE).values(**{**row, "tool_name": BAD_TOOL}))


def _scrub(url: str) -> None:
    async def go() -> None:
        engine = new_engine(settings_for(url))
        try:
            async with new_sessionmaker(engine)() as session:
                await scrub(session=session, actor=Actor.cli(), apply=True)
        finally:
            await engine.dispose()

    asyncio.run(go())


@pytest.mark.parametrize("fresh_url", ["postgresql"], indirect=True)
def test_old_rows_breaking_an_identifier_check_are_kept_and_left_to_the_scrub(fresh_url: str) -> None:
    # 0008 added its identifier CHECKs NOT VALID over rows written before it; the upgrade neither scans for
    # them nor fails on such a row: the CHECK stays NOT VALID on the old rows, and new rows are checked.
    upgrade(fresh_url, "0007")
    write_legacy_rows(fresh_url)
    upgrade(fresh_url, "0014")
    rows = stored_rows(fresh_url)

    upgrade(fresh_url, "0015")

    assert stored_rows(fresh_url) == rows
    assert run_alembic(fresh_url, _tool_check) == {"log_entries": False, LEGACY: False}
    with pytest.raises(IntegrityError, match=TOOL_CHECK):
        run_alembic(fresh_url, _insert_bad_tool_name)
    downgrade(fresh_url, "0014")
    assert stored_rows(fresh_url) == rows
    assert run_alembic(fresh_url, _tool_check) == {"log_entries": False}
    upgrade(fresh_url, "head")  # the scrub of today's code
    _scrub(fresh_url)
    assert run_alembic(fresh_url, _tool_check) == {"log_entries": True, LEGACY: True}
