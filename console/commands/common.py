"""What every subcommand shares: exit codes, error output, running against the database.

Whatever a command prints from the database (names, error messages quoting values) goes through
:func:`console.untrusted.visible` first, so an ANSI escape stored in a token name cannot act on the terminal.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from console.untrusted import visible
from db.engine import DatabaseError, check_database, new_engine, new_sessionmaker
from db.settings import Settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

T = TypeVar("T")


def fail(message: str, *, code: int = EXIT_FAILED) -> int:
    print(f"error: {visible(message)}", file=sys.stderr)
    return code


def database_refusal(error: SQLAlchemyError) -> str:
    """One line saying why the database refused a statement, without its SQL or parameters.

    SQLAlchemy's own message carries the statement and its parameters (a bcrypt
    hash, a token hash); only the driver's first line is kept.
    """
    reason = error.orig if isinstance(error, DBAPIError) and error.orig is not None else None
    first_line = str(reason).strip().splitlines()[0] if reason is not None and str(reason).strip() else ""
    return f"the database refused the change: {first_line or type(error).__name__}"


def cli_actor() -> str:
    """Who runs the command, for the audit trail: $USER, else the login name, else "cli"."""
    name = os.environ.get("USER")
    if not name:
        try:
            name = getpass.getuser()
        except (KeyError, OSError):
            name = ""
    return (name or "cli")[:64]


async def _with_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    engine = new_engine(settings)
    try:
        await check_database(engine, settings)
        async with new_sessionmaker(engine)() as session:
            return await work(session)
    finally:
        await engine.dispose()


def run_in_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run ``work`` in one session on a checked (and, for the embedded default, migrated) database.

    Raises DatabaseError with a one-line message; callers turn it into exit code 1.
    """
    return asyncio.run(_with_session(settings, work))


__all__ = [
    "DatabaseError",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "SQLAlchemyError",
    "cli_actor",
    "database_refusal",
    "fail",
    "run_in_session",
]
