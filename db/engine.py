"""Engine and session factories, connection checks and automatic migration.

Never an engine at import time: each process (and each test) calls
:func:`new_engine` in its own event loop and disposes of it when done.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, false, func, inspect, select, update
from sqlalchemy.dialects import postgresql as pg_dml
from sqlalchemy.dialects import sqlite as sqlite_dml
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from db.errors import DatabaseError, DatabaseUnavailable, SchemaNotMigrated, describe_database_error
from db.settings import REPO_ROOT, Settings, sqlite_file

ALEMBIC_INI = REPO_ROOT / "alembic.ini"
POOL_SIZE = 20
MAX_OVERFLOW = 10
SQLITE_BUSY_TIMEOUT_MS = 10_000

Row = TypeVar("Row")


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the console, the ingest server and a cron cleanup share the file;
    # busy_timeout makes a writer wait for the lock instead of failing at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _refuse_closed_connection(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Pool checkout without a round trip: a pooled connection the server closed (a restart, a
    terminated backend) is replaced before it is handed out. asyncpg notices the server closing
    the socket while the connection sits in the pool, so this catches what a ping would, except
    a peer that vanished without closing, which the first statement then reports."""
    driver = record.driver_connection
    if driver is not None and driver.is_closed():
        raise DisconnectionError("the server closed this pooled connection")


def new_engine(settings: Settings, **overrides: Any) -> AsyncEngine:
    """An async engine for the configured database (pool 20 + 10 overflow on PostgreSQL).

    Statement errors never carry their parameters (``hide_parameters``): a failed
    insert of a user or a token would otherwise print its hash into a message or a log.
    JSON columns are read with orjson: readers of the event streams decode two per row.

    PostgreSQL pools ping each connection they hand out (``pool_pre_ping``): with asyncpg that is
    three round trips (BEGIN, an empty query, ROLLBACK). The busy loops (the ingest writer, the
    dispatcher) pass ``pool_pre_ping=False``: their pools only check that the server has not closed
    the connection, with no round trip, and they retry a statement that meets a lost one anyway.
    PostgreSQL pools hand out the connection returned last (``pool_use_lifo``): a loop that polls
    keeps one warm backend busy instead of waking each idle one in turn, which on this kind of machine
    costs both processes CPU.
    """
    if settings.is_sqlite:
        options = {
            "connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            "hide_parameters": True,
            "json_deserializer": orjson.loads,
            **overrides,
        }
        engine = create_async_engine(settings.database_url, **options)
        event.listen(engine.sync_engine, "connect", _set_sqlite_pragmas)
        return engine
    options = {
        "pool_pre_ping": True,
        "connect_args": {"timeout": 10},
        "hide_parameters": True,
        "json_deserializer": orjson.loads,
        **overrides,
    }
    if options.get("poolclass") is None:
        options.update(pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW, pool_use_lifo=True)
    engine = create_async_engine(settings.database_url, **options)
    if not options["pool_pre_ping"]:
        event.listen(engine.sync_engine, "checkout", _refuse_closed_connection)
    return engine


