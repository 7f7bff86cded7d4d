"""Command line of the console: no subcommand opens the app; subcommands do admin work.

Each area registers its subcommands from its own module under ``console/commands``.
Exit codes: 0 done, 1 failed (the database is unreachable, read-only or refused the change),
2 bad arguments or configuration. Every failure is one line on standard error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from console.commands import admin, demo, orgs, partitions, rollups, scrub, secrets, simulate, tokens
from db.cli import EXIT_USAGE, fail
from db.settings import OneLineArgumentParser, SettingsError, load_settings

COMMAND_MODULES = (admin, orgs, tokens, scrub, rollups, partitions, simulate, demo, secrets)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="python -m console",
        description="AI Usage Firewall console. With no command, opens the terminal console.",
    )
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        settings = load_settings()
    except SettingsError as error:
        return fail(str(error), code=EXIT_USAGE)
    handler = getattr(args, "handler", None)
    if handler is None:
        from console.app import run_console

        return run_console(settings)
    return int(handler(args, settings))


if __name__ == "__main__":
    sys.exit(main())
