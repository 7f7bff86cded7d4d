"""A PostgreSQL bench database migrated to head with millions of realistic log rows (default 20 M).

The rows span the last :data:`DAYS` days: several organisations (one with no config row, as
retention allows), :data:`USERS` users each in one organisation, some with two devices, twenty
tools, a risk mix of about 80 % green, 15 % amber and 5 % red, entity types on amber and red rows,
and timestamps that increase within each weekly partition as ingest would write them. Every value
is a function of the row's number (``hashint8extended``), so a resumed fill writes the same rows.

Rows are written with ``INSERT … SELECT … FROM generate_series(…)`` straight into their weekly
partition, :data:`CHUNK` rows per statement and transaction. Counting by the database's trigger is
paused for those statements (``SET LOCAL aifw.counting = 'off'``): each 500 k-row statement would
otherwise upsert hundreds of thousands of hourly user keys. The rollups are then rebuilt with one
``GROUP BY`` per table, the same counts as the trigger (no bucket reaches the key cap: every
organisation has fewer users than ``rollup_settings.max_keys_per_bucket``), and the tables are
vacuumed and analysed.

The fill is resumable: its plan (row count and time range) is kept in ``bench.fill_plan``; a rerun
counts each partition's rows and continues where it stopped, and a finished fill of the requested
size is reused as it is. Another size starts over.

    .venv/bin/python bench/fill.py [--rows 20000000] [--db-name aifw_bench_20m] [--admin-url URL]

Importable: ``url = await ensure_filled("aifw_bench_20m", 20_000_000)``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from db.configs import create_organization, get_config  # noqa: E402
from db.engine import migrate, new_engine, new_sessionmaker  # noqa: E402
from db.partition_layout import (  # noqa: E402
    PARENT,
    WEEK,
    bound_literal,
    count_trigger_sql,
    partition_name,
    week_start,
    weeks_covering,
)
from db.rights import Actor  # noqa: E402
from db.settings import load_settings  # noqa: E402
from db.vocabulary import DEFAULT_MONITORED_TOOLS  # noqa: E402

DEFAULT_DB_NAME = "aifw_bench_20m"
DEFAULT_ROWS = 20_000_000
DEFAULT_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
#: Rows per INSERT statement (and per transaction: a resumed fill restarts at a chunk boundary).
CHUNK = 500_000
DAYS = 85
USERS = 10_000
#: Organisations and the first user number of each (user numbers below the next one belong to it).
#: ``legacy-co`` has rows but no config row: retention keeps such rows, and the console must find them.
ORGANIZATIONS = (
    ("acme", 0),
    ("globex", 3_500),
    ("initech", 6_000),
    ("umbrella", 8_000),
    ("default", 9_200),
    ("legacy-co", 9_800),
)
CONFIGURED = ("acme", "globex", "initech", "umbrella")
#: The fourteen default tools and six more, with a weight each (a share of the traffic).
TOOLS = (
    *zip(DEFAULT_MONITORED_TOOLS, (22, 10, 6, 8, 4, 2, 2, 9, 7, 4, 4, 2, 2, 1), strict=True),
    (("Poe", "web"), 3),
    (("Grok", "web"), 3),
    (("Meta AI", "web"), 2),
    (("HuggingChat", "web"), 1),
    (("Phind", "web"), 3),
    (("Windsurf", "desktop"), 5),
)
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
#: Percent of rows per risk level: green below 80, amber below 95, red above.
AMBER_FROM, RED_FROM = 80, 95
ROLLUP_TABLES = (("hour", "log_hourly_counts"), ("day", "log_daily_counts"), ("week", "log_weekly_counts"))


def log(message: str) -> None:
    print(message, flush=True)


def dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _sql_text_array(values: list[str]) -> str:
    return "ARRAY[" + ", ".join("'" + value.replace("'", "''") + "'" for value in values) + "]::text[]"


def _entity_sets() -> tuple[list[str], list[str]]:
    """64 entity lists for amber rows (1–2 common types) and 64 for red rows (1–3 of any type), as JSON."""
    amber, red = [], []
    for number in range(64):
        common = ENTITY_TYPES[:6]
        first = common[number % 6]
        amber.append([first] if number % 3 else [first, common[(number // 6 + 1 + number % 6) % 6]])
        size = 1 + number % 3
        red.append(
            sorted({ENTITY_TYPES[(number * 7 + step * 5) % len(ENTITY_TYPES)] for step in range(size)})
        )
    return [orjson.dumps(item).decode() for item in amber], [orjson.dumps(item).decode() for item in red]


def _weighted_tools() -> tuple[list[str], list[str]]:
    """100 slots of tool names and types, each tool in as many slots as its weight."""
    names, kinds = [], []
    for (name, kind), weight in TOOLS:
        names += [name] * weight
        kinds += [kind] * weight
    assert len(names) == 100, len(names)
    return names, kinds


def rows_sql(
    table: str, first: int, last: int, base: int, start: datetime, span: timedelta, count: int
) -> str:
    """INSERT of rows ``first..last`` (inclusive) of the ``count`` rows of one partition.

    Row ``i`` of the partition is row ``base + i`` of the whole fill (its hash seed) and lies at
    ``start + span * (i + 0.5) / count``: times increase with ``i`` inside the partition.
    """
    tool_names, tool_kinds = _weighted_tools()
    micros = span.total_seconds() * 1e6
    amber, red = _entity_sets()
    org_case = " ".join(
        f"WHEN u >= {first_user} THEN '{organization}'"
        for organization, first_user in reversed(ORGANIZATIONS)
    )
    return f"""
    INSERT INTO "{table}" (id, timestamp, device_id, user_id, tool_name, tool_type, risk_level,
                           prompt_length, detected_entity_types, entity_count, was_sanitized,
                           log_metadata, created_at, organization_id)
    SELECT gen_random_uuid(), ts,
           'dev-' || lpad(u::text, 5, '0') || CASE WHEN d % 10 = 0 THEN '-b' ELSE '' END,
           'user' || lpad(u::text, 5, '0') || '@' || org || '.example',
           ({_sql_text_array(tool_names)})[t + 1], ({_sql_text_array(tool_kinds)})[t + 1],
           CASE WHEN r >= {RED_FROM} THEN 'red' WHEN r >= {AMBER_FROM} THEN 'amber' ELSE 'green' END,
           20 + p % 4000, entities, jsonb_array_length(entities),
           jsonb_array_length(entities) > 0 AND p % 10 < 3,
           jsonb_build_object('os', (ARRAY['windows', 'macos', 'linux'])[1 + d % 3], 'agent', '1.4.2'),
           ts + interval '1 second' * (1 + p % 3), org
    FROM (
        SELECT *, CASE {org_case} END AS org,
               CASE WHEN r >= {RED_FROM} THEN ({_sql_text_array(red)})[1 + e % 64]::jsonb
                    WHEN r >= {AMBER_FROM} THEN ({_sql_text_array(amber)})[1 + e % 64]::jsonb
                    ELSE '[]'::jsonb END AS entities
        FROM (
            SELECT timestamptz '{start.isoformat()}'
                       + interval '1 microsecond' * floor({micros} * (i + 0.5) / {count}) AS ts,
                   abs(hashint8extended({base} + i, 1)) % {USERS} AS u,
                   abs(hashint8extended({base} + i, 2)) % 1000 AS d,
                   abs(hashint8extended({base} + i, 3)) % 100 AS t,
                   abs(hashint8extended({base} + i, 4)) % 100 AS r,
                   abs(hashint8extended({base} + i, 5)) % 64 AS e,
                   abs(hashint8extended({base} + i, 6)) % 100000 AS p
            FROM generate_series({first}::bigint, {last}::bigint) AS i
        ) AS drawn
    ) AS shaped
    """


def rollup_rebuild_sql() -> list[str]:
    """The rollups of every row, as the counting trigger (migration 0015) computes them, in bulk."""
    keyed = """
        SELECT timestamp, organization_id, 'risk' AS dim, '' AS key, risk_level FROM log_entries
        UNION ALL
        SELECT timestamp, organization_id, 'tool', left(tool_name, 255), risk_level FROM log_entries
        UNION ALL
        SELECT timestamp, organization_id, 'user', left(user_id, 255), risk_level FROM log_entries
        UNION ALL
        SELECT n.timestamp, n.organization_id, 'entity', e.key, n.risk_level
        FROM log_entries AS n
        CROSS JOIN LATERAL (
            SELECT DISTINCT left(value, 255) AS key
            FROM jsonb_array_elements_text(
                CASE WHEN jsonb_typeof(n.detected_entity_types) = 'array'
                     THEN n.detected_entity_types ELSE '[]'::jsonb END) AS value
        ) AS e
    """
    columns = "bucket_start, organization_id, dimension, key, risk_level, event_count"
    return [
        *(f"DELETE FROM {table}" for _, table in ROLLUP_TABLES),
        f"""INSERT INTO log_hourly_counts ({columns})
            SELECT date_trunc('hour', timestamp, 'UTC'), organization_id, dim, key, risk_level, count(*)
            FROM ({keyed}) AS keyed GROUP BY 1, 2, 3, 4, 5""",
        f"""INSERT INTO log_daily_counts ({columns})
            SELECT date_trunc('day', bucket_start, 'UTC'), organization_id, dimension, key, risk_level,
                   sum(event_count)
            FROM log_hourly_counts GROUP BY 1, 2, 3, 4, 5""",
        f"""INSERT INTO log_weekly_counts ({columns})
            SELECT date_trunc('week', bucket_start, 'UTC'), organization_id, dimension, key, risk_level,
                   sum(event_count)
            FROM log_daily_counts GROUP BY 1, 2, 3, 4, 5""",
    ]


@dataclass(frozen=True)
class Slice:
    """One weekly partition's rows: ``count`` rows from ``start`` over ``span``, hash seeds from ``base``."""

    table: str
    start: datetime
    span: timedelta
    count: int
    base: int


