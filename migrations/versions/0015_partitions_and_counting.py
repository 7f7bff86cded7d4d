"""Weekly partitions of log_entries on PostgreSQL, identity (organization_id, id, timestamp), rollups kept
by the database, one index policy

- **Identity**: the primary key becomes (organization_id, id, timestamp): a partitioned table's
  unique keys must hold the partition key, and the protocol already has a resend repeat the id
  and the timestamp (docs/partitions.md).
- **Partitions (PostgreSQL)**: ``log_entries`` becomes range-partitioned on ``timestamp`` by ISO
  week, without a default partition. The rows of the old table are not copied: the old table
  becomes the partition ``log_entries_legacy`` (from the first timestamp to the end of the
  current week) once a CHECK constraint proves its range, so its rows keep their ids and their
  ``commit_seq`` and are neither counted again nor seen as new. An empty old table is dropped.
  Weekly partitions are created for every week from 365 days back to two weeks ahead; the
  ingest server's maintainer keeps creating them (db/partitions.py).
- **The ingest pause** (docs/upgrading.md, bench/migration.py): the upgrade is one transaction that
  holds ``log_entries`` from its first statement to its commit. At 10 M rows most of it is the
  unique index on the new key, which an operator can build ahead while ingest runs (``CREATE UNIQUE
  INDEX CONCURRENTLY log_entries_identity_0015``): this migration then makes it the partition's
  primary key. The identifier CHECKs 0008 added NOT VALID stay NOT VALID on the old rows (and on
  the parent) until the scrub validates them: the upgrade neither scans for them nor fails on an
  old row that breaks one.
- **Counting**: the rollups are kept by the database. PostgreSQL: a statement trigger with a
  transition table on the parent and on each partition (statement triggers fire only on the
  table a statement names, so each row is counted once); SQLite: a row trigger. Both cap the
  distinct keys per bucket at ``rollup_settings.max_keys_per_bucket``. Counting is paused by
  ``SET LOCAL aifw.counting = 'off'`` (PostgreSQL) or ``rollup_settings.counting`` (SQLite, in
  the pausing transaction only), which maintenance moves and repairs use. An UPDATE of a
  counted column is refused unless counting is paused.
- **Index policy** (docs/index-policy.md): the seed's single-column indexes and
  ``idx_timestamp_risk`` are folded into the composite keys that serve their queries.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from db.partition_layout import (
    COUNT_FUNCTION,
    LEGACY,
    WEEK,
    bound_literal,
    count_trigger_sql,
    partition_name,
    wanted_weeks,
    week_start,
)

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT_MAX_KEYS = 10_000
MAX_KEY_CHARS = 255
REFUSE_FUNCTION = "log_entries_refuse_counted_update"
COUNTED_COLUMNS = (
    "timestamp",
    "organization_id",
    "risk_level",
    "tool_name",
    "user_id",
    "detected_entity_types",
)
SQLITE_COMMIT_SEQ_TRIGGER = "log_entries_commit_seq"

#: The seed's indexes folded into a composite key that serves the same query (docs/index-policy.md).
FOLDED_INDEXES = {
    "ix_log_entries_timestamp": ["timestamp"],
    "ix_log_entries_device_id": ["device_id"],
    "ix_log_entries_user_id": ["user_id"],
    "ix_log_entries_tool_name": ["tool_name"],
    "ix_log_entries_risk_level": ["risk_level"],
    "idx_timestamp_risk": ["timestamp", "risk_level"],
}
#: The b-tree indexes that stay (the GIN entity index and the primary key are handled apart).
KEPT_INDEXES = {
    "ix_log_entries_timestamp_id": ["timestamp", "id"],
    "ix_log_entries_risk_timestamp_id": ["risk_level", "timestamp", "id"],
    "idx_user_timestamp": ["user_id", "timestamp"],
    "idx_tool_timestamp": ["tool_name", "timestamp"],
    "ix_log_entries_device_timestamp": ["device_id", "timestamp"],
    "idx_org_timestamp": ["organization_id", "timestamp"],
    "ix_log_entries_commit_seq": ["commit_seq"],
}
ENTITY_INDEX = "ix_log_entries_entity_types"
IDENTITY_COLUMNS = ("organization_id", "id", "timestamp")
#: The unique index on IDENTITY_COLUMNS an operator may build ahead, while ingest runs (docs/upgrading.md):
#: CREATE UNIQUE INDEX CONCURRENTLY log_entries_identity_0015 ON log_entries (organization_id, id, timestamp)
PREBUILT_IDENTITY_INDEX = "log_entries_identity_0015"
ROLLUP_TABLES = {"hour": "log_hourly_counts", "day": "log_daily_counts", "week": "log_weekly_counts"}


# -- counting on PostgreSQL ---------------------------------------------------------------------------


def _capped_upsert_sql(grain: str, table: str) -> str:
    """CTEs that upsert the ``grain`` counts into ``table``, folding keys past the cap into ''.

    A key already in its bucket is always admitted; new keys are admitted in key order while
    the bucket has room. ``<grain>_room`` reads each bucket's key count once per statement.
    """
    return f"""
    {grain}_fresh AS MATERIALIZED (
        SELECT k.bucket, k.org, k.dim, k.key,
               dense_rank() OVER (PARTITION BY k.bucket, k.org, k.dim ORDER BY k.key) AS rank
        FROM (SELECT DISTINCT bucket, org, dim, key FROM {grain}_counts
              WHERE dim <> 'risk' AND key <> '') AS k
        WHERE NOT EXISTS (
            SELECT 1 FROM {table} AS t
            WHERE t.bucket_start = k.bucket AND t.organization_id = k.org AND t.dimension = k.dim
              AND t.key = k.key)
    ),
    {grain}_room AS MATERIALIZED (
        SELECT g.bucket, g.org, g.dim, cap - held.keys AS room
        FROM (SELECT DISTINCT bucket, org, dim FROM {grain}_fresh) AS g
        CROSS JOIN LATERAL (
            SELECT count(*) AS keys
            FROM (SELECT DISTINCT t.key FROM {table} AS t
                  WHERE t.bucket_start = g.bucket AND t.organization_id = g.org AND t.dimension = g.dim
                    AND t.key <> '') AS k
        ) AS held
    ),
    {grain}_refused AS (
        SELECT f.bucket, f.org, f.dim, f.key
        FROM {grain}_fresh AS f JOIN {grain}_room AS r USING (bucket, org, dim)
        WHERE f.rank > r.room
    ),
    {grain}_upsert AS (
        INSERT INTO {table} AS t (bucket_start, organization_id, dimension, key, risk_level, event_count)
        SELECT c.bucket, c.org, c.dim, CASE WHEN r.key IS NULL THEN c.key ELSE '' END, c.risk, sum(c.n)
        FROM {grain}_counts AS c
        LEFT JOIN {grain}_refused AS r
               ON r.bucket = c.bucket AND r.org = c.org AND r.dim = c.dim AND r.key = c.key
        GROUP BY 1, 2, 3, 4, 5
        ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (bucket_start, organization_id, dimension, key, risk_level)
        DO UPDATE SET event_count = t.event_count + excluded.event_count
        RETURNING 1
    )"""


COUNT_FUNCTION_SQL = f"""
-- No JIT: the statement's cost estimates (a transition table of unknown size) often pass jit_above_cost,
-- and compiling it takes far longer than running it on one batch.
CREATE FUNCTION {COUNT_FUNCTION}() RETURNS trigger LANGUAGE plpgsql SET jit = off AS $function$
DECLARE
    cap integer;
