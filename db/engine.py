"""Engine and session factories, connection checks and automatic migration.

Never an engine at import time: each process (and each test) calls
:func:`new_engine` in its own event loop and disposes of it when done.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, false, inspect, update
from sqlalchemy.dialects import postgresql as pg_dml
from sqlalchemy.dialects import sqlite as sqlite_dml
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from db.settings import REPO_ROOT, Settings, sqlite_file

ALEMBIC_INI = REPO_ROOT / "alembic.ini"
POOL_SIZE = 20
MAX_OVERFLOW = 10
SQLITE_BUSY_TIMEOUT_MS = 10_000


class DatabaseError(RuntimeError):
    """The database cannot be used; the message is one line a person can act on."""


class DatabaseUnavailable(DatabaseError):
    """The database server cannot be reached."""


class SchemaNotMigrated(DatabaseError):
    """The database is reachable but its schema is not at the newest revision."""


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the console, the ingest server and a cron cleanup share the file;
    # busy_timeout makes a writer wait for the lock instead of failing at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def new_engine(settings: Settings, **overrides: Any) -> AsyncEngine:
    """An async engine for the configured database (pool 20 + 10 overflow on PostgreSQL).

    Statement errors never carry their parameters (``hide_parameters``): a failed
    insert of a user or a token would otherwise print its hash into a message or a log.
    """
    if settings.is_sqlite:
        options = {
            "connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            "hide_parameters": True,
            **overrides,
        }
        engine = create_async_engine(settings.database_url, **options)
        event.listen(engine.sync_engine, "connect", _set_sqlite_pragmas)
        return engine
    options = {"pool_pre_ping": True, "connect_args": {"timeout": 10}, "hide_parameters": True, **overrides}
    if options.get("poolclass") is None:
        options.update(pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW)
    return create_async_engine(settings.database_url, **options)


def new_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


#: What a secret looks like in text: a bcrypt hash, an ingest token, a column named after one. A
#: driver's message never quotes statement parameters, but a constraint's detail can quote a value.
_SECRET = re.compile(
    r"\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{20,}|aifw_[A-Za-z0-9_-]{30,}|token_hash\w*|hashed_password\w*"
)
#: PostgreSQL's SQLSTATEs that mean "connecting failed" without the server having been reached.
_PG_NOT_REACHED = {"08000", "08001", "08003", "08004", "08006", "57P03"}
_PG_READ_ONLY = "25006"
_PG_NO_PERMISSION = "42501"
_PG_NO_DATABASE = "3D000"
_PG_LOGIN_REFUSED = {"28000", "28P01"}
#: SQLite's primary result codes (the low byte of the extended code Python reports).
_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_CANTOPEN = 3, 8, 14


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


def error_reason(error: BaseException) -> str:
    """Why ``error`` happened, on one line: the first line of the driver's message when SQLAlchemy wraps one.

    SQLAlchemy's own message carries the statement (and would carry its parameters); a driver's
    further lines (PostgreSQL's DETAIL) can quote a stored value, so only the first line is kept
    and anything shaped like a hash or a token is masked.
    """
    reason = getattr(error, "orig", None) or error
    lines = str(reason).strip().splitlines()
    first = " ".join(lines[0].split()) if lines else ""
    return _SECRET.sub("…", first) or type(reason).__name__


def _sqlstate(error: BaseException) -> str | None:
    reason = getattr(error, "orig", None) or error
    return getattr(reason, "sqlstate", None) or getattr(reason.__cause__, "sqlstate", None)


def _sqlite_code(error: BaseException) -> int | None:
    code = getattr(getattr(error, "orig", None) or error, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def _is_write_refused(error: BaseException) -> bool:
    """An OSError of a file that may not be written (SQLite's sidecar files: WAL, lock)."""
    reason = getattr(error, "orig", None) or error
    return isinstance(reason, OSError) and reason.errno in {errno.EACCES, errno.EPERM, errno.EROFS}


def _is_unreachable(error: BaseException) -> bool:
    """True if ``error`` means the database server could not be reached at all (not a refusal)."""
    if _is_write_refused(error):
        return False
    reason = getattr(error, "orig", None) or error
    cause = reason.__cause__ or reason
    if isinstance(cause, (OSError, TimeoutError)) or isinstance(reason, (OSError, TimeoutError)):
        return True
    if _sqlstate(error) in _PG_NOT_REACHED:
        return True
    # asyncpg's "connection was closed in the middle of operation" has no SQLSTATE.
    return type(cause).__name__ == "ConnectionDoesNotExistError"


def describe_database_error(settings: Settings | None, error: BaseException) -> str:
    """One line saying what went wrong with the database and what to do, never a statement or a secret.

    Read-only databases, missing permissions, missing databases and files that cannot
    be opened each say so; "is it running?" is asked only when the server could not be
    reached. ``settings`` (None: unknown) names the database in the message.
    """
    text = error_reason(error)
    state = _sqlstate(error)
    sqlite_code = _sqlite_code(error)
    where = "the database" if settings is None else f"the database ({settings.describe_database()})"
    is_sqlite = settings.is_sqlite if settings is not None else sqlite_code is not None
    if state == _PG_READ_ONLY or sqlite_code == _SQLITE_READONLY or _is_write_refused(error):
        fix = (
            "make the file and its folder writable by this user"
            if is_sqlite
            else "turn off default_transaction_read_only, or point DATABASE_URL at the primary"
        )
        return f"{where} is read-only ({text}) and this needs to write to it; {fix}"
    if state == _PG_NO_PERMISSION or sqlite_code == _SQLITE_PERM:
        return (
            f"{where} refused permission ({text}): grant this user the right, or use another in DATABASE_URL"
        )
    if settings is not None and settings.is_sqlite and sqlite_code == _SQLITE_CANTOPEN:
        folder = sqlite_path(settings)
        folder_text = f"{folder.parent} " if folder is not None else ""
        return (
            f"cannot open SQLite database {settings.url.database}: {text}; "
            f"check that the folder {folder_text}exists and this user may read and write there"
        )
    if settings is not None and settings.is_postgresql:
        url = settings.url
        host = f"{url.host or 'localhost'}:{url.port or 5432}"
        if state == _PG_NO_DATABASE:
            return (
                f"PostgreSQL at {host} has no database {url.database!r}: "
                f"create it (createdb {url.database}) or fix DATABASE_URL"
            )
        if state in _PG_LOGIN_REFUSED:
            return (
                f"PostgreSQL at {host} refused the login ({text}): "
                "check the user and password in DATABASE_URL"
            )
        if _is_unreachable(error):
            database = url.database
            return f"cannot connect to PostgreSQL at {host} (database {database!r}): {text}; is it running?"
    if settings is not None and settings.is_sqlite and _is_unreachable(error):
        return f"cannot open SQLite database {settings.url.database}: {text}"
    return f"the database refused the change: {text}"


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
