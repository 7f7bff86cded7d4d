"""Alert latency benchmark: from the agent's ack of a red burst to the alert committed, under ingest load.

What it does, on a throwaway SQLite file (or, with ``--postgres``, a throwaway PostgreSQL database
from TEST_POSTGRES_URL or postgres@127.0.0.1:5432), once per dispatcher placement (``--modes``):

- ``in-server``: ``ingest_server.py`` with ``INGEST_DISPATCH=true``, the dispatcher in its event loop;
- ``separate``: ``ingest_server.py`` with ``INGEST_DISPATCH=false`` and ``python -m dispatch`` beside it;

1. a fresh database, an organisation (its default rules: "Red burst per user" is 5 red events of
   one user within 10 minutes) and a token; the server (and the dispatcher) as subprocesses;
2. a load process (``bench/alerts.py --drive``) with several agent connections sending background
   traffic paced at ``--rate`` events/s in total (90 % green, 9 % amber, 1 % red, spread over 1,000
   users, so the evaluator also opens and updates alerts of its own);
3. meanwhile, every ``--burst-every`` seconds a fresh user sends 5 red events from this process, on
   its own connection; the moment the ack of the 5th arrives is the start;
4. this process polls the alerts table every ``--poll-ms`` (default 10 ms) for the burst users'
   "Red burst per user" alerts; the poll that first sees one is the end (so the figure is an upper
   bound, by at most the poll interval plus one query);
5. prints p50, p99 and max over the bursts against the 5 s target, and the ingest rate reached.

Usage: ``python bench/alerts.py [--postgres] [--rate 10000] [--seconds 30] [--modes in-server,separate]``.
Target (issue 13): p99 under 5 s at 10,000 events/s of ingest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.fernet import Fernet

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.forward import BENCH, ORG, describe, settings_for, throwaway_database  # noqa: E402
from db.alerts import AlertFilter, list_alerts, list_rules  # noqa: E402
from db.base import utcnow  # noqa: E402
from db.configs import create_organization  # noqa: E402
from db.engine import new_engine, new_sessionmaker  # noqa: E402
from db.tokens import create_token  # noqa: E402
from ingest.client import AgentClient, AgentIdentity  # noqa: E402
from simulation.events import EventGenerator  # noqa: E402

TARGET_SECONDS = 5.0
BURST_RULE = "Red burst per user"
BURST_SIZE = 5
#: The background traffic: mostly green, a little red so the evaluator has alerts of its own to keep.
BACKGROUND_MIX = {"green": 90, "amber": 9, "red": 1}
BACKGROUND_USERS = 1000
MODES = ("in-server", "separate")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def prepare_org(url: str) -> str:
    """The organisation (with its default alert rules) and an agent token."""
    engine = new_engine(settings_for(url))
    try:
        async with new_sessionmaker(engine)() as session:
            await create_organization(session=session, organization_id=ORG, actor=BENCH)
            _, token = await create_token(session=session, organization_id=ORG, name="bench", actor=BENCH)
            await session.commit()
            return token
    finally:
        await engine.dispose()


# --- the processes ---------------------------------------------------------------------------------


@dataclass
class Processes:
    """The ingest server and, when separate, the dispatcher; their stderr lines kept for the report."""

    server: subprocess.Popen[bytes]
    port: int
    dispatcher: subprocess.Popen[bytes] | None = None
    lines: list[str] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return [self.server.pid] + ([self.dispatcher.pid] if self.dispatcher is not None else [])


def process_env(url: str, data_dir: str, *, dispatch_in_server: bool, poll_ms: int | None) -> dict[str, str]:
    env = {
        **os.environ,
        "INGEST_STATS_INTERVAL_SECONDS": "0",
        "DATABASE_URL": url,
        "AIFW_DATA_DIR": data_dir,
        "AIFW_SECRET_KEY": Fernet.generate_key().decode(),
        "INGEST_DISPATCH": "true" if dispatch_in_server else "false",
    }
    if poll_ms is not None:
        env["DISPATCH_POLL_MS"] = str(poll_ms)
    return env


def _collect(stream: Any, lines: list[str]) -> None:
    for line in stream:
        lines.append(line.decode(errors="replace").rstrip())


async def _wait_for_line(process: subprocess.Popen[bytes], pattern: bytes, what: str) -> re.Match[bytes]:
    assert process.stderr is not None
    while line := await asyncio.to_thread(process.stderr.readline):
        found = re.search(pattern, line)
        if found:
            return found
    raise SystemExit(f"the {what} did not start (exit code {process.poll()})")


@contextlib.asynccontextmanager
async def running(
    url: str, *, mode: str, poll_ms: int | None = None, profile: str | None = None
) -> AsyncIterator[Processes]:
    """The ingest server (dispatcher inside for ``in-server`` and ``on``; ``off``: no dispatcher at all;
    ``separate``: ``python -m dispatch`` beside it), stopped with SIGTERM when the block ends."""
    with tempfile.TemporaryDirectory(prefix="aifw-bench-data-") as data_dir:
        env = process_env(url, data_dir, dispatch_in_server=mode in ("in-server", "on"), poll_ms=poll_ms)
        profiling = ["-m", "cProfile", "-o", profile] if profile and mode in ("in-server", "on") else []
        server = subprocess.Popen(
            [sys.executable, *profiling, str(REPO_ROOT / "ingest_server.py"), "--port", "0"],
            env=env,
            stderr=subprocess.PIPE,
            cwd=REPO_ROOT,
        )
        started: list[subprocess.Popen[bytes]] = [server]
        try:
            found = await _wait_for_line(server, rb"listening on [^ ]+:(\d+)", "ingest server")
            processes = Processes(server=server, port=int(found.group(1)))
            loop = asyncio.get_running_loop()
            loop.run_in_executor(None, _collect, server.stderr, processes.lines)
            if mode == "separate":
                profiling = ["-m", "cProfile", "-o", profile] if profile else []
                dispatcher = subprocess.Popen(
                    [sys.executable, *profiling, "-m", "dispatch"],
                    env=env,
                    stderr=subprocess.PIPE,
                    cwd=REPO_ROOT,
                )
                started.append(dispatcher)
                await _wait_for_line(dispatcher, rb"dispatcher \S+ running", "dispatcher")
                processes.dispatcher = dispatcher
                loop.run_in_executor(None, _collect, dispatcher.stderr, processes.lines)
            yield processes
        finally:
            for process in reversed(started):
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()


# --- the background load (its own process) ---------------------------------------------------------


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    """Run in its own process: ``connections`` agents sending ``rate`` events/s in total for warmup +
    seconds; the acks and the CPU of ``--pids`` are counted over the measured window only."""
    generator = EventGenerator(seed=args.seed, risk_weights=BACKGROUND_MIX)
    agents = [
        AgentClient("127.0.0.1", args.port, generator.identity(ORG, args.token, index))
        for index in range(args.connections)
    ]
    for agent in agents:
        await agent.connect()
    # Events made up front, with fresh timestamps (only live events raise alerts); each send takes a new
    # id and one of the users, so the load process stays light.
    templates = {
        kind: [generator.event(device_type=kind) for _ in range(2000)]
        for kind in ("browser", "desktop", "cli")
    }
    counter = iter(range(1 << 62))

    def next_event(device_type: str) -> dict[str, Any]:
        number = next(counter)
        event = dict(templates[device_type][number % 2000])
        event["id"] = str(uuid.UUID(int=(args.seed << 64) | number, version=4))
        event["user_id"] = f"user{number % BACKGROUND_USERS:04d}@{ORG}.example"
        return event

    pids = [int(pid) for pid in args.pids.split(",") if pid] if args.pids else []
    per_agent_rate = args.rate / args.connections
    started = time.perf_counter()
    deadline = started + args.warmup + args.seconds
    window: dict[str, Any] = {}

    async def pump(agent: AgentClient) -> None:
        tick = 0.01
        next_time = time.perf_counter()
        owed = 0.0
        while time.perf_counter() < deadline:
            next_time += tick
            delay = next_time - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            owed += per_agent_rate * tick
            burst = int(owed)
            owed -= burst
            if burst:
                await agent.send_many([next_event(agent.identity.device_type) for _ in range(burst)])

    def snapshot() -> tuple[int, list[float], float]:
        return (
            sum(len(a.acked) for a in agents),
            [process_cpu_seconds(pid) for pid in pids],
            time.perf_counter(),
        )

    async def mark_window() -> None:
        await asyncio.sleep(args.warmup)
        window["start"] = snapshot()
        await asyncio.sleep(max(0.0, deadline - time.perf_counter()))
        window["end"] = snapshot()

    marker = asyncio.create_task(mark_window())
    await asyncio.gather(*(pump(agent) for agent in agents))
    await marker
    (acked_start, cpu_start, time_start), (acked_end, cpu_end, time_end) = window["start"], window["end"]
    await asyncio.gather(*(agent.wait_acked(within=60) for agent in agents))
    latencies = sorted(latency for agent in agents for latency in agent.latencies)
    for agent in agents:
        await agent.close()
    return {
        "events_per_second": (acked_end - acked_start) / (time_end - time_start),
        "window_events": acked_end - acked_start,
        "cpu_seconds": [end - start for start, end in zip(cpu_start, cpu_end, strict=True)],
        "ack_p99_ms": statistics.quantiles(latencies, n=100)[98] * 1000 if len(latencies) >= 100 else 0.0,
        "errors": sum(len(a.errors) for a in agents),
    }


def start_load(
    port: int,
    token: str,
    *,
    rate: float,
    seconds: float,
    warmup: float,
    connections: int,
    pids: Sequence[int],
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        __file__,
        "--drive",
        "--port",
        str(port),
        "--token",
        token,
        "--rate",
        str(rate),
        "--seconds",
        str(seconds),
        "--warmup",
        str(warmup),
        "--connections",
        str(connections),
        "--pids",
        ",".join(str(pid) for pid in pids),
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO_ROOT)


async def finish_load(process: subprocess.Popen[bytes]) -> dict[str, Any]:
    stdout, stderr = await asyncio.to_thread(process.communicate)
    if process.returncode != 0:
        raise SystemExit(f"the load process failed:\n{stderr.decode(errors='replace')}")
    figures: dict[str, Any] = orjson.loads(stdout.strip().splitlines()[-1])
    return figures


# --- the bursts and the poller ---------------------------------------------------------------------


@dataclass
class Bursts:
    """When each burst user's 5th red event was acknowledged, and when its alert was first seen."""

    acked_at: dict[str, float] = field(default_factory=dict)
    seen_at: dict[str, float] = field(default_factory=dict)

    def latencies(self) -> list[float]:
        return sorted(self.seen_at[user] - at for user, at in self.acked_at.items() if user in self.seen_at)

    @property
    def missing(self) -> int:
        return len(self.acked_at) - len(self.seen_at)


