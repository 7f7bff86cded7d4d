"""Engines: pool sizes, WAL, and one-line errors for unreachable or unmigrated databases."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from db.engine import (
    MAX_OVERFLOW,
    POOL_SIZE,
    check_database,
    head_revision,
    new_engine,
    new_sessionmaker,
    reading,
)
from db.errors import DatabaseError, DatabaseUnavailable, SchemaNotMigrated, error_reason
from db.settings import Settings, load_settings
from tests.support.database import create_postgres_database, drop_postgres_database, settings_for


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


async def test_migrating_a_read_only_embedded_database_says_read_only_not_is_it_running(
    tmp_path: Path,
) -> None:
    path = tmp_path / "firewall.db"
    (tmp_path / "empty.db").touch()
    settings = replace(
        settings_for(f"sqlite+aiosqlite:///{path}"),
        database_url=f"sqlite+aiosqlite:///file:{tmp_path / 'empty.db'}?mode=ro&uri=true",
        database_url_is_default=True,
    )
    engine = new_engine(settings)
    try:
        with pytest.raises(DatabaseError) as error:
            await check_database(engine, settings)
    finally:
        await engine.dispose()
    message = str(error.value)
    assert "read-only" in message
    assert "is it running" not in message
    assert "\n" not in message


def test_error_reason_keeps_the_first_line_and_masks_secrets() -> None:
    reason = error_reason(
        ValueError(
            'duplicate key value violates unique constraint "uq_ingest_tokens_token_hash"\n'
            "DETAIL:  Key (token_hash)=(9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08)"
        )
    )
    assert reason.startswith("duplicate key value violates unique constraint")
    assert "token_hash" not in reason
    assert "9f86d0" not in reason
    bcrypt = "$2b$12$" + "a" * 53
    assert bcrypt not in error_reason(ValueError(f"bad value {bcrypt}"))
    token = "aifw_" + "Q" * 43
    assert token not in error_reason(ValueError(f"bad value {token}"))


def test_a_missing_postgresql_database_says_create_it_not_is_it_running() -> None:
    url = create_postgres_database("gone_test")  # skips when PostgreSQL is not reachable
    drop_postgres_database(url)
    settings = settings_for(url)

    async def check() -> None:
        engine = new_engine(settings)
        try:
            await check_database(engine, settings)
        finally:
            await engine.dispose()

    with pytest.raises(DatabaseError) as error:
        asyncio.run(check())
    assert "has no database" in str(error.value)
    assert "is it running" not in str(error.value)


async def test_a_pool_without_pings_replaces_a_connection_the_server_closed(
    engine: AsyncEngine, settings: Settings, backend: str
) -> None:
    """The busy loops' pools (no ping per checkout) hand out a fresh connection, not the closed one."""
    if backend != "postgresql":
        pytest.skip("SQLite has no server to close a connection")
    unpinged = new_engine(settings, pool_pre_ping=False, pool_size=1, max_overflow=0)
    try:
        async with unpinged.connect() as connection:
            first = await connection.scalar(text("SELECT pg_backend_pid()"))
        async with engine.connect() as other:
            assert await other.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
        await asyncio.sleep(0.2)  # asyncpg sees the socket close once the loop runs
        async with unpinged.connect() as connection:
            second = await connection.scalar(text("SELECT pg_backend_pid()"))
        assert second != first
    finally:
        await unpinged.dispose()


async def test_reading_runs_each_statement_alone_and_gives_the_connection_back_transactional(
    engine: AsyncEngine, backend: str
) -> None:
    """reading() sends no BEGIN on PostgreSQL: each statement is its own transaction (now() moves); the
    pool's next user gets an ordinary transaction again (now() stands still)."""
    if backend != "postgresql":
        pytest.skip("SQLite's reading() is an ordinary session")
    sessions = new_sessionmaker(engine)

    async def two_nows(session: AsyncSession) -> tuple[object, object]:
        first = await session.scalar(text("SELECT now()"))
        await asyncio.sleep(0.01)
        return first, await session.scalar(text("SELECT now()"))

    async with reading(sessions) as session:
        first, second = await two_nows(session)
        assert first != second
    async with sessions() as session:
        first, second = await two_nows(session)
        assert first == second


async def test_a_pool_hands_out_the_connection_used_last(settings: Settings, backend: str) -> None:
    """PostgreSQL pools are last in, first out: a loop that polls a few times a second keeps talking to one
    warm backend rather than waking each idle one in turn (and idle connections can time out)."""
    if backend != "postgresql":
        pytest.skip("SQLite's pool holds one file's connections")
    engine = new_engine(settings, pool_pre_ping=False)
    try:
        pid = text("SELECT pg_backend_pid()")
        async with engine.connect() as first, engine.connect() as second:
            first_pid, second_pid = await first.scalar(pid), await second.scalar(pid)
        # Both are back, the first one returned last ("async with" closes in reverse order).
        for _ in range(3):
            async with engine.connect() as connection:
                assert await connection.scalar(pid) == first_pid
        assert first_pid != second_pid
    finally:
        await engine.dispose()