def plan_slices(rows: int, first: datetime, last: datetime) -> list[Slice]:
    """The fill's rows spread evenly over ``first..last``, cut at the week boundaries."""
    total = (last - first).total_seconds()
    slices: list[Slice] = []
    placed = 0
    for week in weeks_covering(first, last):
        start, end = max(week, first), min(week + WEEK, last)
        if end <= start:
            continue
        share = round(rows * (end - first).total_seconds() / total) - placed
        slices.append(Slice(partition_name(week), start, end - start, share, placed))
        placed += share
    return slices


async def _ensure_database(admin_url: str, name: str) -> str:
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
        async with new_sessionmaker(engine)() as session:
            for organization in CONFIGURED:
                if await get_config(session=session, organization_id=organization) is None:
                    await create_organization(
                        session=session, organization_id=organization, actor=Actor(name="bench", source="cli")
                    )
            await session.commit()
    finally:
        await engine.dispose()
    return url


async def _plan(connection: asyncpg.Connection, rows: int) -> tuple[datetime, datetime, bool]:
    """The fill's time range (kept from the first run of this size) and whether it finished."""
    await connection.execute(
        "CREATE SCHEMA IF NOT EXISTS bench; CREATE TABLE IF NOT EXISTS bench.fill_plan ("
        " rows bigint NOT NULL, first_at timestamptz NOT NULL, last_at timestamptz NOT NULL,"
        " finished_at timestamptz)"
    )
    plan = await connection.fetchrow("SELECT rows, first_at, last_at, finished_at FROM bench.fill_plan")
    if plan is not None and plan["rows"] == rows:
        return plan["first_at"], plan["last_at"], plan["finished_at"] is not None
    if plan is not None:
        log(f"the database holds a fill of {plan['rows']:,} rows, not {rows:,}: starting over")
    async with connection.transaction():
        await connection.execute(
            "TRUNCATE log_entries, log_hourly_counts, log_daily_counts, log_weekly_counts, devices"
        )
        await connection.execute("DELETE FROM bench.fill_plan")
        last = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
        first = last - timedelta(days=DAYS)
        await connection.execute("INSERT INTO bench.fill_plan VALUES ($1, $2, $3, NULL)", rows, first, last)
    return first, last, False


