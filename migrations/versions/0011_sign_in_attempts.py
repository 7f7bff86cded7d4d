"""Failed sign-in attempts per username

``sign_in_attempts`` keeps, per username (lowercased; names no user can have
share the row ``(invalid)``), the number of consecutive failed sign-ins and the
time of the last failure and of the last success, so the growing delay after
failures (db/sign_in.py) survives a restart and holds across consoles.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sign_in_attempts",
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("failures >= 0", name="ck_sign_in_attempts_failures_not_negative"),
        sa.PrimaryKeyConstraint("username", name="pk_sign_in_attempts"),
    )


def downgrade() -> None:
    op.drop_table("sign_in_attempts")
