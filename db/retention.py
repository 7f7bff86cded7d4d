"""Log retention: delete each organisation's logs older than its ``log_retention_days``.

One run covers one organisation or all of them. "All" means every organisation
with a config row *and* every organisation that has logs, so logs of an
organisation without a config row follow the default retention instead of
being kept forever by omission.

A run computes ``now`` once, in UTC; each organisation's cutoff is
``now - log_retention_days`` and a log is expired when ``timestamp < cutoff``
(a log exactly at the cutoff stays). Deletes go in bounded batches, each its own
short transaction that walks ``idx_org_timestamp`` from where the last batch
stopped, so a run over millions of rows never holds a long lock and can stop
between any two batches without losing anything that should stay. Every
delete repeats the organisation and cutoff in its own ``WHERE`` clause, so no
row outside them can be touched whatever the batch selection returns.

Each organisation of each run gets a :class:`~db.models.RetentionRun` row:
``running`` when it starts, then ``succeeded``, ``failed`` or ``cancelled``. Its
``rows_deleted`` is updated in the same transaction as each batch, so it is
exact even if the process dies. A failure in one organisation is recorded and
the run goes on with the next. Only one run at a time touches a database
(:mod:`db.retention_lock`); dry runs count what would go, delete nothing, and
are recorded with ``dry_run`` true.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, bindparam, func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db.base import UTCDateTime, as_utc, utcnow
from db.configs import ConfigError, validate_retention_days
from db.models import FirewallConfig, LogEntry, RetentionRun
from db.retention_lock import RetentionAlreadyRunning, retention_lock
from db.vocabulary import DEFAULT_RETENTION_DAYS, RETENTION_TRIGGERS

#: Rows per delete transaction: big enough to be efficient, small enough that
#: one batch holds its locks for milliseconds, not seconds.
DEFAULT_BATCH_SIZE = 5000

RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
RETENTION_STATUSES = (RUNNING, SUCCEEDED, FAILED, CANCELLED)

INTERRUPTED_ERROR = "interrupted: the process ended before the run finished"

#: Called after each batch with the organisation and how many rows it has had deleted so far
#: (for a dry run, once, with the count). May be a plain function or a coroutine function.
ProgressCallback = Callable[[str, int], Awaitable[None] | None]
#: Called when an organisation's cleanup has ended, whatever its status.
ResultCallback = Callable[["OrganizationCleanup"], Awaitable[None] | None]

__all__ = [
    "CANCELLED",
    "DEFAULT_BATCH_SIZE",
    "FAILED",
    "RETENTION_STATUSES",
    "RUNNING",
    "SUCCEEDED",
    "OrganizationCleanup",
    "RetentionAlreadyRunning",
    "RetentionPreview",
    "RetentionSummary",
    "UnknownOrganization",
    "count_expired",
    "cutoff_for",
    "delete_expired_batch",
    "recent_runs",
    "retention_preview",
    "run_retention",
]


class UnknownOrganization(LookupError):
    """The organisation has neither a config row nor any logs."""

    def __init__(self, organization_id: str) -> None:
        super().__init__(f"unknown organisation {organization_id!r}: it has no configuration and no logs")
        self.organization_id = organization_id


@dataclass(frozen=True)
class OrganizationCleanup:
    """What a run did for one organisation; ``rows`` were deleted, or would be in a dry run."""

    organization_id: str
    retention_days: int
    cutoff: datetime
    rows: int
    status: str
    error: str | None
    dry_run: bool
    started_at: datetime
    finished_at: datetime
    run_id: uuid.UUID | None
    #: False when the organisation has logs but no config row (so the default retention applied).
    has_config: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "organization_id": self.organization_id,
            "retention_days": self.retention_days,
            "cutoff": self.cutoff.isoformat(),
            "rows": self.rows,
            "status": self.status,
            "error": self.error,
            "dry_run": self.dry_run,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "run_id": str(self.run_id) if self.run_id else None,
            "has_config": self.has_config,
        }


@dataclass(frozen=True)
class RetentionSummary:
    """One run over one or all organisations."""

    trigger: str
    dry_run: bool
    now: datetime
    started_at: datetime
    finished_at: datetime
    results: tuple[OrganizationCleanup, ...]

    @property
    def status(self) -> str:
        """``failed`` if any organisation failed, else ``cancelled`` if any was, else ``succeeded``."""
        statuses = {result.status for result in self.results}
        if FAILED in statuses:
            return FAILED
        if CANCELLED in statuses:
            return CANCELLED
        return SUCCEEDED

    @property
    def total_rows(self) -> int:
        return sum(result.rows for result in self.results)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "trigger": self.trigger,
            "dry_run": self.dry_run,
            "now": self.now.isoformat(),
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "total_rows": self.total_rows,
            "organizations": [result.as_dict() for result in self.results],
        }


@dataclass(frozen=True)
class RetentionPreview:
    """For the console: what a cleanup of this organisation would delete right now."""

    organization_id: str
    retention_days: int
    cutoff: datetime
    rows_to_delete: int
    has_config: bool


def cutoff_for(now: datetime, retention_days: int) -> datetime:
    """The instant before which an organisation's logs are expired."""
    return as_utc(now) - timedelta(days=retention_days)


