"""Stored rows to forwardable items: a log entry to an :class:`EventItem`, an alert change to an
:class:`AlertItem`. What is forwarded is what is stored: every field comes from the row as it is."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, cast

from db.base import as_utc
from db.models import AlertChange, LogEntry
from forwarding.items import AlertActivity, AlertItem, EventItem


def event_item(row: LogEntry) -> EventItem:
    """The stored event as it is (no prompt content exists to forward)."""
    return EventItem(
        id=str(row.id),
        organization_id=row.organization_id,
        timestamp=as_utc(row.timestamp),
        device_id=row.device_id,
        user_id=row.user_id,
        tool_name=row.tool_name,
        tool_type=row.tool_type,
        risk_level=row.risk_level,
        prompt_length=int(row.prompt_length),
        detected_entity_types=list(row.detected_entity_types or []),
        entity_count=int(row.entity_count),
        was_sanitized=bool(row.was_sanitized),
        log_metadata=dict(row.log_metadata or {}),
        created_at=as_utc(row.created_at),
    )


def _time(value: Any, default: datetime) -> datetime:
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, str):
        try:
            return as_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return default
    return default


def alert_item(change: AlertChange) -> AlertItem:
    """One revision of an alert, from the snapshot stored with it (db.alerts.alert_snapshot)."""
    snapshot: dict[str, Any] = dict(change.snapshot or {})
    changed_at = as_utc(change.changed_at)
    event_ids = snapshot.get("event_ids") or []
    details = snapshot.get("details") or {}
    return AlertItem(
        alert_id=str(change.alert_id) if isinstance(change.alert_id, uuid.UUID) else str(change.alert_id),
        organization_id=change.organization_id,
        revision=int(change.revision),
        activity=cast(AlertActivity, change.activity),
        changed_at=changed_at,
        rule_name=str(snapshot.get("rule_name", "")),
        rule_kind=str(snapshot.get("rule_kind", "")),
        severity=str(snapshot.get("severity", "high")),
        group_key=str(snapshot.get("group_key", "")),
        state=str(snapshot.get("state", "open")),
        first_event_at=_time(snapshot.get("first_event_at"), changed_at),
        last_event_at=_time(snapshot.get("last_event_at"), changed_at),
        event_count=int(snapshot.get("event_count") or 0),
        event_ids=[str(event_id) for event_id in event_ids] if isinstance(event_ids, list) else [],
        details=dict(details) if isinstance(details, dict) else {},
    )
