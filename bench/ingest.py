"""Ingest benchmark: the real server over loopback, driven from a separate process, against raw COPY.

What it does, all in one run on the local PostgreSQL (TEST_POSTGRES_URL or
postgres@127.0.0.1:5432), for each table state: an empty ``log_entries`` and, with
``--table-rows N``, one that already holds N rows (a clone of bench/fill.py's database,
``CREATE DATABASE … TEMPLATE``, so runs never grow the filled one):

1. the COPY ceiling into that state: raw asyncpg ``COPY`` of realistic rows into the partitioned
   ``log_entries`` (all its indexes, its counting trigger), in transactions of the server's batch
   size, before and after the server's runs (the mean is the ceiling);
2. for each dispatch mode (``--dispatch off,on``): starts ``ingest_server.py`` (a subprocess) on the
   same database, with ``INGEST_DISPATCH=false``, or ``true`` with the organisation's default alert
   rules and one ``syslog_tcp`` destination (json; alerts, red and amber events) to a local TCP sink
   that reads and discards; a load process (``bench/ingest.py --drive``) with several agent
   connections sends as fast as acknowledgements allow: sustained events/s, p50/p99 send→ack, and the
   server's CPU per event (user + system from /proc/<pid>/stat over the run / events acknowledged);
3. runs the load again paced at half that rate: p50/p99 send→ack there;
4. prints the figures, the ratios, and a summary against the issue's targets; drops the databases;
5. times the validator of this tree against the one before the input hardening
   (``git show ac3ac3f:db/event_schema.py``) on the same events, and prints the CPU the new checks
   add per event as a share of the server's CPU per event.

With ``--memory-minutes M`` it instead runs the server at full rate for M minutes (first dispatch
mode given) on the first table state, samples its VmRSS every ``--memory-every`` seconds, and prints
the growth between minute 1 and minute M.

With ``--rounds R`` each table state is measured R times, the order alternating, and the summary
gives the medians (the machine is shared: single runs vary by tens of percent).

Usage: ``python bench/ingest.py [--table-rows 20000000] [--rounds 3] [--dispatch off,on]
[--connections 8] [--seconds 10] [--copy-rows 60000]`` or ``python bench/ingest.py --memory-minutes 10``.
Targets (issue 14): ingest at N rows within 15 % of ingest into an empty table; at least 60 % of the
COPY ceiling into the same table state; p99 send→ack under 100 ms at half rate; server memory growth
under 20 MB between minute 1 and minute 10 at full rate. (Issue 3: the hardened validation adds at
most 5 % to the server's CPU per event.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.util
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from cryptography.fernet import Fernet
from sqlalchemy.engine import make_url

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.forward import RED_AND_AMBER  # noqa: E402
from bench.forward import add_destination as add_syslog_destination  # noqa: E402
from db.base import utcnow  # noqa: E402
from db.configs import ConfigError, create_organization  # noqa: E402
from db.engine import migrate, new_engine, new_sessionmaker  # noqa: E402
from db.event_schema import Hello, validate_log  # noqa: E402
from db.events import EVENT_COLUMNS  # noqa: E402
from db.rights import Actor  # noqa: E402
from db.settings import load_settings  # noqa: E402
from db.tokens import create_token  # noqa: E402
from ingest.client import AgentClient  # noqa: E402
from simulation.events import EventGenerator  # noqa: E402

ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
#: The organisation the load writes as: one that bench/fill.py's database holds about 7 M rows of, so
#: inserts at N rows land among its rows in every index that starts with the organisation.
ORG = "acme"
BENCH = Actor(name="bench", source="cli")
#: bench/fill.py's database of N rows is named this (the clone of each run is named after it).
FILLED_NAME = "aifw_bench_{millions}m"
MODES = ("off", "on")
#: How long a clone waits for other connections to the filled database to go away.
CLONE_WAIT_SECONDS = 600
TARGET_STATE_DROP = 0.15
TARGET_COPY_RATIO = 0.60
TARGET_P99_MS = 100.0
TARGET_MEMORY_MB = 20.0


def dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def settings_for(url: str) -> Any:
    return replace(load_settings({}), database_url=url, database_url_is_default=False)


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(dsn(ADMIN_URL))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _url_of(name: str) -> str:
    return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


async def create_database(prefix: str) -> str:
    """A new database migrated with Alembic (all indexes, partitions, triggers)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    await _admin(f'CREATE DATABASE "{name}"')
    url = _url_of(name)
    engine = new_engine(settings_for(url))
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
    return url