async def send_bursts(
    port: int, token: str, bursts: Bursts, *, mode: str, every: float, until: float
) -> None:
    """Every ``every`` seconds until ``until`` (perf_counter), a fresh user sends 5 red events."""
    generator = EventGenerator(seed=99)
    identity = AgentIdentity(ORG, token, "bench-burst", f"burst@{ORG}.example", "browser")
    async with AgentClient("127.0.0.1", port, identity) as agent:
        number = 0
        waiting: set[asyncio.Task[None]] = set()
        next_time = time.perf_counter()
        while time.perf_counter() < until:
            user = f"burst-{mode}-{number:04d}@{ORG}.example"
            number += 1
            events = [
                generator.event(risk_level="red", user_id=user, timestamp=utcnow()) for _ in range(BURST_SIZE)
            ]
            await agent.send_many(events)
            waiting.add(asyncio.create_task(note_ack(agent, user, {event["id"] for event in events}, bursts)))
            next_time += every
            await asyncio.sleep(max(0.0, next_time - time.perf_counter()))
        await asyncio.gather(*waiting)


async def note_ack(agent: AgentClient, user: str, ids: set[str], bursts: Bursts) -> None:
    """Note when every event of the burst is acknowledged (looked at every 2 ms: the start's resolution)."""
    deadline = time.monotonic() + 30
    while not ids <= agent.acked and time.monotonic() < deadline:
        await asyncio.sleep(0.002)
    if ids <= agent.acked:
        bursts.acked_at[user] = time.time()


