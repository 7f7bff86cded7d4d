"""``create-admin``: the first (or another) administrator, password from stdin or a silent prompt.

Every refusal is one line on standard error; nothing it prints carries the
password or its hash (database errors are reduced to the driver's first line).
"""

from __future__ import annotations

import argparse
import getpass
import sys

from sqlalchemy.ext.asyncio import AsyncSession

from db.cli import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    DatabaseError,
    fail,
    run_in_session,
)
from db.rights import Actor
from db.security import PasswordError, validate_password
from db.settings import Settings
from db.users import UserError, create_administrator


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "create-admin",
        help="create an administrator (password read from standard input, or prompted without echo)",
    )
    parser.add_argument("username")
    parser.add_argument("--email", required=True)
    parser.add_argument("--full-name", default=None)
    parser.set_defaults(handler=create_admin)


def read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        second = getpass.getpass("Repeat password: ")
        if first != second:
            raise PasswordError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def create_admin(args: argparse.Namespace, settings: Settings) -> int:
    try:
        password = validate_password(read_password(), user_inputs=(args.username, args.email))
    except PasswordError as error:
        return fail(str(error), code=EXIT_USAGE)

    async def work(session: AsyncSession) -> str:
        user = await create_administrator(
            session=session,
            username=args.username,
            email=args.email,
            password=password,
            full_name=args.full_name,
            bcrypt_rounds=settings.bcrypt_rounds,
            # The operating-system user made it (the console's first administrator records itself).
            actor=Actor.cli(),
        )
        await session.commit()
        return user.username

    try:
        username = run_in_session(settings, work)
    except UserError as error:
        return fail(str(error), code=EXIT_USAGE)
    except DatabaseError as error:
        return fail(str(error), code=EXIT_FAILED)
    print(f"created administrator {username!r}")
    return EXIT_OK
