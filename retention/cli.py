"""The retention cleanup's command line: arguments, one run of :func:`db.retention.run_retention`, output.

``cleanup_logs.py`` (cron) and ``aifw-cleanup`` call :func:`main`. It cleans every organisation
(or one, ``--organization``), or only counts (``--dry-run``). Each output line starts with a UTC
timestamp, for the log file; ``--json`` prints one machine-readable summary instead. A progress
line is shown on long runs only when standard output is a terminal. SIGINT and SIGTERM stop the
run between two batches (what was deleted stays deleted; the run is recorded as cancelled).

Exit codes (:mod:`db.cli`): 0 done, 1 failed (an organisation failed, the database is unreachable,
another cleanup is running, or interrupted), 2 bad arguments (unknown organisation, bad setting).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.exc import DBAPIError

from db.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from db.engine import check_database, new_engine, new_sessionmaker
from db.errors import DatabaseError, describe_database_error, error_reason
from db.identifiers import visible
from db.retention import (
    DEFAULT_BATCH_SIZES,
    FAILED,
    SUCCEEDED,
    OrganizationCleanup,
    RetentionAlreadyRunning,
    RetentionSummary,
    UnknownOrganization,
    run_retention,
)
from db.rights import Actor
from db.settings import OneLineArgumentParser, Settings, SettingsError, load_settings
from db.wording import counted

#: Progress lines appear only after a run has gone on this long, and at most this often.
PROGRESS_AFTER_SECONDS = 1.0
PROGRESS_EVERY_SECONDS = 0.5


def stamp(moment: datetime | None = None) -> str:
    """A UTC timestamp for the start of a log line (or for a cutoff)."""
    if moment is None:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number; got {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1; got {raw!r}")
    return value


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds; got {raw!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds; got {raw!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="cleanup_logs.py",
        description=(
            "Delete logs older than each organisation's log_retention_days "
            "(organisations without a configuration: 90 days)."
        ),
        epilog="Exit codes: 0 done, 1 failed, 2 bad arguments. Settings come from DATABASE_URL.",
    )
    parser.add_argument("--organization", metavar="ID", help="clean only this organisation")
    parser.add_argument("--dry-run", action="store_true", help="count what would be deleted; delete nothing")
    parser.add_argument("--json", action="store_true", help="print one JSON summary instead of text lines")
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help="rows per delete transaction (default {postgresql} on PostgreSQL, {sqlite} on SQLite)".format(
            **DEFAULT_BATCH_SIZES
        ),
    )
    parser.add_argument(
        "--wait",
        type=_seconds,
        metavar="SECONDS",
        help="if another cleanup is running, wait up to SECONDS for it instead of exiting with 1",
    )
    return parser


class TextReport:
    """Text output: one timestamped line per organisation, and a progress line on a terminal."""

    def __init__(self, *, dry_run: bool, interactive: bool) -> None:
        self.dry_run = dry_run
        self.interactive = interactive
        self.started = time.monotonic()
        self.last_progress = 0.0
        self.progress_shown = False

    def line(self, text: str) -> None:
        # Lines quote organisation ids and error messages from the database: controls are shown, not sent.
        self._clear_progress()
        print(f"{stamp()} {visible(text)}", flush=True)

    def _clear_progress(self) -> None:
        if self.progress_shown:
            sys.stdout.write("\r\033[K")
            self.progress_shown = False

    def progress(self, organization_id: str, rows: int) -> None:
        if not self.interactive or self.dry_run:
            return
        now = time.monotonic()
        if now - self.started < PROGRESS_AFTER_SECONDS or now - self.last_progress < PROGRESS_EVERY_SECONDS:
            return
        self.last_progress = now
        deleted = counted(rows, "row")
        sys.stdout.write(f"\r\033[K{stamp()} {visible(organization_id)}: {deleted} deleted so far...")
        sys.stdout.flush()
        self.progress_shown = True

    def result(self, result: OrganizationCleanup) -> None:
        default = "" if result.has_config else " (default)"
        retention = f"retention {counted(result.retention_days, 'day')}{default}"
        verb = "would delete" if result.dry_run else "deleted"
        where = f"{result.organization_id}: {retention}, cutoff {stamp(result.cutoff)}"
        if result.held and result.log_cutoff is not None:
            where += f" (logs held back to {stamp(result.log_cutoff)} for forwarding)"
        if result.status == SUCCEEDED:
            self.line(f"{where}, {verb} {counted(result.rows, 'row')}{_also(result)}")
        elif result.status == FAILED:
            self.line(f"{where}, FAILED after {counted(result.rows, 'row')} deleted: {result.error}")
        else:
            self.line(f"{where}, {result.status.upper()} after {counted(result.rows, 'row')} deleted")

    def summary(self, summary: RetentionSummary) -> None:
        seconds = (summary.finished_at - summary.started_at).total_seconds()
        failed = sum(1 for result in summary.results if result.status == FAILED)
        verb = "would be deleted" if summary.dry_run else "deleted"
        tail = f", {failed} failed" if failed else ""
        undelivered = sum(result.undelivered_expired for result in summary.results)
        if undelivered:
            tail += f", {undelivered:,} of them undelivered to forwarding"
        self.line(
            f"{summary.status}: {counted(len(summary.results), 'organisation')}, "
            f"{counted(summary.total_rows, 'row')} {verb}{tail}, in {seconds:.1f} s"
        )


def _also(result: OrganizationCleanup) -> str:
    """What the line adds after the logs: undelivered logs expired, alerts and dead letters deleted."""
    parts = []
    if result.undelivered_expired:
        parts.append(
            f"{result.undelivered_expired:,} of them never received by a forwarding destination "
            "(FORWARD_HOLD_DAYS ran out)"
        )
    records = (
        (result.alerts_deleted, "alert"),
        (result.alert_changes_deleted, "alert change"),
        (result.dead_letters_deleted, "dead letter"),
    )
    named = [counted(count, name) for count, name in records if count]
    if named:
        parts.append(", ".join(named))
    return "".join(f"; {part}" for part in parts)


def _asks_for_json(arguments: Sequence[str]) -> bool:
    """Whether the command line asks for --json (or a prefix argparse accepts), even if it is wrong."""
    return any(len(word) >= 3 and "--json".startswith(word) for word in arguments)


def _error(message: str, *, as_json: bool, code: int, status: str) -> int:
    if as_json:
        print(json.dumps({"status": status, "error": message}))
    print(f"{stamp()} error: {visible(message)}", file=sys.stderr, flush=True)
    return code


async def clean(args: argparse.Namespace, settings: Settings) -> int:
    """Run the cleanup the arguments ask for; return the exit code."""
    report = TextReport(dry_run=args.dry_run, interactive=sys.stdout.isatty() and not args.json)
    cancel = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, cancel.set)
    engine = new_engine(settings)
    try:
        await check_database(engine, settings)
        if not args.json:
            scope = f"organisation {args.organization}" if args.organization else "all organisations"
            mode = ", dry run" if args.dry_run else ""
            report.line(f"retention cleanup started: {scope}, {settings.describe_database()}{mode}")
        summary = await run_retention(
            sessions=new_sessionmaker(engine),
            actor=Actor.cli(),  # audited by run_retention, per organisation, as it goes
            organization_id=args.organization,
            dry_run=args.dry_run,
            batch_size=args.batch_size,
            progress=None if args.json else report.progress,
            on_result=None if args.json else report.result,
            cancel=cancel,
            wait=args.wait is not None,
            wait_timeout=args.wait,
            forward_hold_days=settings.dispatch.forward_hold_days,
        )
    except UnknownOrganization as error:
        return _error(str(error), as_json=args.json, code=EXIT_USAGE, status="usage_error")
    except RetentionAlreadyRunning as error:
        return _error(str(error), as_json=args.json, code=EXIT_FAILED, status="already_running")
    except DatabaseError as error:
        return _error(str(error), as_json=args.json, code=EXIT_FAILED, status="database_error")
    except (DBAPIError, OSError) as error:  # a refusal (read-only), or the connection went away
        message = describe_database_error(settings, error)
        return _error(message, as_json=args.json, code=EXIT_FAILED, status="database_error")
    finally:
        await engine.dispose()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    if args.json:
        print(json.dumps({**summary.as_dict(), "database": settings.describe_database()}, indent=2))
    else:
        report.summary(summary)
    return EXIT_OK if summary.status == SUCCEEDED else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python cleanup_logs.py`` and ``aifw-cleanup``."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(arguments)
        settings = load_settings()
    except SettingsError as error:  # a bad argument (UsageError) or setting: JSON still, if asked for
        return _error(str(error), as_json=_asks_for_json(arguments), code=EXIT_USAGE, status="usage_error")
    try:
        return asyncio.run(clean(args, settings))
    except Exception as error:  # the last line of defence: one line on stderr, never a traceback
        # error_reason: SQLAlchemy's message would carry the statement (its column names, hashes' included).
        message = error_reason(error)
        return _error(
            f"{type(error).__name__}: {message}", as_json=args.json, code=EXIT_FAILED, status="failed"
        )
