"""What each rule kind means, and matching one event against a rule.

- **threshold**: events matching the filters reach ``threshold`` (N) within ``window_seconds`` (W) of
  event time, per group (``group_by``: the user, the device, the case-folded tool name, or the
  organisation). alerts/windows.py keeps the last N times per rule and group.
- **entity**: any event carrying one of ``filters.entity_types`` (compared case-folded), per group;
  ``window_seconds`` only says how long an event stays live.
- **silent_agent**: active devices not heard from for ``window_seconds`` (H); one alert per
  organisation lists them (alerts/silence.py, db.alerts.sync_silent_agents). Reads no events.
- **new_tool**: the first event of a tool name (case-folded) that the organisation does not monitor,
  per tool, once ever; at most ``threshold`` such alerts per organisation per hour.
- **forwarding**: raised by the forwarders (db.alerts.raise_or_update_system_alert). Reads no events.

Filters (all optional, all must hold): ``risk_levels``, ``tool_names`` (case-folded),
``entity_types`` (any of them, case-folded), ``user_ids``, ``device_ids``, ``was_sanitized``.

An event is **live** for a rule when it was stored at most ``window_seconds`` plus
:data:`db.alert_rules.LIVE_GRACE_SECONDS` after its own timestamp: older events (a backfill
after an outage, imports, the demo's history) are counted into windows but raise nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from db.alert_rules import LIVE_GRACE_SECONDS
from db.base import as_utc
from db.models import AlertRule, LogEntry

#: The columns the evaluator reads (db.streams.read_events adds commit_seq, organization_id and id).
EVENT_COLUMNS: Final = (
    LogEntry.timestamp,
    LogEntry.created_at,
    LogEntry.user_id,
    LogEntry.device_id,
    LogEntry.tool_name,
    LogEntry.risk_level,
    LogEntry.detected_entity_types,
    LogEntry.was_sanitized,
)
#: The same, followed by what read_events appends: for queries that do not go through it.
EVENT_COLUMNS_WITH_KEY: Final = (*EVENT_COLUMNS, LogEntry.commit_seq, LogEntry.organization_id, LogEntry.id)
_NO_TYPES: Final[frozenset[str]] = frozenset()


@dataclass(frozen=True, slots=True)
class EventFacts:
    """What rules look at in one stored event (metadata only)."""

    event_id: str
    organization_id: str
    timestamp: datetime
    created_at: datetime
    user_id: str
    device_id: str
    tool_key: str
    risk_level: str
    entity_types: frozenset[str]
    was_sanitized: bool


def facts_from_row(row: Sequence[Any]) -> EventFacts:
    """An event read with :data:`EVENT_COLUMNS_WITH_KEY` (or EVENT_COLUMNS through read_events)."""
    timestamp, created_at, user_id, device_id, tool_name, risk, types, sanitized, _seq, org, event_id = row
    return EventFacts(
        event_id=str(event_id),
        organization_id=org,
        timestamp=as_utc(timestamp),
        created_at=as_utc(created_at),
        user_id=user_id,
        device_id=device_id,
        tool_key=tool_name.casefold(),
        risk_level=risk,
        entity_types=frozenset(t.casefold() for t in types if isinstance(t, str)) if types else _NO_TYPES,
        was_sanitized=bool(sanitized),
    )


def _folded(values: object) -> frozenset[str] | None:
    if not isinstance(values, list) or not values:
        return None
    return frozenset(str(value).casefold() for value in values)


def _exact(values: object) -> frozenset[str] | None:
    if not isinstance(values, list) or not values:
        return None
    return frozenset(str(value) for value in values)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule ready to match events: its filters as sets, its window and liveness as durations."""

    id: uuid.UUID
    organization_id: str
    kind: str
    #: How many events within the window meet the rule (1 for entity and new_tool rules).
    size: int
    window: timedelta
    live_for: timedelta
    group_by: str
    risk_levels: frozenset[str] | None
    tool_names: frozenset[str] | None
    entity_types: frozenset[str] | None
    user_ids: frozenset[str] | None
    device_ids: frozenset[str] | None
    was_sanitized: bool | None
    #: What, when edited, makes the rule's counted windows meaningless.
    signature: tuple[Any, ...]

    def matches(self, event: EventFacts) -> bool:
        """Whether the event passes every filter of the rule."""
        if self.risk_levels is not None and event.risk_level not in self.risk_levels:
            return False
        if self.tool_names is not None and event.tool_key not in self.tool_names:
            return False
        if self.entity_types is not None and self.entity_types.isdisjoint(event.entity_types):
            return False
        if self.user_ids is not None and event.user_id not in self.user_ids:
            return False
        if self.device_ids is not None and event.device_id not in self.device_ids:
            return False
        return self.was_sanitized is None or event.was_sanitized is self.was_sanitized

    def group_of(self, event: EventFacts) -> str:
        """The alert's group for this event: ``group_key`` of the alert it raises or updates."""
        if self.group_by == "user":
            return event.user_id
        if self.group_by == "device":
            return event.device_id
        if self.group_by == "tool":
            return event.tool_key
        return event.organization_id

    def is_live(self, event: EventFacts) -> bool:
        """Stored soon enough after it happened to raise or update an alert."""
        return event.created_at - event.timestamp <= self.live_for


def compile_rule(rule: AlertRule) -> CompiledRule:
    """The rule as the evaluator uses it (its stored filters were validated by db.alert_rules)."""
    filters = rule.filters or {}
    sanitized = filters.get("was_sanitized")
    size = rule.threshold if rule.kind == "threshold" else 1
    return CompiledRule(
        id=rule.id,
        organization_id=rule.organization_id,
        kind=rule.kind,
        size=max(1, size),
        window=timedelta(seconds=rule.window_seconds),
        live_for=timedelta(seconds=rule.window_seconds + LIVE_GRACE_SECONDS),
        group_by="tool" if rule.kind == "new_tool" else rule.group_by,
        risk_levels=_exact(filters.get("risk_levels")),
        tool_names=None if rule.kind == "new_tool" else _folded(filters.get("tool_names")),
        entity_types=_folded(filters.get("entity_types")),
        user_ids=_exact(filters.get("user_ids")),
        device_ids=_exact(filters.get("device_ids")),
        was_sanitized=sanitized if isinstance(sanitized, bool) else None,
        signature=(rule.kind, size, rule.window_seconds, rule.group_by, repr(sorted(filters.items()))),
    )