def new_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def reading(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session for reads that need no snapshot of their own (each statement stands alone).

    On PostgreSQL its connection runs in AUTOCOMMIT, so no BEGIN and no ROLLBACK go to the server: two
    round trips fewer for a loop that reads several times a second (the dispatcher's workers). The
    connection goes back to the pool at its usual isolation level. SQLite: an ordinary session.
    """
    async with sessions() as session:
        await autocommit(session)
        yield session


async def autocommit(session: AsyncSession) -> None:
    """On PostgreSQL, each statement of ``session`` (not used yet) from now on commits on its own: no BEGIN
    and no COMMIT or ROLLBACK round trips. Its connection goes back to the pool at its usual isolation
    level. Nothing on SQLite."""
    if session.get_bind().dialect.name == "postgresql":
        await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


def insert_for(session: AsyncSession) -> Callable[[Any], pg_dml.Insert | sqlite_dml.Insert]:
    """The ``insert`` of the session's engine, which carries ``ON CONFLICT`` (upserts) on both engines."""
    return pg_dml.insert if session.get_bind().dialect.name == "postgresql" else sqlite_dml.insert


async def take_sqlite_write_lock(session: AsyncSession, model: type[Any]) -> None:
    """On SQLite, take the database's single write lock now; it is held until the transaction ends.

    A read-then-write transaction on SQLite reads from a snapshot: another writer may commit
    between the read and the write. Taking the write lock first (a no-op ``UPDATE`` of
    ``model``'s table that matches no row, waiting up to the busy timeout) makes the reads that
    follow current until the commit. It must be the transaction's first statement. Nothing on
    other engines: they lock the rows read instead (``FOR SHARE``, ``LOCK TABLE``).
    """
    if session.get_bind().dialect.name != "sqlite":
        return
    key = inspect(model).primary_key[0]
    await session.execute(update(model).where(false()).values({key: key}))


async def row_for_update(session: AsyncSession, model: type[Row], row_id: Any) -> Row | None:
    """The ``model`` row with primary key ``row_id`` as stored now (None if there is none), locked until the
    transaction ends on PostgreSQL (``FOR UPDATE``); SQLite: take its write lock first
    (:func:`take_sqlite_write_lock`)."""
    key = inspect(model).primary_key[0]
    statement = select(model).where(key == row_id)
    if session.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update()
    return await session.scalar(statement.execution_options(populate_existing=True))


class NamedPerOrganization(Protocol):
    """A model whose rows are named uniquely per organisation, regardless of case."""

    id: Any
    organization_id: Any
    name: Any


async def name_in_use(
    session: AsyncSession,
    model: type[NamedPerOrganization],
    *,
    organization_id: str,
    name: str,
    other_than: Any = None,
) -> bool:
    """Whether ``organization_id`` already has a ``model`` row named ``name`` in any case (besides
    ``other_than``, the row being renamed); the unique index on ``lower(name)`` has the last word."""
    statement = select(model.id).where(
        model.organization_id == organization_id, func.lower(model.name) == name.lower()
    )
    if other_than is not None:
        statement = statement.where(model.id != other_than)
    return await session.scalar(statement) is not None


def alembic_config(database_url: str | None = None) -> Config:
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    if database_url is not None:
        config.attributes["database_url"] = database_url
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _upgrade_to_head(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision (``alembic upgrade head``) on this engine."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade_to_head)


async def check_connectable(engine: AsyncEngine, settings: Settings) -> str | None:
    """Connect once; return the schema's revision, or raise DatabaseUnavailable with one line."""
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_current_revision)
    except (TimeoutError, OperationalError, DBAPIError, OSError) as error:
        raise DatabaseUnavailable(describe_database_error(settings, error)) from error


async def check_database(
    engine: AsyncEngine, settings: Settings, *, auto_migrate: bool | None = None
) -> None:
    """Connect once and check the schema; raise DatabaseError with a one-line reason.

    The embedded default migrates itself (``auto_migrate`` defaults to whether
    DATABASE_URL was unset); any other database must be migrated explicitly.
    """
    if auto_migrate is None:
        auto_migrate = settings.database_url_is_default
    current = await check_connectable(engine, settings)
    head = head_revision()
    if current == head:
        return
    if auto_migrate:
        try:
            await migrate(engine)
        except (TimeoutError, DBAPIError, OSError) as error:
            # A read-only file or a missing permission is not a server that is away: say which it is.
            raise DatabaseError(f"cannot migrate: {describe_database_error(settings, error)}") from error
        return
    where = settings.describe_database()
    state = "has no schema" if current is None else f"is at revision {current}, not {head}"
    raise SchemaNotMigrated(f"the database ({where}) {state}: run `alembic upgrade head`")


def sqlite_path(settings: Settings) -> Path | None:
    """The SQLite database's file (a ``file:`` URI's too), or None for PostgreSQL or memory."""
    return sqlite_file(settings.url) if settings.is_sqlite else None