# --- queries ---------------------------------------------------------------------------------------

_ORGANIZATIONS_WITH_LOGS = text(
    # A loose index scan over idx_org_timestamp: one index probe per organisation
    # instead of reading every row, on both engines.
    """
    WITH RECURSIVE orgs(organization_id) AS (
        SELECT min(organization_id) FROM log_entries
        UNION ALL
        SELECT (SELECT min(l.organization_id) FROM log_entries AS l
                WHERE l.organization_id > orgs.organization_id)
        FROM orgs WHERE orgs.organization_id IS NOT NULL
    )
    SELECT organization_id FROM orgs WHERE organization_id IS NOT NULL
    """
)

_TIMESTAMP_PARAMS = (bindparam("cutoff", type_=UTCDateTime()), bindparam("after", type_=UTCDateTime()))

# PostgreSQL: pick the oldest expired rows of the organisation by index, delete them by ctid
# (a TID scan, no second index lookup), and report how many and the newest timestamp deleted.
_POSTGRES_BATCH = """
    WITH doomed AS (
        SELECT ctid FROM log_entries
        WHERE organization_id = :organization_id AND timestamp < :cutoff {after}
        ORDER BY timestamp
        LIMIT :limit
    ), deleted AS (
        DELETE FROM log_entries
        WHERE ctid = ANY(ARRAY(SELECT ctid FROM doomed))
          AND organization_id = :organization_id AND timestamp < :cutoff
        RETURNING timestamp
    )
    SELECT count(*) AS deleted, max(timestamp) AS last_timestamp FROM deleted
"""

# SQLite: the same by rowid; SQLite cannot aggregate over RETURNING, so timestamps come back.
# The unary + on the repeated predicates keeps SQLite from answering them with
# idx_org_timestamp (a scan of every expired row per batch) instead of rowid lookups.
_SQLITE_BATCH = """
    DELETE FROM log_entries
    WHERE rowid IN (
        SELECT rowid FROM log_entries
        WHERE organization_id = :organization_id AND timestamp < :cutoff {after}
        ORDER BY timestamp
        LIMIT :limit
    )
      AND +organization_id = :organization_id AND +timestamp < :cutoff
    RETURNING timestamp
"""


def _batch_statement(dialect: str, *, with_after: bool) -> Any:
    template = _POSTGRES_BATCH if dialect == "postgresql" else _SQLITE_BATCH
    sql = template.format(after="AND timestamp >= :after" if with_after else "")
    params = _TIMESTAMP_PARAMS if with_after else _TIMESTAMP_PARAMS[:1]
    statement = text(sql).bindparams(*params)
    if dialect == "postgresql":
        return statement.columns(deleted=BigInteger(), last_timestamp=UTCDateTime())
    return statement.columns(timestamp=UTCDateTime())


