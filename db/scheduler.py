"""The retention scheduler: an APScheduler job that cleans all organisations every N hours.

The ingest server and the console each call :func:`maybe_start_retention_scheduler`
inside their running event loop; with ``ENABLE_RETENTION_SCHEDULER`` false it
returns None and nothing is scheduled. The job is an interval job with
``coalesce=True`` and ``max_instances=1``: missed runs collapse into one, a run
never overlaps itself, and two processes never clean at once because each run
takes the retention lock (a run that finds it held is logged and skipped; the
other process is doing the work).

Spacing survives restarts: the first run comes shortly after start only if the
last successful scheduled run (from ``retention_runs``) is at least one interval
old; otherwise the job moves itself to one interval after that run. A process
restarted daily therefore still cleans daily, and a console opened ten times
an hour does not clean ten times.

A failed run is logged here and recorded per organisation by :mod:`db.retention`;
the job stays scheduled, so the next run still happens.

The partition maintainer (:func:`run_partition_maintainer`) is a plain loop, not a job:
the ingest server runs it at start and about hourly, whatever the retention settings,
because without the weeks ahead the server could not store what it accepts. Several
servers may run it; the advisory lock in :mod:`db.partitions` lets one work at a time.

So is the keeper of the overview's sums (:func:`run_overview_sums_keeper`): shortly after start and
a few seconds after each turn of the hour it reads the overview's timeline and top lists over their
closed hours once for every console (:func:`db.overview.store_closed_sums`). A second server finds
them made and skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

from apscheduler.job import Job
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db.base import utcnow
from db.overview import store_closed_sums
from db.partitions import maintain_partitions
from db.retention import (
    DEFAULT_FORWARD_HOLD_DAYS,
    SCHEDULER_TRIGGER,
    RetentionAlreadyRunning,
    RetentionSummary,
    last_run_started,
    run_retention,
)
from db.settings import Settings

logger = logging.getLogger("aifw.retention.scheduler")

JOB_ID = "retention-cleanup"
TRIGGER = SCHEDULER_TRIGGER
#: Delay before the first run after start when a run is due, so start-up is never slowed by a cleanup.
STARTUP_DELAY_SECONDS = 30.0
#: A run that could not start on time (busy or suspended process) still runs if at most this late.
MAX_MISFIRE_GRACE_SECONDS = 3600
#: How long shutdown() waits for a running cleanup to stop after its current batch.
SHUTDOWN_GRACE_SECONDS = 10.0
#: How often the ingest server runs the partition maintenance: partitions exist two weeks ahead
#: (db.partition_layout.AHEAD), so an hour leaves hundreds of missed runs of slack.
PARTITION_MAINTENANCE_SECONDS = 3600.0

partition_logger = logging.getLogger("aifw.partitions.maintainer")

#: How long after the hour turns the overview's sums are made: events of the hour just closed that
#: are still in a batch being committed get in. A console that asks before sums the rollups itself.
OVERVIEW_SUMS_DELAY_SECONDS = 10.0

overview_logger = logging.getLogger("aifw.overview.sums")


class RetentionScheduler:
    """A started retention schedule; ``await shutdown()`` stops it and any run in progress."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        interval_seconds: float,
        startup_delay_seconds: float = STARTUP_DELAY_SECONDS,
        forward_hold_days: int = DEFAULT_FORWARD_HOLD_DAYS,
    ) -> None:
        if interval_seconds <= 0:
            raise ValueError(f"the retention interval must be positive; got {interval_seconds}")
        self._sessions = sessions
        self._interval = timedelta(seconds=interval_seconds)
        self._startup_delay = max(0.0, startup_delay_seconds)
        self._forward_hold_days = forward_hold_days
        self._scheduler = AsyncIOScheduler(timezone="UTC")
        self._job: Job | None = None
        self._cancel = asyncio.Event()
        self._current: asyncio.Task[None] | None = None
        self._runs_finished = 0
        self._finished = asyncio.Condition()
        #: The summary of the newest run that completed, and the error of the newest that did not.
        self.last_summary: RetentionSummary | None = None
        self.last_error: str | None = None

    @property
    def interval_hours(self) -> float:
        return self._interval.total_seconds() / 3600

    @property
    def next_run_time(self) -> datetime | None:
        """When the job runs next (UTC), or None once shut down."""
        if self._job is None or not self._scheduler.running:
            return None
        return self._job.next_run_time

    @property
    def running(self) -> bool:
        """True while a cleanup started by this scheduler is in progress."""
        return self._current is not None and not self._current.done()

    @property
    def runs_finished(self) -> int:
        """How many job executions have ended (run, skipped or failed) since start."""
        return self._runs_finished

    def start(self) -> None:
        """Schedule the job; must be called with the event loop running."""
        seconds = self._interval.total_seconds()
        first_run = utcnow() + timedelta(seconds=min(seconds, self._startup_delay))
        self._job = self._scheduler.add_job(
            self._run_job,
            IntervalTrigger(seconds=seconds, timezone="UTC"),
            id=JOB_ID,
            name="retention cleanup of all organisations",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=int(max(1, min(seconds, MAX_MISFIRE_GRACE_SECONDS))),
            next_run_time=first_run,
        )
        self._scheduler.start()
        logger.info(
            "retention scheduler started: every %.4g hours, first check at %s",
            self.interval_hours,
            first_run.isoformat(timespec="seconds"),
        )

    async def wait_for_runs(self, count: int) -> None:
        """Wait until at least ``count`` job executions have ended since start (for tests and tools)."""
        async with self._finished:
            await self._finished.wait_for(lambda: self._runs_finished >= count)

    async def _due_time(self) -> datetime | None:
        async with self._sessions() as session:
            last = await last_run_started(session, trigger=TRIGGER)
        return None if last is None else last + self._interval

    async def _run_job(self) -> None:
        self._current = asyncio.current_task()
        try:
            due = await self._due_time()
            if due is not None and due > utcnow() + timedelta(seconds=1):
                if self._job is not None:
                    self._job.modify(next_run_time=due)
                logger.info("retention cleanup not due yet: the last scheduled run was within the interval")
                return
            # No actor: a scheduled run is the operators' standing setting, recorded in retention_runs only.
            summary = await run_retention(
                sessions=self._sessions,
                actor=None,
                cancel=self._cancel,
                forward_hold_days=self._forward_hold_days,
            )
        except RetentionAlreadyRunning as error:
            logger.info("retention cleanup skipped: %s", error)
        except Exception as error:
            self.last_error = " ".join(str(error).split()) or type(error).__name__
            logger.exception("retention cleanup failed; the next run is still scheduled")
        else:
            self.last_summary = summary
            self.last_error = None
            failed = [result for result in summary.results if result.error]
            for result in failed:
                logger.error("retention cleanup of %s failed: %s", result.organization_id, result.error)
            logger.info(
                "retention cleanup %s: %d organisations, %d rows deleted",
                summary.status,
                len(summary.results),
                summary.total_rows,
            )
            for result in summary.results:
                if result.undelivered_expired:
                    logger.warning(
                        "retention cleanup of %s deleted %d events a forwarding destination had not "
                        "received (FORWARD_HOLD_DAYS ran out)",
                        result.organization_id,
                        result.undelivered_expired,
                    )
        finally:
            self._current = None
            async with self._finished:
                self._runs_finished += 1
                self._finished.notify_all()

    async def shutdown(self) -> None:
        """Stop scheduling; ask a running cleanup to stop after its batch and wait for it briefly."""
        self._cancel.set()
        current = self._current
        if current is not None and not current.done():
            try:
                await asyncio.wait_for(asyncio.shield(current), SHUTDOWN_GRACE_SECONDS)
            except (TimeoutError, asyncio.CancelledError):
                logger.warning("retention cleanup did not stop in time; cancelling it")
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
            # AsyncIOScheduler shuts down via call_soon; let that callback run.
            await asyncio.sleep(0)
        self._job = None


