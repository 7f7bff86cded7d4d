"""Databases and rows for tests: fresh PostgreSQL and SQLite databases, and the rows tests start from.

Rows are written through the product's own functions (``create_organization``, ``create_token``,
``create_user``, ``store_events``) so that a test starts from data the product could have made.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic.config import Config
from sqlalchemy import delete, func, select, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from db.base import Base, utcnow
from db.configs import create_organization
from db.engine import alembic_config, migrate, new_engine, new_sessionmaker
from db.events import store_events
from db.models import AuditEvent, LogEntry, LogHourlyCount, User
from db.rights import Actor
from db.rollups import DEFAULT_MAX_KEYS
from db.settings import Settings, load_settings
from db.tokens import create_token
from db.users import create_user

BACKENDS = ("sqlite", "postgresql")
DEFAULT_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
#: The password of every user a helper makes.
PASSWORD = "s3cret-password"
#: Who sets up a test's rows: ``add_user(..., forget_audit=True)`` removes the audit rows it wrote.
#: Destination secrets of test databases are encrypted with this key, not a key file in the repository's var/.
TEST_SECRET_KEY = "YWlmdy10ZXN0LXNlY3JldC1rZXktMzItYnl0ZXMhISE="
SETUP = Actor(name="test-setup", source="cli")
#: ``make_event(0)``'s time: two hours ago, so every event of a test lies inside the default filters.
BASE_TIME = utcnow().replace(microsecond=0) - timedelta(hours=2)


# --- databases -------------------------------------------------------------------------------------


def postgres_admin_url() -> str:
    """The PostgreSQL server tests create their databases on (TEST_POSTGRES_URL, else local trust)."""
    return os.environ.get("TEST_POSTGRES_URL", DEFAULT_ADMIN_URL)


def postgres_required() -> bool:
    """True in CI (AIFW_REQUIRE_POSTGRES=1): an unreachable PostgreSQL fails instead of skipping."""
    return os.environ.get("AIFW_REQUIRE_POSTGRES", "").lower() in {"1", "true", "yes"}


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def admin_execute(sql: str) -> None:
    """Run one statement on the PostgreSQL server's administrative database (CREATE/DROP DATABASE)."""
    connection = await asyncpg.connect(asyncpg_dsn(postgres_admin_url()), timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def create_postgres_database(prefix: str = "aifw_test") -> str:
    """Create an empty PostgreSQL database; return its SQLAlchemy URL (skip or fail if unreachable)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(admin_execute(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        reason = f"PostgreSQL not reachable at {make_url(postgres_admin_url()).host}: {error}"
        if postgres_required():
            pytest.fail(f"{reason} (AIFW_REQUIRE_POSTGRES=1: PostgreSQL is required)", pytrace=False)
        pytest.skip(reason)
    return make_url(postgres_admin_url()).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    """Drop a database made by :func:`create_postgres_database`, closing its connections first."""
    name = make_url(url).database
    asyncio.run(admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def new_database_url(backend: str, directory: Path) -> str:
    """A fresh, empty (unmigrated) database of the given backend."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{directory / f'test-{uuid.uuid4().hex[:8]}.db'}"
    return create_postgres_database()


def settings_for(url: str) -> Settings:
    """Settings for a test database: the environment's, with this URL and cheap bcrypt."""
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    return replace(
        load_settings(env),
        database_url=url,
        database_url_is_default=False,
        bcrypt_rounds=4,
        secret_key=TEST_SECRET_KEY,
    )


def environment_for(settings: Settings) -> dict[str, str]:
    """Environment for a child process (server, CLI) that must use this test database."""
    env = dict(os.environ)
    env["DATABASE_URL"] = settings.database_url
    env["AIFW_BCRYPT_ROUNDS"] = "4"
    env["AIFW_SECRET_KEY"] = settings.secret_key or TEST_SECRET_KEY
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


async def migrate_url(url: str) -> None:
    """Bring the database at ``url`` to the newest revision."""
    engine = new_engine(settings_for(url))
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


def run_alembic(url: str, action: Callable[[Config, Connection], Any]) -> Any:
    """Run an alembic command (or read the schema) on ``url`` through the project's env.py, as the CLI does;
    ``action`` gets the configuration and the connection and its result is returned."""

    async def go() -> Any:
        engine = new_engine(settings_for(url))
        try:
            async with engine.begin() as connection:

                def with_config(sync: Connection) -> Any:
                    config = alembic_config()
                    config.attributes["connection"] = sync
                    return action(config, sync)

                return await connection.run_sync(with_config)
        finally:
            await engine.dispose()

    return asyncio.run(go())


async def empty_all_tables(engine: AsyncEngine) -> None:
    """Delete every row of every table (children first), keeping the schema and its revision."""
    tables = [
        table.name for table in reversed(Base.metadata.sorted_tables) if table.name != "rollup_settings"
    ]
    async with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            # TRUNCATE of log_entries renews every partition's files and indexes (about half a second);
            # a test leaves few rows, which DELETE removes in milliseconds.
            others = [table for table in tables if table != "log_entries"]
            await connection.execute(text(f"TRUNCATE {', '.join(others)}"))
            await connection.execute(text("DELETE FROM log_entries"))
        else:
            for table in tables:
                await connection.execute(text(f"DELETE FROM {table}"))
        # The one settings row stays, back at its defaults (migration 0015).
        await connection.execute(
            text(f"UPDATE rollup_settings SET max_keys_per_bucket = {DEFAULT_MAX_KEYS}, counting = true")
        )


# --- rows ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Organization:
    """An organisation and the plaintext of its live ingest token (shown once, as to an operator)."""

    organization_id: str
    token: str


async def add_organization(
    session: AsyncSession, organization_id: str, *, token_name: str = "test", actor: Actor | None = None
) -> Organization:
    """Create an organisation with one live ingest token, and commit."""
    actor = actor or Actor.cli()
    await create_organization(session=session, organization_id=organization_id, actor=actor)
    _, token = await create_token(
        session=session, actor=actor, organization_id=organization_id, name=token_name
    )
    await session.commit()
    return Organization(organization_id, token)


async def add_user(
    session: AsyncSession,
    username: str,
    *,
    email: str | None = None,
    password: str = PASSWORD,
    full_name: str | None = None,
    is_admin: bool = False,
    active: bool = True,
    actor: Actor = SETUP,
    forget_audit: bool = False,
) -> User:
    """Create a user through ``create_user`` (bcrypt at 4 rounds), and commit.

    ``forget_audit`` deletes the audit rows ``actor`` wrote, for tests that count the changes they
    make themselves: the user existed before the test.
    """
    user = await create_user(
        session=session,
        actor=actor,
        username=username,
        email=email or f"{username}@example.com",
        password=password,
        full_name=full_name,
        is_admin=is_admin,
        bcrypt_rounds=4,
    )
    user.is_active = active
    if forget_audit:
        await session.execute(delete(AuditEvent).where(AuditEvent.actor == actor.name))
    await session.commit()
    return user


def make_event(index: int = 0, **overrides: Any) -> dict[str, Any]:
    """One event as the ingest server stores it; ``index`` spreads times a second apart, newest last."""
    event: dict[str, Any] = {
        "id": uuid.uuid4(),
        "timestamp": BASE_TIME + timedelta(seconds=index),
        "device_id": f"dev-{index % 3}",
        "user_id": f"user{index % 4}@example.com",
        "organization_id": "default",
        "tool_name": "ChatGPT",
        "tool_type": "web",
        "risk_level": "green",
        "prompt_length": 100 + index,
        "detected_entity_types": [],
        "entity_count": 0,
        "was_sanitized": False,
        "log_metadata": {"os": "linux"},
    }
    event.update(overrides)
    return event


async def store_logs(engine: AsyncEngine, events: Sequence[dict[str, Any]]) -> None:
    """Insert log rows and their hourly counts in one transaction, as ingest does."""
    async with new_sessionmaker(engine)() as session:
        await store_events(session=session, events=list(events))
        await session.commit()


async def stored_ids(engine: AsyncEngine) -> list[str]:
    """Every stored event id, duplicates included (there must be none)."""
    async with engine.connect() as connection:
        return [str(row[0]) for row in await connection.execute(select(LogEntry.id))]


async def count_events(engine: AsyncEngine, organization_id: str | None = None) -> int:
    """Stored log events, of one organisation or of all."""
    query = select(func.count()).select_from(LogEntry)
    if organization_id is not None:
        query = query.where(LogEntry.organization_id == organization_id)
    async with engine.connect() as connection:
        return int((await connection.execute(query)).scalar_one())


async def rollup_total(engine: AsyncEngine) -> int:
    """Events counted by the hourly rollups (each stored event once in the ``risk`` dimension)."""
    async with engine.connect() as connection:
        total = await connection.scalar(
            select(func.coalesce(func.sum(LogHourlyCount.event_count), 0)).where(
                LogHourlyCount.dimension == "risk"
            )
        )
        return int(total or 0)


async def count_rows(engine: AsyncEngine, table: str) -> int:
    """Rows of a table named in the test itself (never from input: the name is interpolated)."""
    async with engine.connect() as connection:
        return int((await connection.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())