async def clone_filled(rows: int) -> str:
    """A throwaway copy of bench/fill.py's database of ``rows`` rows (built first if missing)."""
    from bench.fill import ensure_filled  # noqa: PLC0415 - only runs that ask for a filled state need it

    template = make_url(await ensure_filled(filled_name(rows), rows)).database
    name = f"aifw_bench_clone_{uuid.uuid4().hex[:10]}"
    started = time.perf_counter()
    while True:
        try:
            # FILE_COPY copies the files (one checkpoint) instead of writing gigabytes of WAL.
            await _admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
            break
        except asyncpg.ObjectInUseError:
            # Other benches read the filled database too; a template must have no connections.
            if time.perf_counter() - started > CLONE_WAIT_SECONDS:
                raise
            await asyncio.sleep(1)
    print(f"cloned {template} ({rows:,} rows) in {time.perf_counter() - started:.0f} s")
    return _url_of(name)


def filled_name(rows: int) -> str:
    return FILLED_NAME.format(millions=f"{rows / 1e6:g}")


async def drop_database(url: str) -> None:
    await _admin(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


@contextlib.asynccontextmanager
async def table_state(rows: int) -> AsyncIterator[str]:
    """A database whose ``log_entries`` holds ``rows`` rows (0: a fresh one); dropped afterwards."""
    url = await (clone_filled(rows) if rows else create_database("aifw_bench_ingest"))
    try:
        yield url
    finally:
        await drop_database(url)


async def count_rows(url: str) -> int:
    """An estimate of the rows in log_entries (the planner's, over all partitions: instant at 20 M)."""
    connection = await asyncpg.connect(dsn(url))
    try:
        value = await connection.fetchval(
            "SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'log_entries'::regclass"
        )
    finally:
        await connection.close()
    return int(value)


async def copy_ceiling(url: str, rows: int, batch: int, *, seed: int) -> float:
    """Rows/s of raw asyncpg COPY into log_entries (all indexes and triggers), one transaction per batch."""
    hello = Hello(ORG, "t", "bench-copy", "copy@bench.example", "browser", None)
    generator = EventGenerator(seed=seed)
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


def process_rss_mb(pid: int) -> float:
    """Resident set size of a process now, in MB (VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def truncate_logs(url: str) -> None:
    connection = await asyncpg.connect(dsn(url))
    try:
        await connection.execute("TRUNCATE log_entries")
    finally:
        await connection.close()


async def prepare_org(url: str) -> str:
    """The organisation (created with its default alert rules unless the filled database has it) and a
    token."""
    engine = new_engine(settings_for(url))
    try:
        async with new_sessionmaker(engine)() as session:
            with contextlib.suppress(ConfigError):
                async with session.begin_nested():
                    await create_organization(session=session, organization_id=ORG, actor=BENCH)
            _, token = await create_token(session=session, organization_id=ORG, name="bench", actor=BENCH)
            await session.commit()
            return token
    finally:
        await engine.dispose()


async def add_destination(url: str, port: int) -> None:
    """Forward alerts and red and amber events to the sink (syslog over TCP, our JSON), as
    bench/dispatch_cpu.py does to rsyslog."""
    await add_syslog_destination(url, port, organization_id=ORG, name="sink", event_risk_levels=RED_AND_AMBER)


class DiscardSink:
    """A TCP listener that reads everything and discards it (counting bytes): the forwarding target."""

    def __init__(self) -> None:
        self.received = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await reader.read(1 << 16):
                self.received += len(chunk)
        writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


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
    # Long runs (--memory-minutes) forget acknowledged ids now and then, so this process stays small.
    forgotten = 0

    def acked_total() -> int:
        return forgotten + sum(len(a.acked) for a in agents)

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
        acked_at_window_start.append(acked_total())
        for agent in agents:
            agent.latencies.clear()

    async def forget_acked() -> None:
        nonlocal forgotten
        while True:
            await asyncio.sleep(10)
            for agent in agents:
                forgotten += len(agent.acked)
                agent.acked.clear()
                if args.seconds > 120:
                    del agent.latencies[:-100_000]

    # The load process's own collector pauses (tens of ms with 100,000s of ids in flight) would count
    # as the server's latency: what it holds so far is frozen, and in a short run nothing is collected.
    gc.freeze()
    if args.seconds <= 120:
        gc.disable()
    marker = asyncio.create_task(mark_window())
    trimmer = asyncio.create_task(forget_acked())
    await asyncio.gather(*(pump(agent) for agent in agents))
    acked_at_end = acked_total()
    await marker
    await asyncio.gather(*(agent.wait_acked(within=60) for agent in agents))
    trimmer.cancel()
    latencies = sorted(latency for agent in agents for latency in agent.latencies)
    for agent in agents:
        await agent.close()
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) >= 100 else [float("nan")] * 99
    return {
        "events_per_second": (acked_at_end - acked_at_window_start[0]) / args.seconds,
        "acked": acked_total(),
        "p50_ms": quantiles[49] * 1000,
        "p99_ms": quantiles[98] * 1000,
        "errors": sum(len(a.errors) for a in agents),
    }


def load_command(
    port: int, token: str, args: argparse.Namespace, *, rate: float | None, seed: int, seconds: float
) -> list[str]:
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
        str(seconds),
        "--warmup",
        str(args.warmup),
    ]
    if rate:
        command += ["--rate", str(rate)]
    return command


def run_load(
    port: int, token: str, args: argparse.Namespace, *, rate: float | None, seed: int
) -> dict[str, Any]:
    command = load_command(port, token, args, rate=rate, seed=seed, seconds=args.seconds)
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"the load process failed:\n{result.stderr}")
    figures: dict[str, Any] = orjson.loads(result.stdout.strip().splitlines()[-1])
    figures["client_cpu_s"] = (cpu_after.ru_utime + cpu_after.ru_stime) - (
        cpu_before.ru_utime + cpu_before.ru_stime
    )
    return figures


@dataclass
class Server:
    """The ingest server subprocess, its port, and its stderr lines kept for the report."""

    process: subprocess.Popen[bytes]
    port: int
    lines: list[str] = field(default_factory=list)


def _collect_lines(stream: Any, lines: list[str]) -> None:
    for line in stream:
        lines.append(line.decode(errors="replace").rstrip())


@contextlib.asynccontextmanager
async def running_server(url: str, *, dispatch: bool, profile: str | None = None) -> AsyncIterator[Server]:
    """``ingest_server.py`` on ``url`` (the dispatcher in its loop if ``dispatch``), stopped with SIGTERM as
    in production (killed if not stopped within 15 s)."""
    with tempfile.TemporaryDirectory(prefix="aifw-bench-ingest-") as data_dir:
        env = {
            "INGEST_STATS_INTERVAL_SECONDS": "0",
            **os.environ,
            "DATABASE_URL": url,
            "AIFW_DATA_DIR": data_dir,
            "AIFW_SECRET_KEY": Fernet.generate_key().decode(),
            "INGEST_DISPATCH": "true" if dispatch else "false",
        }
        profiling = ["-m", "cProfile", "-o", profile] if profile else []
        process = subprocess.Popen(
            [sys.executable, *profiling, str(REPO_ROOT / "ingest_server.py"), "--port", "0"],
            env=env,
            stderr=subprocess.PIPE,
            cwd=REPO_ROOT,
        )
        try:
            assert process.stderr is not None
            port = None
            while line := await asyncio.to_thread(process.stderr.readline):
                found = re.search(rb"listening on [^ ]+:(\d+)", line)
                if found:
                    port = int(found.group(1))
                    break
            if port is None:
                raise SystemExit(f"the ingest server did not start (exit code {process.poll()})")
            server = Server(process, port)
            # Keep reading stderr in the background so the server never blocks on it.
            asyncio.get_running_loop().run_in_executor(None, _collect_lines, process.stderr, server.lines)
            yield server
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, 15)
            except subprocess.TimeoutExpired:
                process.kill()
            await asyncio.sleep(0.2)
    for text in server.lines:
        if any(word in text for word in ("stopped", "WARNING", "ERROR", "stats")):
            print(f"  server: {text}")


# --- one table state -------------------------------------------------------------------------------


@dataclass
class ModeFigures:
    """One dispatch mode on one table state: full rate, half rate, the server's CPU per event."""

    full: dict[str, Any]
    half: dict[str, Any]
    cpu_us: float
    forwarded_bytes: int = 0


@dataclass
class StateFigures:
    """One table state: its rows, its COPY ceiling, and each mode's figures."""

    rows: int
    copy_rate: float = 0.0
    modes: dict[str, ModeFigures] = field(default_factory=dict)


def _seed(rows: int, mode: str, half: bool) -> int:
    # Distinct ids per run in one database: a repeated id would send the batch down the resend path.
    return 1 + MODES.index(mode) * 2 + int(half) + (100 if rows else 0)


async def measure_state(rows: int, args: argparse.Namespace, sink: DiscardSink) -> StateFigures:
    batch = load_settings({}).ingest.batch_max_events
    figures = StateFigures(rows)
    async with table_state(rows) as url:
        token = await prepare_org(url)
        present = await count_rows(url)
        print(
            f"table state: {present:,} rows in log_entries (planner estimate); load average {load_average()}"
        )
        copy_before = await copy_ceiling(url, args.copy_rows, batch, seed=11)
        for mode in args.dispatch:
            if not rows:
                await truncate_logs(url)  # each mode starts from the same empty table
            if mode == "on":
                await add_destination(url, sink.port)
            forwarded_before = sink.received
            async with running_server(url, dispatch=mode == "on", profile=args.profile) as server:
                pid = server.process.pid
                cpu_before = process_cpu_seconds(pid)
                full = await asyncio.to_thread(
                    run_load, server.port, token, args, rate=None, seed=_seed(rows, mode, False)
                )
                cpu = process_cpu_seconds(pid) - cpu_before
                half = await asyncio.to_thread(
                    run_load,
                    server.port,
                    token,
                    args,
                    rate=full["events_per_second"] / 2,
                    seed=_seed(rows, mode, True),
                )
            result = ModeFigures(
                full,
                half,
                cpu / max(full["acked"], 1) * 1e6,
                forwarded_bytes=sink.received - forwarded_before,
            )
            figures.modes[mode] = result
            print(
                f"  dispatch {mode}: {full['events_per_second']:,.0f} events/s sustained "
                f"({args.connections} connections, as fast as acks allow; p50 {full['p50_ms']:.1f} ms, "
                f"p99 {full['p99_ms']:.1f} ms), server CPU {result.cpu_us:.1f} µs per event "
                f"({cpu:.1f} s for {full['acked']:,} events), load process CPU {full['client_cpu_s']:.1f} s, "
                f"{full['errors']} errors"
            )
            print(
                f"  dispatch {mode}, half rate ({full['events_per_second'] / 2:,.0f} events/s offered): "
                f"{half['events_per_second']:,.0f} events/s, p50 {half['p50_ms']:.1f} ms, "
                f"p99 {half['p99_ms']:.1f} ms send->ack"
                + (f"; forwarded {result.forwarded_bytes:,} bytes to the sink" if mode == "on" else "")
            )
        if not rows:
            await truncate_logs(url)
        # COPY again after, so both sides see similar machine load (at N rows: a little more history).
        copy_after = await copy_ceiling(url, args.copy_rows, batch, seed=12)
        figures.copy_rate = (copy_before + copy_after) / 2
        print(
            f"  COPY ceiling into this state: {figures.copy_rate:,.0f} rows/s (before {copy_before:,.0f}, "
            f"after {copy_after:,.0f}; {args.copy_rows:,} rows, {batch} per transaction, all indexes and "
            f"the counting trigger)"
        )
        for mode, result in figures.modes.items():
            ratio = result.full["events_per_second"] / figures.copy_rate
            print(f"  dispatch {mode}: ratio to the COPY ceiling {ratio:.0%}")
    return figures


def _median_state(rounds: list[StateFigures], modes: list[str]) -> StateFigures:
    """One state's figures as the medians over its rounds (the machine is shared: one round can be an
    outlier)."""
    merged = StateFigures(rounds[0].rows, statistics.median(r.copy_rate for r in rounds))
    for mode in modes:
        results = [r.modes[mode] for r in rounds]
        merged.modes[mode] = ModeFigures(
            full={"events_per_second": statistics.median(m.full["events_per_second"] for m in results)},
            half={"p99_ms": statistics.median(m.half["p99_ms"] for m in results)},
            cpu_us=statistics.median(m.cpu_us for m in results),
        )
    return merged


def _lower(drop: float) -> str:
    return f"{drop:.0%} lower" if drop >= 0 else f"{-drop:.0%} higher"


def print_summary(rounds: dict[int, list[StateFigures]], args: argparse.Namespace) -> None:
    count = len(next(iter(rounds.values())))
    measured = f"median of {count} rounds" if count > 1 else "1 round"
    print(
        f"summary ({args.connections} connections, {args.seconds:g} s windows after {args.warmup:g} s "
        f"warm-up, {args.copy_rows:,} COPY rows; {measured}; load average now {load_average()}):"
    )
    states = [_median_state(figures, args.dispatch) for figures in rounds.values()]
    empty = next((s for s in states if s.rows == 0), None)
    for mode in args.dispatch:
        for state in states:
            result = state.modes[mode]
            label = f"{state.rows / 1e6:g} M rows" if state.rows else "empty"
            rate = result.full["events_per_second"]
            print(
                f"  dispatch {mode}, {label}: {rate:,.0f} events/s, {result.cpu_us:.1f} µs CPU per event; "
                f"ratio to COPY: {rate / state.copy_rate:.0%} (target >= {TARGET_COPY_RATIO:.0%}); "
                f"p99: {result.half['p99_ms']:.0f} ms at half rate (target < {TARGET_P99_MS:.0f})"
            )
            if empty is not None and state is not empty:
                drop = 1 - rate / empty.modes[mode].full["events_per_second"]
                print(
                    f"  dispatch {mode}, empty vs {state.rows / 1e6:g} M: {_lower(drop)} "
                    f"(target < {TARGET_STATE_DROP:.0%} lower); COPY ceiling {empty.copy_rate:,.0f} vs "
                    f"{state.copy_rate:,.0f} rows/s ({_lower(1 - state.copy_rate / empty.copy_rate)})"
                )


def print_validation_cost(server_cpu_per_event: float) -> None:
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


async def orchestrate(args: argparse.Namespace) -> None:
    print(f"load average before: {load_average()} ({os.cpu_count()} CPUs)")
    sink = DiscardSink()
    await sink.start()
    rows = [0, args.table_rows] if args.table_rows else [0]
    rounds: dict[int, list[StateFigures]] = {state: [] for state in rows}
    try:
        for number in range(args.rounds):
            # Alternate the order, so neither state always runs first on a machine whose load drifts.
            for state in rows if number % 2 == 0 else rows[::-1]:
                print(f"round {number + 1} of {args.rounds}:")
                rounds[state].append(await measure_state(state, args, sink))
    finally:
        await sink.stop()
    print_summary(rounds, args)
    print_validation_cost(statistics.median(f.modes[args.dispatch[0]].cpu_us for f in rounds[0]) / 1e6)
    print(f"load average after: {load_average()}")


# --- memory at full rate ---------------------------------------------------------------------------


async def measure_memory(args: argparse.Namespace) -> None:
    """Full-rate ingest for ``--memory-minutes``; the server's VmRSS sampled; growth from minute 1 to the
    last."""
    mode = args.dispatch[0]
    seconds = args.memory_minutes * 60
    print(
        f"memory: dispatch {mode}, {args.connections} connections at full rate for "
        f"{args.memory_minutes:g} min, "
        f"table state {args.table_rows:,} rows; load average {load_average()}"
    )
    sink = DiscardSink()
    await sink.start()
    try:
        async with table_state(args.table_rows) as url:
            token = await prepare_org(url)
            if mode == "on":
                await add_destination(url, sink.port)
            async with running_server(url, dispatch=mode == "on") as server:
                pid = server.process.pid
                command = load_command(server.port, token, args, rate=None, seed=7, seconds=seconds)
                command[command.index("--warmup") + 1] = "0"
                load = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                started = time.perf_counter()
                cpu_started = process_cpu_seconds(pid)
                samples: list[tuple[float, float]] = []
                while load.poll() is None:
                    elapsed = time.perf_counter() - started
                    if elapsed <= seconds:
                        samples.append((elapsed, process_rss_mb(pid)))
                    await asyncio.sleep(args.memory_every)
                cpu = process_cpu_seconds(pid) - cpu_started
                out, err = load.communicate()
                if load.returncode != 0:
                    raise SystemExit(f"the load process failed:\n{err.decode()}")
                figures = orjson.loads(out.decode().strip().splitlines()[-1])
    finally:
        await sink.stop()
    for elapsed, rss in samples[:: max(1, len(samples) // 20)]:
        print(f"  t={elapsed:6.0f} s  RSS {rss:7.1f} MB")
    first = min(samples, key=lambda sample: abs(sample[0] - 60))
    last = samples[-1]
    growth = last[1] - first[1]
    print(
        f"  {figures['acked']:,} events acknowledged, {figures['events_per_second']:,.0f} events/s, "
        f"server CPU {cpu / max(figures['acked'], 1) * 1e6:.1f} µs per event, {figures['errors']} errors; "
        f"forwarded {sink.received:,} bytes"
    )
    print(
        f"  server RSS at {first[0]:.0f} s: {first[1]:.1f} MB, at {last[0]:.0f} s: {last[1]:.1f} MB, "
        f"max {max(rss for _, rss in samples):.1f} MB; growth {growth:+.1f} MB "
        f"(target < {TARGET_MEMORY_MB:g} MB)"
    )
    print(f"load average after: {load_average()}")


def _modes(text: str) -> list[str]:
    modes = [mode for mode in text.split(",") if mode]
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown or not modes:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(MODES)}")
    return modes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window of each load run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    parser.add_argument("--copy-rows", type=int, default=60_000)
    parser.add_argument(
        "--table-rows",
        type=int,
        default=0,
        help="also measure into a clone of bench/fill.py's database of this many rows (0: empty only)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure each table state this many times, alternating"
    )
    parser.add_argument(
        "--dispatch", type=_modes, default=list(MODES), help="comma-separated modes: off, on (default both)"
    )
    parser.add_argument(
        "--memory-minutes", type=float, default=None, help="measure the server's RSS over this many minutes"
    )
    parser.add_argument("--memory-every", type=float, default=5.0, help="seconds between RSS samples")
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
    if args.memory_minutes is not None:
        asyncio.run(measure_memory(args))
        return
    asyncio.run(orchestrate(args))


if __name__ == "__main__":
    main()
