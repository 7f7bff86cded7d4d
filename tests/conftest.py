"""Shared fixtures: every database test runs against real SQLite and real PostgreSQL.

Each pytest run creates its own throwaway PostgreSQL database (so parallel runs
never meet), migrates both databases once, and empties every table before each
test. Without a reachable PostgreSQL the PostgreSQL half is skipped and the
summary says so, unless AIFW_REQUIRE_POSTGRES=1 (CI), where it fails.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from db.base import Base
from db.engine import migrate, new_engine, new_sessionmaker
from db.settings import Settings, load_settings

BACKENDS = ("sqlite", "postgresql")
DEFAULT_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


def postgres_admin_url() -> str:
    return os.environ.get("TEST_POSTGRES_URL", DEFAULT_ADMIN_URL)


def postgres_required() -> bool:
    return os.environ.get("AIFW_REQUIRE_POSTGRES", "").lower() in {"1", "true", "yes"}


def _asyncpg_dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


async def _admin_execute(sql: str) -> None:
    connection = await asyncpg.connect(_asyncpg_dsn(postgres_admin_url()), timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def create_postgres_database(prefix: str = "aifw_test") -> str:
    """Create an empty PostgreSQL database; return its SQLAlchemy URL (skip or fail if unreachable)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_admin_execute(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        reason = f"PostgreSQL not reachable at {make_url(postgres_admin_url()).host}: {error}"
        if postgres_required():
            pytest.fail(f"{reason} (AIFW_REQUIRE_POSTGRES=1: PostgreSQL is required)", pytrace=False)
        pytest.skip(reason)
    return make_url(postgres_admin_url()).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    name = make_url(url).database
    asyncio.run(_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def settings_for(url: str) -> Settings:
    """Settings for a test database: the environment's, with this URL and cheap bcrypt."""
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    return replace(load_settings(env), database_url=url, database_url_is_default=False, bcrypt_rounds=4)


async def migrate_url(url: str) -> None:
    engine = new_engine(settings_for(url))
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


def new_database_url(backend: str, directory: Path) -> str:
    """A fresh, empty (unmigrated) database of the given backend."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{directory / f'test-{uuid.uuid4().hex[:8]}.db'}"
    return create_postgres_database()


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database per backend, shared by the whole run and emptied before each test."""
    url = new_database_url(request.param, tmp_path_factory.mktemp("sqlite"))
    asyncio.run(migrate_url(url))
    yield url
    if request.param == "postgresql":
        drop_postgres_database(url)


@pytest.fixture
def backend(database_url: str) -> str:
    return "postgresql" if database_url.startswith("postgresql") else "sqlite"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return settings_for(database_url)


async def empty_all_tables(engine: AsyncEngine) -> None:
    tables = [table.name for table in reversed(Base.metadata.sorted_tables)]
    async with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            await connection.execute(text(f"TRUNCATE {', '.join(tables)}"))
        else:
            for table in tables:
                await connection.execute(text(f"DELETE FROM {table}"))


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """An engine on the test database, every table empty at the start of the test."""
    engine = new_engine(settings)
    await empty_all_tables(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
async def session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    async with new_sessionmaker(engine)() as session:
        yield session


@pytest.fixture
def subprocess_env(settings: Settings) -> dict[str, str]:
    """Environment for a child process (server, CLI) that must use the test database."""
    env = dict(os.environ)
    env["DATABASE_URL"] = settings.database_url
    env["AIFW_BCRYPT_ROUNDS"] = "4"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # Read the skip reports rather than a module global: under pytest-xdist the skips happen in workers.
    reasons = {
        str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        for report in terminalreporter.stats.get("skipped", [])
    }
    unreachable = sorted(reason for reason in reasons if "PostgreSQL not reachable" in reason)
    if unreachable:
        terminalreporter.write_line(
            f"NOTE: PostgreSQL tests were SKIPPED ({unreachable[0].removeprefix('Skipped: ')}); only SQLite "
            "was tested. Set TEST_POSTGRES_URL or start PostgreSQL; CI sets AIFW_REQUIRE_POSTGRES=1 and fails "
            "instead.",
            yellow=True,
            bold=True,
        )
