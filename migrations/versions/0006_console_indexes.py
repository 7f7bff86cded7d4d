"""Indexes for the console's log browser: keyset pages under every filter without a sequential scan

(timestamp, id) for unfiltered pages and follow mode, (risk_level, timestamp, id)
for risk filters (one index range per level, merged in order), (device_id,
timestamp) for the device filter, and on PostgreSQL a GIN index (jsonb_path_ops)
for ``detected_entity_types @> '["EMAIL"]'``. SQLite has no GIN: it gets a plain
index of the same name and its entity-type filter walks the timestamp index.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_log_entries_timestamp_id", "log_entries", ["timestamp", "id"])
    op.create_index("ix_log_entries_risk_timestamp_id", "log_entries", ["risk_level", "timestamp", "id"])
    op.create_index("ix_log_entries_device_timestamp", "log_entries", ["device_id", "timestamp"])
    # PostgreSQL: GIN (jsonb_path_ops). SQLite ignores the postgresql_* options and
    # gets a plain index of the same name, which keeps the model one for both engines.
    op.create_index(
        "ix_log_entries_entity_types",
        "log_entries",
        ["detected_entity_types"],
        postgresql_using="gin",
        postgresql_ops={"detected_entity_types": "jsonb_path_ops"},
    )


def downgrade() -> None:
    op.drop_index("ix_log_entries_entity_types", table_name="log_entries")
    op.drop_index("ix_log_entries_device_timestamp", table_name="log_entries")
    op.drop_index("ix_log_entries_risk_timestamp_id", table_name="log_entries")
    op.drop_index("ix_log_entries_timestamp_id", table_name="log_entries")
