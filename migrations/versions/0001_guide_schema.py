"""The design guide's four tables, plus organization_id on devices and log_entries

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=255), nullable=False),
        sa.Column("hashed_password", sa.String(length=255), nullable=False),
        sa.Column("full_name", sa.String(length=255), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("last_login", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
    )
    op.create_index("ix_users_username", "users", ["username"], unique=True)
    op.create_index("ix_users_email", "users", ["email"], unique=True)

    op.create_table(
        "devices",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("device_type", sa.String(length=16), nullable=False),
        sa.Column("registered_at", TIMESTAMP, nullable=False),
        sa.Column("last_seen", TIMESTAMP, nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("organization_id", sa.String(length=64), server_default="default", nullable=False),
        sa.Column("agent_version", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_devices"),
    )
    op.create_index("ix_devices_device_id", "devices", ["device_id"], unique=True)
    op.create_index("ix_devices_user_id", "devices", ["user_id"])
    op.create_index("ix_devices_organization_id", "devices", ["organization_id"])

    op.create_table(
        "firewall_configs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("monitored_tools", JSON_TYPE, nullable=False),
        sa.Column("sensitivity_thresholds", JSON_TYPE, nullable=False),
        sa.Column("custom_patterns", JSON_TYPE, nullable=False),
        sa.Column("log_retention_days", sa.Integer(), nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=True),
        sa.CheckConstraint(
            "log_retention_days BETWEEN 30 AND 365", name="ck_firewall_configs_log_retention_days_range"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_firewall_configs"),
    )
    op.create_index(
        "ix_firewall_configs_organization_id", "firewall_configs", ["organization_id"], unique=True
    )

    op.create_table(
        "log_entries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("timestamp", TIMESTAMP, nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("tool_name", sa.String(length=100), nullable=False),
        sa.Column("tool_type", sa.String(length=16), nullable=False),
        sa.Column("risk_level", sa.String(length=8), nullable=False),
        sa.Column("prompt_length", sa.Integer(), nullable=False),
        sa.Column("detected_entity_types", JSON_TYPE, nullable=False),
        sa.Column("entity_count", sa.Integer(), nullable=False),
        sa.Column("was_sanitized", sa.Boolean(), nullable=False),
        sa.Column("log_metadata", JSON_TYPE, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("organization_id", sa.String(length=64), server_default="default", nullable=False),
        sa.CheckConstraint("risk_level IN ('green', 'amber', 'red')", name="ck_log_entries_risk_level_known"),
        sa.CheckConstraint("tool_type IN ('web', 'desktop', 'cli')", name="ck_log_entries_tool_type_known"),
        sa.CheckConstraint("prompt_length >= 0", name="ck_log_entries_prompt_length_not_negative"),
        sa.CheckConstraint("entity_count >= 0", name="ck_log_entries_entity_count_not_negative"),
        sa.PrimaryKeyConstraint("id", name="pk_log_entries"),
    )
    op.create_index("ix_log_entries_timestamp", "log_entries", ["timestamp"])
    op.create_index("ix_log_entries_device_id", "log_entries", ["device_id"])
    op.create_index("ix_log_entries_user_id", "log_entries", ["user_id"])
    op.create_index("ix_log_entries_tool_name", "log_entries", ["tool_name"])
    op.create_index("ix_log_entries_risk_level", "log_entries", ["risk_level"])
    op.create_index("idx_timestamp_risk", "log_entries", ["timestamp", "risk_level"])
    op.create_index("idx_user_timestamp", "log_entries", ["user_id", "timestamp"])
    op.create_index("idx_tool_timestamp", "log_entries", ["tool_name", "timestamp"])
    op.create_index("idx_org_timestamp", "log_entries", ["organization_id", "timestamp"])


def downgrade() -> None:
    op.drop_table("log_entries")
    op.drop_table("firewall_configs")
    op.drop_table("devices")
    op.drop_table("users")
