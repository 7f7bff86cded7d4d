"""The command line of ``aifw-dispatch`` (``python -m dispatch``): its options come from the settings table.

The dispatcher evaluates alert rules and forwards to the SIEM destinations (dispatch/service.py).
Run it on its own when the ingest servers do not (``INGEST_DISPATCH=false``): as many as you
like, leases keep one evaluator and one forwarder per destination at work. It runs until SIGTERM
or SIGINT, then stops its workers (they release their leases, so another process takes over at
once) and exits 0.

Exit codes (:mod:`db.cli`): 0 after a clean stop, 1 the database cannot be used, 2 a bad setting,
argument or secret key.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Sequence

from db.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, configure_server_logging, fail
from db.engine import check_database, new_engine, new_sessionmaker
from db.errors import DatabaseError
from db.secrets import SecretBox, SecretKeyError
from db.settings import (
    OneLineArgumentParser,
    Settings,
    SettingsError,
    add_server_options,
    load_settings,
    settings_with_options,
)
from dispatch.service import PARTS, Dispatcher, DispatcherParts, dispatcher_secrets

log = logging.getLogger("aifw.dispatch")


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    """The dispatcher's options of the settings table (db/settings.py SETTINGS), --only and --quiet."""
    parser = OneLineArgumentParser(
        prog="aifw-dispatch",
        description="AI Usage Firewall dispatcher: evaluates alert rules and forwards alerts and events "
        "to the SIEM destinations (docs/alerts.md, docs/forwarding.md). Each option overrides its "
        "environment variable only when given.",
        epilog="Exit codes: 0 stopped cleanly, 1 database unusable, 2 bad setting or argument.",
    )
    parser.add_argument(
        "--only",
        choices=PARTS,
        default=None,
        help="run only the alert evaluator or only the forwarders (default: both)",
    )
    add_server_options(parser, settings, program="dispatch")
    parser.add_argument("--quiet", action="store_true", help="log warnings only (no start and stop lines)")
    return parser


async def dispatch(settings: Settings, parts: DispatcherParts) -> None:
    """Check the database, run the dispatcher until SIGTERM or SIGINT, stop it, dispose of the engine.

    Raises DatabaseError (one line) if the database cannot be used at start, SecretKeyError if
    AIFW_SECRET_KEY is not a key.
    """
    box: SecretBox | None = dispatcher_secrets(settings) if parts.forwarding else None
    # Signals are heard from the start: a SIGTERM while the database is checked stops cleanly too.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # No ping per checkout (db.engine.new_engine): the workers check out connections several times a
    # second and ride out a lost one themselves.
    engine = new_engine(settings, pool_pre_ping=False)
    try:
        await check_database(engine, settings)
        dispatcher = Dispatcher(new_sessionmaker(engine), settings.dispatch, secrets=box, parts=parts)
        log.info("dispatcher %s using %s", dispatcher.holder, settings.describe_database())
        await dispatcher.run(stop)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m dispatch`` and ``aifw-dispatch``: 0 after a clean stop, 1 or 2 on errors."""
    try:
        settings = load_settings()
        args = build_parser(settings).parse_args(argv)
        settings = settings_with_options(settings, args, program="dispatch")
    except SettingsError as error:  # a bad setting, or a bad argument (UsageError)
        return fail(str(error), code=EXIT_USAGE)
    configure_server_logging(quiet=args.quiet)
    try:
        asyncio.run(dispatch(settings, DispatcherParts.only(args.only)))
    except SecretKeyError as error:
        return fail(str(error), code=EXIT_USAGE)
    except DatabaseError as error:
        return fail(str(error), code=EXIT_FAILED)
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK
