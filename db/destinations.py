"""Forwarding destinations and their dead letters: what the console reads and changes.

Every change checks the actor in its own transaction (db/rights.py) and is audited; a
secret (HEC token, webhook key, TLS client key) is encrypted before it is stored
(db/secrets.py) and never appears in an audit row, a message or a log line.

STUB: the signatures below are the contract the console and the forwarders code
against; the bodies are being written.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from db.models import DeadLetter, ForwardDestination
from db.rights import Actor
from db.secrets import SecretBox

DEAD_LETTER_PAGE_SIZE = 200


class DestinationError(ValueError):
    """A destination's settings are not valid (the message says why), or it does not exist."""


@dataclass(frozen=True)
class DestinationSpec:
    """What an administrator sets on a destination; ``secret`` None keeps the stored one."""

    name: str
    transport: str
    format: str
    address: str
    options: dict[str, Any] = field(default_factory=dict)
    forward_alerts: bool = True
    event_risk_levels: frozenset[str] = frozenset({"red", "amber"})
    enabled: bool = True
    secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class DestinationLag:
    """How far behind a destination is: events and alert changes not yet delivered, and the oldest."""

    events_behind: int
    alerts_behind: int
    oldest_undelivered_at: datetime | None


async def list_destinations(
    *, session: AsyncSession, organization_id: str | None = None
) -> Sequence[ForwardDestination]:
    raise NotImplementedError


async def get_destination(*, session: AsyncSession, destination_id: uuid.UUID) -> ForwardDestination:
    """Raises DestinationError if there is no such destination."""
    raise NotImplementedError


async def create_destination(
    *, session: AsyncSession, organization_id: str, spec: DestinationSpec, actor: Actor, secrets: SecretBox
) -> ForwardDestination:
    """Validate and add a destination (an administrator now), audited (``destination.create``).

    Its cursors start at the current end of both streams: history is not forwarded.
    """
    raise NotImplementedError


async def update_destination(
    *,
    session: AsyncSession,
    destination_id: uuid.UUID,
    spec: DestinationSpec,
    actor: Actor,
    secrets: SecretBox,
) -> tuple[ForwardDestination, dict[str, dict[str, Any]]]:
    """Validate and apply ``spec``; audited (``destination.update``; a new secret shows as changed only)."""
    raise NotImplementedError


async def delete_destination(
    *, session: AsyncSession, destination_id: uuid.UUID, actor: Actor
) -> ForwardDestination:
    """Delete a destination with its cursors and dead letters, audited (``destination.delete``)."""
    raise NotImplementedError


async def destination_lag(*, session: AsyncSession, destination: ForwardDestination) -> DestinationLag:
    raise NotImplementedError


async def list_dead_letters(
    *,
    session: AsyncSession,
    destination_id: uuid.UUID | None = None,
    organization_id: str | None = None,
    limit: int = DEAD_LETTER_PAGE_SIZE,
) -> Sequence[DeadLetter]:
    raise NotImplementedError


async def retry_dead_letters(*, session: AsyncSession, ids: Sequence[uuid.UUID], actor: Actor) -> int:
    """Mark dead letters to be sent again by their forwarder; audited; returns how many."""
    raise NotImplementedError


async def discard_dead_letters(*, session: AsyncSession, ids: Sequence[uuid.UUID], actor: Actor) -> int:
    """Delete dead letters for good; audited; returns how many."""
    raise NotImplementedError
