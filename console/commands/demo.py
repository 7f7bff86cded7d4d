"""``demo``: the newcomer's first five minutes: a demo database, the ingest server, simulated agents, the console.

    python -m console demo                 # what `make run` does
    python -m console demo --no-console --duration 30

The demo uses its own embedded SQLite database under ``<AIFW_DATA_DIR or var>/demo/``
and refuses to start when DATABASE_URL is set, unless ``--database-url`` names
the database explicitly. It prints the administrator's credentials before the
console opens, and stops the server and the simulator when the console exits
(or on Ctrl+C, SIGTERM, SIGHUP, or an error). Without a terminal (or with
``--no-console``) it runs for ``--duration`` seconds instead of opening the console.
"""

from __future__ import annotations

import argparse
import getpass
import os
import signal
import sys
import time
from dataclasses import replace
from types import FrameType

from db.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, DatabaseError, fail
from db.security import PasswordError, validate_password
from db.settings import Settings, SettingsError
from simulation.demo import (
    DEMO_ADMIN,
    DEMO_ORGANIZATIONS,
    PASSWORD_FILE,
    SERVER_LOG,
    SIMULATOR_LOG,
    DemoDatabase,
    DemoError,
    DemoProcesses,
    DemoSetup,
    TrafficPlan,
    count_events,
    demo_settings,
    prepare_database,
    remove_demo_database,
)

DEFAULT_NO_CONSOLE_SECONDS = 60.0
PROGRESS_SECONDS = 5.0


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


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def describe_setup(database: DemoDatabase, setup: DemoSetup, traffic: TrafficPlan) -> list[str]:
    """The block printed before the console opens: what is running and how to sign in."""
    directory = database.directory
    if setup.admin_password:
        saved = f"   (saved in {directory / PASSWORD_FILE})"
        credentials = f"{DEMO_ADMIN} / {setup.admin_password}{saved}"
    else:
        credentials = f"{DEMO_ADMIN} (password chosen on an earlier run; --reset starts afresh)"
    where = (
        " (the demo's own; your real data is not touched)"
        if database.embedded
        else " (given by --database-url)"
    )
    organizations = ", ".join(f"{name} ({days} days)" for name, days in DEMO_ORGANIZATIONS)
    return [
        "",
        "  AI Usage Firewall: DEMO (simulated agents and data, not for production)",
        f"  database  {database.settings.describe_database()}{where}",
        f"  sign in   {credentials}",
        f"  orgs      {organizations}",
        f"  traffic   {traffic.devices} simulated devices, {traffic.rate:g} events/s live, "
        + (
            f"{traffic.backfill_days} days of history arriving now"
            if traffic.backfill_days
            else "no new history"
        ),
        f"  logs      {directory / SERVER_LOG}, {directory / SIMULATOR_LOG}",
        "",
    ]


def run_without_console(processes: DemoProcesses, duration: float) -> None:
    """Wait ``duration`` seconds (0: until interrupted), relaying the simulator's progress."""
    deadline = time.monotonic() + duration if duration > 0 else None
    next_progress = time.monotonic() + PROGRESS_SECONDS
    while deadline is None or time.monotonic() < deadline:
        processes.check()
        time.sleep(0.2)
        if time.monotonic() >= next_progress and processes.simulator is not None:
            next_progress += PROGRESS_SECONDS
            lines = [line for line in processes.simulator.tail(2) if line.startswith("simulate:")]
            if lines:
                say(f"demo: {lines[-1].removeprefix('simulate: ')}")


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
        if args.reset:
            remove_demo_database(database)
            say(f"demo: deleted the demo database in {database.directory}")
        password = ask_password() if args.ask_password else None
        say(
            f"demo: preparing {database.settings.describe_database()} (migrations, organisations, tokens, admin)"
        )
        setup = prepare_database(database, admin_password=password)
    except (DemoError, PasswordError) as error:
        return fail(str(error), code=EXIT_USAGE)
    except DatabaseError as error:
        return fail(str(error), code=EXIT_FAILED)
    try:
        stored = count_events(database.settings)
    except DatabaseError as error:
        return fail(str(error), code=EXIT_FAILED)
    if stored and traffic.backfill_days:
        # History from an earlier run is there already; --reset starts afresh.
        traffic = replace(traffic, backfill_days=0)
        say(f"demo: keeping the {stored} events of earlier runs (no new history; --reset starts afresh)")
    for line in describe_setup(database, setup, traffic):
        say(line)

    previous = {signum: signal.signal(signum, _raise_interrupt) for signum in (signal.SIGTERM, signal.SIGHUP)}
    code = EXIT_OK
    processes = DemoProcesses(database, traffic, say=say)
    try:
        with processes:
            try:
                if with_console:
                    input("  Press Enter to open the console (Ctrl+C stops the demo) ")
                    processes.check()
                    # The console's log file goes next to the demo's other logs.
                    os.environ["AIFW_DATA_DIR"] = str(database.directory)
                    from console.app import run_console

                    code = run_console(database.settings, label="DEMO")
                else:
                    say(
                        f"demo: running without the console for {duration:g}s"
                        if duration > 0
                        else "demo: running"
                    )
                    run_without_console(processes, duration)
            except KeyboardInterrupt:
                say("\ndemo: interrupted, stopping")
    except KeyboardInterrupt:
        say("demo: interrupted again while stopping")
    except DemoError as error:
        code = fail(str(error), code=EXIT_FAILED)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    try:
        stored = count_events(database.settings)
    except Exception as error:  # the summary must not hide the exit code
        say(f"demo: cannot count the stored events: {' '.join(str(error).split())[:200]}")
    else:
        say(f"demo: the demo database holds {stored} log events; `python -m console demo` opens it again")
    return code
