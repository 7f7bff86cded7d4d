"""SQLite timestamps in one canonical text (migration 0012): old spellings rewritten, others refused.

SQLite compares timestamps as text, so before 0012 a row written by hand-made SQL
as ``2026-09-02 06:30:00`` (exactly at the cutoff) was deleted and one written as
``2026-09-02T02:29:59-04:00`` (expired) was kept. These tests write such rows at
revision 0011, upgrade, and check the cleanup then deletes exactly the expired ones.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import new_engine, new_sessionmaker
from db.models import LogEntry
from db.retention import SUCCEEDED, run_retention
from tests.support.database import new_database_url, run_alembic, settings_for
from tests.support.retention import CLI, add_config

CUTOFF = datetime(2026, 9, 2, 6, 30, tzinfo=UTC)
NOW = CUTOFF + timedelta(days=30)
#: (literal as hand-made SQL wrote it, its canonical UTC text, expired at CUTOFF)
LITERALS = [
    ("2026-09-02 06:30:00", "2026-09-02 06:30:00.000000", False),  # at the cutoff, no fraction
    ("2026-09-02T02:29:59-04:00", "2026-09-02 06:29:59.000000", True),  # a T and an offset
    ("2026-09-02 08:29:59.5+02:00", "2026-09-02 06:29:59.500000", True),  # later as text, earlier in time
    ("2026-09-02T10:30:00+04:00", "2026-09-02 06:30:00.000000", False),  # at the cutoff, from +04:00
    ("2026-09-02T06:30:00.000001Z", "2026-09-02 06:30:00.000001", False),  # a Z, one microsecond inside
    ("2026-09-01 23:00:00.123", "2026-09-01 23:00:00.123000", True),  # milliseconds only
    ("2026-09-02 06:29:59.999999", "2026-09-02 06:29:59.999999", True),  # canonical already
]


def insert_raw(url: str, timestamps: list[str], organization_id: str = "acme") -> None:
    """Insert one log per literal with hand-made SQL, as an operator's script would."""

    def insert(_config: Config, connection: Connection) -> None:
        for literal in timestamps:
            connection.exec_driver_sql(
                "INSERT INTO log_entries (id, timestamp, device_id, user_id, tool_name, tool_type,"
                " risk_level, prompt_length, detected_entity_types, entity_count, was_sanitized,"
                " log_metadata, created_at,"
                " organization_id) VALUES (?, ?, 'dev-1', 'alice', 'ChatGPT', 'web', 'green', 0, '[]', 0, 0,"
                " '{}', '2026-09-02 00:00:00.000000', ?)",
                (uuid.uuid4().hex, literal, organization_id),
            )

    run_alembic(url, insert)


def stored_texts(url: str) -> list[str]:
    def read(_config: Config, connection: Connection) -> list[str]:
        rows = connection.exec_driver_sql("SELECT timestamp FROM log_entries ORDER BY timestamp").all()
        return [row[0] for row in rows]

    return list(run_alembic(url, read))


@pytest.fixture
def sqlite_at_0011(tmp_path: Path) -> str:
    url = new_database_url("sqlite", tmp_path)
    run_alembic(url, lambda config, _: command.upgrade(config, "0011"))
    return url


def test_upgrade_rewrites_every_spelling_and_the_cleanup_then_deletes_exactly_the_expired(
    sqlite_at_0011: str,
) -> None:
    insert_raw(sqlite_at_0011, [literal for literal, _, _ in LITERALS])

    run_alembic(sqlite_at_0011, lambda config, _: command.upgrade(config, "head"))

    assert stored_texts(sqlite_at_0011) == sorted(canonical for _, canonical, _ in LITERALS)

    async def clean() -> None:
        engine = new_engine(settings_for(sqlite_at_0011))
        try:
            sessions = new_sessionmaker(engine)
            await add_config(sessions, "acme", 30)
            summary = await run_retention(sessions=sessions, actor=CLI, now=NOW, batch_size=2)
            assert (summary.status, summary.total_rows) == (SUCCEEDED, sum(e for _, _, e in LITERALS))
        finally:
            await engine.dispose()

    asyncio.run(clean())
    kept = stored_texts(sqlite_at_0011)
    assert kept == sorted(canonical for _, canonical, expired in LITERALS if not expired)


