"""Alembic environment (async template): reads DATABASE_URL like every other entry point.

Called from the command line it builds its own engine; called from code
(``db.engine.migrate``, the tests) it uses the connection passed in
``config.attributes["connection"]``.
"""

from __future__ import annotations

import asyncio
import sys
import warnings
from dataclasses import replace
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from db import models  # noqa: F401  (registers every table on Base.metadata)
from db.base import Base, UTCDateTime
from db.engine import new_engine
from db.errors import DatabaseError, describe_database_error
from db.partition_layout import is_partition
from db.settings import SettingsError, load_settings

config = context.config
if config.config_file_name is not None and "connection" not in config.attributes:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata
#: What failing to connect raises (as db.engine.check_connectable catches): told as one line, not a traceback.
CONNECT_ERRORS = (TimeoutError, OperationalError, DBAPIError, OSError)


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    # Migrations spell our UTC type as the plain timestamptz it is, so they never import app code.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Leave out log_entries' partitions: they are created and dropped at run time (db/partitions.py),
    the one documented exception to "an explicit database is never changed behind your back"."""
    table = obj if type_ == "table" else getattr(obj, "table", None)
    table_name = getattr(table, "name", None)
    return not (reflected and compare_to is None and table_name is not None and is_partition(table_name))


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
        render_item=render_item,
        include_object=include_object,
    )


def do_run_migrations(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction(), warnings.catch_warnings():
        # SQLite cannot reflect the lower(...) indexes of 0009, so autogenerate skips them there with a
        # warning on every `alembic check`; PostgreSQL reflects and compares them.
        if connection.dialect.name == "sqlite":
            warnings.filterwarnings("ignore", message=r".*expression-based index")
        context.run_migrations()


async def run_async_migrations() -> None:
    try:
        settings = load_settings()
    except SettingsError as error:
        sys.exit(f"error: {error}")
    url = config.attributes.get("database_url") or settings.database_url
    settings = replace(settings, database_url=url)
    engine = new_engine(settings, poolclass=NullPool)
    try:
        # Connect here rather than through db.engine.check_connectable: its revision check builds a
        # second migration context, which logged alembic's "Context impl" lines a second time.
        try:
            connection = await engine.connect()
        except CONNECT_ERRORS as error:
            sys.exit(f"error: {describe_database_error(settings, error)}")
        try:
            await connection.run_sync(do_run_migrations)
            await connection.commit()
        finally:
            await connection.close()
    except DatabaseError as error:
        sys.exit(f"error: {error}")
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    settings = load_settings()
    context.configure(
        url=config.attributes.get("database_url") or settings.database_url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
elif (connection := config.attributes.get("connection")) is not None:
    do_run_migrations(connection)
else:
    asyncio.run(run_async_migrations())
