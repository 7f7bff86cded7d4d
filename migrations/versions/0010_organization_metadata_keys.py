"""Metadata keys an administrator allows for an organisation

``organization_metadata_keys`` holds, per organisation, the extra
``log_metadata`` keys its agents may send, each with its value shape
(number, boolean, enum with its values, or token). The standard keys are
defined in code (db/metadata_keys.py) and need no row.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "organization_metadata_keys",
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("shape", sa.String(length=16), nullable=False),
        sa.Column("enum_values", JSON_TYPE, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.CheckConstraint(
            "shape IN ('number', 'boolean', 'enum', 'token')",
            name="ck_organization_metadata_keys_shape_known",
        ),
        sa.PrimaryKeyConstraint("organization_id", "key", name="pk_organization_metadata_keys"),
    )


def downgrade() -> None:
    op.drop_table("organization_metadata_keys")