BEGIN
    IF current_setting('aifw.counting', true) = 'off' THEN
        RETURN NULL;
    END IF;
    SELECT max_keys_per_bucket INTO cap FROM rollup_settings WHERE id = 1;
    cap := coalesce(cap, {DEFAULT_MAX_KEYS});
    -- The hour is computed once per row, from the epoch (whole UTC hours), and only rows that carry
    -- entity types are expanded: both keep the trigger's cost per row low (docs/partitions.md).
    WITH stamped AS MATERIALIZED (
        SELECT to_timestamp(floor(date_part('epoch', timestamp) / 3600) * 3600) AS bucket,
               organization_id AS org, risk_level AS risk, tool_name, user_id,
               detected_entity_types AS entities
        FROM new_rows
    ),
    keyed AS (
        SELECT bucket, org, 'risk' AS dim, '' AS key, risk FROM stamped
        UNION ALL
        SELECT bucket, org, 'tool', left(tool_name, {MAX_KEY_CHARS}), risk FROM stamped
        UNION ALL
        SELECT bucket, org, 'user', left(user_id, {MAX_KEY_CHARS}), risk FROM stamped
        UNION ALL
        SELECT s.bucket, s.org, 'entity', e.key, s.risk
        FROM stamped AS s
        CROSS JOIN LATERAL (
            SELECT DISTINCT left(value, {MAX_KEY_CHARS}) AS key
            FROM jsonb_array_elements_text(
                CASE WHEN jsonb_typeof(s.entities) = 'array' THEN s.entities ELSE '[]'::jsonb END) AS value
        ) AS e
        WHERE s.entities <> '[]'::jsonb
    ),
    hour_counts AS (
        SELECT bucket, org, dim, key, risk, count(*) AS n FROM keyed GROUP BY 1, 2, 3, 4, 5
    ),
    day_counts AS (
        SELECT date_trunc('day', bucket, 'UTC') AS bucket, org, dim, key, risk, sum(n) AS n
        FROM hour_counts GROUP BY 1, 2, 3, 4, 5
    ),
    week_counts AS (
        SELECT date_trunc('week', bucket, 'UTC') AS bucket, org, dim, key, risk, sum(n) AS n
        FROM day_counts GROUP BY 1, 2, 3, 4, 5
    ),
    {",".join(_capped_upsert_sql(grain, table) for grain, table in ROLLUP_TABLES.items())}
    SELECT (SELECT count(*) FROM hour_upsert) + (SELECT count(*) FROM day_upsert)
         + (SELECT count(*) FROM week_upsert) INTO cap;
    RETURN NULL;