async def delete_expired_batch(
    *,
    session: AsyncSession,
    organization_id: str,
    cutoff: datetime,
    limit: int,
    after: datetime | None = None,
) -> tuple[int, datetime | None]:
    """Delete up to ``limit`` of the organisation's oldest logs older than ``cutoff``.

    ``after`` (inclusive) lets consecutive batches start where the previous one
    stopped instead of rescanning index entries of rows already deleted.
    Returns how many rows went and the newest timestamp among them. The caller
    owns the transaction.
    """
    dialect = session.get_bind().dialect.name
    statement = _batch_statement(dialect, with_after=after is not None)
    params: dict[str, Any] = {"organization_id": organization_id, "cutoff": cutoff, "limit": limit}
    if after is not None:
        params["after"] = after
    result = await session.execute(statement, params)
    if dialect == "postgresql":
        row = result.one()
        return int(row.deleted), row.last_timestamp
    timestamps = result.scalars().all()
    return len(timestamps), (max(timestamps) if timestamps else None)


async def count_expired(*, session: AsyncSession, organization_id: str, cutoff: datetime) -> int:
    """How many of the organisation's logs are older than ``cutoff``."""
    query = select(func.count()).where(
        LogEntry.organization_id == organization_id, LogEntry.timestamp < cutoff
    )
    return int(await session.scalar(query) or 0)


async def _configured_retention(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(FirewallConfig.organization_id, FirewallConfig.log_retention_days))
    return {organization_id: days for organization_id, days in rows.all()}


async def _organizations_with_logs(session: AsyncSession) -> list[str]:
    return list((await session.scalars(_ORGANIZATIONS_WITH_LOGS)).all())


async def _has_logs(session: AsyncSession, organization_id: str) -> bool:
    query = select(LogEntry.id).where(LogEntry.organization_id == organization_id).limit(1)
    return await session.scalar(query) is not None


async def _retention_plan(session: AsyncSession, organization_id: str | None) -> list[tuple[str, int, bool]]:
    """(organisation, retention days as stored, has a config row) for each organisation to clean."""
    configured = await _configured_retention(session)
    if organization_id is not None:
        if organization_id in configured:
            return [(organization_id, configured[organization_id], True)]
        if await _has_logs(session, organization_id):
            return [(organization_id, DEFAULT_RETENTION_DAYS, False)]
        raise UnknownOrganization(organization_id)
    plan = {org: (org, days, True) for org, days in configured.items()}
    for org in await _organizations_with_logs(session):
        plan.setdefault(org, (org, DEFAULT_RETENTION_DAYS, False))
    return [plan[org] for org in sorted(plan)]


async def retention_preview(session: AsyncSession, *, now: datetime | None = None) -> list[RetentionPreview]:
    """Per organisation: retention, cutoff, and how many logs a cleanup would delete now."""
    now = utcnow() if now is None else as_utc(now)
    previews = []
    for organization_id, days, has_config in await _retention_plan(session, None):
        cutoff = cutoff_for(now, days)
        count = await count_expired(session=session, organization_id=organization_id, cutoff=cutoff)
        previews.append(RetentionPreview(organization_id, days, cutoff, count, has_config))
    return previews


async def recent_runs(session: AsyncSession, limit: int = 50) -> Sequence[RetentionRun]:
    """The newest retention run records, newest first (one per organisation per run)."""
    query = (
        select(RetentionRun)
        .order_by(RetentionRun.started_at.desc(), RetentionRun.organization_id)
        .limit(limit)
    )
    return (await session.scalars(query)).all()


async def last_run_started(session: AsyncSession, *, trigger: str) -> datetime | None:
    """When the newest successful, real (not dry) run of this trigger started, if any."""
    query = select(func.max(RetentionRun.started_at)).where(
        RetentionRun.trigger == trigger, RetentionRun.status == SUCCEEDED, RetentionRun.dry_run.is_(False)
    )
    value = await session.scalar(query)
    return None if value is None else as_utc(value)


