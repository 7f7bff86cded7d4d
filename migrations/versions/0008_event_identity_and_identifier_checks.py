"""Events identified by (organization_id, id); identifier CHECK constraints on both engines

``log_entries`` gets the primary key (id, organization_id): the same event id
sent by two organisations is two events, each stored for its own organisation.
``id`` leads so that a lookup by id alone stays one index probe.

Identifier columns (``tool_name``, ``user_id``, ``device_id``,
``organization_id`` of ``log_entries`` and ``devices``; ``key`` and
``organization_id`` of the three rollup tables) get CHECK constraints built
from :data:`db.identifiers.FORBIDDEN_RANGES` and its length bounds, so a row
written by SQL cannot hold what the ingest server refuses. PostgreSQL spells
them as regular expressions, SQLite with GLOB and ``char()``.

Rows stored before this revision may break the new rules, and the upgrade must
not fail on them: PostgreSQL adds the constraints ``NOT VALID`` (new and
updated rows are checked, old ones not yet), and SQLite copies the tables with
``PRAGMA ignore_check_constraints`` on. ``python -m console scrub --apply``
then repairs the old rows and, on PostgreSQL, VALIDATEs the constraints.

The SQL comes from db/identifiers.py, which this revision imports (unlike the
others), so Python and SQL share one list. If FORBIDDEN_RANGES changes, add a
revision that drops and re-adds these constraints.

``devices`` gets an index on (organization_id, registered_at) for the hourly
cap on new devices.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

from db.identifiers import (
    MAX_DEVICE_ID_CHARS,
    MAX_ORGANIZATION_ID_CHARS,
    MAX_TOOL_NAME_CHARS,
    MAX_USER_ID_CHARS,
    check_identifier_sql,
    check_rollup_key_sql,
)

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLLUP_TABLES = ("log_hourly_counts", "log_daily_counts", "log_weekly_counts")


def _identifier(column: str, max_chars: int, *, joiners: bool = False) -> tuple[str, Callable[[str], str]]:
    return f"{column}_identifier", lambda dialect: check_identifier_sql(
        column, dialect, max_chars=max_chars, joiners_between_letters=joiners
    )


_LOG_AND_DEVICE_CHECKS = {
    "log_entries": [
        _identifier("tool_name", MAX_TOOL_NAME_CHARS),
        _identifier("user_id", MAX_USER_ID_CHARS, joiners=True),
        _identifier("device_id", MAX_DEVICE_ID_CHARS),
        _identifier("organization_id", MAX_ORGANIZATION_ID_CHARS),
    ],
    "devices": [
        _identifier("device_id", MAX_DEVICE_ID_CHARS),
        _identifier("user_id", MAX_USER_ID_CHARS, joiners=True),
        _identifier("organization_id", MAX_ORGANIZATION_ID_CHARS),
    ],
}
#: Table -> [(constraint name without the ck_<table>_ prefix, SQL for a dialect)].
CHECKS: dict[str, list[tuple[str, Callable[[str], str]]]] = {
    **_LOG_AND_DEVICE_CHECKS,
    **{
        table: [
            ("key_identifier", check_rollup_key_sql),
            _identifier("organization_id", MAX_ORGANIZATION_ID_CHARS),
        ]
        for table in ROLLUP_TABLES
    },
}


def _duplicate_ids_sql() -> str:
    return "SELECT count(*) FROM (SELECT id FROM log_entries GROUP BY id HAVING count(*) > 1) AS shared"


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_index("ix_devices_organization_registered_at", "devices", ["organization_id", "registered_at"])
    if dialect == "postgresql":
        op.execute("ALTER TABLE log_entries DROP CONSTRAINT pk_log_entries")
        op.execute("ALTER TABLE log_entries ADD CONSTRAINT pk_log_entries PRIMARY KEY (id, organization_id)")
        for table, checks in CHECKS.items():
            for name, sql_for in checks:
                # NOT VALID: stored rows are not read now (the scrub validates later); new rows are checked.
                op.execute(
                    f"ALTER TABLE {table} ADD CONSTRAINT ck_{table}_{name} CHECK ({sql_for(dialect)}) NOT VALID"  # noqa: E501
                )
        return
    # SQLite rebuilds each table (batch mode) and copies its rows, which would fail on an old row
    # that breaks a new CHECK: skip CHECKs while copying; the scrub deals with such rows.
    op.execute("PRAGMA ignore_check_constraints = ON")
    try:
        for table, checks in CHECKS.items():
            with op.batch_alter_table(table, recreate="always") as batch:
                if table == "log_entries":
                    batch.drop_constraint("pk_log_entries", type_="primary")
                    batch.create_primary_key("pk_log_entries", ["id", "organization_id"])
                for name, sql_for in checks:
                    batch.create_check_constraint(name, sa.text(sql_for(dialect)))
    finally:
        op.execute("PRAGMA ignore_check_constraints = OFF")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    shared = op.get_bind().exec_driver_sql(_duplicate_ids_sql()).scalar()
    if shared:
        # The old schema holds one event per id; which organisation's copy to drop is not ours to guess.
        raise RuntimeError(
            f"{shared} event ids are stored for more than one organisation; the schema before 0008 can hold "
            "only one event per id: delete the copies you do not need, then downgrade again"
        )
    if dialect == "postgresql":
        for table, checks in CHECKS.items():
            for name, _ in checks:
                op.execute(f"ALTER TABLE {table} DROP CONSTRAINT ck_{table}_{name}")
        op.execute("ALTER TABLE log_entries DROP CONSTRAINT pk_log_entries")
        op.execute("ALTER TABLE log_entries ADD CONSTRAINT pk_log_entries PRIMARY KEY (id)")
    else:
        for table, checks in CHECKS.items():
            with op.batch_alter_table(table, recreate="always") as batch:
                for name, _ in checks:
                    batch.drop_constraint(name, type_="check")  # the naming convention adds ck_<table>_
                if table == "log_entries":
                    batch.drop_constraint("pk_log_entries", type_="primary")
                    batch.create_primary_key("pk_log_entries", ["id"])
    op.drop_index("ix_devices_organization_registered_at", table_name="devices")
