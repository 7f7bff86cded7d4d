"""``secrets rotate``: re-encrypt every stored destination secret with the first key of AIFW_SECRET_KEY.

Rotation: put the new key first in AIFW_SECRET_KEY (``NEW,OLD``), run this, then drop the old key.
A secret that no configured key decrypts is left as it is and named: enter it again in the console.
"""

from __future__ import annotations

import argparse

from sqlalchemy.ext.asyncio import AsyncSession

from db.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, DatabaseError, fail, run_in_session
from db.destinations import SecretRotation, rotate_secrets
from db.identifiers import visible
from db.rights import Actor
from db.secrets import SecretKeyError, secret_box_for
from db.settings import Settings
from db.wording import counted


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser("secrets", help="manage the encryption of destination secrets")
    actions = parser.add_subparsers(dest="secrets_command", metavar="ACTION", required=True)
    rotate = actions.add_parser(
        "rotate",
        help="re-encrypt every destination secret with the first key of AIFW_SECRET_KEY",
        description=(
            "Put the new key first in AIFW_SECRET_KEY (NEW,OLD), run this, then remove the old key. "
            "Secrets no key can read are listed: enter them again in the console."
        ),
    )
    rotate.set_defaults(handler=rotate_command)


def rotate_command(args: argparse.Namespace, settings: Settings) -> int:
    try:
        secrets = secret_box_for(settings)
    except SecretKeyError as error:
        return fail(str(error), code=EXIT_USAGE)

    async def work(session: AsyncSession) -> SecretRotation:
        result = await rotate_secrets(session=session, secrets=secrets, actor=Actor.cli())
        await session.commit()
        return result

    try:
        result = run_in_session(settings, work)
    except DatabaseError as error:
        return fail(str(error), code=EXIT_FAILED)
    print(f"re-encrypted {counted(result.rotated, 'destination secret')} with the first key")
    for row in result.unreadable:
        print(
            f"cannot decrypt the secret of destination {visible(repr(row.name))} "
            f"(organisation {visible(repr(row.organization_id))}): enter it again in the console"
        )
    return EXIT_FAILED if result.unreadable else EXIT_OK
