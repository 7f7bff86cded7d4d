"""Shared fixtures: every database test runs against real SQLite and real PostgreSQL.

Each pytest run creates its own throwaway PostgreSQL database (so parallel runs
never meet), migrates both databases once, and empties every table before each
test. Without a reachable PostgreSQL the PostgreSQL half is skipped and the
summary says so, unless AIFW_REQUIRE_POSTGRES=1 (CI), where it fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from db.engine import new_engine, new_sessionmaker
from db.settings import Settings
from tests.support.database import (
    BACKENDS,
    drop_postgres_database,
    empty_all_tables,
    environment_for,
    migrate_url,
    new_database_url,
    settings_for,
)
from tests.support.haproxy import INSTALL_HINT as HAPROXY_INSTALL_HINT
from tests.support.legacy import make_legacy
from tests.support.rsyslog import INSTALL_HINT as RSYSLOG_INSTALL_HINT


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


@pytest.fixture(params=BACKENDS)
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A new, empty (unmigrated) database per backend, of this test alone; for tests of migrations."""
    url = new_database_url(request.param, tmp_path)
    yield url
    if request.param == "postgresql":
        drop_postgres_database(url)


@pytest.fixture
def legacy_url(fresh_url: str) -> str:
    """A database that held rows breaking today's rules when it was upgraded from 0007 to head."""
    make_legacy(fresh_url)
    return fresh_url


@pytest.fixture
def subprocess_env(settings: Settings) -> dict[str, str]:
    """Environment for a child process (server, CLI) that must use the test database."""
    return environment_for(settings)


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
            "was tested. Set TEST_POSTGRES_URL or start PostgreSQL; "
            "CI sets AIFW_REQUIRE_POSTGRES=1 and fails instead.",
            yellow=True,
            bold=True,
        )
    if any("rsyslog tests skipped" in reason for reason in reasons):
        terminalreporter.write_line(RSYSLOG_INSTALL_HINT, yellow=True, bold=True)
    if any("HAProxy tests skipped" in reason for reason in reasons):
        terminalreporter.write_line(HAPROXY_INSTALL_HINT, yellow=True, bold=True)