END
$function$
"""

REFUSE_FUNCTION_SQL = f"""
CREATE FUNCTION {REFUSE_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $function$
BEGIN
    IF current_setting('aifw.counting', true) = 'off' THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'the counted columns of log_entries cannot be updated (the rollups count them)'
        USING ERRCODE = 'check_violation',
              HINT = 'delete and insert the row, or pause counting and repair the rollups';
END
$function$
"""


def _refuse_trigger_sql(dialect: str) -> str:
    changed = " OR ".join(f"OLD.{column} IS NOT NEW.{column}" for column in COUNTED_COLUMNS)
    columns = ", ".join(COUNTED_COLUMNS)
    if dialect == "postgresql":
        changed = changed.replace(" IS NOT ", " IS DISTINCT FROM ")
        return (
            f"CREATE TRIGGER {REFUSE_FUNCTION} BEFORE UPDATE OF {columns} ON log_entries "
            f"FOR EACH ROW WHEN ({changed}) EXECUTE FUNCTION {REFUSE_FUNCTION}()"
        )
    return f"""
    CREATE TRIGGER {REFUSE_FUNCTION} BEFORE UPDATE OF {columns} ON log_entries
    WHEN ({changed}) AND (SELECT counting FROM rollup_settings WHERE id = 1) IS NOT 0
    BEGIN
        SELECT RAISE(ABORT, 'the counted columns of log_entries cannot be updated (the rollups count them)');
    END
    """


# -- counting on SQLite -------------------------------------------------------------------------------

#: SQLite keeps UTC timestamps as 'YYYY-MM-DD HH:MM:SS.ffffff' text (migration 0012's CHECK).
_SQLITE_BUCKETS = {
    "hour": "substr(NEW.timestamp, 1, 13) || ':00:00.000000'",
    "day": "substr(NEW.timestamp, 1, 10) || ' 00:00:00.000000'",
    "week": "date(substr(NEW.timestamp, 1, 10), 'weekday 0', '-6 days') || ' 00:00:00.000000'",
}
#: SQLite's JSON array of a row's entity types (anything else has none).
_SQLITE_ENTITY_ARRAY = (
    "CASE WHEN json_type(NEW.detected_entity_types) = 'array' THEN NEW.detected_entity_types ELSE '[]' END"
)
_SQLITE_KEYS = f"""
    SELECT 'tool' AS dim, substr(NEW.tool_name, 1, {MAX_KEY_CHARS}) AS key
    UNION ALL SELECT 'user', substr(NEW.user_id, 1, {MAX_KEY_CHARS})
    UNION ALL
    SELECT DISTINCT 'entity', substr(value, 1, {MAX_KEY_CHARS}) FROM json_each({_SQLITE_ENTITY_ARRAY})
"""


def _sqlite_upserts(grain: str, table: str) -> str:
    """The row trigger's upserts of one new row into ``table``: its risk, then its keys, past the cap folded.

    A key already in its bucket is always admitted. A new key is admitted while the keys held plus its
    number among the row's new keys of its dimension, in key order, stay within the cap, as the
    PostgreSQL trigger admits a statement's new keys: a row brings one tool and one user but may bring
    several entity types, which the bucket's last free place must not all take. SQLite computes the
    whole SELECT before it inserts (it reads the table it writes), so every key sees the bucket as it
    was before the row. Keys held and numbers are only computed for a new key, which is rare.
    """
    bucket = _SQLITE_BUCKETS[grain]

    def in_bucket(key: str) -> str:
        return (
            f"EXISTS (SELECT 1 FROM {table} AS t WHERE t.bucket_start = {bucket} "
            f"AND t.organization_id = NEW.organization_id AND t.dimension = k.dim AND t.key = {key})"
        )

    entity = f"substr(e.value, 1, {MAX_KEY_CHARS})"
    # 1 + the row's distinct new entity types before this one in key order.
    number = f"""CASE WHEN k.dim = 'entity' THEN 1 + (
                          SELECT count(DISTINCT {entity}) FROM json_each({_SQLITE_ENTITY_ARRAY}) AS e
                          WHERE {entity} < k.key AND {entity} <> '' AND NOT {in_bucket(entity)})
                        ELSE 1 END"""
    held = (
        f"(SELECT count(DISTINCT t.key) FROM {table} AS t WHERE t.bucket_start = {bucket} "
        "AND t.organization_id = NEW.organization_id AND t.dimension = k.dim AND t.key <> '')"
    )
    conflict = (
        "ON CONFLICT (bucket_start, organization_id, dimension, key, risk_level) "
        "DO UPDATE SET event_count = event_count + excluded.event_count"
    )
    columns = "bucket_start, organization_id, dimension, key, risk_level, event_count"
    return f"""
        INSERT INTO {table} ({columns}) VALUES ({bucket}, NEW.organization_id, 'risk', '', NEW.risk_level, 1)
        {conflict};
        INSERT INTO {table} ({columns})
        SELECT {bucket}, NEW.organization_id, k.dim,
               CASE WHEN k.key = '' OR {in_bucket("k.key")} THEN k.key
                    WHEN {held} + {number}
                         <= coalesce((SELECT max_keys_per_bucket FROM rollup_settings WHERE id = 1),
                                     {DEFAULT_MAX_KEYS})
                    THEN k.key ELSE '' END,
               NEW.risk_level, 1
        FROM ({_SQLITE_KEYS}) AS k
        WHERE true
        {conflict};"""


SQLITE_COUNT_TRIGGER = f"""
CREATE TRIGGER {COUNT_FUNCTION} AFTER INSERT ON log_entries
WHEN (SELECT counting FROM rollup_settings WHERE id = 1) IS NOT 0
BEGIN
{"".join(_sqlite_upserts(grain, table) for grain, table in ROLLUP_TABLES.items())}
END
"""

SQLITE_COMMIT_SEQ_TRIGGER_SQL = f"""
CREATE TRIGGER {SQLITE_COMMIT_SEQ_TRIGGER} AFTER INSERT ON log_entries WHEN NEW.commit_seq IS NULL
BEGIN
    INSERT OR IGNORE INTO commit_counters (name, value) VALUES ('log_entries', 0);
    UPDATE commit_counters SET value = value + 1 WHERE name = 'log_entries';
    UPDATE log_entries
    SET commit_seq = (SELECT value FROM commit_counters WHERE name = 'log_entries')
    WHERE rowid = NEW.rowid;
END
"""


# -- upgrade -----------------------------------------------------------------------------------------


def _create_rollup_settings() -> None:
    op.create_table(
        "rollup_settings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("max_keys_per_bucket", sa.Integer(), nullable=False),
        sa.Column("counting", sa.Boolean(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_rollup_settings_single_row")),
        sa.CheckConstraint("max_keys_per_bucket >= 1", name=op.f("ck_rollup_settings_max_keys_positive")),
        sa.PrimaryKeyConstraint("id", name="pk_rollup_settings"),
    )
    op.execute(
        "INSERT INTO rollup_settings (id, max_keys_per_bucket, counting) "
        f"VALUES (1, {DEFAULT_MAX_KEYS}, true)"
    )


def upgrade() -> None:
    _create_rollup_settings()
    if op.get_bind().dialect.name == "postgresql":
        _partition_postgresql()
        op.execute(COUNT_FUNCTION_SQL)
        op.execute(REFUSE_FUNCTION_SQL)
        op.execute(count_trigger_sql("log_entries"))
        for partition in _partitions():
            op.execute(count_trigger_sql(partition))
        op.execute(_refuse_trigger_sql("postgresql"))
        return
    op.execute("PRAGMA ignore_check_constraints = ON")  # old rows may break CHECKs (as in 0008)
    try:
        with op.batch_alter_table("log_entries", recreate="always") as batch:
            for name in FOLDED_INDEXES:
                batch.drop_index(name)
            batch.drop_constraint("pk_log_entries", type_="primary")
            batch.create_primary_key("pk_log_entries", ["organization_id", "id", "timestamp"])
    finally:
        op.execute("PRAGMA ignore_check_constraints = OFF")
    # The copy dropped the old table's triggers.
    op.execute(SQLITE_COMMIT_SEQ_TRIGGER_SQL)
    op.execute(SQLITE_COUNT_TRIGGER)
    op.execute(_refuse_trigger_sql("sqlite"))


def _partitions() -> list[str]:
    rows = op.get_bind().exec_driver_sql(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'log_entries'::regclass ORDER BY c.relname"
    )
    return [row[0] for row in rows]


def _partition_postgresql() -> None:
    bind = op.get_bind()
    for name in FOLDED_INDEXES:
        op.execute(f"DROP INDEX {name}")
    op.execute(f"ALTER TABLE log_entries RENAME TO {LEGACY}")
    op.execute(f"ALTER TABLE {LEGACY} RENAME CONSTRAINT pk_log_entries TO pk_{LEGACY}_old")
    for name in [*KEPT_INDEXES, ENTITY_INDEX]:
        op.execute(f"ALTER INDEX {name} RENAME TO {name}_legacy")

    # INCLUDING CONSTRAINTS copies the CHECKs as parsed expressions (valid ones on the new, empty table):
    # ATTACH compares them with the partition's, and a CHECK rewritten from its text may parse differently
    # (an IN list of varchar comes back as = ANY (ARRAY[...]::text[]), which ATTACH refuses).
    op.execute(
        f"CREATE TABLE log_entries (LIKE {LEGACY} INCLUDING DEFAULTS INCLUDING CONSTRAINTS) "
        "PARTITION BY RANGE (timestamp)"
    )
    # The identifier CHECKs 0008 added NOT VALID over older rows stay NOT VALID: validating them here would
    # scan the old table once each under the upgrade's lock, and fail on an old row that breaks one (the
    # scrub repairs such rows and validates, as before). ATTACH refuses a NOT VALID CHECK on the partition
    # under a valid one on the parent, so both sides lose it until the old table is attached, and it comes
    # back from its text on the parent alone, which adds it NOT VALID to the partition (no scan).
    not_valid = bind.exec_driver_sql(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        f"WHERE conrelid = '{LEGACY}'::regclass AND contype = 'c' AND NOT convalidated ORDER BY conname"
    ).all()
    for name, _ in not_valid:
        op.execute(f"ALTER TABLE log_entries DROP CONSTRAINT {name}")
        op.execute(f"ALTER TABLE {LEGACY} DROP CONSTRAINT {name}")
    op.execute(
        "ALTER TABLE log_entries ADD CONSTRAINT pk_log_entries PRIMARY KEY (organization_id, id, timestamp)"
    )
    for name, columns in KEPT_INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON log_entries ({', '.join(columns)})")
    op.execute(f"CREATE INDEX {ENTITY_INDEX} ON log_entries USING gin (detected_entity_types jsonb_path_ops)")

    now = datetime.now(UTC)
    weeks = wanted_weeks(now)
    newest = bind.exec_driver_sql(f"SELECT max(timestamp) FROM {LEGACY}").scalar()
    if newest is None:
        op.execute(f"DROP TABLE {LEGACY}")
    else:
        # The old rows stay where they are: the old table becomes one partition, up to the end of the
        # later of its newest row's week and this week; weekly partitions follow.
        end = max(week_start(newest), week_start(now)) + WEEK
        identity = _prebuilt_identity_index()
        if identity is None:
            identity = f"pk_{LEGACY}"
            op.execute(f"CREATE UNIQUE INDEX {identity} ON {LEGACY} ({', '.join(IDENTITY_COLUMNS)})")
        op.execute(f"ALTER TABLE {LEGACY} DROP CONSTRAINT pk_{LEGACY}_old")
        # USING INDEX renames the index to the constraint's name.
        op.execute(f"ALTER TABLE {LEGACY} ADD CONSTRAINT pk_{LEGACY} PRIMARY KEY USING INDEX {identity}")
        # Proves the range with one scan, so ATTACH need not scan again under its lock.
        op.execute(
            f"ALTER TABLE {LEGACY} ADD CONSTRAINT {LEGACY}_range CHECK (timestamp < {bound_literal(end)})"
        )
        op.execute(
            f"ALTER TABLE log_entries ATTACH PARTITION {LEGACY} "
            f"FOR VALUES FROM (MINVALUE) TO ({bound_literal(end)})"
        )
        op.execute(f"ALTER TABLE {LEGACY} DROP CONSTRAINT {LEGACY}_range")
        weeks = [start for start in weeks if start >= end]
    for name, definition in not_valid:
        # Without old rows there is nothing left to validate.
        op.execute(
            f"ALTER TABLE log_entries ADD CONSTRAINT {name} "
            f"{definition if newest is not None else definition.removesuffix(' NOT VALID')}"
        )
    for start in weeks:
        op.execute(
            f"CREATE TABLE {partition_name(start)} PARTITION OF log_entries "
            f"FOR VALUES FROM ({bound_literal(start)}) TO ({bound_literal(start + WEEK)})"
        )


def _prebuilt_identity_index() -> str | None:
    """The unique index on the identity built ahead with CONCURRENTLY (docs/upgrading.md), if usable.

    Building it here, under the upgrade's lock, is most of the ingest pause at millions of rows. A build
    interrupted half way leaves an invalid index, which is dropped and built again.
    """
    bind = op.get_bind()
    row = bind.execute(
        sa.text(
            "SELECT i.indisvalid AND i.indisready AND i.indisunique AND i.indpred IS NULL "
            "AND i.indexprs IS NULL AND i.indrelid = to_regclass(:table), "
            "(SELECT array_agg(a.attname::text ORDER BY k.n) "
            " FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) "
            " JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum) "
            "FROM pg_index AS i WHERE i.indexrelid = to_regclass(:index)"
        ),
        {"table": LEGACY, "index": PREBUILT_IDENTITY_INDEX},
    ).first()
    if row is None:
        return None
    usable, columns = row
    if usable and list(columns) == list(IDENTITY_COLUMNS):
        return PREBUILT_IDENTITY_INDEX
    op.execute(f"DROP INDEX {PREBUILT_IDENTITY_INDEX}")
    return None


# -- downgrade ---------------------------------------------------------------------------------------


def downgrade() -> None:
    _refuse_ids_stored_twice()
    if op.get_bind().dialect.name == "postgresql":
        _unpartition_postgresql()
    else:
        op.execute(f"DROP TRIGGER IF EXISTS {COUNT_FUNCTION}")
        op.execute(f"DROP TRIGGER IF EXISTS {REFUSE_FUNCTION}")
        op.execute("PRAGMA ignore_check_constraints = ON")
        try:
            with op.batch_alter_table("log_entries", recreate="always") as batch:
                batch.drop_constraint("pk_log_entries", type_="primary")
                batch.create_primary_key("pk_log_entries", ["id", "organization_id"])
                for name, columns in FOLDED_INDEXES.items():
                    batch.create_index(name, columns)
        finally:
            op.execute("PRAGMA ignore_check_constraints = OFF")
        op.execute(SQLITE_COMMIT_SEQ_TRIGGER_SQL)
    op.drop_table("rollup_settings")


def _refuse_ids_stored_twice() -> None:
    # Since 0015 one organisation may hold an id twice with two timestamps; 0014's key cannot, and which
    # copy to keep is not ours to guess. Checked on both engines, before anything changes.
    shared = (
        op.get_bind()
        .exec_driver_sql(
            "SELECT count(*) FROM "
            "(SELECT 1 FROM log_entries GROUP BY organization_id, id HAVING count(*) > 1) AS shared"
        )
        .scalar()
    )
    if shared:
        raise RuntimeError(
            f"{shared} event ids are stored more than once in one organisation (with different timestamps); "
            "the schema before 0015 holds one event per id: delete the copies you do not need, then downgrade"
        )


def _unpartition_postgresql() -> None:
    op.execute(
        "CREATE TABLE log_entries_unpartitioned (LIKE log_entries INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
    )
    # LIKE made every CHECK valid; one still NOT VALID (old rows the scrub has not repaired) would refuse
    # the copy of such a row: it is added back NOT VALID after the copy, as 0014 had it.
    not_valid = (
        op.get_bind()
        .exec_driver_sql(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'log_entries'::regclass AND contype = 'c' AND NOT convalidated ORDER BY conname"
        )
        .all()
    )
    for name, _ in not_valid:
        op.execute(f"ALTER TABLE log_entries_unpartitioned DROP CONSTRAINT {name}")
    # A plain copy: the new table has no triggers, so nothing is counted again.
    op.execute("INSERT INTO log_entries_unpartitioned SELECT * FROM log_entries")
    for name, definition in not_valid:
        op.execute(f"ALTER TABLE log_entries_unpartitioned ADD CONSTRAINT {name} {definition}")
    op.execute("DROP TABLE log_entries CASCADE")
    op.execute(f"DROP FUNCTION {COUNT_FUNCTION}()")
    op.execute(f"DROP FUNCTION {REFUSE_FUNCTION}()")
    op.execute("ALTER TABLE log_entries_unpartitioned RENAME TO log_entries")
    op.execute("ALTER TABLE log_entries ADD CONSTRAINT pk_log_entries PRIMARY KEY (id, organization_id)")
    for name, columns in {**FOLDED_INDEXES, **KEPT_INDEXES}.items():
        op.execute(f"CREATE INDEX {name} ON log_entries ({', '.join(columns)})")
    op.execute(f"CREATE INDEX {ENTITY_INDEX} ON log_entries USING gin (detected_entity_types jsonb_path_ops)")
