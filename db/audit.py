"""The audit trail: who changed what, when, with the before and after of each field."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import AuditEvent
from db.rights import Actor

#: Fields whose values never enter the audit trail, whatever the entity.
SECRET_FIELDS = frozenset({"password", "hashed_password", "token", "token_hash"})
#: Where an audited change was made (scheduled cleanups are operators' settings, recorded in retention_runs).
AUDIT_SOURCES = ("console", "cli")
#: What audit rows are about (``entity_type``), for the console's filter.
AUDIT_ENTITY_TYPES = (
    "user",
    "device",
    "organization",
    "config",
    "ingest_token",
    "retention",
    "sign_in",
    "export",
    "alert_rule",
    "alert",
    "destination",
    "dead_letter",
)
AUDIT_PAGE_SIZE = 200


def _redact(changes: dict[str, Any]) -> dict[str, Any]:
    return {name: ({"changed": True} if name in SECRET_FIELDS else value) for name, value in changes.items()}


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
    actor: Actor,
    action: str,
    entity_type: str,
    entity_id: str,
    changes: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an audit row in the caller's transaction, so it commits or rolls back with the change.

    The row names the actor and where it acted (``console`` or ``cli``, :class:`~db.rights.Actor`).
    """
    row = AuditEvent(
        actor=actor.name,
        source=actor.source,
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        changes=_jsonable(_redact(changes or {})),
    )
    session.add(row)
    await session.flush()
    return row


def apply_changes(row: Any, values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Set on ``row`` each of ``values`` that differs from what it holds; return those as ``changes`` for
    :func:`record_change` (``{field: {"before": …, "after": …}}``; empty when nothing differs)."""
    changes: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        before = getattr(row, name)
        if before != value:
            changes[name] = {"before": before, "after": value}
            setattr(row, name, value)
    return changes


async def recent_changes(*, session: AsyncSession, limit: int = 200) -> Sequence[AuditEvent]:
    statement = select(AuditEvent).order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc()).limit(limit)
    return (await session.scalars(statement)).all()


@dataclass(frozen=True)
class AuditFilter:
    """What the audit browser shows: ``search`` matches actor, action or entity id (substring)."""

    search: str = ""
    entity_type: str | None = None
    source: str | None = None
    since: datetime | None = None


@dataclass(frozen=True)
class AuditPage:
    """One page of audit rows, newest first, and whether older rows follow."""

    rows: Sequence[AuditEvent]
    has_older: bool


async def list_changes(
    *,
    session: AsyncSession,
    filters: AuditFilter,
    before: tuple[datetime, Any] | None = None,
    limit: int = AUDIT_PAGE_SIZE,
) -> AuditPage:
    """Audit rows matching ``filters``, newest first, older than the ``before`` (occurred_at, id) cursor."""
    statement = select(AuditEvent).order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc())
    if filters.search:
        like = f"%{filters.search.lower()}%"
        statement = statement.where(
            or_(
                func.lower(AuditEvent.actor).like(like),
                func.lower(AuditEvent.action).like(like),
                func.lower(AuditEvent.entity_id).like(like),
            )
        )
    if filters.entity_type:
        statement = statement.where(AuditEvent.entity_type == filters.entity_type)
    if filters.source:
        statement = statement.where(AuditEvent.source == filters.source)
    if filters.since is not None:
        statement = statement.where(AuditEvent.occurred_at >= filters.since)
    if before is not None:
        moment, row_id = before
        statement = statement.where(
            or_(
                AuditEvent.occurred_at < moment,
                and_(AuditEvent.occurred_at == moment, AuditEvent.id < row_id),
            )
        )
    rows = (await session.scalars(statement.limit(limit + 1))).all()
    return AuditPage(rows=rows[:limit], has_older=len(rows) > limit)


def describe_changes(changes: dict[str, Any]) -> list[str]:
    """One line per field: ``field: before → after``, ``field = value`` when created, ``field was value``
    when deleted; secrets show only that they changed."""
    lines = []
    for name, change in sorted(changes.items()):
        if isinstance(change, dict) and "before" in change and "after" in change:
            lines.append(f"{name}: {change['before']!r} → {change['after']!r}")
        elif isinstance(change, dict) and "after" in change:
            lines.append(f"{name} = {change['after']!r}")
        elif isinstance(change, dict) and "before" in change:
            lines.append(f"{name} was {change['before']!r}")
        elif isinstance(change, dict) and change.get("changed"):
            lines.append(f"{name}: changed")
        else:
            lines.append(f"{name}: {change!r}")
    return lines
