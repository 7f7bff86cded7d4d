"""Devices section: filters, per-device activity, deactivation refused by a real ingest hello,
reactivation, deletion — confirmed and audited."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from console.sections.devices import DevicesSection
from db.base import utcnow
from db.configs import create_organization
from db.devices import DeviceFilter
from db.engine import new_sessionmaker
from db.models import Device
from db.settings import Settings
from db.tokens import create_token
from tests.support.console import audit_rows, confirm, open_section, press_and_settle, settle, signed_in
from tests.support.database import SETUP, Organization, make_event, store_logs
from tests.support.ingest import hello, serving


async def add_devices(engine: AsyncEngine) -> None:
    now = utcnow()
    async with new_sessionmaker(engine)() as session:
        for device_id, kind, org, days_ago, active in (
            ("laptop-1", "desktop", "acme", 0, True),
            ("browser-2", "browser", "acme", 10, True),
            ("cli-3", "cli", "globex", 40, False),
        ):
            session.add(
                Device(
                    device_id=device_id,
                    user_id=f"{device_id}@example.com",
                    device_type=kind,
                    organization_id=org,
                    registered_at=now - timedelta(days=60),
                    last_seen=now - timedelta(days=days_ago),
                    is_active=active,
                )
            )
        await session.commit()
    await store_logs(
        engine,
        [
            make_event(i, device_id="laptop-1", risk_level=level)
            for i, level in enumerate(["green", "red", "red", "amber"])
        ],
    )


async def shown(pilot, section: DevicesSection, filters: DeviceFilter) -> set[str]:
    section.filters = filters
    section.load_devices()
    await settle(pilot)
    return set(section.devices)


async def test_filters_narrow_the_list_by_type_organisation_state_and_recency(
    engine: AsyncEngine, app_factory
) -> None:
    await add_devices(engine)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, DevicesSection)
        assert set(section.devices) == {"laptop-1", "browser-2", "cli-3"}
        assert await shown(pilot, section, DeviceFilter(device_type="browser")) == {"browser-2"}
        assert await shown(pilot, section, DeviceFilter(organization_id="globex")) == {"cli-3"}
        assert await shown(pilot, section, DeviceFilter(active=False)) == {"cli-3"}
        assert await shown(pilot, section, DeviceFilter(seen_within_days=7)) == {"laptop-1"}
        assert await shown(pilot, section, DeviceFilter(never_seen=True)) == {"browser-2", "cli-3"}
        assert await shown(pilot, section, DeviceFilter(search="LAPTOP")) == {"laptop-1"}


async def test_search_box_filters_the_list(engine: AsyncEngine, app_factory) -> None:
    await add_devices(engine)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, DevicesSection)
        section.query_one("#devices-search").value = "browser"
        section.query_one("#devices-search").focus()
        await press_and_settle(pilot, "enter")
        assert set(section.devices) == {"browser-2"}


async def test_activity_shows_the_devices_events_by_risk(engine: AsyncEngine, app_factory) -> None:
    await add_devices(engine)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, DevicesSection)
        section.load_activity("laptop-1")
        await settle(pilot)
        assert section.activity is not None
        assert section.activity.by_risk == {"green": 1, "red": 2, "amber": 1}
        assert section.activity.total == 4
        assert section.activity.last_event_at is not None
        assert "red" in str(section.query_one("#device-activity-text").render())


async def test_deactivated_device_is_refused_at_its_next_hello_and_accepted_again_once_reactivated(
    engine: AsyncEngine, app_factory, settings: Settings
) -> None:
    async with new_sessionmaker(engine)() as session:
        await create_organization(session=session, organization_id="acme", actor=SETUP)
        _, token = await create_token(session=session, actor=SETUP, organization_id="acme")
        await session.commit()
    acme = Organization("acme", token)
    async with serving(settings) as server:
        assert (await hello(server.port, acme, device_id="laptop-9"))["type"] == "welcome"
        async with signed_in(app_factory(), engine) as pilot:
            section = await open_section(pilot, DevicesSection)
            table = section.query_one("#devices-table")
            table.move_cursor(row=table.get_row_index("laptop-9"))
            section.action_toggle_active()
            await confirm(pilot)
            assert not section.devices["laptop-9"].is_active
            refused = await hello(server.port, acme, device_id="laptop-9")
            assert (refused["type"], refused["code"]) == ("error", "device_disabled")
            section.action_toggle_active()
            await settle(pilot)
            assert section.devices["laptop-9"].is_active
            assert (await hello(server.port, acme, device_id="laptop-9"))["type"] == "welcome"
    deactivated, activated = (
        await audit_rows(engine, "device.deactivate"),
        await audit_rows(engine, "device.activate"),
    )
    assert deactivated[0].changes == {"is_active": {"before": True, "after": False}}
    assert activated[0].entity_id == "laptop-9"
    assert activated[0].actor == "alice"


async def test_deleting_a_device_is_confirmed_keeps_its_logs_and_is_audited(
    engine: AsyncEngine, app_factory
) -> None:
    await add_devices(engine)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, DevicesSection)
        table = section.query_one("#devices-table")
        table.move_cursor(row=table.get_row_index("laptop-1"))
        section.action_delete_device()
        await confirm(pilot, yes=False)
        assert "laptop-1" in section.devices
        section.action_delete_device()
        await confirm(pilot)
        assert "laptop-1" not in section.devices
        section.load_activity("laptop-1")
        await settle(pilot)
        assert section.activity is not None
        assert section.activity.total == 4
    [row] = await audit_rows(engine, "device.delete")
    assert row.entity_id == "laptop-1"
    assert row.changes["organization_id"] == {"before": "acme"}
