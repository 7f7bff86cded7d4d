"""``org create``: add an organisation (a firewall_configs row with the defaults) so it can have tokens."""

from __future__ import annotations

import argparse

from sqlalchemy.ext.asyncio import AsyncSession

from db.cli import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    DatabaseError,
    fail,
    run_in_session,
)
from db.configs import ConfigError, create_organization
from db.rights import Actor
from db.settings import Settings
from db.vocabulary import DEFAULT_RETENTION_DAYS, MAX_RETENTION_DAYS, MIN_RETENTION_DAYS
from db.wording import counted


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser("org", help="manage organisations")
    actions = parser.add_subparsers(dest="org_command", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create an organisation with the default configuration")
    create.add_argument(
        "organization",
        metavar="ORG",
        help="organisation id (letters, digits, . _ -); unique regardless of case, kept as typed",
    )
    create.add_argument(
        "--retention-days",
        type=int,
        default=DEFAULT_RETENTION_DAYS,
        help=(
            f"days of logs to keep, {MIN_RETENTION_DAYS}-{MAX_RETENTION_DAYS} "
            f"(default {DEFAULT_RETENTION_DAYS})"
        ),
    )
    create.set_defaults(handler=create_org)


def create_org(args: argparse.Namespace, settings: Settings) -> int:
    async def work(session: AsyncSession) -> str:
        row = await create_organization(
            session=session,
            organization_id=args.organization,
            actor=Actor.cli(),
            log_retention_days=args.retention_days,
        )
        await session.commit()
        return row.organization_id

    try:
        organization = run_in_session(settings, work)
    except ConfigError as error:
        return fail(str(error), code=EXIT_USAGE)
    except DatabaseError as error:
        return fail(str(error), code=EXIT_FAILED)
    print(f"created organisation {organization!r} ({counted(args.retention_days, 'day')} retention)")
    print(f"next: python -m console ingest-token create --organization {organization}")
    return EXIT_OK
