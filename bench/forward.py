"""Forwarding benchmark: the real delivery loop to a local rsyslog over TCP syslog, against a raw writer.

What it does, on a throwaway SQLite file (or, with ``--postgres``, a throwaway PostgreSQL database
from TEST_POSTGRES_URL or postgres@127.0.0.1:5432):

1. starts rsyslogd with its own configuration: one imtcp input (octet-counted framing), written by
   omfile to one file with a fixed template, ``%msg%\\n`` (the JSON body, one line per message);
2. adds an organisation and one ``syslog_tcp`` destination in the ``json`` format (RFC 5424, our JSON
   body, structured data under ``aifw@32473``) forwarding alerts and events of every risk level;
3. each round, alternating:
   - **raw**: the same N events, formatted and wrapped up front into the exact octet-counted
     RFC 5424 frames the transport writes, sent through one asyncio socket as fast as it takes them;
   - **forwarding**: N new events stored (untimed), then ``forwarding.runner.Forwarders`` started:
     it takes the destination's lease, reads the N events through the destination's cursor in pages,
     formats, sends and records its position after each page, until stopped;
   both timed from the start until rsyslog has written all N lines (the file is followed every 5 ms);
4. prints the medians, and the forwarding rate as a ratio of the raw writer's.

Usage: ``python bench/forward.py [--postgres] [--events 60000] [--rounds 3] [--profile FILE]``.
Target (issue 13): forwarding at least 50 % of the raw writer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import orjson
from sqlalchemy import select
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from db.configs import create_organization  # noqa: E402
from db.destinations import DestinationSpec, create_destination  # noqa: E402
from db.engine import migrate, new_engine, new_sessionmaker  # noqa: E402
from db.event_schema import Hello, validate_log  # noqa: E402
from db.events import store_events  # noqa: E402
from db.models import LogEntry  # noqa: E402
from db.rights import Actor  # noqa: E402
from db.settings import Settings, load_settings  # noqa: E402
from db.streams import EventLines, Position  # noqa: E402
from dispatch.service import KeylessSecretBox  # noqa: E402
from forwarding.delivery import FRAME_PAGE_ROWS, PAGE_ROWS, format_message, product_version  # noqa: E402
from forwarding.formats.syslog_sql import event_message_sql  # noqa: E402
from forwarding.reading import event_item  # noqa: E402
from forwarding.runner import Forwarders  # noqa: E402
from forwarding.transports.streams import Envelope  # noqa: E402
from forwarding.transports.syslog import octet_counted  # noqa: E402
from simulation.events import EventGenerator  # noqa: E402

DEFAULT_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
ORG = "bench"
BENCH = Actor(name="bench", source="cli")
#: The events are stored in transactions of this many, as the ingest server's batches.
STORE_BATCH = 500
TARGET = 0.5


# --- the database ----------------------------------------------------------------------------------


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def settings_for(url: str) -> Settings:
    return replace(load_settings({}), database_url=url, database_url_is_default=False)


@contextlib.asynccontextmanager
async def throwaway_database(*, postgres: bool, prefix: str) -> AsyncIterator[str]:
    """A migrated database (a SQLite file in a temporary folder, or a new PostgreSQL database), its URL;
    dropped when the block ends."""
    if not postgres:
        with tempfile.TemporaryDirectory(prefix=f"{prefix}-") as directory:
            url = f"sqlite+aiosqlite:///{directory}/bench.db"
            await _migrate(url)
            yield url
        return
    admin_url = os.environ.get("TEST_POSTGRES_URL", DEFAULT_ADMIN_URL)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    connection = await asyncpg.connect(_dsn(admin_url))
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        await _migrate(url)
        yield url
    finally:
        connection = await asyncpg.connect(_dsn(admin_url))
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()


async def _migrate(url: str) -> None:
    engine = new_engine(settings_for(url))
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


def describe(url: str) -> str:
    return "PostgreSQL" if url.startswith("postgresql") else "SQLite"


# --- rsyslog ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Rsyslog:
    """rsyslogd with its own configuration: octet-counted RFC 5424 over TCP in, one line per message out."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.output = directory / "received.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("rsyslogd") or shutil.which("rsyslogd", path="/usr/sbin:/sbin")
        if binary is None:
            raise SystemExit("rsyslogd is not installed (Debian: apt-get install rsyslog)")
        work = self.directory / "work"
        work.mkdir(exist_ok=True)
        config = self.directory / "rsyslog.conf"
        config.write_text(
            f"""
global(workDirectory="{work}" maxMessageSize="64k")
module(load="imtcp")
template(name="body" type="string" string="%msg%\\n")
ruleset(name="bench") {{
    action(type="omfile" file="{self.output}" template="body")
}}
input(type="imtcp" address="127.0.0.1" port="{self.port}" ruleset="bench")
"""
        )
        log = (self.directory / "rsyslogd.log").open("ab")
        self.process = subprocess.Popen(
            [binary, "-n", "-f", str(config), "-i", str(self.directory / "rsyslogd.pid")],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"rsyslogd exited: {(self.directory / 'rsyslogd.log').read_text()}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise SystemExit("rsyslogd did not start listening within 20 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


class LineCounter:
    """Follows a growing file and counts its lines, reading only what is new."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.lines = 0

    def poll(self) -> int:
        if not self.path.exists():
            return 0
        with self.path.open("rb") as file:
            file.seek(self.offset)
            chunk = file.read()
        self.offset += len(chunk)
        self.lines += chunk.count(b"\n")
        return self.lines

    async def wait_for(self, lines: int, *, timeout: float) -> float:
        """Wait until the file has ``lines`` lines; return the perf_counter time it was seen."""
        deadline = time.perf_counter() + timeout
        while self.poll() < lines:
            if time.perf_counter() > deadline:
                raise SystemExit(f"rsyslog wrote {self.lines} lines, expected {lines}, within {timeout:g} s")
            await asyncio.sleep(0.005)
        return time.perf_counter()


# --- the two writers -------------------------------------------------------------------------------


async def store_round(url: str, events: int, seed: int) -> list[bytes]:
    """Store ``events`` new events (untimed); return their frames as the syslog transport writes them."""
    hello = Hello(ORG, "t", "bench-forward", "forward@bench.example", "browser", None)
    generator = EventGenerator(seed=seed)
    engine = new_engine(settings_for(url))
    try:
        sessions = new_sessionmaker(engine)
        for start in range(0, events, STORE_BATCH):
            batch = [
                validate_log(generator.event(), hello=hello) for _ in range(min(STORE_BATCH, events - start))
            ]
            async with sessions() as session:
                await store_events(session=session, events=batch)
                await session.commit()
        return await _frames_of_last(sessions, events)
    finally:
        await engine.dispose()


async def _frames_of_last(sessions: async_sessionmaker[AsyncSession], events: int) -> list[bytes]:
    """The last ``events`` stored events, as the forwarder formats them (a read for the benchmark only)."""
    async with sessions() as session:
        rows = (
            await session.scalars(select(LogEntry).order_by(LogEntry.commit_seq.desc()).limit(events))
        ).all()
    envelope = Envelope.from_options({})
    version = product_version()
    return [
        octet_counted(envelope.wrap(format_message(event_item(row), "json", version=version)))
        for row in reversed(rows)
    ]


async def raw_round(port: int, frames: list[bytes], counter: LineCounter, timeout: float) -> float:
    """Seconds from connecting until rsyslog wrote every frame sent through one plain socket."""
    target = counter.poll() + len(frames)
    started = time.perf_counter()
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"".join(frames))
    await writer.drain()
    done = await counter.wait_for(target, timeout=timeout)
    writer.close()
    await writer.wait_closed()
    return done - started


async def forward_round(
    url: str, events: int, counter: LineCounter, timeout: float, profiler: cProfile.Profile | None
) -> float:
    """Seconds from starting the forwarders until rsyslog wrote the ``events`` waiting for them."""
    engine = new_engine(settings_for(url))
    try:
        target = counter.poll() + events
        forwarders = Forwarders(
            new_sessionmaker(engine),
            holder=f"bench-{uuid.uuid4().hex[:8]}",
            secrets=KeylessSecretBox("bench"),
        )
        stop = asyncio.Event()
        if profiler is not None:
            profiler.enable()
        started = time.perf_counter()
        task = asyncio.create_task(forwarders.run(stop))
        done = await counter.wait_for(target, timeout=timeout)
        if profiler is not None:
            profiler.disable()
        stop.set()
        await task
        return done - started
    finally:
        await engine.dispose()


async def postgresql_page_seconds(url: str, repeats: int = 3) -> float:
    """PostgreSQL's own execution time of one full page of frames (``EXPLAIN ANALYZE``, best of ``repeats``,
    from the first stored event): what one reader cannot go below, whatever the forwarder does."""
    envelope = Envelope.from_options({})
    lines = EventLines(
        event_message_sql(
            hostname=envelope.hostname,
            app_name=envelope.app_name,
            facility=envelope.facility,
            sd_id=envelope.sd_id,
        ),
        limit=FRAME_PAGE_ROWS,
        organization_id=ORG,
        risk_levels=["amber", "green", "red"],
    )
    statement = lines.statement(after=Position(0), bound=2**62)
    sql = str(statement.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    connection = await asyncpg.connect(_dsn(url))
    try:
        times = []
        for _ in range(repeats):
            plan = await connection.fetchval(f"EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) {sql}")
            times.append(orjson.loads(plan)[0]["Execution Time"] / 1000)
        return min(times)
    finally:
        await connection.close()


# --- the run ---------------------------------------------------------------------------------------


#: What the ingest and dispatcher CPU benchmarks forward: alerts and the red and amber events.
RED_AND_AMBER = frozenset({"red", "amber"})


async def add_destination(
    url: str,
    port: int,
    *,
    organization_id: str = ORG,
    name: str = "rsyslog",
    event_risk_levels: frozenset[str] = frozenset({"green", "amber", "red"}),
    new_organization: bool = False,
) -> None:
    """A syslog-over-TCP destination (our JSON) at 127.0.0.1:``port`` forwarding alerts and these events,
    for ``organization_id`` (created first when ``new_organization``)."""
    engine = new_engine(settings_for(url))
    try:
        async with new_sessionmaker(engine)() as session:
            if new_organization:
                await create_organization(session=session, organization_id=organization_id, actor=BENCH)
            await create_destination(
                session=session,
                organization_id=organization_id,
                spec=DestinationSpec(
                    name=name,
                    transport="syslog_tcp",
                    format="json",
                    address=f"127.0.0.1:{port}",
                    forward_alerts=True,
                    event_risk_levels=event_risk_levels,
                ),
                actor=BENCH,
                secrets=KeylessSecretBox("bench"),
            )
            await session.commit()
    finally:
        await engine.dispose()


async def orchestrate(args: argparse.Namespace) -> None:
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    profiler = cProfile.Profile() if args.profile else None
    with tempfile.TemporaryDirectory(prefix="aifw-bench-rsyslog-") as directory:
        rsyslog = Rsyslog(Path(directory))
        rsyslog.start()
        try:
            async with throwaway_database(postgres=args.postgres, prefix="aifw_bench_forward") as url:
                await add_destination(url, rsyslog.port, new_organization=True)
                counter = LineCounter(rsyslog.output)
                raw_rates: list[float] = []
                forward_rates: list[float] = []
                for round_number in range(args.rounds):
                    frames = await store_round(url, args.events, seed=100 + round_number)
                    size = sum(len(frame) for frame in frames) / len(frames)
                    raw = await raw_round(rsyslog.port, frames, counter, args.timeout)
                    forwarded = await forward_round(url, args.events, counter, args.timeout, profiler)
                    raw_rates.append(args.events / raw)
                    forward_rates.append(args.events / forwarded)
                    print(
                        f"round {round_number + 1}: raw {raw_rates[-1]:,.0f} msg/s ({raw:.2f} s), "
                        f"forwarding {forward_rates[-1]:,.0f} msg/s ({forwarded:.2f} s), "
                        f"ratio {forward_rates[-1] / raw_rates[-1]:.0%}"
                    )
                raw_rate = statistics.median(raw_rates)
                batch, builder = (FRAME_PAGE_ROWS, "PostgreSQL") if args.postgres else (PAGE_ROWS, "Python")
                forward_rate = statistics.median(forward_rates)
                print(
                    f"format: RFC 5424 with the JSON body ({size:.0f} bytes a frame on average), "
                    "octet-counted (RFC 6587) over one TCP connection; rsyslog: imtcp -> omfile, "
                    "template '%msg%\\n'; end: rsyslog has written all N lines"
                )
                print(
                    f"{describe(url)}, {args.events:,} events a round, {args.rounds} rounds (medians): "
                    f"raw socket writer {raw_rate:,.0f} msg/s; forwarding (Forwarders: cursor read, format, "
                    f"send, position recorded every {batch:,} events; frames built by {builder}) "
                    f"{forward_rate:,.0f} msg/s"
                )
                ratio = forward_rate / raw_rate
                print(
                    f"ratio to the raw writer: {ratio:.0%} (rounds: "
                    f"{', '.join(f'{f / r:.0%}' for f, r in zip(forward_rates, raw_rates, strict=True))}; "
                    f"target >= {TARGET:.0%})"
                )
                if args.postgres:
                    page = await postgresql_page_seconds(url)
                    per_frame = page / FRAME_PAGE_ROWS
                    print(
                        f"PostgreSQL alone, building a page of {FRAME_PAGE_ROWS:,} frames (EXPLAIN ANALYZE, "
                        f"best of 3): {page * 1000:.0f} ms, {per_frame * 1e6:.2f} µs a frame, against "
                        f"{1e6 / raw_rate:.2f} µs a message for the raw writer: one reader could reach at "
                        f"most {1 / per_frame / raw_rate:.0%} of it with nothing else to do"
                    )
        finally:
            rsyslog.stop()
    if profiler is not None:
        profiler.dump_stats(args.profile)
        print(f"profile of the forwarding rounds written to {args.profile}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL database, not SQLite")
    parser.add_argument(
        "--events",
        type=int,
        default=60_000,
        help="events forwarded each round (3 of PostgreSQL's frame pages)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a round may take at most")
    parser.add_argument(
        "--profile", default=None, metavar="FILE", help="cProfile the forwarding rounds into FILE"
    )
    asyncio.run(orchestrate(parser.parse_args()))


if __name__ == "__main__":
    main()
