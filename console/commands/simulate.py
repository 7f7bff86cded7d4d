"""``simulate``: a fleet of simulated agents sending realistic events to an ingest server over TCP.

    python -m console simulate --organization acme --token aifw_… --devices 30 --rate 5 --backfill-days 21

Several organisations: repeat ``--organization ORG --token TOKEN`` (paired in
order), or list them in a ``--tokens-file`` (one ``ORG TOKEN`` per line, which
keeps tokens out of the process list). Runs until ``--duration`` seconds have
passed, or until SIGTERM / Ctrl+C (then it waits for outstanding
acknowledgements; a second signal stops at once). The database is not touched:
events go through the ingest server like a real agent's. This module only reads
the arguments; the fleet and its signal handling are :mod:`simulation.fleet`.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
from pathlib import Path

from db.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail
from db.settings import Settings, port_number
from db.wording import counted
from simulation.fleet import (
    Fleet,
    FleetError,
    FleetOrganization,
    FleetPlan,
    read_tokens_file,
    run_until_signalled,
)


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "simulate",
        help="simulated agents: devices of every type send realistic events to the ingest server",
        description=(
            "Simulated agents open real TCP connections to the ingest server, say hello and send log "
            "events (metadata only), resending what was not acknowledged after a reconnect."
        ),
    )
    parser.add_argument(
        "--host", default=None, help="ingest server address (default INGEST_HOST or 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=port_number, default=None, help="ingest server port (default INGEST_PORT or 7878)"
    )
    parser.add_argument(
        "--organization", action="append", default=[], metavar="ORG", help="organisation id (repeatable)"
    )
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="TOKEN",
        help="its ingest token (one per --organization)",
    )
    parser.add_argument(
        "--tokens-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="lines of 'ORG TOKEN' (instead of --token)",
    )
    parser.add_argument("--devices", type=int, default=24, help="simulated devices in all (default 24)")
    parser.add_argument(
        "--rate", type=float, default=5.0, help="live events per second, whole fleet (default 5)"
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds of live traffic (default: until stopped)"
    )
    parser.add_argument(
        "--backfill-days",
        type=int,
        default=0,
        help="days of history to send first, within each organisation's retention (default 0)",
    )
    parser.add_argument(
        "--backfill-per-day", type=int, default=600, help="backfilled events per weekday (default 600)"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="make the traffic repeatable (same event ids!)"
    )
    parser.add_argument(
        "--tls", action="store_true", help="connect with TLS (server started with --tls-cert)"
    )
    parser.add_argument(
        "--tls-ca", default=None, metavar="PEM", help="trust this CA (e.g. a self-signed cert)"
    )
    parser.add_argument(
        "--progress", type=float, default=5.0, help="seconds between progress lines, 0 for none"
    )
    parser.add_argument(
        "--red-burst-after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="one user sends a burst of red events this long into live traffic (default: no bursts)",
    )
    parser.add_argument(
        "--red-burst-every",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="seconds between red bursts, 0 for only the first (default 300)",
    )
    parser.set_defaults(handler=simulate_command)


def organizations_from(args: argparse.Namespace) -> list[FleetOrganization]:
    """The organisations to send as, from ``--organization/--token`` pairs and ``--tokens-file``."""
    if len(args.organization) != len(args.token):
        raise ValueError(
            f"give one --token per --organization (got {counted(len(args.organization), 'organisation')}, "
            f"{counted(len(args.token), 'token')})"
        )
    organizations = [
        FleetOrganization(org, token) for org, token in zip(args.organization, args.token, strict=True)
    ]
    if args.tokens_file is not None:
        try:
            organizations += read_tokens_file(args.tokens_file)
        except OSError as error:
            raise ValueError(f"cannot read {args.tokens_file}: {error.strerror or error}") from None
    if not organizations:
        raise ValueError("no organisation: give --organization ORG --token TOKEN (or --tokens-file FILE)")
    return organizations


def plan_from(args: argparse.Namespace) -> FleetPlan:
    checks = {
        "--devices": args.devices >= 1,
        "--rate": args.rate >= 0,
        "--duration": args.duration is None or args.duration >= 0,
        "--backfill-days": 0 <= args.backfill_days <= 400,
        "--backfill-per-day": args.backfill_per_day >= 0,
        "--red-burst-after": args.red_burst_after is None or args.red_burst_after >= 0,
        "--red-burst-every": args.red_burst_every >= 0,
    }
    for option, ok in checks.items():
        if not ok:
            raise ValueError(f"{option} is out of range: {getattr(args, option[2:].replace('-', '_'))}")
    return FleetPlan(
        devices=args.devices,
        rate=args.rate,
        duration=args.duration,
        backfill_days=args.backfill_days,
        backfill_per_day=args.backfill_per_day,
        seed=args.seed,
        red_burst_after=args.red_burst_after,
        red_burst_every=args.red_burst_every,
    )


def client_ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not args.tls and args.tls_ca is None:
        return None
    return ssl.create_default_context(cafile=args.tls_ca)


def say(message: str) -> None:
    print(f"simulate: {message}", flush=True)


def simulate_command(args: argparse.Namespace, settings: Settings) -> int:
    try:
        organizations = organizations_from(args)
        plan = plan_from(args)
        context = client_ssl_context(args)
    except (ValueError, OSError, ssl.SSLError) as error:
        return fail(str(error), code=EXIT_USAGE)
    host = args.host or settings.ingest_host
    port = args.port if args.port is not None else settings.ingest_port
    fleet = Fleet(host, port, organizations, plan, ssl_context=context)
    names = ", ".join(org.organization_id for org in organizations)
    history = f", backfilling {counted(plan.backfill_days, 'day')}" if plan.backfill_days else ""
    say(f"{counted(plan.devices, 'device')} of {names} → {host}:{port}, {plan.rate:g} events/s{history}")
    progress = (lambda stats: say(stats.line())) if args.progress > 0 else None
    try:
        stats = asyncio.run(
            run_until_signalled(
                fleet,
                progress=progress,
                every=args.progress,
                draining=lambda: say("stopping: waiting for the server to acknowledge what was sent"),
            )
        )
    except FleetError as error:
        return fail(str(error), code=EXIT_FAILED)
    except KeyboardInterrupt:
        stats = fleet.stats()
    say(f"done: {stats.line()}")
    if stats.refused:
        print("error: some devices were refused by the server (see 'refused' above)", file=sys.stderr)
        return EXIT_FAILED
    if stats.unacked:
        unacked = counted(stats.unacked, "event was", "events were")
        print(f"error: {unacked} not acknowledged before stopping", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
