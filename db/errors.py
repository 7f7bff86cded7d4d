"""What a database error means: the one place that tells a lost connection from refused data.

The console, the ingest server and the command-line tools ask here instead of sorting driver
exception classes themselves: :func:`is_connection_error` (the database is away: wait, retry,
say so), :func:`is_refused_data` (the database refused these rows: retrying cannot help), and
:func:`describe_database_error`, the one line a person reads, never a statement or a secret.
"""

from __future__ import annotations

import errno
import re

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError, OperationalError

from db.settings import Settings, sqlite_file


class DatabaseError(RuntimeError):
    """The database cannot be used; the message is one line a person can act on."""


class DatabaseUnavailable(DatabaseError):
    """The database server cannot be reached."""


class SchemaNotMigrated(DatabaseError):
    """The database is reachable but its schema is not at the newest revision."""


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


#: Exception class names (anywhere in the cause chain) that mean the connection is gone; asyncpg's
#: classes are named rather than imported so that this module does not need the driver.
_CONNECTION_ERROR_NAMES = {
    "ConnectionDoesNotExistError",
    "AdminShutdownError",
    "CannotConnectNowError",
    "ConnectionFailureError",
    "ConnectionRejectionError",
    "InterfaceError",
}


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


def sqlstate(error: BaseException) -> str | None:
    """PostgreSQL's SQLSTATE of ``error``, wherever SQLAlchemy or asyncpg put it; None if it has none."""
    reason = getattr(error, "orig", None) or error
    for candidate in (error, reason, reason.__cause__, error.__cause__):
        state = getattr(candidate, "sqlstate", None)
        if isinstance(state, str):
            return state
    return None


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
    if sqlstate(error) in _PG_NOT_REACHED:
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
    state = sqlstate(error)
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
        folder = sqlite_file(settings.url)
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


def is_connection_error(error: BaseException) -> bool:
    """Whether ``error`` means the database cannot be reached (as opposed to a bug or bad input)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(
            seen, DatabaseError | OSError | TimeoutError | ConnectionError | OperationalError | InterfaceError
        ):
            return True
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
        if type(seen).__name__ in _CONNECTION_ERROR_NAMES:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def is_refused_data(error: BaseException) -> bool:
    """True if the database refused the data (not the connection): retrying the same rows cannot help."""
    if isinstance(error, IntegrityError | DataError):
        return True
    state = sqlstate(error)
    return state is not None and state[:2] in {"22", "23"}
