"""Dispatcher CPU benchmark: the ingest server's CPU per event with alerts and forwarding on and off.

What it does, on throwaway SQLite files (or, with ``--postgres``, throwaway PostgreSQL databases from
TEST_POSTGRES_URL or postgres@127.0.0.1:5432), alternating the modes ``--rounds`` times, each round
on a fresh database so no mode inherits another's backlog:

- ``off``: ``ingest_server.py`` with ``INGEST_DISPATCH=false`` and no destination;
- ``on``: ``INGEST_DISPATCH=true`` (the dispatcher in the server's event loop: the default rules
  evaluated, and one ``syslog_tcp`` destination in the ``json`` format forwarding alerts and red and
  amber events to a local rsyslogd, imtcp -> omfile);
- ``separate`` (only if asked): ``INGEST_DISPATCH=false`` and ``python -m dispatch`` beside the server,
  with the same destination; the server's and the dispatcher's CPU are reported apart.

The load is bench/alerts.py's load process at ``--rate`` events/s (90 % green, 9 % amber, 1 % red, over
1,000 users); it reads the user + system CPU of the processes from /proc at the start and the end of
its measured window and counts the events acknowledged in it. CPU per event = CPU / events.

With ``--together``, a round's modes run at the same time, each with its own server, database and load
at ``--rate``: this machine's speed drifts by ±10 % from one round to the next, more than the effect
measured, and modes measured in the same seconds share the drift. The figure is then the median of the
rounds' own ratios.

Usage: ``python bench/dispatch_cpu.py [--postgres] [--rate 4000] [--rounds 3] [--modes off,on] [--together]``.
Target (issue 13): at most 10 % more CPU per event with alerts and forwarding on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.alerts import (  # noqa: E402
    Processes,
    add_load_options,
    finish_load,
    load_average,
    prepare_org,
    running,
    start_load,
)
from bench.forward import (  # noqa: E402
    RED_AND_AMBER,
    LineCounter,
    Rsyslog,
    add_destination,
    describe,
    throwaway_database,
)

TARGET = 0.10
MODES = ("off", "on", "separate")


@contextlib.asynccontextmanager
async def serving(args: argparse.Namespace, mode: str, rsyslog: Rsyslog) -> AsyncIterator[Served]:
    """A fresh database and the processes of ``mode`` on it, ready for load."""
    async with throwaway_database(postgres=args.postgres, prefix="aifw_bench_cpu") as url:
        token = await prepare_org(url)
        if mode != "off":
            await add_destination(url, rsyslog.port, event_risk_levels=RED_AND_AMBER)
        async with running(url, mode=mode, poll_ms=args.dispatch_poll_ms, profile=args.profile) as processes:
            yield Served(url, token, processes)


@dataclass(frozen=True)
class Served:
    url: str
    token: str
    processes: Processes


async def measure(
    args: argparse.Namespace, modes: Sequence[str], rsyslog: Rsyslog
) -> dict[str, dict[str, Any]]:
    """One round of ``modes`` at once (each on its own fresh database, so none inherits another's backlog):
    events/s reached and CPU µs per event of each process, by mode."""
    async with contextlib.AsyncExitStack() as stack:
        served = {mode: await stack.enter_async_context(serving(args, mode, rsyslog)) for mode in modes}
        # Started together, so that their measured windows are the same seconds of this machine.
        loads = {
            mode: start_load(
                one.processes.port,
                one.token,
                rate=args.rate,
                seconds=args.seconds,
                warmup=args.warmup,
                connections=args.connections,
                pids=one.processes.pids,
            )
            for mode, one in served.items()
        }
        figures = {mode: await finish_load(load) for mode, load in loads.items()}
    return {mode: _result(served[mode].url, figures[mode]) for mode in modes}


def _result(url: str, figures: dict[str, Any]) -> dict[str, Any]:
    events = max(int(figures["window_events"]), 1)
    cpu = [seconds / events * 1e6 for seconds in figures["cpu_seconds"]]
    return {
        "database": describe(url),
        "rate": figures["events_per_second"],
        "server_us": cpu[0],
        "dispatcher_us": cpu[1] if len(cpu) > 1 else None,
    }


def _range(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} µs (range {min(values):.1f}-{max(values):.1f})"


async def orchestrate(args: argparse.Namespace) -> None:
    print(f"load average before: {load_average()} ({os.cpu_count()} CPUs)")
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in args.modes}
    with tempfile.TemporaryDirectory(prefix="aifw-bench-rsyslog-") as directory:
        rsyslog = Rsyslog(Path(directory))
        rsyslog.start()
        try:
            for round_number in range(args.rounds):
                batches = [args.modes] if args.together else [[mode] for mode in args.modes]
                measured = {
                    mode: result
                    for batch in batches
                    for mode, result in (await measure(args, batch, rsyslog)).items()
                }
                for mode in args.modes:
                    result = measured[mode]
                    results[mode].append(result)
                    dispatcher = (
                        f", dispatcher {result['dispatcher_us']:.1f} µs/event"
                        if result["dispatcher_us"] is not None
                        else ""
                    )
                    print(
                        f"round {round_number + 1}, {mode}: {result['rate']:,.0f} events/s, "
                        f"server {result['server_us']:.1f} µs/event{dispatcher}"
                    )
            forwarded = LineCounter(rsyslog.output).poll()
        finally:
            rsyslog.stop()
    database = results[args.modes[0]][0]["database"]
    print(
        f"{database}, {args.rate:,.0f} events/s offered, {args.seconds:g} s windows, {args.rounds} rounds "
        f"(medians; forwarding: syslog_tcp json to rsyslog, alerts + red and amber events; "
        f"rsyslog wrote {forwarded:,} messages):"
    )
    for mode in args.modes:
        line = f"  {mode}: server {_range([r['server_us'] for r in results[mode]])} per event"
        if mode == "separate":
            line += f", dispatcher {_range([r['dispatcher_us'] for r in results[mode]])} per event"
        rates = [r["rate"] for r in results[mode]]
        print(f"{line}; {statistics.median(rates):,.0f} events/s reached")
    if "off" in results:
        base = statistics.median(r["server_us"] for r in results["off"])
        for mode in (m for m in args.modes if m != "off"):
            server = statistics.median(r["server_us"] for r in results[mode])
            added = server / base - 1
            # Each round's own ratio: what the machine's drift from round to round does not move (with
            # --together, both modes of a round ran in the same seconds).
            paired = [
                on["server_us"] / off["server_us"] - 1
                for on, off in zip(results[mode], results["off"], strict=True)
            ]
            print(
                f"  {mode} vs off: server CPU per event {added:+.1%} (medians), "
                f"{statistics.median(paired):+.1%} (median of the rounds' own ratios: "
                f"{', '.join(f'{ratio:+.0%}' for ratio in paired)}; target <= +{TARGET:.0%}: "
                f"{statistics.median(paired) / TARGET:.2f} of the ceiling)"
            )
            if mode == "separate":
                total = server + statistics.median(r["dispatcher_us"] for r in results[mode])
                print(f"  separate, server + dispatcher together: {total / base - 1:+.1%} vs off")
    print(f"load average after: {load_average()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_load_options(parser, rate=4000, seconds=10.0)
    parser.add_argument("--rounds", type=int, default=3, help="how many times the modes alternate")
    parser.add_argument(
        "--together",
        action="store_true",
        help="run a round's modes at the same time (each its own server, database and load), not in turn",
    )
    parser.add_argument(
        "--modes",
        type=lambda text: [mode for mode in text.split(",") if mode],
        default=["off", "on"],
        help="comma-separated: off, on, separate (default off,on)",
    )
    args = parser.parse_args()
    unknown = [mode for mode in args.modes if mode not in MODES]
    if unknown:
        parser.error(f"unknown mode {unknown[0]!r}: choose from {', '.join(MODES)}")
    asyncio.run(orchestrate(args))


if __name__ == "__main__":
    main()
