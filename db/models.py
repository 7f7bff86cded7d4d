"""The tables: the design guide's four, and what the backend adds around them.

Guide tables keep the guide's column and index names exactly; additions
(``organization_id`` on devices and logs, tokens, retention runs, rollups,
audit) never rename or remove anything the guide defines.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, JSONType, UTCDateTime, utcnow
from db.identifiers import (
    MAX_DEVICE_ID_CHARS,
    MAX_ORGANIZATION_ID_CHARS,
    MAX_TOOL_NAME_CHARS,
    MAX_USER_ID_CHARS,
    check_identifier_sql,
    check_rollup_key_sql,
)
from db.vocabulary import (
    DEFAULT_ORGANIZATION_ID,
    DEFAULT_RETENTION_DAYS,
    MAX_RETENTION_DAYS,
    MIN_RETENTION_DAYS,
    RISK_LEVELS,
    TOOL_TYPES,
)


def _in_list(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({quoted})"


#: The engines the identifier CHECK constraints are written for (their SQL differs: regex or GLOB).
_DIALECTS = ("postgresql", "sqlite")


def _per_dialect(name: str, sql_for: Callable[[str], str]) -> list[CheckConstraint]:
    """One CHECK constraint, spelled for each engine; each is created only on its own (migration 0008)."""
    return [CheckConstraint(sql_for(dialect), name=name).ddl_if(dialect=dialect) for dialect in _DIALECTS]


def _identifier_check(
    column: str, *, max_chars: int, joiners_between_letters: bool = False
) -> list[CheckConstraint]:
    """``<column>_identifier``: the rules of db/identifiers.py (no forbidden character, 1..max_chars long)."""
    return _per_dialect(
        f"{column}_identifier",
        lambda dialect: check_identifier_sql(
            column, dialect, max_chars=max_chars, joiners_between_letters=joiners_between_letters
        ),
    )


#: SQLite compares timestamps as text, so log_entries.timestamp holds only the text SQLAlchemy writes:
#: UTC, ``YYYY-MM-DD HH:MM:SS.ffffff``, a real date and time (migration 0012 spells the same CHECK).
_DIGIT = "[0-9]"
_CANONICAL_TIMESTAMP_SQLITE = (
    f"typeof(timestamp) = 'text' AND timestamp GLOB "
    f"'{_DIGIT * 4}-{_DIGIT * 2}-{_DIGIT * 2} {_DIGIT * 2}:{_DIGIT * 2}:{_DIGIT * 2}.{_DIGIT * 6}' "
    "AND datetime(substr(timestamp, 1, 19), '+0 seconds') IS substr(timestamp, 1, 19)"
)


def _rollup_checks() -> list[CheckConstraint]:
    """The identifier CHECKs of a rollup table (migration 0008): rollup keys come only from clean values."""
    return [
        *_per_dialect("key_identifier", check_rollup_key_sql),
        *_identifier_check("organization_id", max_chars=MAX_ORGANIZATION_ID_CHARS),
    ]


class User(Base):
    """An operator of the console."""

    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    email: Mapped[str] = mapped_column(String(255), unique=True, index=True)
    hashed_password: Mapped[str] = mapped_column(String(255))
    full_name: Mapped[str | None] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login: Mapped[datetime | None] = mapped_column(UTCDateTime)


# Unique regardless of case, so "Alice" and "alice" cannot both exist (migration 0009). An expression
# index is declared after its class: the class body cannot yet name its own columns in __table_args__.
Index("uq_users_lower_username", func.lower(User.username), unique=True)


class Device(Base):
    """A client agent (browser extension, desktop agent, CLI interceptor)."""

    __tablename__ = "devices"
    __table_args__ = (
        # Addition (migration 0008): the per-organisation hourly cap on new devices counts this range.
        Index("ix_devices_organization_registered_at", "organization_id", "registered_at"),
        *_identifier_check("device_id", max_chars=MAX_DEVICE_ID_CHARS),
        *_identifier_check("user_id", max_chars=MAX_USER_ID_CHARS, joiners_between_letters=True),
        *_identifier_check("organization_id", max_chars=MAX_ORGANIZATION_ID_CHARS),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    device_id: Mapped[str] = mapped_column(String(128), unique=True, index=True)
    user_id: Mapped[str] = mapped_column(String(255), index=True)
    device_type: Mapped[str] = mapped_column(String(16))
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Additions to the guide:
    organization_id: Mapped[str] = mapped_column(
        String(64), default=DEFAULT_ORGANIZATION_ID, server_default=DEFAULT_ORGANIZATION_ID, index=True
    )
    agent_version: Mapped[str | None] = mapped_column(String(64))


class FirewallConfig(Base):
    """Configuration of one organisation, pushed to its agents."""

    __tablename__ = "firewall_configs"
    __table_args__ = (
        CheckConstraint(
            f"log_retention_days BETWEEN {MIN_RETENTION_DAYS} AND {MAX_RETENTION_DAYS}",
            name="log_retention_days_range",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    monitored_tools: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    sensitivity_thresholds: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    custom_patterns: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    log_retention_days: Mapped[int] = mapped_column(Integer, default=DEFAULT_RETENTION_DAYS)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(64))


# Organisation ids are stored as first spelled and unique regardless of case (migration 0009).
Index("uq_firewall_configs_lower_organization_id", func.lower(FirewallConfig.organization_id), unique=True)


class LogEntry(Base):
    """One AI interaction, metadata only: no prompt content is ever stored."""

    __tablename__ = "log_entries"
    __table_args__ = (
        # The index policy (docs/index-policy.md, migration 0015): each index serves a named query in
        # db/; the seed's single-column indexes and idx_timestamp_risk are folded into these keys.
        # Keyset pages on (timestamp, id), unfiltered and under a risk level:
        Index("ix_log_entries_timestamp_id", "timestamp", "id"),
        Index("ix_log_entries_risk_timestamp_id", "risk_level", "timestamp", "id"),
        # Pages filtered by user, tool, device, organisation (and retention's per-organisation batches):
        Index("idx_user_timestamp", "user_id", "timestamp"),
        Index("idx_tool_timestamp", "tool_name", "timestamp"),
        Index("ix_log_entries_device_timestamp", "device_id", "timestamp"),
        Index("idx_org_timestamp", "organization_id", "timestamp"),
        # Entity-type containment: PostgreSQL's GIN; SQLite gets a plain, unused index of that name
        # so one model describes both schemas (alembic check stays clean).
        Index(
            "ix_log_entries_entity_types",
            "detected_entity_types",
            postgresql_using="gin",
            postgresql_ops={"detected_entity_types": "jsonb_path_ops"},
        ),
        CheckConstraint(_in_list("risk_level", RISK_LEVELS), name="risk_level_known"),
        CheckConstraint(_in_list("tool_type", TOOL_TYPES), name="tool_type_known"),
        CheckConstraint("prompt_length >= 0", name="prompt_length_not_negative"),
        CheckConstraint("entity_count >= 0", name="entity_count_not_negative"),
        # Migration 0015: an event is identified by (organization_id, id, timestamp): one organisation's
        # ids can neither collide with nor suppress another's, and a partitioned table's keys must hold
        # the partition key (a resend repeats the id and the timestamp: docs/partitions.md).
        PrimaryKeyConstraint("organization_id", "id", "timestamp"),
        *_identifier_check("tool_name", max_chars=MAX_TOOL_NAME_CHARS),
        *_identifier_check("user_id", max_chars=MAX_USER_ID_CHARS, joiners_between_letters=True),
        *_identifier_check("device_id", max_chars=MAX_DEVICE_ID_CHARS),
        *_identifier_check("organization_id", max_chars=MAX_ORGANIZATION_ID_CHARS),
        # SQLite only (migration 0012): PostgreSQL's timestamptz has one order whatever the spelling.
        CheckConstraint(_CANONICAL_TIMESTAMP_SQLITE, name="timestamp_canonical").ddl_if(dialect="sqlite"),
        # PostgreSQL: weekly range partitions, created and dropped at run time (db/partitions.py).
        {"postgresql_partition_by": "RANGE (timestamp)"},
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, default=uuid.uuid4)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime)
    device_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(String(255))
    tool_name: Mapped[str] = mapped_column(String(100))
    tool_type: Mapped[str] = mapped_column(String(16))
    risk_level: Mapped[str] = mapped_column(String(8))
    prompt_length: Mapped[int] = mapped_column(Integer, default=0)
    detected_entity_types: Mapped[list[str]] = mapped_column(JSONType, default=list)
    entity_count: Mapped[int] = mapped_column(Integer, default=0)
    was_sanitized: Mapped[bool] = mapped_column(Boolean, default=False)
    log_metadata: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Addition to the guide:
    organization_id: Mapped[str] = mapped_column(
        String(64), default=DEFAULT_ORGANIZATION_ID, server_default=DEFAULT_ORGANIZATION_ID
    )
    #: The commit order readers follow (db/commit_order.py, migration 0013): the writing transaction's
    #: id on PostgreSQL (a column default), a counter on SQLite. NULL only for rows older than 0013.
    commit_seq: Mapped[int | None] = mapped_column(BigInteger, index=True)


class IngestToken(Base):
    """A secret an organisation's agents present in ``hello``; only its SHA-256 is kept."""

    __tablename__ = "ingest_tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    token_prefix: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(64))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RetentionRun(Base):
    """One retention cleanup of one organisation: what it cut, what it deleted, how it ended."""

    __tablename__ = "retention_runs"
    __table_args__ = (Index("ix_retention_runs_started_at", "started_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[str] = mapped_column(String(64), index=True)
    retention_days: Mapped[int] = mapped_column(Integer)
    cutoff: Mapped[datetime] = mapped_column(UTCDateTime)
    rows_deleted: Mapped[int] = mapped_column(BigInteger, default=0)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    trigger: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    #: Rows deleted although a forwarding destination had not received them (its hold ran out).
    undelivered_expired: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class _RollupCount:
    """Columns shared by the rollup tables: one bucket's count of one key of one dimension."""

    bucket_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dimension: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    risk_level: Mapped[str] = mapped_column(String(8), primary_key=True)
    event_count: Mapped[int] = mapped_column(BigInteger, default=0)


#: Columns a top list or a risk total reads besides the index key: index-only scans on PostgreSQL.
ROLLUP_INCLUDE = ["organization_id", "key", "event_count"]


class LogHourlyCount(_RollupCount, Base):
    """Pre-aggregated event counts per hour, kept current at ingest and kept past retention.

    ``dimension`` says what ``key`` is: ``risk`` (key empty), ``tool``, ``user``
    or ``entity``; each stored event adds one to its hour's row of every dimension.
    """

    __tablename__ = "log_hourly_counts"
    __table_args__ = (
        Index("ix_log_hourly_counts_dimension_bucket", "dimension", "bucket_start"),
        Index(
            "ix_log_hourly_counts_dimension_risk_bucket",
            "dimension",
            "risk_level",
            "bucket_start",
            postgresql_include=ROLLUP_INCLUDE,
        ),
        *_rollup_checks(),
    )


class LogDailyCount(_RollupCount, Base):
    """The same counts per UTC day (``bucket_start`` at midnight UTC), so long windows read few rows.

    Kept in the same transaction as the hourly counts, and past retention like them.
    """

    __tablename__ = "log_daily_counts"
    __table_args__ = (
        Index(
            "ix_log_daily_counts_dimension_risk_bucket",
            "dimension",
            "risk_level",
            "bucket_start",
            postgresql_include=ROLLUP_INCLUDE,
        ),
        *_rollup_checks(),
    )


class LogWeeklyCount(_RollupCount, Base):
    """The same counts per ISO week (``bucket_start`` on a Monday, midnight UTC).

    A 30-day window then reads about 3 weekly rows per key plus its edge days and hours.
    """

    __tablename__ = "log_weekly_counts"
    __table_args__ = (
        Index(
            "ix_log_weekly_counts_dimension_risk_bucket",
            "dimension",
            "risk_level",
            "bucket_start",
            postgresql_include=ROLLUP_INCLUDE,
        ),
        *_rollup_checks(),
    )


class OverviewKeySums(Base):
    """One part of the overview over the closed hours of its window, fleet-wide: a top list or the timeline.

    Written by the ingest server at each turn of the hour (:mod:`db.overview`, migration 0016) so
    that no console sums 10,000 users' rollup rows again; a console without a row for the current
    hour reads the rollups itself. ``sums`` is JSON: for a top list (``dimension`` tool, user or
    entity; ``risk_level`` empty for every level) an object of key to count, for the timeline
    (``dimension`` timeline) an object of risk level to the counts of its bins. Only the current
    hour's rows are kept: they are derived, never the record.
    """

    __tablename__ = "overview_key_sums"

    #: The current hour when the sums were made: they cover the window's hours before it.
    closed_before: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    window_hours: Mapped[int] = mapped_column(Integer, primary_key=True)
    dimension: Mapped[str] = mapped_column(String(16), primary_key=True)
    risk_level: Mapped[str] = mapped_column(String(8), primary_key=True)
    sums: Mapped[str] = mapped_column(Text)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditEvent(Base):
    """A change made from the console or the CLI: who, when, what, before and after."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_occurred_at", "occurred_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64))
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(255))
    changes: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class OrganizationMetadataKey(Base):
    """A ``log_metadata`` key an administrator allowed for one organisation, with its value shape.

    The standard keys (db/metadata_keys.py) need no row; ``enum_values`` holds the
    accepted values of an ``enum`` key and is empty for the other shapes.
    """

    __tablename__ = "organization_metadata_keys"
    __table_args__ = (CheckConstraint("shape IN ('number', 'boolean', 'enum', 'token')", name="shape_known"),)

    organization_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    shape: Mapped[str] = mapped_column(String(16))
    enum_values: Mapped[list[str]] = mapped_column(JSONType, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(64))


class SignInAttempt(Base):
    """Consecutive failed sign-ins of one username (lowercased), kept so the delay outlives a console.

    Unknown names have rows too (the table must not tell which exist); names no user
    can have share the row ``(invalid)`` (db/sign_in.py, migration 0011).
    """

    __tablename__ = "sign_in_attempts"
    __table_args__ = (CheckConstraint("failures >= 0", name="failures_not_negative"),)

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RollupSettings(Base):
    """The one row that governs the database's own counting of log entries (migration 0015).

    ``max_keys_per_bucket`` caps the distinct tools, users and entity types per
    organisation, bucket and dimension (both engines' triggers read it).
    ``counting`` is SQLite's pause switch, set off only inside the transaction that
    pauses counting (PostgreSQL pauses with ``SET LOCAL aifw.counting = 'off'``).
    """

    __tablename__ = "rollup_settings"
    __table_args__ = (
        CheckConstraint("id = 1", name="single_row"),
        CheckConstraint("max_keys_per_bucket >= 1", name="max_keys_positive"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, default=1)
    max_keys_per_bucket: Mapped[int] = mapped_column(Integer, default=10_000)
    counting: Mapped[bool] = mapped_column(Boolean, default=True)


class CommitCounter(Base):
    """SQLite's commit order (db/commit_order.py): one counter per stream, bumped in each writing transaction.

    PostgreSQL does not use it: the writing transaction's id serves there.
    """

    __tablename__ = "commit_counters"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class WorkLease(Base):
    """Who does a job that must have one worker at a time (the alert evaluator, each destination's forwarder).

    ``epoch`` grows with each new holder: every write of the job checks it in its own
    transaction (db/leases.py), so a holder that was stopped and resumes after losing
    the lease can no longer write anything.
    """

    __tablename__ = "work_leases"

    name: Mapped[str] = mapped_column(String(160), primary_key=True)
    holder: Mapped[str] = mapped_column(String(160))
    epoch: Mapped[int] = mapped_column(BigInteger, default=0)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    renewed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StreamCursor(Base):
    """How far a reader of a commit-ordered stream has come: after (seq, organization_id, item_id).

    ``resend_*`` is where the batch before it started: a forwarder over a transport that only says
    "accepted by the connection" starts there again after a reconnect or a restart.
    """

    __tablename__ = "stream_cursors"

    name: Mapped[str] = mapped_column(String(160), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    organization_id: Mapped[str] = mapped_column(String(64), default="")
    item_id: Mapped[str] = mapped_column(String(64), default="")
    resend_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    resend_organization_id: Mapped[str] = mapped_column(String(64), default="")
    resend_item_id: Mapped[str] = mapped_column(String(64), default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


ALERT_RULE_KINDS: Final = ("threshold", "entity", "silent_agent", "new_tool", "forwarding")
ALERT_GROUP_KEYS: Final = ("user", "device", "tool", "organization")
ALERT_SEVERITIES: Final = ("informational", "low", "medium", "high", "critical")
ALERT_STATES: Final = ("open", "acknowledged", "resolved")


class AlertRule(Base):
    """One organisation's alert rule (alerts/rules.py says what each kind reads from it)."""

    __tablename__ = "alert_rules"
    __table_args__ = (
        Index("ix_alert_rules_organization_id", "organization_id"),
        CheckConstraint(_in_list("kind", ALERT_RULE_KINDS), name="kind_known"),
        CheckConstraint(_in_list("group_by", ALERT_GROUP_KEYS), name="group_by_known"),
        CheckConstraint(_in_list("severity", ALERT_SEVERITIES), name="severity_known"),
        CheckConstraint("threshold >= 1", name="threshold_positive"),
        CheckConstraint("window_seconds >= 1", name="window_positive"),
        CheckConstraint("cooldown_seconds >= 0", name="cooldown_not_negative"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    severity: Mapped[str] = mapped_column(String(16), default="high")
    #: threshold: N events; new_tool: the most alerts per hour; others: 1.
    threshold: Mapped[int] = mapped_column(Integer, default=1)
    #: threshold: the sliding window W; silent_agent: the silence H; others: how long an event stays live.
    window_seconds: Mapped[int] = mapped_column(Integer, default=600)
    group_by: Mapped[str] = mapped_column(String(16), default="user")
    cooldown_seconds: Mapped[int] = mapped_column(Integer, default=900)
    #: Which events count: risk_levels, tool_names, entity_types, user_ids, device_ids, was_sanitized.
    filters: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(64))


Index("uq_alert_rules_organization_name", AlertRule.organization_id, func.lower(AlertRule.name), unique=True)


class Alert(Base):
    """A raised alert: what matched (times, count, a few event ids; never content) and its lifecycle."""

    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_organization_state", "organization_id", "state", "updated_at"),
        Index("ix_alerts_organization_updated_at", "organization_id", "updated_at"),
        Index("ix_alerts_state_updated_at", "state", "updated_at"),
        # At most one live alert per rule and group: the evaluator updates it rather than raising another.
        Index(
            "uq_alerts_live_rule_group",
            "rule_id",
            "group_key",
            unique=True,
            postgresql_where=text("state <> 'resolved'"),
            sqlite_where=text("state <> 'resolved'"),
        ),
        Index("ix_alerts_rule_group_resolved", "rule_id", "group_key", "resolved_at"),
        CheckConstraint(_in_list("state", ALERT_STATES), name="state_known"),
        CheckConstraint(_in_list("severity", ALERT_SEVERITIES), name="severity_known"),
        CheckConstraint("event_count >= 0", name="event_count_not_negative"),
        CheckConstraint("revision >= 1", name="revision_positive"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[str] = mapped_column(String(64))
    rule_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    #: The rule as it was when raised: the alert outlives an edit or a deletion of its rule.
    rule_name: Mapped[str] = mapped_column(String(100))
    rule_kind: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str] = mapped_column(String(16))
    group_key: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16), default="open")
    first_event_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_event_at: Mapped[datetime] = mapped_column(UTCDateTime)
    event_count: Mapped[int] = mapped_column(BigInteger, default=0)
    #: A few matching event ids (text), the first ones first; never anything an event's agent wrote.
    event_ids: Mapped[list[str]] = mapped_column(JSONType, default=list)
    #: What a kind adds: the silent devices (capped) and their number, a destination's fault, ...
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    acknowledged_by: Mapped[str | None] = mapped_column(String(64))
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_by: Mapped[str | None] = mapped_column(String(64))
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


ALERT_ACTIVITIES: Final = ("create", "update", "close")


class AlertChange(Base):
    """Each revision of each alert, in commit order: what forwarders send as create, update and close."""

    __tablename__ = "alert_changes"
    __table_args__ = (
        Index("ix_alert_changes_commit_seq", "commit_seq"),
        Index("ix_alert_changes_organization_changed_at", "organization_id", "changed_at"),
        CheckConstraint(_in_list("activity", ALERT_ACTIVITIES), name="activity_known"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    commit_seq: Mapped[int | None] = mapped_column(BigInteger)
    alert_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    organization_id: Mapped[str] = mapped_column(String(64))
    revision: Mapped[int] = mapped_column(Integer)
    activity: Mapped[str] = mapped_column(String(8))
    #: The alert's fields at this revision (db/alerts.py ``alert_snapshot``).
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


FORWARD_TRANSPORTS: Final = ("syslog_tcp", "syslog_tls", "syslog_udp", "relp", "hec", "webhook")
FORWARD_FORMATS: Final = ("json", "cef", "ocsf")
DESTINATION_STATES: Final = ("active", "retrying", "paused", "disabled")


class ForwardDestination(Base):
    """Where one organisation's alerts and events are forwarded, in what format, and how that goes."""

    __tablename__ = "forward_destinations"
    __table_args__ = (
        Index("ix_forward_destinations_organization_id", "organization_id"),
        CheckConstraint(_in_list("transport", FORWARD_TRANSPORTS), name="transport_known"),
        CheckConstraint(_in_list("format", FORWARD_FORMATS), name="format_known"),
        CheckConstraint(_in_list("state", DESTINATION_STATES), name="state_known"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(100))
    transport: Mapped[str] = mapped_column(String(16))
    format: Mapped[str] = mapped_column(String(8), default="json")
    #: host:port for syslog and RELP, an https URL for HEC and webhooks.
    address: Mapped[str] = mapped_column(String(500))
    #: Transport and format options (sd_id, app_name, ca_file, client_cert_file, hec_ack, index, ...).
    options: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    #: The HEC token, webhook key or TLS client key, encrypted (db/secrets.py); never shown again.
    secret_ciphertext: Mapped[str | None] = mapped_column(Text)
    forward_alerts: Mapped[bool] = mapped_column(Boolean, default=True)
    #: Risk levels of the events forwarded; empty forwards alerts only.
    event_risk_levels: Mapped[list[str]] = mapped_column(JSONType, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    state: Mapped[str] = mapped_column(String(16), default="active")
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_count: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(64))


Index(
    "uq_forward_destinations_organization_name",
    ForwardDestination.organization_id,
    func.lower(ForwardDestination.name),
    unique=True,
)


class DeadLetter(Base):
    """A message one destination refused on its own (HEC 400, a 413 for one event): to retry or discard."""

    __tablename__ = "dead_letters"
    __table_args__ = (
        Index("ix_dead_letters_destination_created_at", "destination_id", "created_at"),
        Index("ix_dead_letters_organization_created_at", "organization_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    destination_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    organization_id: Mapped[str] = mapped_column(String(64))
    #: "event" or "alert"; the event id or the alert id, and the alert's revision.
    stream: Mapped[str] = mapped_column(String(8))
    item_id: Mapped[str] = mapped_column(String(64))
    revision: Mapped[int | None] = mapped_column(Integer)
    #: The formatted message as it was refused (metadata only, as stored).
    payload: Mapped[str] = mapped_column(Text)
    error: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    retry_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
