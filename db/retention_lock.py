"""One retention cleanup at a time, across processes, on either engine.

PostgreSQL: a session-level ``pg_try_advisory_lock`` held on a dedicated
connection (autocommit, so it never sits idle in a transaction) for the whole
run. The server releases it if the process dies, because the connection goes.

SQLite: an exclusive, non-blocking ``fcntl.flock`` on a sidecar file next to the
database (``<db file>.retention.lock``). flock locks belong to the open file, so
two engines in one process exclude each other as two processes do, and the
kernel releases the lock when the process dies. An in-memory database has no
file; it gets a process-local lock, which is all it can be shared with.

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
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

#: The advisory lock key: a fixed 64-bit number derived from a name, so it never
#: collides with another application's keys by accident. Per database, as advisory locks are.
ADVISORY_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"ai-usage-firewall.retention").digest()[:8], "big", signed=True
)
LOCK_FILE_SUFFIX = ".retention.lock"
POLL_SECONDS = 0.25

_process_locks: set[str] = set()
_process_locks_guard = threading.Lock()


class RetentionAlreadyRunning(RuntimeError):
    """Another retention cleanup holds the lock; this one did nothing."""

    def __init__(self, message: str = "a retention cleanup is already running") -> None:
        super().__init__(message)


def lock_file_path(engine: AsyncEngine) -> Path | None:
    """Where the SQLite sidecar lock file lives, or None for PostgreSQL or an in-memory database."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    path = Path(database).expanduser().resolve()
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


@asynccontextmanager
async def _postgres_lock(engine: AsyncEngine, waiting: _Waiting) -> AsyncIterator[None]:
    connection: AsyncConnection = await engine.connect()
    try:
        connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
        key = {"key": ADVISORY_LOCK_KEY}
        while not await connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), key):
            await waiting.pause_or_raise()
        try:
            yield
        finally:
            try:
                await connection.execute(text("SELECT pg_advisory_unlock(:key)"), key)
            except BaseException:
                # Unsure whether the unlock happened: drop the connection, which releases it for sure.
                await connection.invalidate()
                raise
    finally:
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
) -> AsyncIterator[None]:
    """Hold the retention lock of this database for the duration of the ``async with`` block.

    Raises :class:`RetentionAlreadyRunning` if another cleanup holds it and
    ``wait`` is false, or if ``wait`` is true and ``wait_timeout`` seconds pass first
    or ``cancel`` is set.
    """
    deadline = None if wait_timeout is None else time.monotonic() + wait_timeout
    waiting = _Waiting(wait=wait, deadline=deadline, cancel=cancel)
    if engine.dialect.name == "postgresql":
        lock = _postgres_lock(engine, waiting)
    else:
        path = lock_file_path(engine)
        lock = _process_lock(str(engine.url), waiting) if path is None else _file_lock(path, waiting)
    async with lock:
        yield