class _Progress:
    """Rows written by this run, for the rows/s figures."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.written = 0
        self.started = time.perf_counter()

    def chunk(self, part: Slice, last: int, size: int, seconds: float) -> None:
        self.written += size
        elapsed = time.perf_counter() - self.started
        log(
            f"  {part.table}: {last + 1:>9,}/{part.count:,}  base {part.base:>11,}/{self.rows:,}"
            f"  chunk {size / seconds:8,.0f} rows/s  overall {self.written / elapsed:8,.0f} rows/s"
        )


async def _insert_chunks(
    connection: asyncpg.Connection, part: Slice, have: int, progress: _Progress, *, table: str
) -> None:
    for first in range(have, part.count, CHUNK):
        last = min(first + CHUNK, part.count) - 1
        chunk_started = time.perf_counter()
        async with connection.transaction():
            # Counted in bulk afterwards (rollup_rebuild_sql): the trigger is paused for the chunk only.
            await connection.execute("SET LOCAL aifw.counting = 'off'")
            await connection.execute(
                rows_sql(table, first, last, part.base, part.start, part.span, part.count)
            )
        progress.chunk(part, last, last - first + 1, time.perf_counter() - chunk_started)


async def _fill_through_indexes(connection: asyncpg.Connection, part: Slice, progress: _Progress) -> None:
    """Insert into the attached partition, its indexes kept row by row as at ingest (resumes a chunk)."""
    have = int(await connection.fetchval(f'SELECT count(*) FROM "{part.table}"'))
    if have % CHUNK and have != part.count:
        raise RuntimeError(f"{part.table} holds {have:,} rows, not a whole number of chunks: refill it")
    await _insert_chunks(connection, part, have, progress, table=part.table)


async def _drop_indexes(connection: asyncpg.Connection, table: str) -> list[asyncpg.Record]:
    """Drop the indexes (primary key included) of ``table``; return what :func:`_build_indexes` needs."""
    indexes = await connection.fetch(
        "SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition,"
        " c.conname AS constraint_name, pg_get_constraintdef(c.oid) AS constraint_definition"
        " FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid"
        " WHERE i.indrelid = to_regclass($1)",
        table,
    )
    for index in indexes:
        if index["constraint_name"]:
            await connection.execute(f'ALTER TABLE "{table}" DROP CONSTRAINT "{index["constraint_name"]}"')
        else:
            await connection.execute(f"DROP INDEX {index['name']}")
    return list(indexes)


async def _build_indexes(connection: asyncpg.Connection, table: str, indexes: list[asyncpg.Record]) -> None:
    await connection.execute("SET maintenance_work_mem = '512MB'")
    for index in indexes:
        if index["constraint_name"]:
            await connection.execute(
                f'ALTER TABLE "{table}" ADD CONSTRAINT "{index["constraint_name"]}" '
                f"{index['constraint_definition']}"
            )
        else:
            await connection.execute(index["definition"])


async def _fill_then_index(connection: asyncpg.Connection, part: Slice, progress: _Progress) -> None:
    """Replace the week's partition by a table filled without indexes, indexed by sorting, then attached.

    Index builds sort once where row-by-row inserts into nine indexes (one keyed on a random uuid) are
    four to five times slower on two shared cores. The table is made as db/partitions.py makes a week
    (``LIKE log_entries`` with its indexes, the counting trigger, ATTACH), so it has the same indexes.
    """
    staged = await connection.fetchval(
        "SELECT NOT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass($1))", part.table
    )
    async with connection.transaction():
        if not staged:
            await connection.execute(f'ALTER TABLE {PARENT} DETACH PARTITION "{part.table}"')
        await connection.execute(f'DROP TABLE IF EXISTS "{part.table}"')
        await connection.execute(
            f'CREATE TABLE "{part.table}" '
            f"(LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)"
        )
    indexes = await connection.fetch(
        "SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition,"
        " c.conname AS constraint_name, pg_get_constraintdef(c.oid) AS constraint_definition"
        " FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid"
        " WHERE i.indrelid = to_regclass($1)",
        part.table,
    )
    for index in indexes:
        if index["constraint_name"]:
            await connection.execute(
                f'ALTER TABLE "{part.table}" DROP CONSTRAINT "{index["constraint_name"]}"'
            )
        else:
            await connection.execute(f"DROP INDEX {index['name']}")
    await _insert_chunks(connection, part, 0, progress, table=part.table)
    started = time.perf_counter()
    await connection.execute("SET maintenance_work_mem = '512MB'")
    for index in indexes:
        if index["constraint_name"]:
            await connection.execute(
                f'ALTER TABLE "{part.table}" ADD CONSTRAINT "{index["constraint_name"]}" '
                f"{index['constraint_definition']}"
            )
        else:
            await connection.execute(index["definition"])
    end = part.start + part.span
    week = week_start(part.start)
    async with connection.transaction():
        await connection.execute(count_trigger_sql(part.table))
        await connection.execute(
            f'ALTER TABLE {PARENT} ATTACH PARTITION "{part.table}" '
            f"FOR VALUES FROM ({bound_literal(week)}) TO ({bound_literal(week + WEEK)})"
        )
    log(
        f"  {part.table}: {len(indexes)} indexes built and attached in {time.perf_counter() - started:.0f} s"
        f" ({end:%Y-%m-%d})"
    )


async def _fill_rows(connection: asyncpg.Connection, slices: list[Slice], rows: int) -> None:
    """Fill each week; the newest through its indexes, as ingest writes (the ingest bench inserts there)."""
    await connection.execute("SET synchronous_commit = off")
    # JIT compiles these wide plans (one scan per partition) for seconds and gains nothing.
    await connection.execute("SET jit = off")
    progress = _Progress(rows)
    for number, part in enumerate(slices):
        attached = await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass($1))", part.table
        )
        if attached and int(await connection.fetchval(f'SELECT count(*) FROM "{part.table}"')) == part.count:
            continue
        if number == len(slices) - 1:
            await _fill_through_indexes(connection, part, progress)
        else:
            await _fill_then_index(connection, part, progress)


async def _finish(connection: asyncpg.Connection, rows: int) -> None:
    started = time.perf_counter()
    await connection.execute("SET work_mem = '256MB'")
    async with connection.transaction():
        # Sorting once builds the rollups' keys several times faster than millions of inserts into them.
        dropped = [(table, await _drop_indexes(connection, table)) for _, table in ROLLUP_TABLES]
        for statement in rollup_rebuild_sql():
            await connection.execute(statement)
        for table, indexes in dropped:
            await _build_indexes(connection, table, indexes)
        await connection.execute(
            """
            INSERT INTO devices (id, device_id, user_id, device_type, registered_at, last_seen, is_active,
                                 organization_id)
            SELECT gen_random_uuid(), device_id, min(user_id), 'browser', min(timestamp), max(timestamp),
                   true, min(organization_id)
            FROM log_entries GROUP BY device_id
            ON CONFLICT (device_id) DO NOTHING
            """
        )
    log(
        f"rollups rebuilt (one GROUP BY per table), devices registered: {time.perf_counter() - started:.0f} s"
    )
    started = time.perf_counter()
    for table in ("log_entries", "log_hourly_counts", "log_daily_counts", "log_weekly_counts", "devices"):
        await connection.execute(f"VACUUM ANALYZE {table}")
    log(f"VACUUM ANALYZE: {time.perf_counter() - started:.0f} s")
    counted = int(
        await connection.fetchval(
            "SELECT coalesce(sum(event_count), 0) FROM log_hourly_counts WHERE dimension = 'risk'"
        )
    )
    if counted != rows:
        raise RuntimeError(f"the rollups count {counted:,} rows, the fill wrote {rows:,}")
    await connection.execute("UPDATE bench.fill_plan SET finished_at = now()")


async def ensure_filled(
    name: str = DEFAULT_DB_NAME, rows: int = DEFAULT_ROWS, admin_url: str = DEFAULT_ADMIN_URL
) -> str:
    """The URL of database ``name`` migrated to head and holding ``rows`` bench log rows, filled if needed."""
    url = await _ensure_database(admin_url, name)
    connection = await asyncpg.connect(dsn(url))
    try:
        first, last, finished = await _plan(connection, rows)
        have = int(await connection.fetchval(f"SELECT count(*) FROM {PARENT}"))
        if finished and have == rows:
            log(f"database {name} already holds {rows:,} rows ({first:%Y-%m-%d} to {last:%Y-%m-%d}): reused")
            return url
        max_keys = int(
            await connection.fetchval("SELECT max_keys_per_bucket FROM rollup_settings WHERE id = 1")
        )
        biggest = max(
            b - a for (_, a), (_, b) in zip(ORGANIZATIONS, [*ORGANIZATIONS[1:], ("", USERS)], strict=True)
        )
        if biggest > max_keys:
            raise RuntimeError(
                f"an organisation of {biggest} users passes the key cap {max_keys}: counts would differ"
            )
        log(
            f"filling {name}: {rows:,} rows from {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC"
            f" ({have:,} there)"
        )
        started = time.perf_counter()
        await _fill_rows(connection, plan_slices(rows, first, last), rows)
        log(f"rows written in {time.perf_counter() - started:.0f} s")
        await _finish(connection, rows)
        log(f"database {name} filled in {time.perf_counter() - started:.0f} s")
    finally:
        await connection.close()
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="log rows (default 20 M)")
    parser.add_argument("--db-name", default=DEFAULT_DB_NAME, help=f"database (default {DEFAULT_DB_NAME})")
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL, help="a PostgreSQL URL to create it from")
    args = parser.parse_args()
    log(asyncio.run(ensure_filled(args.db_name, args.rows, args.admin_url)))


if __name__ == "__main__":
    main()
