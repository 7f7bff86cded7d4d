"""Helpers of the alert tests: an organisation with only the rule under test, live events, the evaluator."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from alerts.runner import AlertEvaluator
from db.alerts import AlertRuleSpec, create_rule
from db.base import utcnow
from db.engine import new_sessionmaker
from db.models import Alert, AlertChange, AlertRule
from db.rights import Actor
from tests.support.database import add_organization, make_event, store_logs

ORG = "acme"
CLI = Actor(name="tester", source="cli")


async def organization_with_rule(session: AsyncSession, spec: AlertRuleSpec, org: str = ORG) -> AlertRule:
    """A new organisation whose default rules are switched off, and ``spec`` as its one rule."""
    await add_organization(session, org)
    await session.execute(update(AlertRule).where(AlertRule.organization_id == org).values(enabled=False))
    rule = await create_rule(session=session, organization_id=org, spec=spec, actor=CLI)
    await session.commit()
    return rule


def threshold_rule(
    threshold: int = 3, window_seconds: int = 60, cooldown_seconds: int = 60, **overrides: Any
) -> AlertRuleSpec:
    values: dict[str, Any] = {
        "name": "burst",
        "kind": "threshold",
        "threshold": threshold,
        "window_seconds": window_seconds,
        "cooldown_seconds": cooldown_seconds,
        "group_by": "user",
        "filters": {"risk_levels": ["red"]},
        **overrides,
    }
    return AlertRuleSpec(**values)


def event(
    at: datetime, *, user: str = "ann", org: str = ORG, risk: str = "red", **overrides: Any
) -> dict[str, Any]:
    """A red event of ``user`` that happened at ``at`` (stored now)."""
    return make_event(organization_id=org, user_id=user, timestamp=at, risk_level=risk, **overrides)


def recently(seconds_ago: float = 120) -> datetime:
    return utcnow().replace(microsecond=0) - timedelta(seconds=seconds_ago)


async def started_evaluator(
    engine: AsyncEngine, holder: str = "test-evaluator", **options: Any
) -> AlertEvaluator:
    """An evaluator holding the lease, its cursor at the end of what is stored now."""
    evaluator = AlertEvaluator(new_sessionmaker(engine), holder=holder, lease_seconds=30, **options)
    await evaluator.catch_up()
    assert evaluator.lease is not None
    return evaluator


async def store_and_evaluate(
    engine: AsyncEngine, evaluator: AlertEvaluator, events: Sequence[dict[str, Any]]
) -> None:
    """Store the events in one transaction, then let the evaluator read everything committed."""
    await store_logs(engine, events)
    await evaluator.catch_up()


async def alerts_of(engine: AsyncEngine, rule_id: uuid.UUID | None = None) -> list[Alert]:
    async with new_sessionmaker(engine)() as session:
        statement = select(Alert).order_by(Alert.opened_at, Alert.id)
        if rule_id is not None:
            statement = statement.where(Alert.rule_id == rule_id)
        return list((await session.scalars(statement)).all())


async def changes_of(engine: AsyncEngine, alert_id: uuid.UUID) -> list[tuple[int, str]]:
    async with new_sessionmaker(engine)() as session:
        rows = await session.execute(
            select(AlertChange.revision, AlertChange.activity)
            .where(AlertChange.alert_id == alert_id)
            .order_by(AlertChange.commit_seq, AlertChange.id)
        )
        return [(int(revision), str(activity)) for revision, activity in rows.all()]


async def count_creates(engine: AsyncEngine) -> int:
    async with new_sessionmaker(engine)() as session:
        return int(
            await session.scalar(
                select(func.count()).select_from(AlertChange).where(AlertChange.activity == "create")
            )
            or 0
        )
