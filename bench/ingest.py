"""Ingest benchmark: the real server over loopback, driven from a separate process, against raw COPY.

What it does, all in one run on the local PostgreSQL (TEST_POSTGRES_URL or
postgres@127.0.0.1:5432):

1. creates two fresh databases migrated with Alembic (all indexes);
2. the COPY ceiling: raw asyncpg ``COPY`` of N realistic rows into ``log_entries``
   of the first, in transactions of the server's batch size;
3. starts ``ingest_server.py`` (a subprocess) on the second, and a load process
   (``bench/ingest.py --drive``) with several agent connections sending as fast as
   acknowledgements allow: sustained events/s and p50/p99 send→ack;
4. runs the load again paced at half that rate: p99 send→ack there;
5. prints the figures and the ratio to the COPY ceiling, then drops the databases;
6. times the validator of this tree against the one before the input hardening
   (``git show ac3ac3f:db/event_schema.py``) on the same events, and prints the CPU
   the new checks add per event as a share of the server's CPU per event.

Usage: ``python bench/ingest.py [--connections 8] [--seconds 10] [--copy-rows 60000]``.
Targets (issue 3): at least 50 % of the COPY ceiling; p99 ack under 100 ms at half rate; the hardened
validation adds at most 5 % to the server's CPU per event.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from sqlalchemy.engine import make_url

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from db.base import utcnow  # noqa: E402
from db.configs import create_organization  # noqa: E402
from db.engine import migrate, new_engine, new_sessionmaker  # noqa: E402
from db.event_schema import Hello, validate_log  # noqa: E402
from db.events import EVENT_COLUMNS  # noqa: E402
from db.rights import Actor  # noqa: E402
from db.settings import load_settings  # noqa: E402
from db.tokens import create_token  # noqa: E402
from ingest.client import AgentClient  # noqa: E402
from simulation.events import EventGenerator  # noqa: E402

ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
ORG = "bench"


def dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def create_database(prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    connection = await asyncpg.connect(dsn(ADMIN_URL))
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    settings = replace(load_settings({}), database_url=url, database_url_is_default=False)
    engine = new_engine(settings)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
    return url


async def drop_database(url: str) -> None:
    connection = await asyncpg.connect(dsn(ADMIN_URL))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
    finally:
        await connection.close()


async def copy_ceiling(url: str, rows: int, batch: int) -> float:
    """Rows/s of raw asyncpg COPY into log_entries (all indexes), one transaction per batch."""
    hello = Hello(ORG, "t", "bench-copy", "copy@bench.example", "browser", None)
    generator = EventGenerator(seed=11)
    events = [validate_log(generator.event(), hello=hello) for _ in range(rows)]
    created = utcnow()
    records = [
        (
            *(
                orjson.dumps(e[c]).decode() if c in ("detected_entity_types", "log_metadata") else e[c]
                for c in EVENT_COLUMNS[:-1]
            ),
            created,
        )
        for e in events
    ]
    connection = await asyncpg.connect(dsn(url))
    try:
        started = time.perf_counter()
        for start in range(0, rows, batch):
            async with connection.transaction():
                await connection.copy_records_to_table(
                    "log_entries", records=records[start : start + batch], columns=EVENT_COLUMNS
                )
        elapsed = time.perf_counter() - started
    finally:
        await connection.close()
    return rows / elapsed


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def truncate_logs(url: str) -> None:
    connection = await asyncpg.connect(dsn(url))
    try:
        await connection.execute("TRUNCATE log_entries")
    finally:
        await connection.close()


async def prepare_org(url: str) -> str:
    settings = replace(load_settings({}), database_url=url, database_url_is_default=False)
    engine = new_engine(settings)
    try:
        async with new_sessionmaker(engine)() as session:
            bench = Actor(name="bench", source="cli")
            await create_organization(session=session, organization_id=ORG, actor=bench)
            _, token = await create_token(session=session, organization_id=ORG, name="bench", actor=bench)
            await session.commit()
            return token
    finally:
        await engine.dispose()


#: The commit whose validator is the baseline of the validation cost (before the input hardening).
BASELINE_VALIDATOR_COMMIT = "ac3ac3f"
VALIDATION_CEILING = 0.05


def load_baseline_validator() -> Any:
    """db/event_schema.py as of BASELINE_VALIDATOR_COMMIT, as a module of its own (its imports resolve to this
    tree)."""
    source = subprocess.run(
        ["git", "show", f"{BASELINE_VALIDATOR_COMMIT}:db/event_schema.py"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    spec = importlib.util.spec_from_loader("bench_baseline_event_schema", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    exec(compile(source, f"{BASELINE_VALIDATOR_COMMIT}:db/event_schema.py", "exec"), module.__dict__)
    return module


def validation_cpu_per_event(events: list[dict[str, Any]], rounds: int = 7) -> tuple[float, float]:
    """CPU seconds per event of the baseline and of this tree's ``validate_log``, same events, interleaved.

    The best of ``rounds`` of each, alternating, so both see the same machine load.
    """
    baseline = load_baseline_validator()
    old_hello = baseline.Hello(ORG, "t", "bench-validate", "v@bench.example", "browser", None)
    new_hello = Hello(ORG, "t", "bench-validate", "v@bench.example", "browser", None)
    old_best = new_best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for event in events:
            baseline.validate_log(event, hello=old_hello)
        old_best = min(old_best, time.process_time() - started)
        started = time.process_time()
        for event in events:
            validate_log(event, hello=new_hello)
        new_best = min(new_best, time.process_time() - started)
    return old_best / len(events), new_best / len(events)


# --- the load process ------------------------------------------------------------------------------


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    """Run in its own process: connections sending for ``seconds``; at ``rate`` events/s if given."""
    generator = EventGenerator(seed=args.seed)
    agents = [
        AgentClient("127.0.0.1", args.port, generator.identity(ORG, args.token, index))
        for index in range(args.connections)
    ]
    for agent in agents:
        await agent.connect()
    # Realistic events made up front; each send only takes a new id, so the load process stays light.
    templates = {
        kind: [generator.event(device_type=kind) for _ in range(2000)]
        for kind in ("browser", "desktop", "cli")
    }
    counter = iter(range(1 << 62))

    def next_event(device_type: str) -> dict[str, Any]:
        number = next(counter)
        event = dict(templates[device_type][number % 2000])
        event["id"] = str(uuid.UUID(int=(args.seed << 64) | number, version=4))
        return event

    per_agent_rate = args.rate / args.connections if args.rate else None
    deadline = time.perf_counter() + args.warmup + args.seconds
    window_start = time.perf_counter() + args.warmup
    acked_at_window_start: list[int] = []

    async def pump(agent: AgentClient) -> None:
        tick = 0.01
        next_time = time.perf_counter()
        while time.perf_counter() < deadline:
            if per_agent_rate is None:
                burst = 200
            else:
                next_time += tick
                burst = max(1, round(per_agent_rate * tick))
                delay = next_time - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            await agent.send_many([next_event(agent.identity.device_type) for _ in range(burst)])

    async def mark_window() -> None:
        await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
        acked_at_window_start.append(sum(len(a.acked) for a in agents))
        for agent in agents:
            agent.latencies.clear()

    marker = asyncio.create_task(mark_window())
    await asyncio.gather(*(pump(agent) for agent in agents))
    acked_at_end = sum(len(a.acked) for a in agents)
    await marker
    await asyncio.gather(*(agent.wait_acked(within=60) for agent in agents))
    latencies = sorted(latency for agent in agents for latency in agent.latencies)
    for agent in agents:
        await agent.close()
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) >= 100 else [float("nan")] * 99
    return {
        "events_per_second": (acked_at_end - acked_at_window_start[0]) / args.seconds,
        "acked": sum(len(a.acked) for a in agents),
        "p50_ms": quantiles[49] * 1000,
        "p99_ms": quantiles[98] * 1000,
        "errors": sum(len(a.errors) for a in agents),
    }


def run_load(
    port: int, token: str, args: argparse.Namespace, *, rate: float | None, seed: int
) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--drive",
        "--port",
        str(port),
        "--token",
        token,
        "--seed",
        str(seed),
        "--connections",
        str(args.connections),
        "--seconds",
        str(args.seconds),
        "--warmup",
        str(args.warmup),
    ]
    if rate:
        command += ["--rate", str(rate)]
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"the load process failed:\n{result.stderr}")
    figures = orjson.loads(result.stdout.strip().splitlines()[-1])
    figures["client_cpu_s"] = (cpu_after.ru_utime + cpu_after.ru_stime) - (
        cpu_before.ru_utime + cpu_before.ru_stime
    )
    return figures


SERVER_LINES: list[str] = []


def _collect_lines(stream: Any) -> None:
    for line in stream:
        SERVER_LINES.append(line.decode(errors="replace").rstrip())


async def start_server(url: str, profile: str | None = None) -> tuple[subprocess.Popen[bytes], int]:
    # The ingest path alone: bench/dispatch_cpu.py measures what the dispatcher adds to the server.
    env = {
        "INGEST_STATS_INTERVAL_SECONDS": "0",
        **os.environ,
        "DATABASE_URL": url,
        "INGEST_DISPATCH": "false",
    }
    profiling = ["-m", "cProfile", "-o", profile] if profile else []
    process = subprocess.Popen(
        [sys.executable, *profiling, str(REPO_ROOT / "ingest_server.py"), "--port", "0"],
        env=env,
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    assert process.stderr is not None
    while line := process.stderr.readline():
        found = re.search(rb"listening on [^ ]+:(\d+)", line)
        if found:
            # Keep reading stderr in the background so the server never blocks on it.
            loop = asyncio.get_running_loop()
            loop.run_in_executor(None, _collect_lines, process.stderr)
            return process, int(found.group(1))
    raise SystemExit("the ingest server did not start")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as in production; killed if it has not stopped within 15 s."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


async def orchestrate(args: argparse.Namespace) -> None:
    copy_url = await create_database("aifw_bench_copy")
    server_url = await create_database("aifw_bench_ingest")
    process: subprocess.Popen[bytes] | None = None
    try:
        batch = load_settings({}).ingest.batch_max_events
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
        copy_before = await copy_ceiling(copy_url, args.copy_rows, batch)
        token = await prepare_org(server_url)
        process, port = await start_server(server_url, args.profile)
        cpu_before = process_cpu_seconds(process.pid)
        full = await asyncio.to_thread(run_load, port, token, args, rate=None, seed=1)
        server_cpu = process_cpu_seconds(process.pid) - cpu_before
        # COPY again right after, into a fresh table state, so both sides see similar machine load.
        await truncate_logs(copy_url)
        copy_after = await copy_ceiling(copy_url, args.copy_rows, batch)
        copy_rate = (copy_before + copy_after) / 2
        print(
            f"raw asyncpg COPY ceiling: {copy_rate:,.0f} rows/s (before {copy_before:,.0f}, after "
            f"{copy_after:,.0f}; {args.copy_rows} rows, {batch} per transaction, all indexes)"
        )
        print(
            f"ingest server, {args.connections} connections, as fast as acks allow: "
            f"{full['events_per_second']:,.0f} events/s sustained, p50 {full['p50_ms']:.1f} ms, "
            f"p99 {full['p99_ms']:.1f} ms send->ack, {full['errors']} errors"
        )
        print(
            f"server CPU: {server_cpu:.2f} s for {full['acked']:,} events "
            f"({server_cpu / max(full['acked'], 1) * 1e6:.1f} µs per event, parse+validate+store+ack); "
            f"load process CPU: {full['client_cpu_s']:.1f} s"
        )
        server_cpu_per_event = server_cpu / max(full["acked"], 1)
        generator = EventGenerator(seed=5)
        sample = [
            generator.event(device_type=kind) for kind in ("browser", "desktop", "cli") for _ in range(10_000)
        ]
        old_cost, new_cost = validation_cpu_per_event(sample)
        added = (new_cost - old_cost) / server_cpu_per_event
        print(
            f"validation: {new_cost * 1e6:.2f} µs per event now, "
            f"{old_cost * 1e6:.2f} µs before the input hardening "
            f"({BASELINE_VALIDATOR_COMMIT}); added {added:+.1%} of the server's CPU per event "
            f"(ceiling {VALIDATION_CEILING:.0%}: {added / VALIDATION_CEILING:.2f} of it)"
        )
        ratio = full["events_per_second"] / copy_rate
        print(f"ratio to the COPY ceiling: {ratio:.0%} (target >= 50%)")
        half_rate = full["events_per_second"] / 2
        half = await asyncio.to_thread(run_load, port, token, args, rate=half_rate, seed=2)
        print(
            f"at half that rate ({half_rate:,.0f} events/s offered): "
            f"{half['events_per_second']:,.0f} events/s, "
            f"p50 {half['p50_ms']:.1f} ms, p99 {half['p99_ms']:.1f} ms send->ack (target p99 < 100 ms)"
        )
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if process is not None:
            stop_server(process)
            await asyncio.sleep(0.2)
            for line in SERVER_LINES:
                if any(word in line for word in ("stopped", "WARNING", "ERROR", "stats")):
                    print(f"server: {line}")
        await drop_database(copy_url)
        await drop_database(server_url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window of each load run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    parser.add_argument("--copy-rows", type=int, default=60_000)
    parser.add_argument(
        "--profile", default=None, metavar="FILE", help="run the server under cProfile into FILE"
    )
    parser.add_argument("--drive", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=21, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        print(orjson.dumps(asyncio.run(drive(args))).decode())
        return
    asyncio.run(orchestrate(args))


if __name__ == "__main__":
    main()
