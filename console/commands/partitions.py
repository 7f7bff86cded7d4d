"""``partitions``: the weekly partitions of log_entries on PostgreSQL (docs/partitions.md).

``partitions status`` lists every partition with its bounds, the planner's row
estimate and its size on disk, and any table of a partition's name that is not
attached (left by an interrupted step, or not ours). ``partitions maintain`` runs
the maintenance now, as the ingest server does hourly: it finishes interrupted
detaches and creates the weeks ahead. On SQLite both say there is nothing to do.
"""

from __future__ import annotations

import argparse

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from db.cli import EXIT_FAILED, EXIT_OK, DatabaseError, fail, run_in_session
from db.partitions import MaintenanceReport, PartitionInfo, list_partitions, maintain_partitions
from db.settings import Settings
from db.wording import counted

NOT_PARTITIONED = "log_entries is not partitioned on SQLite: nothing to list or maintain"


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser("partitions", help="list or maintain the weekly partitions of the logs")
    actions = parser.add_subparsers(dest="partitions_command", metavar="ACTION", required=True)
    status = actions.add_parser("status", help="list partitions with bounds, estimated rows and size")
    status.set_defaults(handler=run_status)
    maintain = actions.add_parser(
        "maintain", help="finish interrupted detaches and create the weeks ahead, now"
    )
    maintain.set_defaults(handler=run_maintain)


def _engine_of(session: AsyncSession) -> AsyncEngine:
    bind = session.bind
    if not isinstance(bind, AsyncEngine):
        raise TypeError("the session is not bound to an engine")
    return bind


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    async def work(session: AsyncSession) -> list[PartitionInfo] | None:
        if not settings.is_postgresql:
            return None
        return await list_partitions(await session.connection())

    try:
        partitions = run_in_session(settings, work)
    except DatabaseError as error:
        return fail(str(error), code=EXIT_FAILED)
    if partitions is None:
        print(NOT_PARTITIONED)
        return EXIT_OK
    for line in describe_partitions(partitions):
        print(line)
    return EXIT_OK


def run_maintain(args: argparse.Namespace, settings: Settings) -> int:
    async def work(session: AsyncSession) -> MaintenanceReport:
        return await maintain_partitions(_engine_of(session))

    try:
        report = run_in_session(settings, work)
    except DatabaseError as error:
        return fail(str(error), code=EXIT_FAILED)
    print(NOT_PARTITIONED if not settings.is_postgresql else report.summary())
    return EXIT_FAILED if report.postponed else EXIT_OK


def _size(size_bytes: int) -> str:
    value = float(size_bytes)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def describe_partitions(partitions: list[PartitionInfo]) -> list[str]:
    """One line per partition: name, range (UTC), estimated rows, size, state."""
    header = f"{'partition':<24} {'from (UTC)':<16} {'to (UTC)':<16} {'rows (est.)':>12} {'size':>10}  state"
    lines = [header]
    for info in partitions:
        lower = "MINVALUE" if info.lower is None else f"{info.lower:%Y-%m-%d %H:%M}"
        upper = "?" if info.upper is None else f"{info.upper:%Y-%m-%d %H:%M}"
        rows = "unknown" if info.row_estimate < 0 else f"{info.row_estimate:,}"
        lines.append(
            f"{info.name:<24} {lower:<16} {upper:<16} {rows:>12} {_size(info.size_bytes):>10}  {info.state}"
        )
    total = sum(info.size_bytes for info in partitions)
    lines.append(f"{counted(len(partitions), 'table')}, {_size(total)}")
    return lines
