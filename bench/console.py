"""Console benchmark: log pages, filters, counts and the overview at millions of rows in PostgreSQL.

Loads ``--rows`` generated log entries (default 10 M) by COPY into its own
database (``aifw_bench_console``, migrated with ``db.engine.migrate``; loading
is skipped when it already holds that many rows), then prints for the first
page, the next page, every single filter and a combined filter: the console's
query time (``db.logs.page``), the same query's ``EXPLAIN ANALYZE`` execution
time, whether the plan has a sequential scan of ``log_entries``, and the time
from a key press to the rendered page through Textual's Pilot. Then the
overview's queries (``db.overview``) for each window.

    .venv/bin/python bench/console.py [--rows N] [--admin-url URL] [--skip-pilot]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from sqlalchemy import text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from db import logs, overview  # noqa: E402
from db.engine import migrate, new_engine, new_sessionmaker  # noqa: E402
from db.settings import load_settings  # noqa: E402
from db.vocabulary import DEFAULT_MONITORED_TOOLS  # noqa: E402

DB_NAME = "aifw_bench_console"
DEFAULT_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
USERS = 2_000
DEVICES = 4_000
ORGS = ("default", "acme", "globex")
DAYS = 90
ENTITY_TYPES = (
    "EMAIL",
    "PHONE",
    "PERSON",
    "ADDRESS",
    "IBAN",
    "CREDIT_CARD",
    "API_KEY",
    "PASSWORD",
    "SSN",
    "IP_ADDRESS",
    "PRIVATE_KEY",
    "HEALTH",
)
BENCH_USER = "bench"
BENCH_PASSWORD = "bench-password-123"
COPY_CHUNK = 50_000


def log(message: str) -> None:
    print(message, flush=True)


def dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


# -- loading --------------------------------------------------------------------------------------


def generate_rows(count: int, now: datetime, seed: int = 5) -> AsyncIterator[bytes]:
    """CSV chunks of ``count`` log rows over the last :data:`DAYS` days, times to the second (ties)."""
    rng = random.Random(seed)
    tools = [(name, kind) for name, kind in DEFAULT_MONITORED_TOOLS]
    tool_weights = [30, 15, 8, 8, 4, 2, 2, 10, 8, 4, 4, 2, 2, 1]
    span = DAYS * 86_400
    start = now - timedelta(seconds=span)

    async def chunks() -> AsyncIterator[bytes]:
        produced = 0
        while produced < count:
            size = min(COPY_CHUNK, count - produced)
            lines = []
            # Rows arrive roughly in time order, as at ingest; times to the second make ties.
            first = produced * span // count
            width = max(1, size * span // count)
            offsets = sorted(rng.randrange(width) for _ in range(size))
            for index in range(size):
                moment = start + timedelta(seconds=min(span - 1, first + offsets[index]))
                user = rng.randrange(USERS)
                device = (user * 2 + rng.randrange(2)) % DEVICES
                tool, kind = rng.choices(tools, tool_weights)[0]
                roll = rng.random()
                if roll < 0.70:
                    risk, entities = "green", []
                elif roll < 0.92:
                    risk, entities = "amber", rng.sample(ENTITY_TYPES[:6], rng.randint(1, 2))
                else:
                    risk, entities = "red", rng.sample(ENTITY_TYPES, rng.randint(1, 3))
                sanitized = "t" if entities and rng.random() < 0.3 else "f"
                meta = '"{""os"": ""linux"", ""agent"": ""1.4.2""}"'
                entity_json = '"' + orjson.dumps(entities).decode().replace('"', '""') + '"'
                lines.append(
                    f"{uuid.UUID(int=rng.getrandbits(128), version=4)},{moment.isoformat()},"
                    f"dev-{device:05d},user{user:04d}@{ORGS[user % 3]}.example,{tool},{kind},{risk},"
                    f"{rng.randint(20, 4000)},{entity_json},{len(entities)},{sanitized},{meta},"
                    f"{moment.isoformat()},{ORGS[user % 3]}\n"
                )
            produced += size
            yield "".join(lines).encode()

    return chunks()


async def row_count(connection: asyncpg.Connection) -> int:
    exists = await connection.fetchval("SELECT to_regclass('log_entries') IS NOT NULL")
    if not exists:
        return -1
    return int(await connection.fetchval("SELECT count(*) FROM log_entries"))


async def ensure_database(admin_url: str, rows: int, name: str = DB_NAME) -> str:
    """The bench database, with ``rows`` log rows, indexes, rollups and devices; loads only if needed."""
    admin = await asyncpg.connect(dsn(admin_url))
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    settings = replace(load_settings({"DATABASE_URL": url}), bcrypt_rounds=4)
    engine = new_engine(settings)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
    connection = await asyncpg.connect(dsn(url))
    try:
        have = await row_count(connection)
        if have == rows:
            log(f"database {name} already holds {rows:,} rows: loading skipped")
        else:
            await load(connection, rows)
        await ensure_bench_user(url)
    finally:
        await connection.close()
    return url


async def load(connection: asyncpg.Connection, rows: int) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    await connection.execute("SET maintenance_work_mem = '1GB'")
    await connection.execute(
        "TRUNCATE log_entries, log_hourly_counts, log_daily_counts, log_weekly_counts, devices"
    )
    indexes = await connection.fetch(
        "SELECT indexname, indexdef FROM pg_indexes"
        " WHERE tablename = 'log_entries' AND indexname <> 'pk_log_entries'"
    )
    for index in indexes:
        await connection.execute(f'DROP INDEX "{index["indexname"]}"')
    started = time.perf_counter()
    columns = [
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
    ]
    await connection.copy_to_table(
        "log_entries", source=generate_rows(rows, now), columns=columns, format="csv"
    )
    log(f"COPY of {rows:,} rows: {time.perf_counter() - started:.0f} s")
    started = time.perf_counter()
    for index in indexes:
        await connection.execute(index["indexdef"])
    log(f"{len(indexes)} indexes rebuilt: {time.perf_counter() - started:.0f} s")
    started = time.perf_counter()
    # The same counts db.rollups.add_events keeps at ingest, computed in bulk.
    await connection.execute(
        """
        INSERT INTO log_hourly_counts (bucket_start, organization_id, dimension, key, risk_level, event_count)
        SELECT date_trunc('hour', timestamp AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', organization_id,
               'risk', '', risk_level, count(*)
          FROM log_entries GROUP BY 1, 2, 5
        UNION ALL
        SELECT date_trunc('hour', timestamp AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', organization_id,
               'tool', tool_name, risk_level, count(*)
          FROM log_entries GROUP BY 1, 2, 4, 5
        UNION ALL
        SELECT date_trunc('hour', timestamp AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', organization_id,
               'user', user_id, risk_level, count(*)
          FROM log_entries GROUP BY 1, 2, 4, 5
        UNION ALL
        SELECT date_trunc('hour', timestamp AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', organization_id,
               'entity', entity, risk_level, count(*)
          FROM log_entries, jsonb_array_elements_text(detected_entity_types) AS entity GROUP BY 1, 2, 4, 5
        """
    )
    await connection.execute(
        """
        INSERT INTO devices (id, device_id, user_id, device_type, registered_at, last_seen, is_active,
                             organization_id)
        SELECT gen_random_uuid(), device_id, min(user_id), 'browser', min(timestamp), max(timestamp), true,
               min(organization_id)
          FROM log_entries GROUP BY device_id
        """
    )
    # Days and weeks cut in UTC, whatever the session's time zone, as db.rollups does.
    await connection.execute(
        """
        INSERT INTO log_daily_counts
        SELECT date_trunc('day', bucket_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
               organization_id, dimension, key, risk_level, sum(event_count)
          FROM log_hourly_counts GROUP BY 1, 2, 3, 4, 5
        """
    )
    await connection.execute(
        """
        INSERT INTO log_weekly_counts
        SELECT date_trunc('week', bucket_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
               organization_id, dimension, key, risk_level, sum(event_count)
          FROM log_daily_counts GROUP BY 1, 2, 3, 4, 5
        """
    )
    # At ingest each hour's counts are written during that hour; store them in that order too.
    await connection.execute("CLUSTER log_hourly_counts USING pk_log_hourly_counts")
    log(f"rollups and devices: {time.perf_counter() - started:.0f} s")
    await connection.execute("VACUUM ANALYZE log_entries")
    for table in ("log_hourly_counts", "log_daily_counts", "log_weekly_counts"):
        await connection.execute(f"VACUUM ANALYZE {table}")
    await connection.execute("ANALYZE devices")


async def ensure_bench_user(url: str) -> None:
    from db.rights import Actor
    from db.users import create_user, get_by_username

    settings = replace(load_settings({"DATABASE_URL": url}), bcrypt_rounds=4)
    engine = new_engine(settings)
    try:
        async with new_sessionmaker(engine)() as session:
            if await get_by_username(session=session, username=BENCH_USER) is None:
                await create_user(
                    session=session,
                    username=BENCH_USER,
                    email="bench@example.com",
                    password=BENCH_PASSWORD,
                    is_admin=True,
                    bcrypt_rounds=4,
                    actor=Actor.cli(),
                )
                await session.commit()
    finally:
        await engine.dispose()


# -- measuring ------------------------------------------------------------------------------------


def scenarios(sample: dict[str, Any], now: datetime) -> list[tuple[str, logs.LogFilter]]:
    """Every filter a user can set, alone, and one combination."""
    return [
        ("no filter", logs.LogFilter()),
        ("risk=red", logs.LogFilter(risk_levels=frozenset({"red"}))),
        ("risk=amber,red", logs.LogFilter(risk_levels=frozenset({"amber", "red"}))),
        ("tool", logs.LogFilter(tool="Perplexity")),
        ("user", logs.LogFilter(user=sample["user_id"])),
        ("device", logs.LogFilter(device=sample["device_id"])),
        ("organisation", logs.LogFilter(organization="globex")),
        ("time: last 24 h", logs.LogFilter(since=now - timedelta(days=1))),
        (
            "time: a day 30 d ago",
            logs.LogFilter(since=now - timedelta(days=31), until=now - timedelta(days=30)),
        ),
        ("entity type (rare)", logs.LogFilter(entity_type="PRIVATE_KEY")),
        ("entity type (common)", logs.LogFilter(entity_type="EMAIL")),
        ("sanitised=yes", logs.LogFilter(sanitized=True)),
        ("sanitised=no", logs.LogFilter(sanitized=False)),
        ("search (a user)", logs.LogFilter(search=sample["user_id"])),
        ("search (prefix*)", logs.LogFilter(search=sample["user_id"][:8] + "*")),
        (
            "combined",
            logs.LogFilter(
                risk_levels=frozenset({"amber", "red"}),
                tool="ChatGPT",
                organization="acme",
                since=now - timedelta(days=7),
                entity_type="EMAIL",
                sanitized=False,
            ),
        ),
    ]


async def timed(work: Callable[[], Awaitable[Any]], repeat: int = 5) -> tuple[float, Any]:
    """Median milliseconds of ``repeat`` runs (after one warm-up) and the last result."""
    result = await work()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = await work()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), result


def seq_scans(plan: dict[str, Any], relation: str = "log_entries") -> int:
    found = int(plan.get("Node Type") == "Seq Scan" and plan.get("Relation Name") == relation)
    return found + sum(seq_scans(child, relation) for child in plan.get("Plans", []))


async def explain(session: Any, statement: Any) -> tuple[float, int]:
    plan = await logs.explain(session, statement, analyze=True)
    return float(plan["Execution Time"]), seq_scans(plan["Plan"])


async def measure_queries(url: str, now: datetime) -> list[dict[str, Any]]:
    settings = load_settings({"DATABASE_URL": url})
    engine = new_engine(settings)
    results: list[dict[str, Any]] = []
    try:
        sessions = new_sessionmaker(engine)
        async with sessions() as session:
            sample = (
                (await session.execute(text("SELECT user_id, device_id FROM log_entries LIMIT 1")))
                .mappings()
                .one()
            )
            for name, filters in scenarios(dict(sample), now):
                first_ms, first = await timed(lambda f=filters: logs.page(session=session, filters=f))
                first_explain, first_seq = await explain(
                    session, logs.page_statement(filters, postgresql=True)
                )
                row = {"scenario": name, "first_ms": first_ms, "first_explain_ms": first_explain}
                row["seq_scans"] = first_seq
                if first.last is not None and first.has_older:
                    next_ms, _ = await timed(
                        lambda f=filters, c=first.last: logs.page(session=session, filters=f, after=c)
                    )
                    next_explain, next_seq = await explain(
                        session, logs.page_statement(filters, postgresql=True, cursor=first.last)
                    )
                    row.update(next_ms=next_ms, next_explain_ms=next_explain)
                    row["seq_scans"] += next_seq
                count_ms, counted = await timed(
                    lambda f=filters: logs.count(session=session, filters=f), repeat=3
                )
                row.update(count_ms=count_ms, count=counted.label(), filters=filters)
                await session.rollback()
                results.append(row)
                log(
                    f"  {name:<22} first {row['first_ms']:7.1f} ms (EXPLAIN {row['first_explain_ms']:7.1f})"
                    f"  next {row.get('next_ms', float('nan')):7.1f} ms"
                    f" (EXPLAIN {row.get('next_explain_ms', float('nan')):7.1f})"
                    f"  count {row['count_ms']:6.1f} ms = {row['count']:>9}  seq scans: {row['seq_scans']}"
                )
    finally:
        await engine.dispose()
    return results


async def measure_overview(url: str, now: datetime) -> None:
    settings = load_settings({"DATABASE_URL": url})
    engine = new_engine(settings)
    try:
        async with new_sessionmaker(engine)() as session:
            ms, _ = await timed(lambda: overview.risk_totals(session=session, now=now))
            log(f"  risk totals (24h/7d/30d in one query)      {ms:7.1f} ms")
            for window, hours in overview.WINDOWS.items():
                parts = {
                    "timeline": lambda h=hours: overview.timeline(session=session, now=now, hours=h),
                    "top tools": lambda h=hours: overview.top_keys(
                        session=session, dimension="tool", now=now, hours=h
                    ),
                    "top red users": lambda h=hours: overview.top_keys(
                        session=session, dimension="user", risk_level="red", now=now, hours=h
                    ),
                    "top entity types": lambda h=hours: overview.top_keys(
                        session=session, dimension="entity", now=now, hours=h
                    ),
                }
                figures = []
                for name, work in parts.items():
                    ms, _ = await timed(work)
                    figures.append(f"{name} {ms:.1f}")
                total, _ = await timed(
                    lambda w=window: overview.load_overview(session=session, window=w, now=now)
                )
                cache = overview.TopListCache()
                await overview.load_overview(session=session, window=window, now=now, cache=cache)
                refresh, _ = await timed(
                    lambda w=window, c=cache: overview.load_overview(
                        session=session, window=w, now=now, cache=c
                    )
                )
                log(
                    f"  window {window:>3}: whole overview {total:7.1f} ms, refresh with the console's cache "
                    f"{refresh:6.1f} ms  ({', '.join(figures)} ms)"
                )
            ms, _ = await timed(
                lambda: overview.devices_seen_since(session=session, since=now - timedelta(days=1))
            )
            log(f"  devices seen in the last day               {ms:7.1f} ms")
            ms, _ = await timed(lambda: overview.last_retention_run(session=session))
            log(f"  last retention run                         {ms:7.1f} ms")
    finally:
        await engine.dispose()


async def measure_pilot(url: str, results: list[dict[str, Any]]) -> None:
    """Key press → rendered page, through the real app driven by Pilot."""
    from console.app import FirewallConsole
    from console.sections.logs import LogsSection

    settings = replace(load_settings({"DATABASE_URL": url}), bcrypt_rounds=4)
    app = FirewallConsole(settings)
    async with app.run_test(size=(120, 36)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        app.screen.query_one("#username").value = BENCH_USER
        app.screen.query_one("#password").value = BENCH_PASSWORD
        app.screen.query_one("#password").focus()
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("2")
        await app.workers.wait_for_complete()
        await pilot.pause()
        section = app.screen.query_one(LogsSection)
        rendered: list[float] = []
        show = section._show

        def show_and_mark(*args: Any, **kwargs: Any) -> None:
            show(*args, **kwargs)
            # Marks the end of the first screen refresh that draws the new rows.
            section.call_after_refresh(lambda: rendered.append(time.perf_counter()))

        section._show = show_and_mark  # type: ignore[method-assign]

        async def press(key: str) -> tuple[float, float]:
            """(key → rows rendered, whole Pilot round trip), in ms."""
            rendered.clear()
            started = time.perf_counter()
            await pilot.press(key)
            await app.workers.wait_for_complete()
            await pilot.pause()
            finished = time.perf_counter()
            drawn = rendered[0] if rendered else finished
            return (drawn - started) * 1000, (finished - started) * 1000

        idle = []
        for _ in range(5):
            started = time.perf_counter()
            await pilot.press("z")  # bound to nothing: Pilot's own cost of one key press
            await pilot.pause()
            idle.append((time.perf_counter() - started) * 1000)
        log(f"  (Pilot's own round trip for a key bound to nothing: {statistics.median(idle):.1f} ms)")
        for row in results:
            section.apply_filters(row["filters"])
            await app.workers.wait_for_complete()
            await pilot.pause()
            firsts, nexts = [], []
            for _ in range(5):
                firsts.append(await press("g"))
                if section.page_state.has_older:
                    nexts.append(await press("n"))
            first = [statistics.median(part) for part in zip(*firsts, strict=True)]
            following = (
                [statistics.median(part) for part in zip(*nexts, strict=True)]
                if nexts
                else [float("nan")] * 2
            )
            log(
                f"  {row['scenario']:<22} newest page {first[0]:6.1f} ms (Pilot {first[1]:6.1f})"
                f"   next page {following[0]:6.1f} ms (Pilot {following[1]:6.1f})"
            )


async def main_async(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    url = await ensure_database(args.admin_url, args.rows, args.db_name)
    log(f"database ready in {time.perf_counter() - started:.0f} s: {args.db_name}, {args.rows:,} rows")
    if args.load_only:
        return
    now = datetime.now(UTC)
    log(f"machine load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    log("\nLog pages (db.logs.page, median of 5; EXPLAIN ANALYZE execution time; count = db.logs.count):")
    results = await measure_queries(url, now)
    log("\nOverview (db.overview, median of 5):")
    await measure_overview(url, now)
    if not args.skip_pilot:
        log(
            "\nKey press → rows rendered through Pilot (120×36, median of 5; "
            "in brackets Pilot's full round trip):"
        )
        await measure_pilot(url, results)
    bad = [row["scenario"] for row in results if row["seq_scans"]]
    log("\nSequential scans of log_entries: " + (", ".join(bad) if bad else "none"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="log rows to load (default 10 M)")
    parser.add_argument(
        "--admin-url", default=DEFAULT_ADMIN_URL, help="a PostgreSQL URL to create the db from"
    )
    parser.add_argument("--db-name", default=DB_NAME, help=f"database to use (default {DB_NAME})")
    parser.add_argument("--load-only", action="store_true", help="load the database and stop")
    parser.add_argument("--skip-pilot", action="store_true", help="skip the key press measurements")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
