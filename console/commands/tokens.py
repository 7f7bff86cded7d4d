"""``ingest-token create|list|revoke``: the secrets agents present in their hello."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from db.cli import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    DatabaseError,
    fail,
    run_in_session,
)
from db.identifiers import visible
from db.models import IngestToken
from db.rights import Actor
from db.settings import Settings
from db.tokens import TokenError, create_token, list_tokens, revoke_token


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser("ingest-token", help="create, list and revoke agents' ingest tokens")
    actions = parser.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create", help="create a token (printed once: store it in the agents' config)"
    )
    create.add_argument("--organization", required=True, metavar="ORG", help="an existing organisation id")
    create.add_argument("--name", default="", help="what the token is for, e.g. 'laptops 2026'")
    create.set_defaults(handler=create_command)
    listing = actions.add_parser("list", help="list tokens (never the secrets)")
    listing.add_argument(
        "--organization", default=None, metavar="ORG", help="only this organisation's tokens"
    )
    listing.set_defaults(handler=list_command)
    revoke = actions.add_parser(
        "revoke", help="revoke a token: agents using it are refused from their next hello"
    )
    revoke.add_argument("token_id", metavar="ID", help="the token's id, as shown by `ingest-token list`")
    revoke.set_defaults(handler=revoke_command)


def create_command(args: argparse.Namespace, settings: Settings) -> int:
    async def work(session: AsyncSession) -> tuple[IngestToken, str]:
        row, clear = await create_token(
            session=session, organization_id=args.organization, name=args.name, actor=Actor.cli()
        )
        await session.commit()
        return row, clear

    try:
        row, clear = run_in_session(settings, work)
    except TokenError as error:
        return fail(str(error), code=EXIT_USAGE)
    except DatabaseError as error:
        return fail(str(error), code=EXIT_FAILED)
    print(f"created ingest token {row.id} for organisation {visible(repr(row.organization_id))}")
    print("token (shown only now; put it in the agents' configuration):")
    print(clear)
    return EXIT_OK


def format_tokens(rows: Sequence[IngestToken]) -> list[str]:
    """Table lines of tokens: id, organisation, name, prefix, created, last used, state.

    Names are printed with their control characters made visible: an ANSI escape stays text.
    """
    header = (
        f"{'ID':36}  {'ORGANISATION':16}  {'NAME':20}  {'PREFIX':13}  {'CREATED':16}  {'LAST USED':16}  STATE"
    )
    lines = [header]
    for row in rows:
        created = row.created_at.strftime("%Y-%m-%d %H:%M")
        used = row.last_used_at.strftime("%Y-%m-%d %H:%M") if row.last_used_at else "never"
        state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
        lines.append(
            f"{row.id!s:36}  {visible(row.organization_id)[:16]:16}  {visible(row.name)[:20]:20}  "
            f"{visible(row.token_prefix) + '…':13}  "
            f"{created:16}  {used:16}  {state}"
        )
    return lines


def list_command(args: argparse.Namespace, settings: Settings) -> int:
    async def work(session: AsyncSession) -> Sequence[IngestToken]:
        return await list_tokens(session=session, organization_id=args.organization)

    try:
        rows = run_in_session(settings, work)
    except DatabaseError as error:
        return fail(str(error), code=EXIT_FAILED)
    if not rows:
        where = f" for organisation {args.organization!r}" if args.organization else ""
        print(
            f"no ingest tokens{where}; "
            "create one with `python -m console ingest-token create --organization ORG`"
        )
        return EXIT_OK
    print("\n".join(format_tokens(rows)))
    return EXIT_OK


def revoke_command(args: argparse.Namespace, settings: Settings) -> int:
    try:
        token_id = uuid.UUID(args.token_id)
    except ValueError:
        return fail(
            f"{args.token_id!r} is not a token id; see `python -m console ingest-token list`", code=EXIT_USAGE
        )

    async def work(session: AsyncSession) -> IngestToken:
        row = await revoke_token(session=session, token_id=token_id, actor=Actor.cli())
        await session.commit()
        return row

    try:
        row = run_in_session(settings, work)
    except TokenError as error:
        return fail(str(error), code=EXIT_USAGE)
    except DatabaseError as error:
        return fail(str(error), code=EXIT_FAILED)
    organization = visible(repr(row.organization_id))
    print(f"revoked ingest token {row.id} ({visible(row.token_prefix)}…) of organisation {organization}")
    return EXIT_OK