async def poll_alerts(url: str, bursts: Bursts, *, every: float, stop: asyncio.Event) -> None:
    """Look for new "Red burst per user" alerts every ``every`` seconds; note when each user's is seen."""
    engine = new_engine(settings_for(url))
    try:
        sessions = new_sessionmaker(engine)
        async with sessions() as session:
            rule = next(
                r for r in await list_rules(session=session, organization_id=ORG) if r.name == BURST_RULE
            )
        only_burst_rule = AlertFilter(organization_id=ORG, rule_id=rule.id)
        while not stop.is_set():
            async with sessions() as session:
                alerts = await list_alerts(session=session, alert_filter=only_burst_rule, limit=200)
            now = time.time()
            for alert in alerts:
                if alert.group_key in bursts.acked_at and alert.group_key not in bursts.seen_at:
                    bursts.seen_at[alert.group_key] = now
            await asyncio.sleep(every)
    finally:
        await engine.dispose()


# --- the run ---------------------------------------------------------------------------------------


def quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


async def measure_mode(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    async with throwaway_database(postgres=args.postgres, prefix="aifw_bench_alerts") as url:
        token = await prepare_org(url)
        async with running(url, mode=mode, poll_ms=args.dispatch_poll_ms, profile=args.profile) as processes:
            load = start_load(
                processes.port,
                token,
                rate=args.rate,
                seconds=args.seconds,
                warmup=args.warmup,
                connections=args.connections,
                pids=processes.pids,
            )
            await asyncio.sleep(args.warmup + 0.5)  # the load process's start and its warm-up
            bursts = Bursts()
            stop_polling = asyncio.Event()
            poller = asyncio.create_task(
                poll_alerts(url, bursts, every=args.poll_ms / 1000, stop=stop_polling)
            )
            await send_bursts(
                processes.port,
                token,
                bursts,
                mode=mode,
                every=args.burst_every,
                until=time.perf_counter() + args.seconds - 1.0,
            )
            load_figures = await finish_load(load)
            deadline = time.monotonic() + 2 * TARGET_SECONDS
            while bursts.missing and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            stop_polling.set()
            await poller
        errors = [line for line in processes.lines if "ERROR" in line or "Traceback" in line]
    latencies = bursts.latencies()
    return {
        "database": describe(url),
        "mode": mode,
        "bursts": len(bursts.acked_at),
        "missing": bursts.missing,
        "p50": quantile(latencies, 0.5),
        "p99": quantile(latencies, 0.99),
        "max": max(latencies) if latencies else float("nan"),
        "load": load_figures,
        "errors": errors,
    }


async def orchestrate(args: argparse.Namespace) -> None:
    print(f"load average before: {load_average()} ({os.cpu_count()} CPUs)")
    for mode in args.modes:
        result = await measure_mode(args, mode)
        load = result["load"]
        where = (
            "inside the ingest server" if mode == "in-server" else "in its own process (python -m dispatch)"
        )
        print(
            f"{result['database']}, dispatcher {where}: offered {args.rate:,.0f} events/s, reached "
            f"{load['events_per_second']:,.0f} events/s (ack p99 {load['ack_p99_ms']:.0f} ms, "
            f"{load['errors']} errors)"
        )
        missed = (
            f", {result['missing']} without an alert within {2 * TARGET_SECONDS:g} s"
            if result["missing"]
            else ""
        )
        print(
            f"  alert latency over {result['bursts']} bursts (ack of the 5th red event -> alert seen, "
            f"polled every {args.poll_ms} ms): p50 {result['p50']:.2f} s, p99 {result['p99']:.2f} s, "
            f"max {result['max']:.2f} s{missed}; p99 is {result['p99'] / TARGET_SECONDS:.2f} of the "
            f"{TARGET_SECONDS:g} s target"
        )
        for line in result["errors"][:5]:
            print(f"  server: {line}")
    print(f"load average after: {load_average()}")


def add_load_options(parser: argparse.ArgumentParser, *, rate: float, seconds: float) -> None:
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL database, not SQLite")
    parser.add_argument("--rate", type=float, default=rate, help="background events/s offered, in total")
    parser.add_argument("--seconds", type=float, default=seconds, help="measured window of each run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring")
    parser.add_argument("--connections", type=int, default=8, help="agent connections of the load")
    parser.add_argument(
        "--dispatch-poll-ms",
        type=int,
        default=None,
        help="DISPATCH_POLL_MS of the dispatcher (default: its own)",
    )
    parser.add_argument(
        "--profile",
        default=None,
        metavar="FILE",
        help="run the dispatcher's process under cProfile into FILE",
    )
    parser.add_argument("--drive", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--pids", default="", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=21, help=argparse.SUPPRESS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_load_options(parser, rate=10_000, seconds=30.0)
    parser.add_argument("--burst-every", type=float, default=0.5, help="seconds between red bursts")
    parser.add_argument("--poll-ms", type=int, default=10, help="how often the alerts table is polled")
    parser.add_argument(
        "--modes",
        type=lambda text: [mode for mode in text.split(",") if mode],
        default=list(MODES),
        help="comma-separated: in-server, separate (default both)",
    )
    args = parser.parse_args()
    if args.drive:
        print(orjson.dumps(asyncio.run(drive(args))).decode())
        return
    unknown = [mode for mode in args.modes if mode not in MODES]
    if unknown:
        parser.error(f"unknown mode {unknown[0]!r}: choose from {', '.join(MODES)}")
    asyncio.run(orchestrate(args))


if __name__ == "__main__":
    main()
