"""Silent agents (one alert per organisation, updated, resolved by itself) and new tools (once, capped)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from db.alerts import AlertRuleSpec, resolve_alert
from db.base import utcnow
from db.devices import mark_devices_heard, register_or_touch_device
from db.engine import new_sessionmaker
from db.models import Device
from tests.alerts_tests.support import (
    CLI,
    alerts_of,
    changes_of,
    event,
    organization_with_rule,
    recently,
    started_evaluator,
    store_and_evaluate,
)

SILENT = AlertRuleSpec(
    name="silent", kind="silent_agent", severity="medium", group_by="organization", window_seconds=3600
)


async def add_device(
    session: AsyncSession, device_id: str, *, silent_for: timedelta, org: str = "acme"
) -> None:
    await register_or_touch_device(
        session=session,
        organization_id=org,
        device_id=device_id,
        user_id="ann",
        device_type="desktop",
        agent_version="1.0",
    )
    await session.execute(
        update(Device).where(Device.device_id == device_id).values(last_seen=utcnow() - silent_for)
    )
    await session.commit()


async def test_silent_devices_share_one_alert_updated_then_resolved_by_the_system(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    await organization_with_rule(session, SILENT)
    await add_device(session, "laptop-a", silent_for=timedelta(hours=2))
    await add_device(session, "laptop-b", silent_for=timedelta(minutes=10))
    await add_device(session, "laptop-off", silent_for=timedelta(days=9))
    await session.execute(update(Device).where(Device.device_id == "laptop-off").values(is_active=False))
    await session.commit()
    evaluator = await started_evaluator(engine)

    [alert] = await alerts_of(engine)
    assert (alert.group_key, alert.rule_kind, alert.event_count) == ("acme", "silent_agent", 1)
    assert alert.details["silent_device_ids"] == ["laptop-a"]
    assert alert.details["silent_devices"] == 1

    await add_device(session, "laptop-c", silent_for=timedelta(hours=5))
    await evaluator.check_silent_agents()
    await evaluator.check_silent_agents()  # nothing changed since: no revision

    [alert] = await alerts_of(engine)
    assert alert.details["silent_device_ids"] == ["laptop-a", "laptop-c"]
    assert (alert.event_count, alert.revision) == (2, 2)

    await mark_devices_heard(session=session, device_ids=["laptop-a"])
    await session.commit()
    await evaluator.check_silent_agents()
    await mark_devices_heard(session=session, device_ids=["laptop-c"])
    await session.commit()
    await evaluator.check_silent_agents()

    [alert] = await alerts_of(engine)
    assert (alert.state, alert.resolved_by) == ("resolved", "system")
    assert await changes_of(engine, alert.id) == [(1, "create"), (2, "update"), (3, "update"), (4, "close")]


async def test_a_silent_agent_alert_lists_fifty_devices_and_counts_them_all(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    await organization_with_rule(session, SILENT)
    for index in range(55):
        await add_device(session, f"laptop-{index:02d}", silent_for=timedelta(hours=80))

    await started_evaluator(engine)

    [alert] = await alerts_of(engine)
    assert len(alert.details["silent_device_ids"]) == 50
    assert alert.details["silent_devices"] == 55
    assert alert.event_count == 55


NEW_TOOL = AlertRuleSpec(
    name="shadow", kind="new_tool", severity="low", threshold=2, group_by="tool", cooldown_seconds=0
)


async def test_a_new_tool_raises_once_and_later_events_update_it(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    await organization_with_rule(session, NEW_TOOL)
    evaluator = await started_evaluator(engine)

    await store_and_evaluate(engine, evaluator, [event(recently(), tool_name="chatgpt", risk="green")])
    assert await alerts_of(engine) == []  # monitored, whatever the case

    await store_and_evaluate(engine, evaluator, [event(recently(), tool_name="ShadowGPT", risk="green")])
    await store_and_evaluate(engine, evaluator, [event(recently(), tool_name="SHADOWGPT", risk="amber")])

    [alert] = await alerts_of(engine)
    assert (alert.group_key, alert.event_count, alert.revision) == ("shadowgpt", 2, 2)

    await resolve_alert(session=session, alert_id=alert.id, actor=CLI)
    await session.commit()
    await store_and_evaluate(engine, evaluator, [event(recently(), tool_name="shadowgpt", risk="green")])

    [alert] = await alerts_of(engine)
    assert alert.state == "resolved"


async def test_new_tools_are_capped_per_organisation_per_hour(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    await organization_with_rule(session, NEW_TOOL)
    evaluator = await started_evaluator(engine)

    await store_and_evaluate(
        engine, evaluator, [event(recently(), tool_name=f"tool-{index}", risk="green") for index in range(5)]
    )
    await store_and_evaluate(engine, evaluator, [event(recently(), tool_name="tool-9", risk="green")])

    raised = [alert.group_key for alert in await alerts_of(engine)]
    assert len(raised) == 2  # which two of the first five: their commit order (by event id within a batch)
    assert set(raised) < {f"tool-{index}" for index in range(5)}


async def test_a_backfilled_new_tool_raises_nothing(engine: AsyncEngine, session: AsyncSession) -> None:
    await organization_with_rule(session, NEW_TOOL)
    evaluator = await started_evaluator(engine)

    await store_and_evaluate(
        engine, evaluator, [event(recently(3 * 3600), tool_name="OldTool", risk="green")]
    )

    assert await alerts_of(engine) == []


async def test_mark_devices_heard_never_moves_last_seen_back(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    await add_device(session, "laptop-a", silent_for=timedelta(0))
    async with new_sessionmaker(engine)() as other:
        updated = await mark_devices_heard(
            session=other, device_ids=["laptop-a", "nobody"], now=utcnow() - timedelta(days=1)
        )
        await other.commit()
    assert updated == 0
