"""``scrub``: find, and with ``--apply`` repair, stored rows that today's identifier and metadata rules
refuse.

A dry run by default: it prints what it would change and changes nothing. With
``--apply`` it changes it batch by batch, validates the database's identifier
constraints (PostgreSQL) and records one audit row. What it does to each kind
of row is described in db/scrub.py and docs/admin.md.
"""

from __future__ import annotations

import argparse

from sqlalchemy.ext.asyncio import AsyncSession

from db.cli import EXIT_FAILED, EXIT_OK, DatabaseError, fail, run_in_session
from db.identifiers import visible
from db.rights import Actor
from db.scrub import ScrubReport, scrub
from db.settings import Settings
from db.wording import counted


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "scrub",
        help=(
            "find (dry run) or repair (--apply) stored rows that today's identifier and metadata rules refuse"
        ),
    )
    parser.add_argument("--organization", metavar="ORG", help="only this organisation's rows (default: all)")
    parser.add_argument("--apply", action="store_true", help="change the rows (default: only report them)")
    parser.set_defaults(handler=run_scrub)


def run_scrub(args: argparse.Namespace, settings: Settings) -> int:
    async def work(session: AsyncSession) -> ScrubReport:
        return await scrub(
            session=session, organization_id=args.organization, apply=args.apply, actor=Actor.cli()
        )

    try:
        report = run_in_session(settings, work)
    except DatabaseError as error:
        return fail(str(error), code=EXIT_FAILED)
    for line in describe(report):
        print(line)
    return EXIT_FAILED if report.not_validated else EXIT_OK


def describe(report: ScrubReport) -> list[str]:
    """The report as lines to print; every string from the database goes through :func:`visible`."""
    verb = "changed" if report.applied else "would change"
    scope = (
        f"organisation {visible(report.organization_id)!r}" if report.organization_id else "all organisations"
    )
    lines = [f"scrub of {scope} ({'applied' if report.applied else 'dry run: nothing changed'})"]
    lines.append(f"  log entries read: {report.log_rows_read:,}")
    lines.append(
        f"  metadata: {verb} {counted(report.metadata_rows, 'row')}, "
        f"removing {counted(report.metadata_entries, 'refused entry', 'refused entries')}"
    )
    for column, count in sorted(report.identifiers.items()):
        lines.append(
            f"  {column}: {verb} {counted(count, 'value')} (refused characters written as visible escapes)"
        )
    if report.organization_ids:
        lines.append(
            f"  organisation ids breaking the rules: {report.organization_ids:,} (reported, never changed)"
        )
    if report.left:
        lines.append(
            "  rows left as they are (organisation id breaks a constraint, or device id taken): "
            f"{report.left:,}"
        )
    lines.append(
        f"  rollups: {verb} {counted(report.rollup_rows, 'row')} of "
        f"{counted(report.rollup_keys, 'refused key')}, "
        f"folding {counted(report.rollup_events, 'event')} into '(other)'"
    )
    for example in report.examples:
        lines.append(f"    e.g. {visible(example)}")
    for name in report.validated:
        lines.append(f"  constraint {name}: validated")
    for name, reason in sorted(report.not_validated.items()):
        lines.append(f"  constraint {name}: NOT validated: {visible(reason)}")
    if not report.applied:
        lines.append(
            "nothing found: the stored rows follow today's rules"
            if report.found == 0
            else "run again with --apply to change them (an audit row records it)"
        )
    return lines
