"""What a destination receives: a stored event or an alert revision, exactly as stored (metadata only)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

#: The two streams a destination can take: events (filtered by risk level) and alert changes.
StreamName = Literal["event", "alert"]
AlertActivity = Literal["create", "update", "close"]


@dataclass(frozen=True)
class EventItem:
    """One stored log entry: every column but ``commit_seq``; no prompt content exists to forward."""

    id: str
    organization_id: str
    timestamp: datetime
    device_id: str
    user_id: str
    tool_name: str
    tool_type: str
    risk_level: str
    prompt_length: int
    detected_entity_types: list[str]
    entity_count: int
    was_sanitized: bool
    log_metadata: dict[str, Any]
    created_at: datetime

    @property
    def key(self) -> str:
        """What a receiver deduplicates on: the event id."""
        return self.id


@dataclass(frozen=True)
class AlertItem:
    """One revision of an alert (an ``alert_changes`` row): created, updated or closed."""

    alert_id: str
    organization_id: str
    revision: int
    activity: AlertActivity
    changed_at: datetime
    rule_name: str
    rule_kind: str
    severity: str
    group_key: str
    state: str
    first_event_at: datetime
    last_event_at: datetime
    event_count: int
    event_ids: list[str]
    details: dict[str, Any]

    @property
    def key(self) -> str:
        """What a receiver deduplicates on: the alert id and its revision."""
        return f"{self.alert_id}/{self.revision}"


ForwardItem = EventItem | AlertItem
