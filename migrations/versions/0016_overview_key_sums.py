"""The overview's timeline and top lists over closed hours, made once an hour for every console

``overview_key_sums`` holds, for the timeline and each top list of the overview (tools, users by red
events, entity types) and each window (24 h, 7 d, 30 d), the counts over the window's closed hours,
as the ingest server reads them from the rollups at each turn of the hour (db/overview.py). A
console then reads those rows and adds the current hour, instead of summing about 100,000 rollup
rows of 10,000 users for a 30-day list. The rows are derived: the downgrade drops the table and
nothing is lost.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from db.base import UTCDateTime

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "overview_key_sums",
        sa.Column("closed_before", UTCDateTime(), nullable=False),
        sa.Column("window_hours", sa.Integer(), nullable=False),
        sa.Column("dimension", sa.String(length=16), nullable=False),
        sa.Column("risk_level", sa.String(length=8), nullable=False),
        sa.Column("sums", sa.Text(), nullable=False),
        sa.Column("computed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint(
            "closed_before", "window_hours", "dimension", "risk_level", name="pk_overview_key_sums"
        ),
    )


def downgrade() -> None:
    op.drop_table("overview_key_sums")
