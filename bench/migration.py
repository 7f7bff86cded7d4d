"""Benchmark of the upgrade to migration 0015 on PostgreSQL: the ingest pause at ``--rows`` stored events.

Creates the scratch database ``aifw_bench_migration``, migrates it to 0014 and
loads ``--rows`` log entries over ``--days`` days and ``--organizations``
organisations with ``INSERT ... SELECT generate_series`` in chunks (the 0014
indexes are dropped for the load and built again after it, so the table is in
the state 0014 leaves it in, only faster to reach). Then it runs ``alembic
upgrade 0015`` the way the CLI does and logs every statement that took longer
than ``--show-ms`` with its duration: the index drops and renames, the unique
index on (organization_id, id, timestamp), the range CHECK's scan, the ATTACH
and the creation of the weekly partitions. With ``--prepare`` the unique index
is first built ``CONCURRENTLY``, as an operator can while ingest still runs
(docs/upgrading.md), and the upgrade takes it over; ``--downgrade`` then times
the way back to 0014.

The whole upgrade is one transaction that holds ``log_entries`` under ACCESS
EXCLUSIVE from its first statement to its commit: the total it prints is the
ingest pause (the server is stopped for the upgrade, docs/upgrading.md).

    .venv/bin/python bench/migration.py                    # 10,000,000 rows (about 15 minutes on 2 cores)
    .venv/bin/python bench/migration.py --rows 1000000     # quicker
    .venv/bin/python bench/migration.py --keep-template    # keep the loaded 0014 database, then ...
    .venv/bin/python bench/migration.py --reuse --prepare  # ... upgrade a copy of it (no load)

PostgreSQL comes from ``TEST_POSTGRES_URL`` (default: the local server as
postgres); the database is dropped at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from alembic import command
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from db.engine import alembic_config, new_engine  # noqa: E402
from db.settings import load_settings  # noqa: E402

DEFAULT_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
DATABASE = "aifw_bench_migration"
#: With ``--keep-template``, the loaded 0014 database is kept under this name and ``--reuse`` copies it.
TEMPLATE = f"{DATABASE}_0014"
CHUNK = 500_000
TOOLS = ("ChatGPT", "Claude", "Cursor", "Claude Code", "Gemini", "Copilot")
TOOL_TYPES = ("web", "web", "desktop", "cli", "web", "desktop")


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def admin_url() -> str:
    return os.environ.get("TEST_POSTGRES_URL", DEFAULT_ADMIN_URL)


def dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def sqlalchemy_url(database: str) -> str:
    return make_url(admin_url()).set(database=database).render_as_string(hide_password=False)


def sql_array(values: tuple[str, ...]) -> str:
    return "ARRAY[" + ", ".join(f"'{value}'" for value in values) + "]"


def chunk_sql(rows: int, days: int, organizations: int) -> str:
    """One chunk of rows ``$1 .. $2``: timestamps spread evenly over ``days`` days up to now, newest last;
    a user, device, tool and risk level per row; one row in five with detected entity types."""
    return f"""
    INSERT INTO log_entries (id, timestamp, device_id, user_id, organization_id, tool_name, tool_type,
                             risk_level, prompt_length, detected_entity_types, entity_count, was_sanitized,
                             log_metadata, created_at)
    SELECT gen_random_uuid(), ts, 'dev-' || (g % 12000), 'user' || (g % 10000) || '@example.com',
           'org' || (g % {organizations}), ({sql_array(TOOLS)})[1 + g % {len(TOOLS)}],
           ({sql_array(TOOL_TYPES)})[1 + g % {len(TOOLS)}],
           (ARRAY['green', 'green', 'green', 'amber', 'red'])[1 + g % 5], 50 + g % 2000,
           CASE WHEN g % 5 = 0 THEN '["EMAIL", "PHONE"]'::jsonb WHEN g % 7 = 0 THEN '["API_KEY"]'::jsonb
                ELSE '[]'::jsonb END,
           CASE WHEN g % 5 = 0 THEN 2 WHEN g % 7 = 0 THEN 1 ELSE 0 END, g % 5 = 0, '{{"os": "linux"}}'::jsonb,
           ts
    FROM (SELECT g, now() - interval '{days} days' * (1 - g::float8 / {rows}) AS ts
          FROM generate_series($1::bigint, $2::bigint) AS g) AS generated
    """


async def build(rows: int, days: int, organizations: int) -> None:
    """The scratch database at 0014 with ``rows`` log entries and the 0014 indexes."""
    admin = await asyncpg.connect(dsn(admin_url()))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()
    await upgrade_to(DATABASE, "0014")
    connection = await asyncpg.connect(dsn(admin_url(), DATABASE))
    try:
        indexes = await connection.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'log_entries' "
            "AND indexname <> 'pk_log_entries'"
        )
        for index in indexes:
            await connection.execute(f"DROP INDEX {index['indexname']}")
        await connection.execute("ALTER TABLE log_entries DROP CONSTRAINT pk_log_entries")
        statement = chunk_sql(rows, days, organizations)
        started = time.perf_counter()
        for first in range(0, rows, CHUNK):
            await connection.execute(statement, first, min(first + CHUNK, rows) - 1)
            done = min(first + CHUNK, rows)
            rate = done / (time.perf_counter() - started)
            progress(f"loaded {done:,} rows ({rate:,.0f} rows/s)")
        progress("building the 0014 indexes")
        await connection.execute("SET maintenance_work_mem = '256MB'")
        await connection.execute(
            "ALTER TABLE log_entries ADD CONSTRAINT pk_log_entries PRIMARY KEY (id, organization_id)"
        )
        for index in indexes:
            begun = time.perf_counter()
            await connection.execute(index["indexdef"])
            progress(f"  {index['indexname']}: {time.perf_counter() - begun:.1f} s")
        await connection.execute("VACUUM ANALYZE log_entries")
        size = await connection.fetchval("SELECT pg_size_pretty(pg_total_relation_size('log_entries'))")
        progress(f"0014 database ready: {rows:,} rows, {len(indexes) + 1} indexes, {size} with indexes")
    finally:
        await connection.close()


async def upgrade_to(
    database: str, revision: str, timings: Timings | None = None, *, down: bool = False
) -> None:
    """``alembic upgrade <revision>`` (``down``: ``downgrade``) through the project's env.py, in one
    transaction as the CLI runs it."""
    settings = load_settings({**os.environ, "DATABASE_URL": sqlalchemy_url(database)})
    engine = new_engine(settings)
    if timings is not None:
        timings.listen(engine.sync_engine)
    try:
        async with engine.begin() as connection:

            def upgrade(sync: Connection) -> None:
                config = alembic_config()
                config.attributes["connection"] = sync
                (command.downgrade if down else command.upgrade)(config, revision)

            await connection.run_sync(upgrade)
            if timings is not None:
                timings.mark_commit()
        if timings is not None:
            timings.committed()
    finally:
        await engine.dispose()


@dataclass
class Timings:
    """The duration of every statement the upgrade ran, and of the whole upgrade."""

    show_ms: float
    statements: list[tuple[float, str]] = field(default_factory=list)
    started: float = 0.0
    commit_started: float = 0.0
    finished: float = 0.0
    _begun: float = 0.0

    def listen(self, engine: Any) -> None:
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, *_: Any) -> None:
        self._begun = time.perf_counter()
        if not self.started:
            self.started = self._begun

    def _after(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        elapsed = time.perf_counter() - self._begun
        text = " ".join(statement.split())
        self.statements.append((elapsed, text))
        if elapsed * 1000 >= self.show_ms:
            progress(f"{elapsed * 1000:10.1f} ms  {shorten(text)}")

    def mark_commit(self) -> None:
        self.commit_started = time.perf_counter()

    def committed(self) -> None:
        self.finished = time.perf_counter()
        progress(f"{(self.finished - self.commit_started) * 1000:10.1f} ms  COMMIT")

    def groups(self) -> Iterator[tuple[str, int, float]]:
        """Statements grouped by what they do, with their count and their total duration."""
        kinds = {
            "drop the folded indexes": lambda s: s.startswith("DROP INDEX"),
            "renames": lambda s: " RENAME " in s,
            "parent table, its constraints and indexes": lambda s: (
                s.startswith("CREATE TABLE log_entries ")
                or (s.startswith("ALTER TABLE log_entries ADD") and "ATTACH" not in s)
                or s.startswith("CREATE INDEX")
            ),
            "unique index (organization_id, id, timestamp)": lambda s: s.startswith("CREATE UNIQUE INDEX"),
            "primary key swap": lambda s: "pk_log_entries_legacy" in s and "CONSTRAINT" in s,
            "range CHECK (one scan)": lambda s: "_range CHECK" in s,
            "ATTACH the legacy partition": lambda s: "ATTACH PARTITION" in s,
            "weekly partitions": lambda s: " PARTITION OF log_entries " in s,
            "triggers and functions": lambda s: "TRIGGER" in s or "FUNCTION" in s,
        }
        done: set[int] = set()
        for name, matches in kinds.items():
            picked = [i for i, (_, s) in enumerate(self.statements) if i not in done and matches(s)]
            done.update(picked)
            yield name, len(picked), sum(self.statements[i][0] for i in picked)
        rest = [i for i in range(len(self.statements)) if i not in done]
        yield (
            "everything else (reads, rollup_settings, alembic)",
            len(rest),
            sum(self.statements[i][0] for i in rest),
        )


def shorten(text: str, width: int = 100) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


async def describe_result() -> None:
    connection = await asyncpg.connect(dsn(admin_url(), DATABASE))
    try:
        bounds = await connection.fetch(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'log_entries'::regclass "
            "ORDER BY c.relname"
        )
        legacy = [row for row in bounds if row["relname"] == "log_entries_legacy"]
        rows = await connection.fetchval("SELECT count(*) FROM log_entries")
        progress(f"after the upgrade: {rows:,} rows in log_entries, {len(bounds)} partitions")
        if legacy:
            progress(f"  log_entries_legacy {legacy[0]['bound']}")
    finally:
        await connection.close()


async def drop_database() -> None:
    admin = await asyncpg.connect(dsn(admin_url()))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    finally:
        await admin.close()


async def copy_database(source: str, target: str) -> None:
    admin = await asyncpg.connect(dsn(admin_url()))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{target}" TEMPLATE "{source}" STRATEGY = FILE_COPY')
    finally:
        await admin.close()


#: The preparation docs/upgrading.md has an operator run while ingest still runs; CONCURRENTLY waits for
#: writers instead of locking them out. Name and columns are what migration 0015 looks for
#: (PREBUILT_IDENTITY_INDEX, IDENTITY_COLUMNS).
IDENTITY_INDEX_SQL = (
    "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS log_entries_identity_0015 "
    "ON log_entries (organization_id, id, timestamp)"
)


async def prepare() -> float:
    """Build the identity index ahead, as docs/upgrading.md has it; return how long it took in seconds."""
    connection = await asyncpg.connect(dsn(admin_url(), DATABASE))
    try:
        begun = time.perf_counter()
        await connection.execute(IDENTITY_INDEX_SQL)
        elapsed = time.perf_counter() - begun
        progress(f"{elapsed * 1000:10.1f} ms  {shorten(IDENTITY_INDEX_SQL)}")
        return elapsed
    finally:
        await connection.close()


async def stored_rows() -> int:
    connection = await asyncpg.connect(dsn(admin_url(), DATABASE))
    try:
        return int(await connection.fetchval("SELECT count(*) FROM log_entries"))
    finally:
        await connection.close()


def run(args: argparse.Namespace) -> int:
    if args.reuse:
        progress(f"copying {TEMPLATE} (the 0014 database of an earlier --keep-template run) to {DATABASE}")
        asyncio.run(copy_database(TEMPLATE, DATABASE))
    else:
        progress(f"building {DATABASE}: {args.rows:,} rows over {args.days} days, {args.organizations} orgs")
        asyncio.run(build(args.rows, args.days, args.organizations))
        if args.keep_template:
            asyncio.run(copy_database(DATABASE, TEMPLATE))
            progress(f"kept the 0014 database as {TEMPLATE}")
    rows = asyncio.run(stored_rows())
    prepared = None
    if args.prepare:
        progress("preparing while ingest could still run (the identity index, CONCURRENTLY)")
        prepared = asyncio.run(prepare())
    timings = Timings(show_ms=args.show_ms)
    progress(f"alembic upgrade 0015 (statements over {args.show_ms:g} ms shown)")
    asyncio.run(upgrade_to(DATABASE, "0015", timings))
    total = timings.finished - timings.started
    print()
    if prepared is not None:
        print(f"Preparation, ingest still running (no pause): {prepared:.1f} s")
    print(f"Upgrade to 0015 at {rows:,} rows, step by step:")
    for name, count, seconds in timings.groups():
        if count:
            print(f"  {name:<52} {count:5d} statements  {seconds:8.2f} s")
    print(f"  {'COMMIT':<52} {'':5}             {timings.finished - timings.commit_started:8.2f} s")
    print(f"Ingest pause (first statement to commit, one transaction): {total:.1f} s")
    asyncio.run(describe_result())
    if args.downgrade:
        progress("alembic downgrade 0014 (copies every row back into one table and builds its 15 indexes)")
        down = Timings(show_ms=args.show_ms)
        asyncio.run(upgrade_to(DATABASE, "0014", down, down=True))
        print(f"Downgrade to 0014 at {rows:,} rows: {down.finished - down.started:.1f} s")
    if args.keep:
        progress(f"kept {DATABASE}")
    else:
        asyncio.run(drop_database())
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000, help="log entries in the 0014 database")
    parser.add_argument("--days", type=int, default=60, help="days the rows are spread over, up to now")
    parser.add_argument("--organizations", type=int, default=20)
    parser.add_argument("--show-ms", type=float, default=50.0, help="log statements at least this long")
    parser.add_argument("--keep", action="store_true", help=f"keep {DATABASE} at the end")
    parser.add_argument(
        "--prepare", action="store_true", help="run the preparation of docs/upgrading.md before the upgrade"
    )
    parser.add_argument("--downgrade", action="store_true", help="then time the downgrade to 0014")
    parser.add_argument("--keep-template", action="store_true", help=f"keep the 0014 database as {TEMPLATE}")
    parser.add_argument("--reuse", action="store_true", help=f"upgrade a copy of {TEMPLATE} (no load)")
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
