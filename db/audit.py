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
    """One page of audit rows in the order asked for (newest first unless ``oldest_first``), and whether
    more rows follow in that order."""

    rows: Sequence[AuditEvent]
    has_more: bool
    oldest_first: bool = False


async def list_changes(
    *,
    session: AsyncSession,
    filters: AuditFilter,
    past: tuple[datetime, Any] | None = None,
    oldest_first: bool = False,
    limit: int = AUDIT_PAGE_SIZE,
) -> AuditPage:
    """Audit rows matching ``filters``, a page at a time: newest first, or oldest first.

    ``past`` is the (occurred_at, id) of the last row of the previous page: the page goes on
    beyond it in the same order. Either order is a walk of ``ix_audit_events_occurred_at``
    (forwards or backwards), so the first page and the oldest one are as quick as any.
    """
    time, row_id = AuditEvent.occurred_at, AuditEvent.id
    order = (time.asc(), row_id.asc()) if oldest_first else (time.desc(), row_id.desc())
    statement = select(AuditEvent).order_by(*order)
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
    if past is not None:
        moment, last_id = past
        if oldest_first:
            beyond = or_(time > moment, and_(time == moment, row_id > last_id))
        else:
            beyond = or_(time < moment, and_(time == moment, row_id < last_id))
        statement = statement.where(beyond)
    rows = (await session.scalars(statement.limit(limit + 1))).all()
    return AuditPage(rows=rows[:limit], has_more=len(rows) > limit, oldest_first=oldest_first)


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
