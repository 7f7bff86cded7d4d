"""One retention cleanup at a time, across processes, on either engine.

PostgreSQL: a session-level ``pg_try_advisory_lock`` on a dedicated connection,
and the run does **all** its work on that same connection (the lock yields a
sessionmaker bound to it; the lock persists across its transactions). If the
connection goes (the process dies, ``pg_terminate_backend``, a network cut),
the lock goes with it *and* so does the backend that deletes: no batch can run
without the lock. SQLAlchemy would quietly reconnect an invalidated connection
on its next use; a guard on the connection refuses any statement on another
backend than the one holding the lock (:class:`LostRetentionLock`), and
:attr:`HeldLock.lost` tells the run to stop. The connection turns off
``idle_session_timeout`` for itself, so the server does not end it (and the lock)
while the run is between statements, for instance in a slow progress callback.

SQLite: an exclusive, non-blocking ``fcntl.flock`` on a sidecar file next to the
database (``<db file>.retention.lock``). flock locks belong to the open file, so
two engines in one process exclude each other as two processes do, and the
kernel releases the lock when the process dies. An in-memory database has no
file; it gets a process-local lock, which is all it can be shared with. The run
works through the engine's own sessions there: SQLite has one writer at a time anyway.

Both forms either fail at once with :class:`RetentionAlreadyRunning` (the
default) or, with ``wait=True``, poll until the lock is free (or ``wait_timeout``).
Polling, not a blocking call, so the waiting task stays cancellable.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from db.settings import sqlite_file

#: The advisory lock key: a fixed 64-bit number derived from a name, so it never
#: collides with another application's keys by accident. Per database, as advisory locks are.
ADVISORY_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"ai-usage-firewall.retention").digest()[:8], "big", signed=True
)
LOCK_FILE_SUFFIX = ".retention.lock"
POLL_SECONDS = 0.25
LOST_LOCK_MESSAGE = "lost the database connection holding the retention lock"

# Server-side timeouts that would end the lock's connection while it waits between statements
# (only those this server knows: idle_session_timeout is PostgreSQL 14+).
_KEEP_CONNECTION = text(
    "SELECT set_config(name, '0', false) FROM pg_settings "
    "WHERE name IN ('idle_session_timeout', 'idle_in_transaction_session_timeout')"
)

_process_locks: set[str] = set()
_process_locks_guard = threading.Lock()


class RetentionAlreadyRunning(RuntimeError):
    """Another retention cleanup holds the lock; this one did nothing."""

    def __init__(self, message: str = "a retention cleanup is already running") -> None:
        super().__init__(message)


class LostRetentionLock(RuntimeError):
    """The connection holding the retention lock is gone; nothing more may run on its behalf."""

    def __init__(self) -> None:
        super().__init__(LOST_LOCK_MESSAGE)


@dataclass
class HeldLock:
    """The retention lock, held: ``sessions`` is where the run does all its work.

    On PostgreSQL ``sessions`` is bound to the connection that holds the lock, so
    every transaction of the run happens on the backend holding it; ``lost``
    becomes true once that connection has gone. On SQLite it is a sessionmaker
    of the engine and ``lost`` stays false.
    """

    sessions: async_sessionmaker[AsyncSession]
    connection: AsyncConnection | None = None
    _lost: bool = field(default=False, repr=False)

    @property
    def lost(self) -> bool:
        """Whether the lock's connection has gone (and with it the lock)."""
        if self.connection is None:
            return False
        return self._lost or self.connection.invalidated or self.connection.closed

    def _guard(self, sync_connection: Connection) -> None:
        """Refuse every statement that would run on another backend than the one holding the lock."""
        holder = sync_connection.connection.dbapi_connection

        def same_backend(connection: Connection, *_: Any) -> None:
            if connection.connection.dbapi_connection is not holder:
                self._lost = True
                raise LostRetentionLock()

        event.listen(sync_connection, "before_cursor_execute", same_backend)


def lock_file_path(engine: AsyncEngine) -> Path | None:
    """Where the SQLite sidecar lock file lives, or None for PostgreSQL or an in-memory database."""
    if engine.dialect.name != "sqlite":
        return None
    database = sqlite_file(engine.url)  # a file: URI (?mode=ro&uri=true) names its file after "file:"
    if database is None:
        return None
    path = database.resolve()
    return path.with_name(path.name + LOCK_FILE_SUFFIX)


