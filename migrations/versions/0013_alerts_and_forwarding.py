"""Alerts and SIEM forwarding: commit order, leases, cursors, alert rules, alerts, destinations, dead letters

- ``log_entries.commit_seq``: the order in which readers (the alert evaluator, the forwarders)
  take events, so they use only committed rows and never skip one (db/commit_order.py). On
  PostgreSQL it defaults to the writing transaction's id (``pg_current_xact_id()``), so every
  insert, by the ingest server or by hand, carries it; on SQLite a trigger gives rows inserted
  without one the next value of the ``commit_counters`` row (the ingest server sets it itself,
  once per batch). Rows stored before this revision keep NULL: they are history, neither
  evaluated nor forwarded. The column is added without a default first, so PostgreSQL does
  not rewrite the table.
- ``commit_counters`` (SQLite's commit order), ``work_leases`` (one evaluator, one forwarder per
  destination), ``stream_cursors`` (each reader's durable position).
- ``alert_rules``, ``alerts`` (at most one live alert per rule and group: a partial unique index),
  ``alert_changes`` (each revision, for forwarding).
- ``forward_destinations`` and ``dead_letters``; ``retention_runs.undelivered_expired``.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The writing transaction's id as a number: it grows, and every transaction below the oldest
#: running one has ended (db/commit_order.py reads the snapshot's xmin against it).
XACT_ID_DEFAULT = "(pg_current_xact_id()::text::bigint)"
JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
COMMIT_STREAMS = ("log_entries", "alert_changes")
SQLITE_TRIGGER = "log_entries_commit_seq"


def _in_list(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.add_column("log_entries", sa.Column("commit_seq", sa.BigInteger(), nullable=True))
    op.create_index("ix_log_entries_commit_seq", "log_entries", ["commit_seq"])
    op.add_column(
        "retention_runs",
        sa.Column("undelivered_expired", sa.BigInteger(), nullable=False, server_default="0"),
    )

    op.create_table(
        "commit_counters",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_commit_counters"),
    )
    op.bulk_insert(
        sa.table("commit_counters", sa.column("name", sa.String()), sa.column("value", sa.BigInteger())),
        [{"name": name, "value": 0} for name in COMMIT_STREAMS],
    )
    op.create_table(
        "work_leases",
        sa.Column("name", sa.String(length=160), nullable=False),
        sa.Column("holder", sa.String(length=160), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_work_leases"),
    )
    op.create_table(
        "stream_cursors",
        sa.Column("name", sa.String(length=160), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("item_id", sa.String(length=64), nullable=False),
        sa.Column("resend_seq", sa.BigInteger(), nullable=False),
        sa.Column("resend_organization_id", sa.String(length=64), nullable=False),
        sa.Column("resend_item_id", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_stream_cursors"),
    )
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("window_seconds", sa.Integer(), nullable=False),
        sa.Column("group_by", sa.String(length=16), nullable=False),
        sa.Column("cooldown_seconds", sa.Integer(), nullable=False),
        sa.Column("filters", JSON_TYPE, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=True),
        sa.CheckConstraint(
            _in_list("kind", ("threshold", "entity", "silent_agent", "new_tool", "forwarding")),
            name="ck_alert_rules_kind_known",
        ),
        sa.CheckConstraint(
            _in_list("group_by", ("user", "device", "tool", "organization")),
            name="ck_alert_rules_group_by_known",
        ),
        sa.CheckConstraint(
            _in_list("severity", ("informational", "low", "medium", "high", "critical")),
            name="ck_alert_rules_severity_known",
        ),
        sa.CheckConstraint("threshold >= 1", name="ck_alert_rules_threshold_positive"),
        sa.CheckConstraint("window_seconds >= 1", name="ck_alert_rules_window_positive"),
        sa.CheckConstraint("cooldown_seconds >= 0", name="ck_alert_rules_cooldown_not_negative"),
        sa.PrimaryKeyConstraint("id", name="pk_alert_rules"),
    )
    op.create_index("ix_alert_rules_organization_id", "alert_rules", ["organization_id"])
    op.create_index(
        "uq_alert_rules_organization_name",
        "alert_rules",
        ["organization_id", sa.text("lower(name)")],
        unique=True,
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("rule_id", sa.Uuid(), nullable=False),
        sa.Column("rule_name", sa.String(length=100), nullable=False),
        sa.Column("rule_kind", sa.String(length=16), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("group_key", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("first_event_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_event_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_count", sa.BigInteger(), nullable=False),
        sa.Column("event_ids", JSON_TYPE, nullable=False),
        sa.Column("details", JSON_TYPE, nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_by", sa.String(length=64), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(length=64), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            _in_list("state", ("open", "acknowledged", "resolved")), name="ck_alerts_state_known"
        ),
        sa.CheckConstraint(
            _in_list("severity", ("informational", "low", "medium", "high", "critical")),
            name="ck_alerts_severity_known",
        ),
        sa.CheckConstraint("event_count >= 0", name="ck_alerts_event_count_not_negative"),
        sa.CheckConstraint("revision >= 1", name="ck_alerts_revision_positive"),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
    )
    op.create_index("ix_alerts_organization_state", "alerts", ["organization_id", "state", "updated_at"])
    op.create_index("ix_alerts_organization_updated_at", "alerts", ["organization_id", "updated_at"])
    op.create_index("ix_alerts_state_updated_at", "alerts", ["state", "updated_at"])
    op.create_index("ix_alerts_rule_group_resolved", "alerts", ["rule_id", "group_key", "resolved_at"])
    op.create_index(
        "uq_alerts_live_rule_group",
        "alerts",
        ["rule_id", "group_key"],
        unique=True,
        postgresql_where=sa.text("state <> 'resolved'"),
        sqlite_where=sa.text("state <> 'resolved'"),
    )
    op.create_table(
        "alert_changes",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("commit_seq", sa.BigInteger(), nullable=True),
        sa.Column("alert_id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("activity", sa.String(length=8), nullable=False),
        sa.Column("snapshot", JSON_TYPE, nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            _in_list("activity", ("create", "update", "close")), name="ck_alert_changes_activity_known"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_alert_changes"),
    )
    op.create_index("ix_alert_changes_commit_seq", "alert_changes", ["commit_seq"])
    op.create_index(
        "ix_alert_changes_organization_changed_at", "alert_changes", ["organization_id", "changed_at"]
    )
    op.create_table(
        "forward_destinations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("transport", sa.String(length=16), nullable=False),
        sa.Column("format", sa.String(length=8), nullable=False),
        sa.Column("address", sa.String(length=500), nullable=False),
        sa.Column("options", JSON_TYPE, nullable=False),
        sa.Column("secret_ciphertext", sa.Text(), nullable=True),
        sa.Column("forward_alerts", sa.Boolean(), nullable=False),
        sa.Column("event_risk_levels", JSON_TYPE, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_count", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=True),
        sa.CheckConstraint(
            _in_list("transport", ("syslog_tcp", "syslog_tls", "syslog_udp", "relp", "hec", "webhook")),
            name="ck_forward_destinations_transport_known",
        ),
        sa.CheckConstraint(
            _in_list("format", ("json", "cef", "ocsf")), name="ck_forward_destinations_format_known"
        ),
        sa.CheckConstraint(
            _in_list("state", ("active", "retrying", "paused", "disabled")),
            name="ck_forward_destinations_state_known",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_forward_destinations"),
    )
    op.create_index("ix_forward_destinations_organization_id", "forward_destinations", ["organization_id"])
    op.create_index(
        "uq_forward_destinations_organization_name",
        "forward_destinations",
        ["organization_id", sa.text("lower(name)")],
        unique=True,
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("destination_id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("stream", sa.String(length=8), nullable=False),
        sa.Column("item_id", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("retry_requested", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letters"),
    )
    op.create_index(
        "ix_dead_letters_destination_created_at", "dead_letters", ["destination_id", "created_at"]
    )
    op.create_index(
        "ix_dead_letters_organization_created_at", "dead_letters", ["organization_id", "created_at"]
    )

    if dialect == "postgresql":
        for table in COMMIT_STREAMS:
            op.execute(f"ALTER TABLE {table} ALTER COLUMN commit_seq SET DEFAULT {XACT_ID_DEFAULT}")
    else:
        op.execute(
            f"""
            CREATE TRIGGER {SQLITE_TRIGGER} AFTER INSERT ON log_entries WHEN NEW.commit_seq IS NULL
            BEGIN
                INSERT OR IGNORE INTO commit_counters (name, value) VALUES ('log_entries', 0);
                UPDATE commit_counters SET value = value + 1 WHERE name = 'log_entries';
                UPDATE log_entries
                SET commit_seq = (SELECT value FROM commit_counters WHERE name = 'log_entries')
                WHERE rowid = NEW.rowid;
            END
            """
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"DROP TRIGGER IF EXISTS {SQLITE_TRIGGER}")
    for table in (
        "dead_letters",
        "forward_destinations",
        "alert_changes",
        "alerts",
        "alert_rules",
        "stream_cursors",
        "work_leases",
        "commit_counters",
    ):
        op.drop_table(table)
    with op.batch_alter_table("retention_runs") as batch:
        batch.drop_column("undelivered_expired")
    op.drop_index("ix_log_entries_commit_seq", table_name="log_entries")
    with op.batch_alter_table("log_entries") as batch:
        batch.drop_column("commit_seq")
