"""The simulated fleet against a real ingest server, on both engines: every event stored exactly once,
even when connections are cut mid-stream."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from db.base import utcnow
from db.configs import update_config
from db.models import LogEntry
from db.rights import Actor
from db.vocabulary import DEFAULT_MONITORED_TOOLS
from simulation.events import TOOL_TYPE_OF_DEVICE
from simulation.fleet import Fleet, FleetError, FleetOrganization, FleetPlan
from tests.support.database import rollup_total, stored_ids
from tests.support.ingest import CuttingProxy, ServerHandle
from tests.support.waiting import wait_until

PLAN = FleetPlan(
    devices=6, rate=40.0, duration=0.5, backfill_days=3, backfill_per_day=400, seed=11, keep_ids=True
)


async def test_resend_after_dropped_connections_leaves_no_gaps_and_no_duplicates(
    server: ServerHandle, organizations: list[FleetOrganization], engine: AsyncEngine
) -> None:
    proxy = await CuttingProxy(server.port, cuts=8, after_bytes=24_000).start()
    fleet = Fleet("127.0.0.1", proxy.port, organizations, PLAN)
    try:
        stats = await fleet.run()
    finally:
        await proxy.close()
    assert proxy.cuts_done >= 4
    assert stats.reconnects >= proxy.cuts_done
    assert (stats.unacked, stats.rejected, stats.refused) == (0, 0, {})
    ids = await stored_ids(engine)
    assert len(ids) == len(set(ids)), "an event was stored twice"
    assert set(ids) == fleet.generated_ids, "an event was lost"
    assert stats.generated == len(fleet.generated_ids) > stats.backfill_total > 0


async def test_resent_events_are_counted_once_in_the_overview_rollups(
    server: ServerHandle, organizations: list[FleetOrganization], engine: AsyncEngine
) -> None:
    proxy = await CuttingProxy(server.port, cuts=6, after_bytes=16_000).start()
    fleet = Fleet("127.0.0.1", proxy.port, organizations, PLAN)
    try:
        await fleet.run()
    finally:
        await proxy.close()
    assert proxy.cuts_done >= 3
    assert await rollup_total(engine) == len(fleet.generated_ids)


def test_fleet_has_every_device_type_for_several_users_of_each_organisation() -> None:
    organizations = [FleetOrganization("demo-acme", "t1"), FleetOrganization("demo-globex", "t2")]
    devices = Fleet("127.0.0.1", 1, organizations, FleetPlan(devices=12)).devices
    for organization in organizations:
        mine = [
            device.identity
            for device in devices
            if device.identity.organization_id == organization.organization_id
        ]
        assert {identity.device_type for identity in mine} == set(TOOL_TYPE_OF_DEVICE)
        users = Counter(identity.user_id for identity in mine)
        assert len(users) >= 3
        assert max(users.values()) <= 2
    assert len({device.identity.device_id for device in devices}) == len(devices)


def test_backfill_stays_in_the_past_weeks_and_is_busier_on_weekdays() -> None:
    plan = FleetPlan(devices=3, backfill_days=28, backfill_per_day=500, seed=3)
    times = [
        moment
        for device in Fleet("127.0.0.1", 1, [FleetOrganization("o", "t")], plan).devices
        for moment in device.backfill
    ]
    newest, oldest = max(times), min(times)
    assert (newest - oldest).days >= 27
    weekdays = sum(1 for moment in times if moment.weekday() < 5) / 20
    weekend = sum(1 for moment in times if moment.weekday() >= 5) / 8
    assert weekdays > 3 * weekend


async def test_backfill_respects_each_organisations_retention(
    server: ServerHandle, session, engine: AsyncEngine
) -> None:
    from db.configs import create_organization
    from db.tokens import create_token

    await create_organization(
        session=session, organization_id="short", actor=Actor.cli(), log_retention_days=30
    )
    _, token = await create_token(session=session, actor=Actor.cli(), organization_id="short", name="test")
    await session.commit()
    plan = FleetPlan(devices=2, rate=0, duration=0, backfill_days=60, backfill_per_day=50, seed=5)
    stats = await Fleet("127.0.0.1", server.port, [FleetOrganization("short", token)], plan).run()
    assert stats.acked == stats.backfill_total > 0
    async with engine.connect() as connection:
        from sqlalchemy import func, select

        from db.base import as_utc, utcnow
        from db.models import LogEntry

        oldest = as_utc(await connection.scalar(select(func.min(LogEntry.timestamp))))
    assert (utcnow() - oldest).days < 30


async def test_unreachable_server_is_one_clear_error(organizations: list[FleetOrganization]) -> None:
    from simulation.demo import free_port

    port = free_port()
    fleet = Fleet("127.0.0.1", port, organizations, FleetPlan(devices=1, connect_timeout=0.5))
    with pytest.raises(FleetError, match=f"cannot connect to the ingest server at 127.0.0.1:{port}"):
        await fleet.run()


async def test_a_wrong_token_of_any_organisation_is_one_clear_error(
    server: ServerHandle, organizations: list[FleetOrganization]
) -> None:
    wrong = [organizations[0], FleetOrganization(organizations[1].organization_id, "aifw_not-a-real-token")]
    with pytest.raises(FleetError, match="refused organisation 'globex': unauthorized"):
        await Fleet("127.0.0.1", server.port, wrong, FleetPlan(devices=4)).run()


def tools_without(disabled: str, added: tuple[str, str] | None = None) -> list[dict[str, object]]:
    tools: list[dict[str, object]] = [
        {"name": name, "tool_type": kind, "enabled": name != disabled}
        for name, kind in DEFAULT_MONITORED_TOOLS
    ]
    if added is not None:
        tools.append({"name": added[0], "tool_type": added[1], "enabled": True})
    return tools


async def stored_tools(engine: AsyncEngine, *, since: datetime | None = None) -> Counter[str]:
    statement = select(LogEntry.tool_name)
    if since is not None:
        statement = statement.where(LogEntry.timestamp > since)
    async with engine.connect() as connection:
        return Counter(await connection.scalars(statement))


async def test_live_events_follow_the_tools_the_organisation_monitors(
    server: ServerHandle, organizations: list[FleetOrganization], session: AsyncSession, engine: AsyncEngine
) -> None:
    await update_config(
        session=session,
        organization_id="acme",
        actor=Actor.cli(),
        monitored_tools=tools_without("ChatGPT", added=("Acme Internal GPT", "web")),
    )
    await session.commit()
    plan = FleetPlan(devices=3, rate=300.0, duration=1.0, seed=21)
    await Fleet("127.0.0.1", server.port, organizations[:1], plan).run()
    tools = await stored_tools(engine)
    assert tools["ChatGPT"] == 0
    assert tools["Acme Internal GPT"] > 0


async def test_a_tool_switched_off_while_running_stops_being_reported(
    server: ServerHandle, organizations: list[FleetOrganization], session: AsyncSession, engine: AsyncEngine
) -> None:
    plan = FleetPlan(devices=3, rate=300.0, duration=None, seed=22, config_poll_seconds=0.2)
    fleet = Fleet("127.0.0.1", server.port, organizations[:1], plan)
    running = asyncio.create_task(fleet.run())
    try:
        await wait_until(lambda: stored_count(engine, tool="ChatGPT"), what="events about ChatGPT are stored")
        await update_config(
            session=session,
            organization_id="acme",
            actor=Actor.cli(),
            monitored_tools=tools_without("ChatGPT"),
        )
        await session.commit()
        # Devices ask for their configuration every 0.2 s: a second later every one of them knows.
        settled = utcnow() + timedelta(seconds=1)
        await wait_until(
            lambda: stored_count(engine, since=settled, at_least=300), what="300 events after the change"
        )
    finally:
        fleet.stop()
        await running
    assert (await stored_tools(engine, since=settled))["ChatGPT"] == 0


async def stored_count(
    engine: AsyncEngine, *, tool: str | None = None, since: datetime | None = None, at_least: int = 1
) -> bool:
    """Whether at least ``at_least`` events (about ``tool``, later than ``since``) are stored."""
    tools = await stored_tools(engine, since=since)
    return (tools[tool] if tool is not None else sum(tools.values())) >= at_least
