"""Default alert rules for the organisations that existed before alerts

An organisation created from now on gets its default rules with it
(db.alerts.create_default_rules). This revision gives each organisation that already
has a configuration the same five, unless it has a rule of that name already: a red
burst per user, its own ``red_entity_types``, silent agents, new AI tools, and a failing
forwarding destination. The values are written out here, as they were when this revision
was written, so a later change of the defaults in code does not change what it did.

The rows are marked ``updated_by = 'migration 0014'``. The downgrade deletes the rules that
still carry that mark and the values written here: a rule an administrator changed (its
``updated_by`` is then theirs) or created is kept.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from db.base import UTCDateTime

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MARK = "migration 0014"
JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
DEFAULT_RED_ENTITY_TYPES = ["API_KEY", "PASSWORD", "PRIVATE_KEY", "CREDIT_CARD", "SSN"]

rules_table = sa.table(
    "alert_rules",
    sa.column("id", sa.Uuid()),
    sa.column("organization_id", sa.String()),
    sa.column("name", sa.String()),
    sa.column("kind", sa.String()),
    sa.column("enabled", sa.Boolean()),
    sa.column("severity", sa.String()),
    sa.column("threshold", sa.Integer()),
    sa.column("window_seconds", sa.Integer()),
    sa.column("group_by", sa.String()),
    sa.column("cooldown_seconds", sa.Integer()),
    sa.column("filters", JSON_TYPE),
    sa.column("created_at", UTCDateTime()),
    sa.column("updated_at", UTCDateTime()),
    sa.column("updated_by", sa.String()),
)
configs_table = sa.table(
    "firewall_configs",
    sa.column("organization_id", sa.String()),
    sa.column("sensitivity_thresholds", JSON_TYPE),
)


def _rules(red_entity_types: list[str]) -> list[dict[str, Any]]:
    """db.alerts.default_rule_specs as of this revision."""
    rules: list[dict[str, Any]] = [
        {
            "name": "Red burst per user",
            "kind": "threshold",
            "severity": "high",
            "threshold": 5,
            "window_seconds": 600,
            "group_by": "user",
            "cooldown_seconds": 900,
            "filters": {"risk_levels": ["red"]},
        }
    ]
    if red_entity_types:
        rules.append(
            {
                "name": "Red entity types",
                "kind": "entity",
                "severity": "high",
                "threshold": 1,
                "window_seconds": 600,
                "group_by": "user",
                "cooldown_seconds": 900,
                "filters": {"entity_types": red_entity_types},
            }
        )
    rules += [
        {
            "name": "Silent agents",
            "kind": "silent_agent",
            "severity": "medium",
            "threshold": 1,
            "window_seconds": 72 * 3600,
            "group_by": "organization",
            "cooldown_seconds": 3600,
            "filters": {},
        },
        {
            "name": "New AI tool",
            "kind": "new_tool",
            "severity": "low",
            "threshold": 10,
            "window_seconds": 600,
            "group_by": "tool",
            "cooldown_seconds": 0,
            "filters": {},
        },
        {
            "name": "Forwarding destination failing",
            "kind": "forwarding",
            "severity": "high",
            "threshold": 1,
            "window_seconds": 600,
            "group_by": "organization",
            "cooldown_seconds": 900,
            "filters": {},
        },
    ]
    return rules


def _red_entity_types(thresholds: object) -> list[str]:
    if not isinstance(thresholds, dict) or "red_entity_types" not in thresholds:
        return list(DEFAULT_RED_ENTITY_TYPES)
    types = thresholds["red_entity_types"]
    if not isinstance(types, list):
        return []
    # Bounded as db.alert_rules bounds filter values (at most 100, each 1-255 characters).
    return [t.strip() for t in types if isinstance(t, str) and 0 < len(t.strip()) <= 255][:100]


def upgrade() -> None:
    bind = op.get_bind()
    now = datetime.now(UTC)
    taken = {
        (organization_id, name.lower())
        for organization_id, name in bind.execute(
            sa.select(rules_table.c.organization_id, rules_table.c.name)
        )
    }
    rows = []
    for organization_id, thresholds in bind.execute(
        sa.select(configs_table.c.organization_id, configs_table.c.sensitivity_thresholds)
    ):
        for rule in _rules(_red_entity_types(thresholds)):
            if (organization_id, rule["name"].lower()) in taken:
                continue
            rows.append(
                {
                    "id": uuid.uuid4(),
                    "organization_id": organization_id,
                    "enabled": True,
                    **rule,
                    "created_at": now,
                    "updated_at": now,
                    "updated_by": MARK,
                }
            )
    if rows:
        bind.execute(rules_table.insert(), rows)


def downgrade() -> None:
    bind = op.get_bind()
    marked = bind.execute(
        sa.select(
            rules_table.c.id,
            rules_table.c.organization_id,
            rules_table.c.name,
            rules_table.c.kind,
            rules_table.c.enabled,
            rules_table.c.severity,
            rules_table.c.threshold,
            rules_table.c.window_seconds,
            rules_table.c.group_by,
            rules_table.c.cooldown_seconds,
            rules_table.c.filters,
        ).where(rules_table.c.updated_by == MARK)
    ).all()
    fields = ("kind", "severity", "threshold", "window_seconds", "group_by", "cooldown_seconds")
    unchanged = []
    for row in marked:
        written = {rule["name"]: rule for rule in _rules(list(row.filters.get("entity_types") or []))}
        rule = written.get(row.name)
        if rule is None or not row.enabled:
            continue
        if all(getattr(row, name) == rule[name] for name in fields) and row.filters == rule["filters"]:
            unchanged.append(row.id)
    for start in range(0, len(unchanged), 500):
        bind.execute(rules_table.delete().where(rules_table.c.id.in_(unchanged[start : start + 500])))
