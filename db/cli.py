"""What every command-line tool shares: exit codes, one-line errors, running work against the database.

The console's subcommands, the retention command line (:mod:`retention.cli`) and the demo use it, so it
lives below them all and imports neither Textual nor the console. Whatever a command prints from the
database (names, error
messages quoting values) goes through :func:`db.identifiers.visible` first, so an ANSI escape stored
in a token name cannot act on the terminal.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from db.engine import check_database, new_engine, new_sessionmaker
from db.errors import DatabaseError, describe_database_error
from db.identifiers import visible
from db.settings import Settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

T = TypeVar("T")


def configure_server_logging(*, quiet: bool) -> None:
    """How the long-running servers (ingest, dispatcher) log: to stderr with times, INFO (WARNING when
    ``quiet``); Alembic's migration lines only as warnings."""
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)


def fail(message: str, *, code: int = EXIT_FAILED) -> int:
    print(f"error: {visible(message)}", file=sys.stderr)
    return code


async def _with_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    engine = new_engine(settings)
    try:
        await check_database(engine, settings)
        async with new_sessionmaker(engine)() as session:
            return await work(session)
    except (SQLAlchemyError, OSError) as error:
        # Every command's writes fail here alike (a read-only database, a lost connection): one line,
        # never SQLAlchemy's own message, which carries the statement (a column named token_hash).
        raise DatabaseError(describe_database_error(settings, error)) from error
    finally:
        await engine.dispose()


def run_in_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run ``work`` in one session on a checked (and, for the embedded default, migrated) database.

    Raises DatabaseError with a one-line message; callers turn it into exit code 1.
    """
    return asyncio.run(_with_session(settings, work))
