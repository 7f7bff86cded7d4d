"""Alert rules and alerts: what the console reads and changes, and what the evaluator writes.

Every change an operator makes (rules, acknowledge, resolve) checks the actor in its own
transaction (db/rights.py) and is audited. Every change of an alert, by an operator or by
the evaluator, bumps its ``revision`` and adds an ``alert_changes`` row in the same
transaction (:func:`record_alert_change`): that is what forwarders send as create, update
and close.

STUB: the signatures below are the contract the console, the evaluator and the forwarders
code against; the bodies are being written.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Alert, AlertRule
from db.rights import Actor

AlertActivity = Literal["create", "update", "close"]
#: How many event ids an alert keeps (the first ones; later matches only count).
MAX_ALERT_EVENT_IDS = 20
ALERT_PAGE_SIZE = 200


class AlertError(ValueError):
    """A rule or an alert change is not valid (the message says why), or it does not exist."""


@dataclass(frozen=True)
class AlertRuleSpec:
    """What an administrator sets on a rule (alerts/rules.py documents each kind's use of the fields)."""

    name: str
    kind: str
    enabled: bool = True
    severity: str = "high"
    threshold: int = 1
    window_seconds: int = 600
    group_by: str = "user"
    cooldown_seconds: int = 900
    filters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AlertFilter:
    """Which alerts the console lists; empty fields mean all."""

    states: frozenset[str] = frozenset()
    organization_id: str | None = None
    rule_id: uuid.UUID | None = None


@dataclass(frozen=True)
class OpenAlerts:
    """The overview's count of alerts not resolved yet, by severity, and the newest few."""

    by_severity: dict[str, int]
    newest: Sequence[Alert]

    @property
    def total(self) -> int:
        return sum(self.by_severity.values())


def default_rule_specs(*, red_entity_types: Sequence[str]) -> list[AlertRuleSpec]:
    """A new organisation's rules: a red burst per user, the red entity types, silent agents, new tools,
    and a failing forwarding destination."""
    raise NotImplementedError


async def create_default_rules(*, session: AsyncSession, organization_id: str) -> list[AlertRule]:
    """Add :func:`default_rule_specs` for a new organisation (its ``red_entity_types``), in the caller's
    transaction; called by db.configs.create_organization (the organisation's audit row covers them)."""
    raise NotImplementedError


async def list_rules(*, session: AsyncSession, organization_id: str | None = None) -> Sequence[AlertRule]:
    raise NotImplementedError


async def get_rule(*, session: AsyncSession, rule_id: uuid.UUID) -> AlertRule:
    """Raises AlertError if there is no such rule."""
    raise NotImplementedError


async def create_rule(
    *, session: AsyncSession, organization_id: str, spec: AlertRuleSpec, actor: Actor
) -> AlertRule:
    """Validate and add a rule for ``actor`` (an administrator now), audited (``alert_rule.create``)."""
    raise NotImplementedError


async def update_rule(
    *, session: AsyncSession, rule_id: uuid.UUID, spec: AlertRuleSpec, actor: Actor
) -> tuple[AlertRule, dict[str, dict[str, Any]]]:
    """Validate and apply ``spec``; return the rule and what changed (audited ``alert_rule.update``)."""
    raise NotImplementedError


async def delete_rule(*, session: AsyncSession, rule_id: uuid.UUID, actor: Actor) -> AlertRule:
    """Delete a rule (its alerts stay, under the rule's name as raised), audited (``alert_rule.delete``)."""
    raise NotImplementedError


async def list_alerts(
    *,
    session: AsyncSession,
    alert_filter: AlertFilter = AlertFilter(),
    limit: int = ALERT_PAGE_SIZE,
    before: tuple[datetime, uuid.UUID] | None = None,
) -> Sequence[Alert]:
    """Alerts newest change first (``updated_at``, ``id``), keyset-paged: ``before`` is the last row seen."""
    raise NotImplementedError


async def get_alert(*, session: AsyncSession, alert_id: uuid.UUID) -> Alert:
    """Raises AlertError if there is no such alert."""
    raise NotImplementedError


async def open_alerts(
    *, session: AsyncSession, organization_id: str | None = None, newest: int = 5
) -> OpenAlerts:
    """What the overview shows: alerts open or acknowledged, counted by severity, and the newest few."""
    raise NotImplementedError


async def acknowledge_alert(*, session: AsyncSession, alert_id: uuid.UUID, actor: Actor) -> Alert:
    """Mark an open alert acknowledged by ``actor`` (an administrator now), audited, as a new revision.

    Raises AlertError if it is not open.
    """
    raise NotImplementedError


async def resolve_alert(*, session: AsyncSession, alert_id: uuid.UUID, actor: Actor) -> Alert:
    """Resolve an open or acknowledged alert by ``actor``, audited, as a new revision (``close``).

    The rule's cooldown for its group starts now. Raises AlertError if it is already resolved.
    """
    raise NotImplementedError


def alert_snapshot(alert: Alert) -> dict[str, Any]:
    """The alert's fields as forwarded (JSON-ready: times as ISO 8601 text, ids as text)."""
    raise NotImplementedError


async def record_alert_change(*, session: AsyncSession, alert: Alert, activity: AlertActivity) -> None:
    """Add the ``alert_changes`` row of ``alert``'s current revision (commit order: db/commit_order.py)."""
    raise NotImplementedError


async def raise_or_update_system_alert(
    *,
    session: AsyncSession,
    organization_id: str,
    kind: Literal["forwarding"],
    group_key: str,
    details: dict[str, Any],
) -> Alert | None:
    """Open (or update) the alert of the organisation's enabled rule of ``kind`` for ``group_key``
    (for ``forwarding``: the destination's name); None when no such rule is enabled or its cooldown runs."""
    raise NotImplementedError


async def resolve_system_alert(
    *, session: AsyncSession, organization_id: str, kind: Literal["forwarding"], group_key: str
) -> Alert | None:
    """Resolve that alert, if live (the fault has cleared); the actor recorded is ``system``."""
    raise NotImplementedError