def start_retention_scheduler(
    sessions: async_sessionmaker[AsyncSession],
    *,
    interval_hours: float | None = None,
    seconds: float | None = None,
    forward_hold_days: int = DEFAULT_FORWARD_HOLD_DAYS,
) -> RetentionScheduler:
    """Start a retention schedule in the running event loop, every ``interval_hours`` (or ``seconds``)."""
    if seconds is None:
        if interval_hours is None:
            raise ValueError("give interval_hours or seconds")
        seconds = interval_hours * 3600
    scheduler = RetentionScheduler(sessions, interval_seconds=seconds, forward_hold_days=forward_hold_days)
    scheduler.start()
    return scheduler


def maybe_start_retention_scheduler(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    *,
    seconds: float | None = None,
) -> RetentionScheduler | None:
    """Start the schedule if ENABLE_RETENTION_SCHEDULER is true, else return None.

    Call it with the event loop running (from an ``async`` function or ``on_mount``).
    ``seconds`` overrides RETENTION_CLEANUP_INTERVAL_HOURS (tests use a short interval).
    """
    if not settings.enable_retention_scheduler:
        return None
    return start_retention_scheduler(
        sessions,
        interval_hours=settings.retention_cleanup_interval_hours,
        seconds=seconds,
        forward_hold_days=settings.dispatch.forward_hold_days,
    )


async def run_partition_maintainer(
    engine: AsyncEngine, stop: asyncio.Event, *, interval: float = PARTITION_MAINTENANCE_SECONDS
) -> None:
    """Run :func:`db.partitions.maintain_partitions` now and then every ``interval`` seconds until
    ``stop`` is set; returns at once on SQLite. A failed run is logged and the loop goes on; the
    maintenance never blocks ingest (see db/partitions.py), so it can run beside it.

    Start it as a task and set ``stop`` at shutdown (or cancel the task: it ends between steps).
    """
    if engine.dialect.name != "postgresql":
        return
    while not stop.is_set():
        try:
            report = await maintain_partitions(engine)
        except Exception:
            partition_logger.exception("partition maintenance failed; it runs again in %.0f s", interval)
        else:
            level = logging.WARNING if report.postponed or report.left_alone else logging.INFO
            partition_logger.log(level, "%s", report.summary())
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except TimeoutError:
            pass


async def run_overview_sums_keeper(
    sessions: async_sessionmaker[AsyncSession],
    stop: asyncio.Event,
    *,
    first_delay: float = STARTUP_DELAY_SECONDS,
    delay: float = OVERVIEW_SUMS_DELAY_SECONDS,
) -> None:
    """Make the overview's sums of closed hours ``first_delay`` seconds after start (start-up is not
    slowed) and :data:`OVERVIEW_SUMS_DELAY_SECONDS` after each turn of the hour, until ``stop`` is set.
    A failure is logged and the loop goes on (consoles then sum the rollups themselves)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), first_delay)
    while not stop.is_set():
        started = utcnow()
        try:
            made = await store_closed_sums(sessions, now=started)
        except Exception:
            overview_logger.exception("summing the overview's closed hours failed; it is tried next hour")
        else:
            if made:
                overview_logger.info(
                    "overview sums of the hours before %s made in %.0f ms",
                    started.strftime("%H:00"),
                    (utcnow() - started).total_seconds() * 1000,
                )
        next_hour = started.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        wait = (next_hour - utcnow()).total_seconds() + delay
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(wait, delay))
