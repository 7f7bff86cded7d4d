"""Benchmark of the partition width: an unbounded filtered page over daily against weekly partitions.

Creates two scratch databases (migrated), replaces the partitions of ``log_entries`` in each by
``--daily`` empty daily partitions or ``--weekly`` empty weekly ones (ending two weeks ahead, as
the maintainer keeps them), and times the console's filtered page
(:func:`db.logs.page_statement`: ``WHERE user_id = … ORDER BY timestamp DESC, id DESC LIMIT 50``,
no time bound, so no partition is pruned):

- planning and execution time as ``EXPLAIN (ANALYZE)`` reports them (planned afresh each time),
- the wall time of the statement on a new connection (what a console opened anew waits) and on
  a warm one (asyncpg's prepared statement, planned once),
- how many locks the statement holds until its transaction ends.

The issue's figures: 400 daily partitions take 100–270 ms (about 6,000 locks), 58 weekly ones
6–25 ms. The printed ratio is daily over weekly, measured in the same run.

    .venv/bin/python bench/partition_width.py                # 400 daily against 58 weekly
    .venv/bin/python bench/partition_width.py --repeats 50

PostgreSQL comes from ``TEST_POSTGRES_URL`` (default: the local server as postgres); the databases
are dropped at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from db.engine import migrate, new_engine  # noqa: E402
from db.logs import LogFilter, page_statement  # noqa: E402
from db.partition_layout import AHEAD, bound_literal, week_start  # noqa: E402
from db.settings import load_settings  # noqa: E402

DEFAULT_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
#: The issue's measurement this one is held against, in ms: (low, high) for each layout.
ISSUE_FIGURES = {"daily": (100.0, 270.0), "weekly": (6.0, 25.0)}
USER = "alice@example.com"


@dataclass(frozen=True)
class Layout:
    name: str
    width: timedelta
    count: int


@dataclass(frozen=True)
class Figures:
    layout: Layout
    planning_ms: float
    execution_ms: float
    cold_ms: float
    warm_ms: float
    locks: int


def admin_url() -> str:
    return os.environ.get("TEST_POSTGRES_URL", DEFAULT_ADMIN_URL)


def dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def admin(sql: str) -> None:
    connection = await asyncpg.connect(dsn(admin_url()))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def page_sql() -> str:
    """The console's page filtered by one user, with the value inlined (EXPLAIN takes no parameters)."""
    statement = page_statement(LogFilter(user=USER), postgresql=True)
    return str(statement.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))


async def make_database(layout: Layout) -> str:
    name = f"aifw_bench_width_{layout.name}_{uuid.uuid4().hex[:8]}"
    await admin(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url()).set(database=name).render_as_string(hide_password=False)
    settings = replace(load_settings({}), database_url=url, database_url_is_default=False)
    engine = new_engine(settings)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
    connection = await asyncpg.connect(dsn(url))
    try:
        old = await connection.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'log_entries'::regclass"
        )
        for row in old:
            await connection.execute(f'DROP TABLE "{row["relname"]}"')
        end = week_start(datetime.now(UTC) + AHEAD) + timedelta(weeks=1)
        start = end - layout.count * layout.width
        async with connection.transaction():
            for index in range(layout.count):
                lower = start + index * layout.width
                await connection.execute(
                    f"CREATE TABLE log_entries_w{index:04d} PARTITION OF log_entries "
                    f"FOR VALUES FROM ({bound_literal(lower)}) TO ({bound_literal(lower + layout.width)})"
                )
        await connection.execute("ANALYZE log_entries")
    finally:
        await connection.close()
    return url


async def measure(url: str, layout: Layout, repeats: int) -> Figures:
    sql = page_sql()
    planning: list[float] = []
    execution: list[float] = []
    cold: list[float] = []
    warm: list[float] = []
    locks = 0
    for _ in range(repeats):
        connection = await asyncpg.connect(dsn(url))
        try:
            started = time.perf_counter()
            await connection.fetch(sql)
            cold.append((time.perf_counter() - started) * 1000)
            for _ in range(3):
                started = time.perf_counter()
                await connection.fetch(sql)
                warm.append((time.perf_counter() - started) * 1000)
            plan = await connection.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")
            document = json.loads(plan)[0]
            planning.append(float(document["Planning Time"]))
            execution.append(float(document["Execution Time"]))
            async with connection.transaction():
                await connection.fetch(sql)
                locks = int(
                    await connection.fetchval("SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid()")
                )
        finally:
            await connection.close()
    return Figures(
        layout=layout,
        planning_ms=statistics.median(planning),
        execution_ms=statistics.median(execution),
        cold_ms=statistics.median(cold),
        warm_ms=statistics.median(warm),
        locks=locks,
    )


def report(figures: Figures) -> str:
    low, high = ISSUE_FIGURES[figures.layout.name]
    total = figures.planning_ms + figures.execution_ms
    return (
        f"{figures.layout.count:>4} {figures.layout.name:<6} partitions: "
        f"planning {figures.planning_ms:7.1f} ms"
        f" + execution {figures.execution_ms:6.1f} ms = {total:7.1f} ms (issue: {low:g}-{high:g} ms); "
        f"statement on a new connection {figures.cold_ms:7.1f} ms, warm {figures.warm_ms:6.1f} ms; "
        f"{figures.locks:,} locks held"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--daily", type=int, default=400, help="daily partitions (default 400)")
    parser.add_argument("--weekly", type=int, default=58, help="weekly partitions (default 58)")
    parser.add_argument("--repeats", type=int, default=20, help="measurements per layout (median shown)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch databases")
    args = parser.parse_args()
    layouts = [
        Layout("daily", timedelta(days=1), args.daily),
        Layout("weekly", timedelta(weeks=1), args.weekly),
    ]
    urls = {}
    try:
        for layout in layouts:
            urls[layout.name] = await make_database(layout)
        print(f"query: {' '.join(page_sql().split())}")
        results = {layout.name: await measure(urls[layout.name], layout, args.repeats) for layout in layouts}
    finally:
        if not args.keep:
            for url in urls.values():
                await admin(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
    for figures in results.values():
        print(report(figures))
    daily, weekly = results["daily"], results["weekly"]
    ratio = (daily.planning_ms + daily.execution_ms) / max(0.001, weekly.planning_ms + weekly.execution_ms)
    print(
        f"daily / weekly: {ratio:.1f}x the planning + execution time, "
        f"{daily.cold_ms / max(0.001, weekly.cold_ms):.1f}x on a new connection, "
        f"{daily.locks / max(1, weekly.locks):.1f}x the locks"
    )


if __name__ == "__main__":
    asyncio.run(main())