def test_upgrade_refuses_a_value_that_is_not_a_timestamp_in_one_line(sqlite_at_0011: str) -> None:
    insert_raw(sqlite_at_0011, ["2026-09-02T06:30:00Z", "yesterday", "2026-02-30 10:00:00"])

    with pytest.raises(RuntimeError) as refused:
        run_alembic(sqlite_at_0011, lambda config, _: command.upgrade(config, "head"))

    message = str(refused.value)
    assert "\n" not in message
    assert "log_entries.timestamp holds 2 value(s) that are not ISO 8601 timestamps" in message
    assert "'yesterday'" in message
    # Nothing changed: the upgrade is one transaction.
    assert sorted(stored_texts(sqlite_at_0011)) == sorted(
        ["2026-09-02T06:30:00Z", "yesterday", "2026-02-30 10:00:00"]
    )


def test_downgrade_removes_the_check_and_keeps_the_canonical_values(sqlite_at_0011: str) -> None:
    insert_raw(sqlite_at_0011, ["2026-09-02T02:29:59-04:00"])
    run_alembic(sqlite_at_0011, lambda config, _: command.upgrade(config, "head"))
    run_alembic(sqlite_at_0011, lambda config, _: command.downgrade(config, "0011"))

    insert_raw(sqlite_at_0011, ["2026-09-02 06:30:00"])  # accepted again at 0011

    assert stored_texts(sqlite_at_0011) == ["2026-09-02 06:29:59.000000", "2026-09-02 06:30:00"]


def test_the_migrated_check_is_the_one_the_model_declares(sqlite_at_0011: str) -> None:
    run_alembic(sqlite_at_0011, lambda config, _: command.upgrade(config, "head"))

    def table_sql(_config: Config, connection: Connection) -> str:
        return str(
            connection.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'log_entries'").scalar()
        )

    [declared] = [
        constraint
        for constraint in LogEntry.__table__.constraints
        if constraint.name == "ck_log_entries_timestamp_canonical"
    ]
    migrated = run_alembic(sqlite_at_0011, table_sql)
    assert f"CONSTRAINT ck_log_entries_timestamp_canonical CHECK ({declared.sqltext})" in migrated


@pytest.mark.parametrize(
    "literal",
    [
        "2026-09-02 06:30:00",
        "2026-09-02T06:30:00.000000",
        "2026-09-02 06:30:00.000000+00:00",
        "2026-09-02 06:30:00.000",
        "2026-02-30 06:30:00.000000",
        "2026-09-02 24:00:00.000000",
    ],
)
async def test_after_the_upgrade_sqlite_refuses_any_other_spelling(
    engine: AsyncEngine, backend: str, literal: str
) -> None:
    if backend != "sqlite":
        pytest.skip("PostgreSQL stores timestamptz: every spelling is the same value")
    statement = text(
        "INSERT INTO log_entries (id, timestamp, device_id, user_id, tool_name, tool_type, risk_level,"
        " prompt_length, detected_entity_types, entity_count, was_sanitized, log_metadata, created_at,"
        " organization_id) VALUES (:id, :moment, 'dev-1', 'alice', 'ChatGPT', 'web', 'green', 0, '[]', 0, 0,"
        " '{}', '2026-09-02 00:00:00.000000', 'acme')"
    )
    async with engine.connect() as connection:
        with pytest.raises(IntegrityError, match="ck_log_entries_timestamp_canonical"):
            await connection.execute(statement, {"id": uuid.uuid4().hex, "moment": literal})
        # The canonical text itself is accepted.
        await connection.execute(statement, {"id": uuid.uuid4().hex, "moment": "2026-09-02 06:30:00.000000"})
