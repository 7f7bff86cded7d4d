"""Benchmark of the retention cleanup on PostgreSQL: batched cleanup against one plain DELETE.

Creates its own database (migrated), loads ``--rows`` logs spread evenly over
``--days`` days and several organisations with different retention by COPY,
then measures, on identical copies of that data:

1. the batched cleanup (:func:`db.retention.run_retention`, the code the
   scheduler, the console and cron run), and
2. one plain ``DELETE`` of exactly the same rows,

each with a concurrent inserter in another process writing one log every
``--insert-every-ms`` in its own transaction, as the ingest server would. It
prints rows deleted per second for both, their ratio, and the worst (and
99th percentile) insert latency during each. Targets (issue 4): batched within
2x of the plain DELETE's rate; no insert stalled longer than 100 ms.

``--mode partitions`` measures retention by partition (issue 14) instead: ``--partitions``
weeks of ``--rows-per-partition`` rows each, every row past every cutoff, cleaned once by a
run over all organisations (the partitions are detached and dropped, db/partitions.py) and
once, on the same rows, by the batched deletes (a run per organisation). Targets: the drop at
least 20x faster than the batched delete, no insert stalled longer than 100 ms meanwhile.

    .venv/bin/python bench/retention.py                 # 2,000,000 rows, a few minutes on 2 cores
    .venv/bin/python bench/retention.py --rows 5000000  # bigger
    .venv/bin/python bench/retention.py --mode partitions                           # 2 x 1,000,000 rows

PostgreSQL comes from ``TEST_POSTGRES_URL`` (default: the local server as
postgres); the database is dropped at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import multiprocessing
import os
import random
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from db.engine import migrate, new_engine, new_sessionmaker  # noqa: E402
from db.partition_layout import WEEK, week_start  # noqa: E402
from db.retention import DEFAULT_BATCH_SIZES, cutoff_for, run_retention  # noqa: E402
from db.rights import Actor  # noqa: E402
from db.settings import Settings, load_settings  # noqa: E402
from db.vocabulary import DEFAULT_RETENTION_DAYS, RISK_LEVELS  # noqa: E402

DEFAULT_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
#: Organisations and their retention; ``None`` has no config row (so the default applies).
ORGANIZATIONS: tuple[tuple[str, int | None], ...] = (
    ("acme", 30),
    ("globex", 60),
    ("initech", None),
    ("umbrella", 180),
    ("hooli", 365),
)
LIVE_ORGANIZATION = "live"
PLAIN_ONE_STATEMENT = "one plain DELETE (all organisations)"
PLAIN_PER_ORGANIZATION = "plain DELETE per organisation"
TOOLS = (("ChatGPT", "web"), ("Claude", "web"), ("Cursor", "desktop"), ("Claude Code", "cli"))
COPY_CHUNK = 100_000
COLUMNS = (
    "id",
    "timestamp",
    "device_id",
    "user_id",
    "tool_name",
    "tool_type",
    "risk_level",
    "prompt_length",
    "detected_entity_types",
    "entity_count",
    "was_sanitized",
    "log_metadata",
    "created_at",
    "organization_id",
)


def dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def progress(message: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {message}", flush=True)


# --- data ------------------------------------------------------------------------------------------


def _record(rng: random.Random, index: int, moment: datetime, organization_id: str) -> tuple[object, ...]:
    """Row ``index`` of a data set at ``moment``, in COPY order (tool, user, device from ``index``)."""
    tool, kind = TOOLS[index % len(TOOLS)]
    entities = rng.randrange(4)
    return (
        uuid.uuid4(),
        moment,
        f"dev-{index % 5000}",
        f"user-{index % 2000}",
        tool,
        kind,
        RISK_LEVELS[min(entities, 2)],
        rng.randrange(20, 4000),
        json.dumps(["EMAIL"] * min(entities, 1)),
        entities,
        bool(entities and index % 3 == 0),
        '{"os": "linux"}',
        moment,
        organization_id,
    )


def generate(rows: int, days: int, now: datetime, start: int, count: int) -> list[tuple[object, ...]]:
    """Rows ``start .. start+count`` of the data set: time order, organisations interleaved."""
    rng = random.Random(start)
    span = timedelta(days=days).total_seconds()
    first = now - timedelta(days=days)
    records = []
    for index in range(start, start + count):
        organization_id = ORGANIZATIONS[index % len(ORGANIZATIONS)][0]
        moment = first + timedelta(seconds=span * index / rows)
        records.append(_record(rng, index, moment, organization_id))
    return records


async def load_seed(connection: asyncpg.Connection, rows: int, days: int, now: datetime) -> None:
    """COPY the data set once into an unlogged, index-free seed table."""
    await connection.execute("CREATE UNLOGGED TABLE log_entries_seed (LIKE log_entries INCLUDING DEFAULTS)")
    for start in range(0, rows, COPY_CHUNK):
        records = generate(rows, days, now, start, min(COPY_CHUNK, rows - start))
        await connection.copy_records_to_table("log_entries_seed", records=records, columns=COLUMNS)
        progress(f"copied {start + len(records):,} / {rows:,} rows")


async def reload(connection: asyncpg.Connection) -> None:
    """Give log_entries (and its partitions) a fresh copy of the seed, vacuumed and analysed.

    Counting is paused for the copy: the rows are the same events again, and the rollups are not
    what is measured.
    """
    await connection.execute("TRUNCATE log_entries")
    async with connection.transaction():
        await connection.execute("SET LOCAL aifw.counting = 'off'")
        await connection.execute("INSERT INTO log_entries SELECT * FROM log_entries_seed")
    await connection.execute("VACUUM (ANALYZE) log_entries")
    await connection.execute("CHECKPOINT")
    # Autovacuum may still visit the partitions just loaded; a week that expired months ago is left
    # alone, and a DROP would wait (1 s, deadlock_timeout) for the worker to be cancelled.
    for _ in range(600):
        workers = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
            " AND datname = current_database()"
        )
        if not workers:
            break
        await asyncio.sleep(0.2)


# --- the concurrent inserter -----------------------------------------------------------------------


def inserter_process(url: str, every_ms: float, ready: object, stop: object, results: object) -> None:
    """Insert one log every ``every_ms`` in its own transaction until ``stop``; report latencies."""
    asyncio.run(_insert_until_stopped(url, every_ms, ready, stop, results))


async def _insert_until_stopped(
    url: str, every_ms: float, ready: object, stop: object, results: object
) -> None:
    connection = await asyncpg.connect(dsn(url))
    statement = await connection.prepare(
        "INSERT INTO log_entries (id, timestamp, device_id, user_id, tool_name, tool_type, risk_level,"
        " prompt_length, detected_entity_types, entity_count, was_sanitized, log_metadata, created_at,"
        " organization_id) VALUES ($1, $2, 'dev-live', 'user-live', 'ChatGPT', 'web', 'green', 100,"
        " '[]', 0, false, '{}', $2, $3)"
    )
    latencies: list[float] = []
    ready.set()  # type: ignore[attr-defined]
    next_at = time.perf_counter()
    while not stop.is_set():  # type: ignore[attr-defined]
        began = time.perf_counter()
        await statement.fetch(uuid.uuid4(), datetime.now(UTC), LIVE_ORGANIZATION)
        latencies.append((time.perf_counter() - began) * 1000)
        next_at += every_ms / 1000
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    await connection.close()
    results.put(latencies)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Measurement:
    name: str
    rows: int
    seconds: float
    inserts: int
    worst_insert_ms: float
    p99_insert_ms: float

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


async def measure(name: str, url: str, every_ms: float, work: object) -> Measurement:
    context = multiprocessing.get_context("spawn")
    ready, stop, results = context.Event(), context.Event(), context.Queue()
    process = context.Process(target=inserter_process, args=(url, every_ms, ready, stop, results))
    process.start()
    await asyncio.to_thread(ready.wait, 30)
    await asyncio.sleep(1.0)  # a baseline of quiet inserts before the delete starts
    began = time.perf_counter()
    rows = await work()  # type: ignore[operator]
    seconds = time.perf_counter() - began
    await asyncio.sleep(0.5)
    stop.set()
    latencies = sorted(await asyncio.to_thread(results.get, True, 60))
    await asyncio.to_thread(process.join, 30)
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else 0.0
    return Measurement(name, rows, seconds, len(latencies), latencies[-1] if latencies else 0.0, p99)


# --- the two ways of deleting ----------------------------------------------------------------------


def retention_of(organization_id: str) -> int:
    days = dict(ORGANIZATIONS)[organization_id]
    return DEFAULT_RETENTION_DAYS if days is None else days


async def batched_cleanup(settings: Settings, now: datetime, batch_size: int) -> int:
    engine = new_engine(settings)
    try:
        # As cron runs it: the command line's actor, so the audit rows are updated with every batch too.
        summary = await run_retention(
            sessions=new_sessionmaker(engine), actor=Actor.cli(), batch_size=batch_size, now=now
        )
    finally:
        await engine.dispose()
    assert summary.status == "succeeded", summary
    # The live organisation (no config, all rows new) is cleaned too and deletes nothing.
    return summary.total_rows


async def plain_delete(url: str, now: datetime) -> int:
    connection = await asyncpg.connect(dsn(url))
    try:
        values = ", ".join(
            f"('{org}', '{cutoff_for(now, retention_of(org)).isoformat()}'::timestamptz)"
            for org, _ in ORGANIZATIONS
        )
        status = await connection.execute(
            "DELETE FROM log_entries AS l USING (VALUES " + values + ") AS c(organization_id, cutoff)"
            " WHERE l.organization_id = c.organization_id AND l.timestamp < c.cutoff"
        )
    finally:
        await connection.close()
    return int(status.split()[-1])


async def plain_delete_per_organization(url: str, now: datetime) -> int:
    """What a naive cleanup does: one DELETE per organisation, each in its own transaction."""
    connection = await asyncpg.connect(dsn(url))
    total = 0
    try:
        for org, _ in ORGANIZATIONS:
            status = await connection.execute(
                "DELETE FROM log_entries WHERE organization_id = $1 AND timestamp < $2",
                org,
                cutoff_for(now, retention_of(org)),
            )
            total += int(status.split()[-1])
    finally:
        await connection.close()
    return total


async def expected_rows(connection: asyncpg.Connection, now: datetime) -> int:
    total = 0
    for org, _ in ORGANIZATIONS:
        total += await connection.fetchval(
            "SELECT count(*) FROM log_entries WHERE organization_id = $1 AND timestamp < $2",
            org,
            cutoff_for(now, retention_of(org)),
        )
    return total


# --- retention by partition ------------------------------------------------------------------------

#: Organisations of the partition measurement: every row is past both cutoffs.
PARTITION_ORGANIZATIONS = (("acme", 30), ("globex", 60))
PARTITION_DROP = "drop whole partitions (run over all organisations)"
PARTITION_BATCHED = "batched delete of the same rows (a run per organisation)"
#: Issue 14: the drop is at least this many times faster than the batched delete.
DROP_SPEEDUP_TARGET = 20.0


def generate_weeks(weeks: list[datetime], per_week: int, start: int, count: int) -> list[tuple[object, ...]]:
    """Rows ``start .. start+count`` of the partition data set: ``per_week`` rows in each week."""
    rng = random.Random(start)
    records = []
    for index in range(start, start + count):
        week = weeks[index // per_week]
        moment = week + timedelta(seconds=(index % per_week) * (7 * 86400 - 1) / per_week)
        organization_id = PARTITION_ORGANIZATIONS[index % len(PARTITION_ORGANIZATIONS)][0]
        records.append(_record(rng, index, moment, organization_id))
    return records


async def drop_partitions(settings: Settings, now: datetime) -> int:
    engine = new_engine(settings)
    try:
        summary = await run_retention(sessions=new_sessionmaker(engine), actor=Actor.cli(), now=now)
    finally:
        await engine.dispose()
    assert summary.status == "succeeded", summary
    return summary.total_rows


async def batched_per_organization(settings: Settings, now: datetime) -> int:
    engine = new_engine(settings)
    total = 0
    try:
        for org, _days in PARTITION_ORGANIZATIONS:
            summary = await run_retention(
                sessions=new_sessionmaker(engine), actor=Actor.cli(), organization_id=org, now=now
            )
            assert summary.status == "succeeded", summary
            total += summary.total_rows
    finally:
        await engine.dispose()
    return total


async def run_partitions(args: argparse.Namespace) -> int:
    admin_url = os.environ.get("TEST_POSTGRES_URL", DEFAULT_ADMIN_URL)
    name = f"aifw_bench_partitions_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn(admin_url))
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    settings = load_settings({"DATABASE_URL": url})
    rows = args.partitions * args.rows_per_partition
    try:
        engine = new_engine(settings)
        await migrate(engine)
        await engine.dispose()
        now = datetime.now(UTC).replace(microsecond=0)
        connection = await asyncpg.connect(dsn(url))
        for org, days in PARTITION_ORGANIZATIONS:
            await connection.execute(
                "INSERT INTO firewall_configs (id, organization_id, monitored_tools,"
                " sensitivity_thresholds, custom_patterns, log_retention_days, updated_at)"
                " VALUES ($1, $2, '[]', '{}', '[]', $3, now())",
                uuid.uuid4(),
                org,
                days,
            )
        oldest = week_start(now - timedelta(days=max(days for _org, days in PARTITION_ORGANIZATIONS) + 14))
        weeks = [oldest - WEEK * index for index in range(args.partitions)]
        print(f"loading {args.partitions} weeks x {args.rows_per_partition:,} rows (COPY)")
        await connection.execute(
            "CREATE UNLOGGED TABLE log_entries_seed (LIKE log_entries INCLUDING DEFAULTS)"
        )
        for start in range(0, rows, COPY_CHUNK):
            records = generate_weeks(weeks, args.rows_per_partition, start, min(COPY_CHUNK, rows - start))
            await connection.copy_records_to_table("log_entries_seed", records=records, columns=COLUMNS)
            progress(f"copied {start + len(records):,} / {rows:,} rows")
        methods: list[tuple[str, Any]] = [
            (PARTITION_DROP, functools.partial(drop_partitions, settings, now)),
            (PARTITION_BATCHED, functools.partial(batched_per_organization, settings, now)),
        ]
        results: dict[str, Measurement] = {}
        for title, work in methods:
            began = time.perf_counter()
            await reload(connection)
            progress(f"reloaded in {time.perf_counter() - began:.0f} s")
            measurement = await measure(title, url, args.insert_every_ms, work)
            assert measurement.rows == rows, (measurement.rows, rows)
            results[title] = measurement
            progress(f"{title}: {measurement.rows:,} rows in {measurement.seconds:.2f} s")
        await connection.close()
    finally:
        if not args.keep:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    print()
    print(
        f"{args.partitions} weekly partitions x {args.rows_per_partition:,} rows, "
        "every row past every cutoff; "
        f"PostgreSQL, {os.cpu_count()} cores; a concurrent insert every {args.insert_every_ms:g} ms"
    )
    print(f"{'method':<58} {'seconds':>8} {'rows/s':>12} {'worst insert ms':>16} {'p99 insert ms':>14}")
    for title, m in results.items():
        print(
            f"{title:<58} {m.seconds:>8.2f} {m.rate:>12,.0f} "
            f"{m.worst_insert_ms:>16.1f} {m.p99_insert_ms:>14.1f}"
        )
    drop, batched = results[PARTITION_DROP], results[PARTITION_BATCHED]
    speedup = batched.seconds / drop.seconds
    print(
        f"drop / batched delete: {speedup:.1f}x faster (target: at least {DROP_SPEEDUP_TARGET:g}x, "
        f"{speedup / DROP_SPEEDUP_TARGET:.2f} of it)"
    )
    print(
        f"worst concurrent insert during the drop: {drop.worst_insert_ms:.1f} ms "
        f"(target: under 100 ms, {drop.worst_insert_ms / 100:.2f} of it)"
    )
    return 0


# --- main ------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> int:
    admin_url = os.environ.get("TEST_POSTGRES_URL", DEFAULT_ADMIN_URL)
    name = f"aifw_bench_retention_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn(admin_url))
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    settings = load_settings({"DATABASE_URL": url})
    try:
        engine = new_engine(settings)
        await migrate(engine)
        await engine.dispose()
        now = datetime.now(UTC).replace(microsecond=0)
        connection = await asyncpg.connect(dsn(url))
        for org, days in ORGANIZATIONS:
            if days is not None:
                await connection.execute(
                    "INSERT INTO firewall_configs (id, organization_id, monitored_tools,"
                    " sensitivity_thresholds, custom_patterns, log_retention_days, updated_at)"
                    " VALUES ($1, $2, '[]', '{}', '[]', $3, now())",
                    uuid.uuid4(),
                    org,
                    days,
                )
        print(f"loading {args.rows:,} rows over {args.days} days, {len(ORGANIZATIONS)} organisations (COPY)")
        began = time.perf_counter()
        await load_seed(connection, args.rows, args.days, now)
        progress(f"seed loaded in {time.perf_counter() - began:.0f} s")

        methods: list[tuple[str, Any]] = [
            (
                f"batched cleanup ({size} rows per transaction)",
                functools.partial(batched_cleanup, settings, now, size),
            )
            for size in args.batch_size
        ]
        methods.append((PLAIN_PER_ORGANIZATION, functools.partial(plain_delete_per_organization, url, now)))
        methods.append((PLAIN_ONE_STATEMENT, functools.partial(plain_delete, url, now)))
        rounds: dict[str, list[Measurement]] = {title: [] for title, _ in methods}
        for round_number in range(1, args.rounds + 1):
            # Rounds alternate the methods, so load from other work on the machine hits them alike.
            for title, work in methods:
                began = time.perf_counter()
                await reload(connection)
                expected = await expected_rows(connection, now)
                progress(
                    f"round {round_number}: reloaded in {time.perf_counter() - began:.0f} s; "
                    f"{expected:,} to delete"
                )
                measurement = await measure(title, url, args.insert_every_ms, work)
                assert measurement.rows == expected, (measurement.rows, expected)
                rounds[title].append(measurement)
                progress(f"{title}: {measurement.rows:,} rows in {measurement.seconds:.1f} s")
        size = await connection.fetchval("SELECT pg_size_pretty(pg_total_relation_size('log_entries_seed'))")
        await connection.close()
    finally:
        if not args.keep:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    # The best rate of each method over the rounds (the least disturbed), and the worst insert latency seen.
    best = {title: max(runs, key=lambda m: m.rate) for title, runs in rounds.items()}
    worst_insert = {title: max(m.worst_insert_ms for m in runs) for title, runs in rounds.items()}
    worst_p99 = {title: max(m.p99_insert_ms for m in runs) for title, runs in rounds.items()}
    deleted = best[PLAIN_ONE_STATEMENT].rows
    print()
    print(
        f"{args.rows:,} rows over {args.days} days, {len(ORGANIZATIONS)} organisations "
        f"(table without indexes: {size});"
        f" {deleted:,} expired; PostgreSQL, {os.cpu_count()} cores; best of {args.rounds} rounds"
    )
    print(f"{'method':<46} {'rows/s':>10} {'seconds':>8} {'worst insert ms':>16} {'p99 insert ms':>14}")
    for title, m in best.items():
        print(
            f"{title:<46} {m.rate:>10,.0f} {m.seconds:>8.2f} "
            f"{worst_insert[title]:>16.1f} {worst_p99[title]:>14.1f}"
        )
    for title, _ in methods[: len(args.batch_size)]:
        for baseline in (PLAIN_ONE_STATEMENT, PLAIN_PER_ORGANIZATION):
            ratio = best[baseline].rate / best[title].rate
            print(f"{baseline} / {title}: {ratio:.2f}x the rate (target: at most 2x)")
        print(f"{title}: worst concurrent insert {worst_insert[title]:.1f} ms (target: under 100 ms)")
    if args.keep:
        print(f"kept database {name}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="logs to load (default 2,000,000)")
    parser.add_argument(
        "--days", type=int, default=360, help="days the logs span (default 360; partitions go back 365)"
    )
    parser.add_argument(
        "--batch-size",
        type=lambda raw: [int(size) for size in raw.split(",")],
        default=[DEFAULT_BATCH_SIZES["postgresql"]],
        help="rows per batch; several, comma-separated, measure each (default: the cleanup's own)",
    )
    parser.add_argument("--insert-every-ms", type=float, default=10.0, help="concurrent insert period")
    parser.add_argument(
        "--rounds", type=int, default=2, help="measure each method this many times (default 2)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument(
        "--mode",
        choices=("batches", "partitions"),
        default="batches",
        help="batches: batched cleanup against plain DELETEs; partitions: drop against batched delete",
    )
    parser.add_argument(
        "--partitions", type=int, default=2, help="partitions mode: weeks of rows (default 2)"
    )
    parser.add_argument(
        "--rows-per-partition",
        type=int,
        default=1_000_000,
        help="partitions mode: rows per week (default 1 M)",
    )
    args = parser.parse_args()
    return asyncio.run(run_partitions(args) if args.mode == "partitions" else run(args))


if __name__ == "__main__":
    sys.exit(main())
