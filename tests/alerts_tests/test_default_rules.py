"""A new organisation comes with its default rules, covered by its audit row; they work as written."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from db.alerts import default_rule_specs, list_rules
from db.models import AuditEvent
from tests.alerts_tests.support import alerts_of, event, recently, started_evaluator, store_and_evaluate
from tests.support.database import add_organization


async def test_a_new_organisation_gets_the_default_rules_in_its_audit_row(session: AsyncSession) -> None:
    await add_organization(session, "acme")

    rules = {rule.name: rule for rule in await list_rules(session=session, organization_id="acme")}

    assert set(rules) == {
        "Red burst per user",
        "Red entity types",
        "Silent agents",
        "New AI tool",
        "Forwarding destination failing",
    }
    burst = rules["Red burst per user"]
    assert (burst.kind, burst.threshold, burst.window_seconds, burst.group_by) == (
        "threshold",
        5,
        600,
        "user",
    )
    assert (burst.cooldown_seconds, burst.severity, burst.filters) == (900, "high", {"risk_levels": ["red"]})
    assert rules["Red entity types"].filters == {
        "entity_types": ["API_KEY", "PASSWORD", "PRIVATE_KEY", "CREDIT_CARD", "SSN"]
    }
    assert (rules["Silent agents"].window_seconds, rules["Silent agents"].severity) == (72 * 3600, "medium")
    assert (rules["New AI tool"].threshold, rules["New AI tool"].severity) == (10, "low")
    assert all(rule.enabled for rule in rules.values())
    audit = await session.scalar(select(AuditEvent).where(AuditEvent.action == "organization.create"))
    assert audit is not None
    assert sorted(audit.changes["alert_rules"]["after"]) == sorted(rules)


def test_without_red_entity_types_there_is_no_entity_rule() -> None:
    assert "entity" not in {spec.kind for spec in default_rule_specs(red_entity_types=[])}


async def test_the_default_rules_raise_a_red_burst_and_a_red_entity(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    await add_organization(session, "acme")
    evaluator = await started_evaluator(engine)
    t0 = recently(60)

    burst = [event(t0 + timedelta(seconds=i), user="ann") for i in range(5)]
    leak = event(t0, user="bob", risk="amber", detected_entity_types=["API_KEY"])
    await store_and_evaluate(engine, evaluator, [*burst, leak])

    raised = sorted((alert.rule_name, alert.group_key) for alert in await alerts_of(engine))
    assert raised == [("Red burst per user", "ann"), ("Red entity types", "bob")]
