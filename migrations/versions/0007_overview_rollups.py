"""Daily and weekly event counts and covering indexes, so every overview window reads few rows

``log_daily_counts`` (one bucket per UTC day) and ``log_weekly_counts`` (one
per ISO week, from Monday midnight UTC) have the shape of ``log_hourly_counts``.
They are backfilled from the hourly counts, which outlive retention, so the
backfill loses nothing. The three rollup tables get an index on (dimension,
risk_level, bucket_start) that on PostgreSQL also carries organization_id, key
and event_count: a top list or a risk total is then an index-only range scan.
The hourly (dimension, bucket_start) index stays: the log filters' suggestions use it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLLUP_TABLES = ("log_hourly_counts", "log_daily_counts", "log_weekly_counts")
INCLUDE = ["organization_id", "key", "event_count"]
COLUMNS = "bucket_start, organization_id, dimension, key, risk_level, event_count"
GROUPED = "organization_id, dimension, key, risk_level"


def _bucket_sql(dialect: str, unit: str) -> str:
    """SQL for the UTC day or ISO week of ``bucket_start``, stored as the engine stores UTCDateTime."""
    if dialect == "postgresql":
        # date_trunc on timestamptz follows the session's TimeZone: truncate in UTC explicitly.
        return f"date_trunc('{unit}', bucket_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
    # SQLite keeps naive UTC text 'YYYY-MM-DD HH:MM:SS.ffffff' (SQLAlchemy's DateTime format);
    # '-6 days', 'weekday 1' is the Monday on or before the day.
    modifiers = ", '-6 days', 'weekday 1'" if unit == "week" else ""
    return f"strftime('%Y-%m-%d 00:00:00.000000', bucket_start{modifiers})"


def _create_rollup_table(name: str) -> None:
    op.create_table(
        name,
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("dimension", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("risk_level", sa.String(length=8), nullable=False),
        sa.Column("event_count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "bucket_start", "organization_id", "dimension", "key", "risk_level", name=f"pk_{name}"
        ),
    )


def _backfill(dialect: str, target: str, source: str, unit: str) -> None:
    bucket = _bucket_sql(dialect, unit)
    op.execute(
        f"INSERT INTO {target} ({COLUMNS}) SELECT {bucket}, {GROUPED}, sum(event_count) "
        f"FROM {source} GROUP BY {bucket}, {GROUPED}"
    )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    _create_rollup_table("log_daily_counts")
    _create_rollup_table("log_weekly_counts")
    _backfill(dialect, "log_daily_counts", "log_hourly_counts", "day")
    _backfill(dialect, "log_weekly_counts", "log_daily_counts", "week")
    # Indexes after the backfill: one build each instead of millions of index inserts.
    for table in ROLLUP_TABLES:
        op.create_index(
            f"ix_{table}_dimension_risk_bucket",
            table,
            ["dimension", "risk_level", "bucket_start"],
            postgresql_include=INCLUDE,
        )
    if dialect == "postgresql":
        # Fresh statistics, so the first overview after the upgrade already gets the new plans.
        for table in ROLLUP_TABLES:
            op.execute(f"ANALYZE {table}")


def downgrade() -> None:
    op.drop_index("ix_log_hourly_counts_dimension_risk_bucket", table_name="log_hourly_counts")
    op.drop_table("log_weekly_counts")
    op.drop_table("log_daily_counts")
