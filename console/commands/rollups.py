"""``rollups rebuild`` and ``rollups cap``: recount the overview's rollups from the stored logs; show or set
the cap on distinct keys per bucket.

The database counts every inserted row itself (db/rollups.py); ``rebuild`` is for
counts that drifted anyway (a restore of the rollup tables, rows copied with
counting paused) and recounts every bucket from each organisation's retention
cutoff on, printing a line per bucket as it commits. Both act with the database's
rights and record the operating-system user in an audit row.
"""

from __future__ import annotations

import argparse

from sqlalchemy.ext.asyncio import AsyncSession

from db.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, DatabaseError, fail, run_in_session
from db.identifiers import visible
from db.rights import Actor
from db.rollups import RebuildProgress, RebuildReport, key_cap, rebuild, set_key_cap
from db.settings import Settings
from db.wording import counted


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "rollups", help="the overview's counts: rebuild them from the stored logs, show or set the key cap"
    )
    actions = parser.add_subparsers(dest="rollups_command", metavar="ACTION", required=True)
    rebuilding = actions.add_parser(
        "rebuild",
        help=(
            "recount from the stored logs every bucket that starts at or after each organisation's "
            "retention cutoff (older buckets are kept), one bucket per transaction"
        ),
    )
    rebuilding.add_argument("--organization", metavar="ORG", help="only this organisation (default: all)")
    rebuilding.set_defaults(handler=run_rebuild)
    cap = actions.add_parser(
        "cap",
        help=(
            "show the cap on distinct tools, users or entity types per organisation and bucket "
            "(more count as '(other)'), or set it to N"
        ),
    )
    cap.add_argument("max_keys", metavar="N", type=int, nargs="?", help="the new cap (at least 1)")
    cap.set_defaults(handler=run_cap)


def describe_progress(step: RebuildProgress) -> str:
    """One line per rebuilt bucket."""
    what = "day" if step.grain == "day" else "week of"
    return (
        f"{visible(step.organization_id)}: {what} {step.bucket_start:%Y-%m-%d} rebuilt, "
        f"{counted(step.events, 'event')} ({step.done}/{step.total})"
    )


def describe(report: RebuildReport) -> list[str]:
    """The closing lines: one per organisation, then the total."""
    lines = [
        f"{visible(org.organization_id)}: {counted(org.days, 'day')} and {counted(org.weeks, 'week')} "
        f"rebuilt from {org.cutoff:%Y-%m-%d %H:%M} UTC ({counted(org.retention_days, 'day')} retention), "
        f"{counted(org.events, 'event')}"
        for org in report.organizations
    ]
    if not report.organizations:
        lines.append("nothing to rebuild: no organisation has logs or rollups")
    lines.append("rollups rebuilt (an audit row records it)")
    return lines


def run_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    def progress(step: RebuildProgress) -> None:
        print(describe_progress(step), flush=True)

    async def work(session: AsyncSession) -> RebuildReport:
        return await rebuild(
            session=session, actor=Actor.cli(), organization_id=args.organization, progress=progress
        )

    try:
        report = run_in_session(settings, work)
    except DatabaseError as error:
        return fail(str(error), code=EXIT_FAILED)
    for line in describe(report):
        print(line)
    return EXIT_OK


def run_cap(args: argparse.Namespace, settings: Settings) -> int:
    if args.max_keys is not None and args.max_keys < 1:
        return fail("the cap on distinct keys must be at least 1", code=EXIT_USAGE)

    async def work(session: AsyncSession) -> tuple[int, int]:
        before = await key_cap(session=session)
        if args.max_keys is not None:
            await set_key_cap(session=session, actor=Actor.cli(), max_keys=args.max_keys)
            await session.commit()
        return before, await key_cap(session=session)

    try:
        before, now = run_in_session(settings, work)
    except DatabaseError as error:
        return fail(str(error), code=EXIT_FAILED)
    if args.max_keys is None:
        print(f"rollup key cap: {now:,} distinct keys per organisation, bucket and dimension")
    elif before == now:
        print(f"rollup key cap unchanged: {now:,}")
    else:
        print(f"rollup key cap: {before:,} → {now:,} (new keys of a full bucket count as '(other)')")
    return EXIT_OK
