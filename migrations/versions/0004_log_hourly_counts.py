"""Hourly event counts kept at ingest, so the overview never counts raw rows

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "log_hourly_counts",
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("dimension", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("risk_level", sa.String(length=8), nullable=False),
        sa.Column("event_count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "bucket_start", "organization_id", "dimension", "key", "risk_level", name="pk_log_hourly_counts"
        ),
    )
    op.create_index(
        "ix_log_hourly_counts_dimension_bucket", "log_hourly_counts", ["dimension", "bucket_start"]
    )


def downgrade() -> None:
    op.drop_table("log_hourly_counts")
