"""Usernames and organisation ids unique regardless of case

A unique index on ``lower(username)`` and one on ``lower(organization_id)`` of
``firewall_configs``. Rows that already differ only in case would make the index
creation fail with an IntegrityError; they are looked for first, and the upgrade
stops with a message listing them so someone can rename one and run it again.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from db.errors import DatabaseError

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (what a value is called, table, column, unique index on lower(column))
CASE_INSENSITIVE = (
    ("usernames", "users", "username", "uq_users_lower_username"),
    ("organisation ids", "firewall_configs", "organization_id", "uq_firewall_configs_lower_organization_id"),
)


def case_duplicates(connection: sa.Connection, table: str, column: str) -> list[list[str]]:
    """Groups of values of ``table.column`` that differ only in case, each sorted."""
    rows = connection.execute(
        sa.text(
            f"SELECT lower({column}), {column} FROM {table} WHERE lower({column}) IN "
            f"(SELECT lower({column}) FROM {table} GROUP BY lower({column}) HAVING count(*) > 1)"
        )
    ).all()
    groups: dict[str, list[str]] = {}
    for folded, value in rows:
        groups.setdefault(folded, []).append(value)
    # Sorted here, not by the database's collation, so the message reads the same on every server.
    return [sorted(groups[folded]) for folded in sorted(groups)]


def upgrade() -> None:
    connection = op.get_bind()
    problems = []
    for called, table, column, _ in CASE_INSENSITIVE:
        groups = case_duplicates(connection, table, column)
        if groups:
            listed = "; ".join(", ".join(group) for group in groups)
            problems.append(f"{called} differ only in case: {listed}")
    if problems:
        # A DatabaseError is printed as one line by alembic's env.py and by the console's checks.
        raise DatabaseError(
            "cannot make names unique regardless of case: "
            + "; and ".join(problems)
            + " (rename one of each, then run `alembic upgrade head` again)"
        )
    for _, table, column, index in CASE_INSENSITIVE:
        op.create_index(index, table, [sa.text(f"lower({column})")], unique=True)


def downgrade() -> None:
    for _, table, _column, index in reversed(CASE_INSENSITIVE):
        op.drop_index(index, table_name=table)
