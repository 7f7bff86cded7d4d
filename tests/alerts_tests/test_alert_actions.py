"""Operators' changes: acknowledge and resolve (audited, admin-only, new revisions), rules CRUD, listing."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from db.alerts import (
    AlertError,
    AlertFilter,
    AlertRuleSpec,
    acknowledge_alert,
    create_rule,
    delete_rule,
    get_alert,
    list_alerts,
    list_rules,
    open_alerts,
    resolve_alert,
    update_rule,
)
from db.models import AuditEvent
from db.rights import Actor, NotAllowed
from tests.alerts_tests.support import (
    CLI,
    ORG,
    alerts_of,
    changes_of,
    event,
    organization_with_rule,
    recently,
    started_evaluator,
    store_and_evaluate,
    threshold_rule,
)
from tests.support.database import add_user


async def raised_alert(engine: AsyncEngine, session: AsyncSession, user: str = "ann") -> uuid.UUID:
    await organization_with_rule(session, threshold_rule(threshold=1))
    evaluator = await started_evaluator(engine)
    await store_and_evaluate(engine, evaluator, [event(recently(), user=user)])
    [alert] = await alerts_of(engine)
    return alert.id


async def audit_actions(session: AsyncSession, entity_type: str) -> list[tuple[str, str]]:
    rows = await session.execute(
        select(AuditEvent.actor, AuditEvent.action)
        .where(AuditEvent.entity_type == entity_type)
        .order_by(AuditEvent.occurred_at, AuditEvent.id)
    )
    return [(actor, action) for actor, action in rows.all()]


async def test_an_administrator_acknowledges_then_resolves_audited_as_revisions(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    alert_id = await raised_alert(engine, session)
    await add_user(session, "ada", is_admin=True)
    ada = Actor.console("ada")

    acknowledged = await acknowledge_alert(session=session, alert_id=alert_id, actor=ada)
    await session.commit()
    assert (acknowledged.state, acknowledged.acknowledged_by, acknowledged.revision) == (
        "acknowledged",
        "ada",
        2,
    )
    resolved = await resolve_alert(session=session, alert_id=alert_id, actor=ada)
    await session.commit()

    assert (resolved.state, resolved.resolved_by, resolved.revision) == ("resolved", "ada", 3)
    assert resolved.resolved_at is not None
    assert await changes_of(engine, alert_id) == [(1, "create"), (2, "update"), (3, "close")]
    assert await audit_actions(session, "alert") == [("ada", "alert.acknowledge"), ("ada", "alert.resolve")]


async def test_a_resolved_alert_cannot_be_acknowledged_or_resolved_again(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    alert_id = await raised_alert(engine, session)
    await resolve_alert(session=session, alert_id=alert_id, actor=CLI)
    await session.commit()

    with pytest.raises(AlertError, match="only an open alert"):
        await acknowledge_alert(session=session, alert_id=alert_id, actor=CLI)
    await session.rollback()
    with pytest.raises(AlertError, match="resolved already"):
        await resolve_alert(session=session, alert_id=alert_id, actor=CLI)
    await session.rollback()
    with pytest.raises(AlertError, match="no such alert"):
        await resolve_alert(session=session, alert_id=uuid.uuid4(), actor=CLI)


async def test_viewers_read_alerts_but_cannot_change_them(engine: AsyncEngine, session: AsyncSession) -> None:
    alert_id = await raised_alert(engine, session)
    await add_user(session, "vic")
    vic = Actor.console("vic")

    with pytest.raises(NotAllowed, match="only administrators can acknowledge alerts"):
        await acknowledge_alert(session=session, alert_id=alert_id, actor=vic)
    await session.rollback()
    with pytest.raises(NotAllowed, match="only administrators can resolve alerts"):
        await resolve_alert(session=session, alert_id=alert_id, actor=vic)
    await session.rollback()

    alert = await get_alert(session=session, alert_id=alert_id)
    assert (alert.state, alert.revision) == ("open", 1)
    assert await audit_actions(session, "alert") == []


async def test_alerts_are_listed_newest_change_first_in_pages_and_filtered(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    await organization_with_rule(session, threshold_rule(threshold=1))
    evaluator = await started_evaluator(engine)
    for user in ("ann", "bob", "cat"):
        await store_and_evaluate(engine, evaluator, [event(recently(), user=user)])
    [ann, bob, cat] = await alerts_of(engine)
    await resolve_alert(session=session, alert_id=ann.id, actor=CLI)
    await session.commit()

    first_page = await list_alerts(session=session, limit=2)
    assert [a.group_key for a in first_page] == ["ann", "cat"]
    last = first_page[-1]
    second_page = await list_alerts(session=session, limit=2, before=(last.updated_at, last.id))
    assert [a.group_key for a in second_page] == ["bob"]
    live = await list_alerts(
        session=session, alert_filter=AlertFilter(states=frozenset({"open", "acknowledged"}))
    )
    assert sorted(a.group_key for a in live) == ["bob", "cat"]
    assert await list_alerts(session=session, alert_filter=AlertFilter(organization_id="nobody")) == []

    overview = await open_alerts(session=session, newest=1)
    assert overview.by_severity == {"high": 2}
    assert overview.total == 2
    assert [a.group_key for a in overview.newest] == ["cat"]


async def test_rules_are_created_changed_and_deleted_audited(session: AsyncSession) -> None:
    await organization_with_rule(session, threshold_rule())
    await add_user(session, "ada", is_admin=True)
    ada = Actor.console("ada")

    rule = await create_rule(
        session=session,
        organization_id="ACME",
        spec=threshold_rule(name="Tool burst", group_by="tool"),
        actor=ada,
    )
    await session.commit()
    assert (rule.organization_id, rule.updated_by) == (ORG, "ada")
    changed, changes = await update_rule(
        session=session,
        rule_id=rule.id,
        spec=threshold_rule(name="Tool burst", group_by="tool", threshold=9),
        actor=ada,
    )
    await session.commit()
    assert changed.threshold == 9
    assert changes == {"threshold": {"before": 3, "after": 9}}
    await delete_rule(session=session, rule_id=rule.id, actor=ada)
    await session.commit()

    assert [
        r.name for r in await list_rules(session=session, organization_id=ORG) if r.name == "Tool burst"
    ] == []
    assert await audit_actions(session, "alert_rule") == [
        ("tester", "alert_rule.create"),
        ("ada", "alert_rule.create"),
        ("ada", "alert_rule.update"),
        ("ada", "alert_rule.delete"),
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (threshold_rule(threshold=0), "threshold must be from 1 to 10,000"),
        (threshold_rule(threshold=10_001), "threshold must be from 1 to 10,000"),
        (threshold_rule(window_seconds=59), "window_seconds must be from 60"),
        (threshold_rule(window_seconds=7 * 86_400 + 1), "window_seconds must be from 60"),
        (threshold_rule(cooldown_seconds=-1), "cooldown_seconds must be from 0"),
        (threshold_rule(filters={"colour": ["red"]}), "unknown keys: colour"),
        (threshold_rule(filters={"risk_levels": ["crimson"]}), "'crimson' is not one of green, amber, red"),
        (threshold_rule(filters={"user_ids": ["x"] * 101}), "at most 100 values"),
        (threshold_rule(filters={"was_sanitized": "yes"}), "was_sanitized must be true, false"),
        (threshold_rule(group_by="planet"), "groups by user or device or tool or organization"),
        (threshold_rule(name=" "), "needs a name"),
        (threshold_rule(name="x" * 101), "at most 100 characters"),
        (
            AlertRuleSpec(name="s", kind="silent_agent", group_by="organization", window_seconds=3599),
            "from 3,600",
        ),
        (
            AlertRuleSpec(name="s", kind="silent_agent", group_by="user", window_seconds=7200),
            "groups by organization",
        ),
        (AlertRuleSpec(name="e", kind="entity", filters={}), "needs filters.entity_types"),
        (AlertRuleSpec(name="k", kind="volcano"), "kind must be one of"),
    ],
)
async def test_invalid_rules_are_refused_with_a_reason(
    session: AsyncSession, spec: AlertRuleSpec, message: str
) -> None:
    await organization_with_rule(session, threshold_rule())

    with pytest.raises(AlertError, match=message):
        await create_rule(session=session, organization_id=ORG, spec=spec, actor=CLI)


async def test_rule_names_are_unique_per_organisation_regardless_of_case(session: AsyncSession) -> None:
    await organization_with_rule(session, threshold_rule(name="Burst"))

    with pytest.raises(AlertError, match="already has a rule named 'BURST'"):
        await create_rule(session=session, organization_id=ORG, spec=threshold_rule(name="BURST"), actor=CLI)
    await session.rollback()
    with pytest.raises(AlertError, match="'nowhere' does not exist"):
        await create_rule(session=session, organization_id="nowhere", spec=threshold_rule(), actor=CLI)


async def test_viewers_cannot_change_rules(session: AsyncSession) -> None:
    rule = await organization_with_rule(session, threshold_rule())
    await add_user(session, "vic")

    with pytest.raises(NotAllowed):
        await update_rule(
            session=session, rule_id=rule.id, spec=threshold_rule(threshold=2), actor=Actor.console("vic")
        )
