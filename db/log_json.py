"""A log row as JSON-ready values: what an export writes, and what the console's raw view (``J``) shows.

Pure (no session, no query), so the console's widgets may use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from db.base import as_utc

if TYPE_CHECKING:
    from db.models import LogEntry


def entry_to_dict(entry: LogEntry) -> dict[str, Any]:
    """Every column of a row as JSON-ready values (times in ISO 8601 UTC)."""
    return {
        "id": str(entry.id),
        "timestamp": as_utc(entry.timestamp).isoformat(),
        "organization_id": entry.organization_id,
        "device_id": entry.device_id,
        "user_id": entry.user_id,
        "tool_name": entry.tool_name,
        "tool_type": entry.tool_type,
        "risk_level": entry.risk_level,
        "prompt_length": entry.prompt_length,
        "entity_count": entry.entity_count,
        "detected_entity_types": list(entry.detected_entity_types or []),
        "was_sanitized": bool(entry.was_sanitized),
        "log_metadata": dict(entry.log_metadata or {}),
        "created_at": as_utc(entry.created_at).isoformat() if entry.created_at else None,
    }