@dataclass(frozen=True)
class _Waiting:
    """How to behave while the lock is held elsewhere."""

    wait: bool
    deadline: float | None
    cancel: asyncio.Event | None

    async def pause_or_raise(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise RetentionAlreadyRunning("stopped waiting: a retention cleanup is already running")
        if not self.wait or (self.deadline is not None and time.monotonic() >= self.deadline):
            raise RetentionAlreadyRunning()
        await asyncio.sleep(POLL_SECONDS)


async def _try_advisory_lock(connection: AsyncConnection) -> bool:
    # Each attempt is its own short transaction: the lock is session-level and outlives it, and the
    # connection never sits idle in a transaction (nor lends one to the run's sessions).
    locked = bool(
        await connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
    )
    await connection.commit()
    return locked


@asynccontextmanager
async def _postgres_lock(engine: AsyncEngine, waiting: _Waiting) -> AsyncIterator[HeldLock]:
    connection: AsyncConnection = await engine.connect()
    held: HeldLock | None = None
    try:
        while not await _try_advisory_lock(connection):
            await waiting.pause_or_raise()
        held = HeldLock(
            sessions=async_sessionmaker(connection, expire_on_commit=False), connection=connection
        )
        held._guard(connection.sync_connection)  # type: ignore[arg-type]
        await connection.execute(_KEEP_CONNECTION)
        await connection.commit()
        yield held
    finally:
        await _release(connection, held)


async def _release(connection: AsyncConnection, held: HeldLock | None) -> None:
    """Unlock and return the connection to the pool, or, if that cannot be done cleanly, drop it.

    Dropping the connection releases a session-level lock for sure, so nothing is
    raised for a lock that went with its connection: there is nothing left to release.
    """
    clean = held is None  # never locked: the connection only asked, and can go back as it is
    try:
        if held is not None and not held.lost:
            if connection.in_transaction():
                await connection.rollback()
            await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
            await connection.commit()
            clean = True
    except Exception:
        pass  # unsure whether the unlock happened: the connection is dropped below, which releases it
    finally:
        if not clean:
            await connection.invalidate()
        await connection.close()


def _try_flock(descriptor: int) -> bool:
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@asynccontextmanager
async def _file_lock(path: Path, waiting: _Waiting) -> AsyncIterator[None]:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        while not _try_flock(descriptor):
            await waiting.pause_or_raise()
        # Who holds it, for a person looking at the file; the lock itself is the flock.
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"pid {os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def _try_process_lock(name: str) -> bool:
    with _process_locks_guard:
        if name in _process_locks:
            return False
        _process_locks.add(name)
        return True


@asynccontextmanager
async def _process_lock(name: str, waiting: _Waiting) -> AsyncIterator[None]:
    while not _try_process_lock(name):
        await waiting.pause_or_raise()
    try:
        yield
    finally:
        with _process_locks_guard:
            _process_locks.discard(name)


@asynccontextmanager
async def retention_lock(
    engine: AsyncEngine,
    *,
    wait: bool = False,
    wait_timeout: float | None = None,
    cancel: asyncio.Event | None = None,
) -> AsyncIterator[HeldLock]:
    """Hold the retention lock of this database for the ``async with`` block; yield where to work.

    Everything the holder does must go through the yielded :attr:`HeldLock.sessions`
    (see the module docstring); records that must survive a lost lock are written
    through the engine's own pool instead.

    Raises :class:`RetentionAlreadyRunning` if another cleanup holds it and
    ``wait`` is false, or if ``wait`` is true and ``wait_timeout`` seconds pass first
    or ``cancel`` is set.
    """
    deadline = None if wait_timeout is None else time.monotonic() + wait_timeout
    waiting = _Waiting(wait=wait, deadline=deadline, cancel=cancel)
    if engine.dialect.name == "postgresql":
        async with _postgres_lock(engine, waiting) as held:
            yield held
        return
    path = lock_file_path(engine)
    lock = _process_lock(str(engine.url), waiting) if path is None else _file_lock(path, waiting)
    async with lock:
        yield HeldLock(sessions=async_sessionmaker(engine, expire_on_commit=False))
