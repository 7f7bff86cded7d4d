"""Threshold and entity rules driven through the real evaluator: windows, cooldowns, groups, updates."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from db.alerts import MAX_ALERT_EVENT_IDS, AlertRuleSpec, resolve_alert
from db.engine import new_sessionmaker
from tests.alerts_tests.support import (
    CLI,
    alerts_of,
    changes_of,
    event,
    organization_with_rule,
    recently,
    started_evaluator,
    store_and_evaluate,
    threshold_rule,
)


async def test_one_event_short_of_the_threshold_raises_nothing(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    await organization_with_rule(session, threshold_rule(threshold=3, window_seconds=60))
    evaluator = await started_evaluator(engine)
    t0 = recently()

    await store_and_evaluate(engine, evaluator, [event(t0), event(t0 + timedelta(seconds=30))])

    assert await alerts_of(engine) == []


async def test_the_threshold_within_the_window_raises_one_alert(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    rule = await organization_with_rule(session, threshold_rule(threshold=3, window_seconds=60))
    evaluator = await started_evaluator(engine)
    t0 = recently()
    burst = [event(t0), event(t0 + timedelta(seconds=30)), event(t0 + timedelta(seconds=60))]

    await store_and_evaluate(engine, evaluator, burst)

    [alert] = await alerts_of(engine)
    assert (alert.rule_id, alert.group_key, alert.state) == (rule.id, "ann", "open")
    assert alert.event_count == 3
    assert alert.first_event_at == t0
    assert alert.last_event_at == t0 + timedelta(seconds=60)
    assert sorted(alert.event_ids) == sorted(str(e["id"]) for e in burst)
    assert (alert.rule_name, alert.severity, alert.revision) == ("burst", "high", 1)
    assert await changes_of(engine, alert.id) == [(1, "create")]


async def test_the_threshold_spread_over_one_second_more_than_the_window_raises_nothing(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    await organization_with_rule(session, threshold_rule(threshold=3, window_seconds=60))
    evaluator = await started_evaluator(engine)
    t0 = recently()

    # Each event in its own transaction and page: the window slides event by event.
    for offset in (0, 30, 61):
        await store_and_evaluate(engine, evaluator, [event(t0 + timedelta(seconds=offset))])

    assert await alerts_of(engine) == []


async def test_late_events_in_commit_order_still_fill_the_window(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    await organization_with_rule(session, threshold_rule(threshold=3, window_seconds=60))
    evaluator = await started_evaluator(engine)
    t0 = recently()

    # Stored newest first: commit order is not event-time order.
    for offset in (50, 20, 0):
        await store_and_evaluate(engine, evaluator, [event(t0 + timedelta(seconds=offset))])

    [alert] = await alerts_of(engine)
    assert alert.event_count == 3
    assert alert.first_event_at == t0


async def test_groups_are_counted_apart(engine: AsyncEngine, session: AsyncSession) -> None:
    await organization_with_rule(session, threshold_rule(threshold=3, window_seconds=60))
    evaluator = await started_evaluator(engine)
    t0 = recently()
    mixed = [
        event(t0 + timedelta(seconds=i), user=user) for i, user in enumerate(["ann", "bob", "ann", "bob"])
    ]

    await store_and_evaluate(engine, evaluator, mixed)
    assert await alerts_of(engine) == []

    await store_and_evaluate(engine, evaluator, [event(t0 + timedelta(seconds=10), user="ann")])

    [alert] = await alerts_of(engine)
    assert alert.group_key == "ann"


async def test_events_outside_the_filter_do_not_count(engine: AsyncEngine, session: AsyncSession) -> None:
    await organization_with_rule(session, threshold_rule(threshold=2, window_seconds=60))
    evaluator = await started_evaluator(engine)
    t0 = recently()

    await store_and_evaluate(
        engine, evaluator, [event(t0, risk="amber"), event(t0, risk="green"), event(t0, org="other")]
    )
    await store_and_evaluate(engine, evaluator, [event(t0, risk="red")])

    assert await alerts_of(engine) == []


async def test_an_open_alert_takes_later_matches_as_one_revision_per_page(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    await organization_with_rule(session, threshold_rule(threshold=3, window_seconds=60))
    evaluator = await started_evaluator(engine)
    t0 = recently()
    await store_and_evaluate(engine, evaluator, [event(t0 + timedelta(seconds=i)) for i in range(3)])

    later = [event(t0 + timedelta(seconds=10 + i)) for i in range(25)]
    await store_and_evaluate(engine, evaluator, later)

    [alert] = await alerts_of(engine)
    assert alert.event_count == 28
    assert alert.last_event_at == t0 + timedelta(seconds=34)
    assert len(alert.event_ids) == MAX_ALERT_EVENT_IDS
    assert alert.revision == 2

    await store_and_evaluate(engine, evaluator, [event(t0 + timedelta(seconds=200))])

    [alert] = await alerts_of(engine)
    assert (alert.event_count, alert.revision) == (29, 3)
    assert alert.last_event_at == t0 + timedelta(seconds=200)
    assert await changes_of(engine, alert.id) == [(1, "create"), (2, "update"), (3, "update")]


async def test_a_new_alert_waits_for_the_cooldown_after_a_resolution(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    rule = await organization_with_rule(
        session, threshold_rule(threshold=3, window_seconds=60, cooldown_seconds=60)
    )
    evaluator = await started_evaluator(engine)
    t0 = recently()
    await store_and_evaluate(engine, evaluator, [event(t0 + timedelta(seconds=i)) for i in range(3)])
    [first] = await alerts_of(engine)
    async with new_sessionmaker(engine)() as operator:
        resolved = await resolve_alert(session=operator, alert_id=first.id, actor=CLI)
        await operator.commit()
    assert resolved.resolved_at is not None
    resolved_at = resolved.resolved_at.replace(microsecond=0) + timedelta(seconds=1)

    # A burst one second before the cooldown ends raises nothing (and updates nothing resolved).
    await store_and_evaluate(
        engine, evaluator, [event(resolved_at + timedelta(seconds=59)) for _ in range(3)]
    )
    assert len(await alerts_of(engine)) == 1

    # The next match once the cooldown has passed raises the second alert.
    await store_and_evaluate(engine, evaluator, [event(resolved_at + timedelta(seconds=60))])

    first_again, second = await alerts_of(engine, rule.id)
    assert (first_again.state, first_again.revision) == ("resolved", 2)
    assert (second.state, second.group_key) == ("open", "ann")
    assert second.last_event_at == resolved_at + timedelta(seconds=60)


async def test_backfilled_events_are_counted_but_raise_nothing(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    # Window 600 s: an event is live when stored at most 600 + 300 s after it happened.
    await organization_with_rule(session, threshold_rule(threshold=3, window_seconds=600))
    evaluator = await started_evaluator(engine)
    old = recently(1000)

    await store_and_evaluate(engine, evaluator, [event(old), event(old + timedelta(seconds=1)), event(old)])
    assert await alerts_of(engine) == []

    # A live event completes a window whose older events were late: now it raises.
    live = event(old + timedelta(seconds=500))
    await store_and_evaluate(engine, evaluator, [live])

    [alert] = await alerts_of(engine)
    assert alert.last_event_at == live["timestamp"]
    assert alert.event_count == 3
    assert str(live["id"]) in alert.event_ids


async def test_a_backfill_updates_no_open_alert(engine: AsyncEngine, session: AsyncSession) -> None:
    await organization_with_rule(session, threshold_rule(threshold=2, window_seconds=60))
    evaluator = await started_evaluator(engine)
    await store_and_evaluate(engine, evaluator, [event(recently()), event(recently())])

    await store_and_evaluate(engine, evaluator, [event(recently(7200)) for _ in range(5)])

    [alert] = await alerts_of(engine)
    assert (alert.event_count, alert.revision) == (2, 1)


async def test_an_entity_rule_raises_on_one_event_per_group(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    spec = AlertRuleSpec(
        name="keys", kind="entity", group_by="device", filters={"entity_types": ["API_KEY", "private_key"]}
    )
    await organization_with_rule(session, spec)
    evaluator = await started_evaluator(engine)
    now = recently(5)

    await store_and_evaluate(
        engine,
        evaluator,
        [
            event(now, risk="amber", device_id="laptop-1", detected_entity_types=["EMAIL"]),
            event(now, risk="amber", device_id="laptop-2", detected_entity_types=["PRIVATE_KEY"]),
            event(now, risk="red", device_id="laptop-3", detected_entity_types=["api_key", "EMAIL"]),
            event(recently(7200), device_id="laptop-4", detected_entity_types=["API_KEY"]),
        ],
    )

    assert sorted(alert.group_key for alert in await alerts_of(engine)) == ["laptop-2", "laptop-3"]


async def test_a_switched_off_rule_raises_nothing(engine: AsyncEngine, session: AsyncSession) -> None:
    await organization_with_rule(session, threshold_rule(threshold=1, enabled=False))
    evaluator = await started_evaluator(engine)

    await store_and_evaluate(engine, evaluator, [event(recently())])

    assert await alerts_of(engine) == []
