"""``demo``: the newcomer's first five minutes: a demo database, the ingest server, simulated agents, the
console.

    python -m console demo                 # what `make run` does
    python -m console demo --no-console --duration 30

The demo uses its own embedded SQLite database under ``<AIFW_DATA_DIR or var>/demo/``
and refuses to start when DATABASE_URL is set, unless ``--database-url`` names
the database explicitly. It prints the administrator's credentials before the
console opens, and stops the server and the simulator when the console exits
(or on Ctrl+C, SIGTERM, SIGHUP, or an error). Without a terminal (or with
``--no-console``) it runs for ``--duration`` seconds instead of opening the console.
This module reads the arguments and opens the console; the demo itself is
:mod:`simulation.demo`.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from db.cli import EXIT_FAILED, EXIT_USAGE, DatabaseError, fail
from db.security import PasswordError, validate_password
from db.settings import Settings, SettingsError
from simulation.demo import (
    DEMO_ADMIN,
    DemoDatabase,
    DemoError,
    DemoProcesses,
    TrafficPlan,
    demo_settings,
    describe_setup,
    prepare_demo,
    run_demo,
)

DEFAULT_NO_CONSOLE_SECONDS = 60.0


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    defaults = TrafficPlan()
    parser = subcommands.add_parser(
        "demo",
        help="try it: demo database, ingest server, simulated agents and the console, all stopped on exit",
        description=(
            "Creates a demo database (its own SQLite file under AIFW_DATA_DIR/demo), demo organisations, "
            "ingest tokens and an administrator, starts the ingest server and simulated agents with some "
            "history, and opens the console. Everything is stopped when the console exits."
        ),
    )
    parser.add_argument(
        "--no-console",
        action="store_true",
        help="do not open the console; run for --duration seconds (automatic without a terminal)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help=f"seconds to run without the console (default {DEFAULT_NO_CONSOLE_SECONDS:g}; 0 until Ctrl+C)",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        metavar="URL",
        help="put the demo in this database on purpose (otherwise: its own embedded SQLite file)",
    )
    parser.add_argument(
        "--reset", action="store_true", help="delete the demo's own database first and start afresh"
    )
    parser.add_argument(
        "--ask-password",
        action="store_true",
        help="type the administrator's password instead of a generated one",
    )
    parser.add_argument("--devices", type=int, default=defaults.devices, help="simulated devices")
    parser.add_argument("--rate", type=float, default=defaults.rate, help="live events per second")
    parser.add_argument(
        "--backfill-days", type=int, default=defaults.backfill_days, help="days of history to send first"
    )
    parser.add_argument(
        "--backfill-per-day", type=int, default=defaults.backfill_per_day, help="history events per weekday"
    )
    parser.set_defaults(handler=demo_command)


def say(message: str) -> None:
    print(message, flush=True)


def ask_password() -> str:
    first = getpass.getpass(f"Password for the demo administrator {DEMO_ADMIN!r}: ")
    if getpass.getpass("Repeat password: ") != first:
        raise PasswordError("the two passwords differ")
    return validate_password(first)


def open_console(database: DemoDatabase, processes: DemoProcesses) -> int:
    """Wait for Enter, then run the console on the demo database; its exit code."""
    input("  Press Enter to open the console (Ctrl+C stops the demo) ")
    processes.check()
    # The console's log file goes next to the demo's other logs.
    os.environ["AIFW_DATA_DIR"] = str(database.directory)
    from console.app import run_console

    return run_console(database.settings, label="DEMO")


def demo_command(args: argparse.Namespace, settings: Settings) -> int:
    try:
        database = demo_settings(os.environ, database_url=args.database_url)
    except (DemoError, SettingsError) as error:
        return fail(str(error), code=EXIT_USAGE)
    traffic = TrafficPlan(
        devices=args.devices,
        rate=args.rate,
        backfill_days=args.backfill_days,
        backfill_per_day=args.backfill_per_day,
    )
    if traffic.devices < 1 or traffic.rate < 0 or not 0 <= traffic.backfill_days <= 365:
        return fail("--devices must be at least 1, --rate at least 0, --backfill-days 0-365", code=EXIT_USAGE)
    with_console = not args.no_console and sys.stdin.isatty() and sys.stdout.isatty()
    duration = args.duration if args.duration is not None else DEFAULT_NO_CONSOLE_SECONDS
    try:
        password = ask_password() if args.ask_password else None
        setup, traffic = prepare_demo(database, traffic, reset=args.reset, admin_password=password, say=say)
    except (DemoError, PasswordError) as error:
        return fail(str(error), code=EXIT_USAGE)
    except DatabaseError as error:
        return fail(str(error), code=EXIT_FAILED)
    for line in describe_setup(database, setup, traffic):
        say(line)
    return run_demo(
        database,
        traffic,
        foreground=(lambda processes: open_console(database, processes)) if with_console else None,
        duration=duration,
        say=say,
    )