# --- running ---------------------------------------------------------------------------------------


def _describe_error(error: BaseException) -> str:
    """One line for the run record and the log: the database's own message when there is one."""
    reason: BaseException = error
    if isinstance(error, DBAPIError) and error.orig is not None:
        reason = error.orig
    message = " ".join(str(reason).split()) or type(reason).__name__
    return message if isinstance(error, ConfigError) else f"{type(reason).__name__}: {message}"


async def _call(callback: Callable[..., Awaitable[None] | None] | None, *args: Any) -> None:
    if callback is None:
        return
    outcome = callback(*args)
    if inspect.isawaitable(outcome):
        await outcome


@dataclass
class _RunRecord:
    """The mutable state of one organisation's cleanup while it runs."""

    run_id: uuid.UUID | None
    organization_id: str
    retention_days: int
    cutoff: datetime
    dry_run: bool
    started_at: datetime
    has_config: bool
    rows: int = 0


async def _start_record(
    sessions: async_sessionmaker[AsyncSession], *, trigger: str, record: _RunRecord
) -> None:
    async with sessions() as session:
        row = RetentionRun(
            organization_id=record.organization_id,
            retention_days=record.retention_days,
            cutoff=record.cutoff,
            rows_deleted=0,
            dry_run=record.dry_run,
            trigger=trigger,
            status=RUNNING,
            started_at=record.started_at,
        )
        session.add(row)
        await session.commit()
        record.run_id = row.id


def _finish_values(status: str, rows: int, error: str | None) -> dict[str, Any]:
    return {"status": status, "rows_deleted": rows, "error": error, "finished_at": utcnow()}


async def _finish_record(
    sessions: async_sessionmaker[AsyncSession], record: _RunRecord, status: str, error: str | None
) -> OrganizationCleanup:
    values = _finish_values(status, record.rows, error)
    if record.run_id is not None:
        async with sessions() as session:
            await session.execute(
                update(RetentionRun).where(RetentionRun.id == record.run_id).values(**values)
            )
            await session.commit()
    return OrganizationCleanup(
        organization_id=record.organization_id,
        retention_days=record.retention_days,
        cutoff=record.cutoff,
        rows=record.rows,
        status=status,
        error=error,
        dry_run=record.dry_run,
        started_at=record.started_at,
        finished_at=values["finished_at"],
        run_id=record.run_id,
        has_config=record.has_config,
    )


async def _delete_batches(
    sessions: async_sessionmaker[AsyncSession],
    record: _RunRecord,
    *,
    batch_size: int,
    progress: ProgressCallback | None,
    cancel: asyncio.Event | None,
) -> str:
    """Delete batch after batch until nothing expired is left; return the final status."""
    after: datetime | None = None
    swept_from_start = False
    while True:
        if cancel is not None and cancel.is_set():
            return CANCELLED
        async with sessions() as session, session.begin():
            deleted, newest = await delete_expired_batch(
                session=session,
                organization_id=record.organization_id,
                cutoff=record.cutoff,
                limit=batch_size,
                after=after,
            )
            if deleted and record.run_id is not None:
                await session.execute(
                    update(RetentionRun)
                    .where(RetentionRun.id == record.run_id)
                    .values(rows_deleted=RetentionRun.rows_deleted + deleted)
                )
        record.rows += deleted
        if deleted:
            await _call(progress, record.organization_id, record.rows)
        if deleted == batch_size:
            after = newest
            continue
        if after is None or swept_from_start:
            return SUCCEEDED
        # One last pass from the start of the index catches rows that arrived
        # behind the walk (late events with old timestamps).
        after, swept_from_start = None, True


async def _clean_organization(
    sessions: async_sessionmaker[AsyncSession],
    *,
    organization_id: str,
    stored_days: int,
    has_config: bool,
    now: datetime,
    trigger: str,
    dry_run: bool,
    batch_size: int,
    progress: ProgressCallback | None,
    cancel: asyncio.Event | None,
) -> OrganizationCleanup:
    record = _RunRecord(
        run_id=None,
        organization_id=organization_id,
        retention_days=stored_days,
        cutoff=cutoff_for(now, stored_days),
        dry_run=dry_run,
        started_at=utcnow(),
        has_config=has_config,
    )
    try:
        await _start_record(sessions, trigger=trigger, record=record)
        # The check constraint should make this impossible; if a value slipped past
        # it, this organisation fails loudly rather than being cleaned with it.
        validate_retention_days(stored_days)
        if cancel is not None and cancel.is_set():
            status = CANCELLED
        elif dry_run:
            async with sessions() as session:
                record.rows = await count_expired(
                    session=session, organization_id=organization_id, cutoff=record.cutoff
                )
            await _call(progress, organization_id, record.rows)
            status = SUCCEEDED
        else:
            status = await _delete_batches(
                sessions, record, batch_size=batch_size, progress=progress, cancel=cancel
            )
    except asyncio.CancelledError:
        await asyncio.shield(
            _finish_record(sessions, record, CANCELLED, "the task running the cleanup was cancelled")
        )
        raise
    except Exception as error:
        return await _finish_record(sessions, record, FAILED, _describe_error(error))
    return await _finish_record(sessions, record, status, None)


async def _fail_interrupted_runs(sessions: async_sessionmaker[AsyncSession]) -> None:
    # Holding the lock means no other run is alive: any "running" record is left from a dead process.
    async with sessions() as session, session.begin():
        await session.execute(
            update(RetentionRun)
            .where(RetentionRun.status == RUNNING)
            .values(status=FAILED, error=INTERRUPTED_ERROR, finished_at=utcnow())
        )


def _engine_of(sessions: async_sessionmaker[AsyncSession]) -> AsyncEngine:
    bind = sessions.kw.get("bind")
    if not isinstance(bind, AsyncEngine):
        raise TypeError("run_retention needs a sessionmaker bound to an AsyncEngine")
    return bind


async def run_retention(
    *,
    sessions: async_sessionmaker[AsyncSession],
    trigger: str,
    organization_id: str | None = None,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressCallback | None = None,
    on_result: ResultCallback | None = None,
    cancel: asyncio.Event | None = None,
    wait: bool = False,
    wait_timeout: float | None = None,
    now: datetime | None = None,
) -> RetentionSummary:
    """Clean one organisation (``organization_id``) or all of them, holding the retention lock.

    Raises :class:`UnknownOrganization` for an organisation with no config and no
    logs, and :class:`RetentionAlreadyRunning` if another run holds the lock (at
    once, or after ``wait_timeout`` seconds when ``wait`` is true). Failures inside
    an organisation do not raise: they are recorded and reported in the summary.
    ``progress`` hears ``(organization_id, rows so far)`` after each batch, ``on_result``
    each organisation's outcome as it ends; ``cancel`` is checked between batches
    (what is left is recorded as cancelled); ``now`` pins the clock (tests).
    """
    if trigger not in RETENTION_TRIGGERS:
        raise ValueError(f"trigger must be one of {', '.join(RETENTION_TRIGGERS)}; got {trigger!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}")
    now = utcnow() if now is None else as_utc(now)
    started_at = utcnow()
    async with retention_lock(_engine_of(sessions), wait=wait, wait_timeout=wait_timeout):
        async with sessions() as session:
            plan = await _retention_plan(session, organization_id)
        await _fail_interrupted_runs(sessions)
        results = []
        for org, stored_days, has_config in plan:
            result = await _clean_organization(
                sessions,
                organization_id=org,
                stored_days=stored_days,
                has_config=has_config,
                now=now,
                trigger=trigger,
                dry_run=dry_run,
                batch_size=batch_size,
                progress=progress,
                cancel=cancel,
            )
            results.append(result)
            await _call(on_result, result)
    return RetentionSummary(
        trigger=trigger,
        dry_run=dry_run,
        now=now,
        started_at=started_at,
        finished_at=utcnow(),
        results=tuple(results),
    )
