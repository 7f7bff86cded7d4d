"""The command line of ``aifw-ingest`` (``python ingest_server.py``): its options come from the settings
table."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from db.cli import configure_server_logging
from db.errors import DatabaseError
from db.settings import (
    OneLineArgumentParser,
    Settings,
    SettingsError,
    add_server_options,
    load_settings,
    settings_with_options,
)
from ingest.server import serve


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    """Every option of the settings table that the server has (db/settings.py SETTINGS), and --quiet."""
    parser = OneLineArgumentParser(
        prog="aifw-ingest",
        description="AI Usage Firewall ingest server: agents stream NDJSON events over TCP "
        "(docs/protocol.md). Each option overrides its environment variable only when given.",
    )
    add_server_options(parser, settings)
    parser.add_argument(
        "--quiet", action="store_true", help="log warnings only (no start, stop and stats lines)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python ingest_server.py`` and ``aifw-ingest``: 0 after a clean stop, 1 or 2 on
    errors."""
    try:
        settings = load_settings()
        args = build_parser(settings).parse_args(argv)
    except SettingsError as error:  # a bad setting, or a bad argument (UsageError)
        print(f"error: {error}", file=sys.stderr)
        return 2
    configure_server_logging(quiet=args.quiet)
    try:
        settings = settings_with_options(settings, args)
        asyncio.run(serve(settings))
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except DatabaseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(
            f"error: cannot listen on {settings.ingest_host}:{settings.ingest_port}: "
            f"{error.strerror or error}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 0
    return 0
