"""The audit trail: who changed what, when, with the before and after of each field."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import AuditEvent

#: Fields whose values never enter the audit trail, whatever the entity.
SECRET_FIELDS = frozenset({"password", "hashed_password", "token", "token_hash"})
AUDIT_SOURCES = ("console", "cli", "scheduler")


def _redact(changes: dict[str, Any]) -> dict[str, Any]:
    return {
        name: ({"changed": True} if name in SECRET_FIELDS else value) for name, value in changes.items()
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


async def record_change(
    *,
    session: AsyncSession,
    actor: str,
    source: str,
    action: str,
    entity_type: str,
    entity_id: str,
    changes: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an audit row in the caller's transaction, so it commits or rolls back with the change."""
    row = AuditEvent(
        actor=actor,
        source=source,
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        changes=_jsonable(_redact(changes or {})),
    )
    session.add(row)
    await session.flush()
    return row


async def recent_changes(*, session: AsyncSession, limit: int = 200) -> Sequence[AuditEvent]:
    statement = select(AuditEvent).order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc()).limit(limit)
    return (await session.scalars(statement)).all()
