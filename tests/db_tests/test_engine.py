"""Engines: pool sizes, WAL, and one-line errors for unreachable or unmigrated databases."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import (
    MAX_OVERFLOW,
    POOL_SIZE,
    DatabaseUnavailable,
    SchemaNotMigrated,
    check_database,
    head_revision,
    new_engine,
)
from db.settings import load_settings
from tests.conftest import settings_for


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(engine: AsyncEngine, backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("WAL is a SQLite setting")
    async with engine.connect() as connection:
        assert (await connection.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
        assert (await connection.execute(text("PRAGMA busy_timeout"))).scalar() >= 5000


def test_postgresql_pool_is_20_plus_10_overflow() -> None:
    engine = new_engine(load_settings({"DATABASE_URL": "postgresql+asyncpg://u@localhost/x"}))
    assert engine.pool.size() == POOL_SIZE == 20
    assert engine.pool._max_overflow == MAX_OVERFLOW == 10  # noqa: SLF001  (no public accessor)


async def test_unreachable_postgresql_is_one_line_naming_host_and_port() -> None:
    port = free_port()
    settings = settings_for(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/nothing")
    engine = new_engine(settings)
    try:
        with pytest.raises(DatabaseUnavailable) as error:
            await check_database(engine, settings)
    finally:
        await engine.dispose()
    message = str(error.value)
    assert message.startswith(f"cannot connect to PostgreSQL at 127.0.0.1:{port}")
    assert "\n" not in message


async def test_unmigrated_database_says_run_alembic_upgrade_head(tmp_path: Path) -> None:
    settings = settings_for(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    engine = new_engine(settings)
    try:
        with pytest.raises(SchemaNotMigrated, match="run `alembic upgrade head`"):
            await check_database(engine, settings)
    finally:
        await engine.dispose()


async def test_embedded_default_migrates_itself(tmp_path: Path) -> None:
    settings = load_settings({"AIFW_DATA_DIR": str(tmp_path)})
    assert settings.database_url_is_default
    settings = replace(settings, bcrypt_rounds=4)
    engine = new_engine(settings)
    try:
        await check_database(engine, settings)
        async with engine.connect() as connection:
            version = (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    finally:
        await engine.dispose()
    assert version == head_revision()
    assert (tmp_path / "firewall.db").exists()
