"""The hourly cap on new devices per organisation: a token holder cannot register devices without end."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.base import utcnow
from db.devices import DeviceRefused, register_or_touch_device
from db.event_schema import CLOSING_CODES, ERROR_CODES
from db.models import Device
from tests.support.database import Organization
from tests.support.ingest import RawFactory, StartServer, hello_message


async def register(
    session: AsyncSession, device_id: str, *, cap: int, organization_id: str = "acme"
) -> Device:
    device = await register_or_touch_device(
        session=session,
        organization_id=organization_id,
        device_id=device_id,
        user_id="ann@acme.example",
        device_type="cli",
        agent_version=None,
        max_new_per_hour=cap,
    )
    await session.commit()
    return device


async def test_new_device_past_the_hourly_cap_is_refused_with_too_many_devices(session: AsyncSession) -> None:
    await register(session, "dev-1", cap=2)
    await register(session, "dev-2", cap=2)
    with pytest.raises(DeviceRefused) as refused:
        await register(session, "dev-3", cap=2)
    assert refused.value.code == "too_many_devices"
    assert "INGEST_MAX_NEW_DEVICES_PER_HOUR" in refused.value.message
    await session.rollback()
    assert await session.scalar(select(func.count()).select_from(Device)) == 2


async def test_known_device_still_connects_when_its_organisation_is_at_the_cap(session: AsyncSession) -> None:
    await register(session, "dev-1", cap=1)
    device = await register(session, "dev-1", cap=1)
    assert device.device_id == "dev-1"


async def test_devices_registered_over_an_hour_ago_leave_the_cap(session: AsyncSession) -> None:
    await register(session, "dev-1", cap=1)
    await session.execute(update(Device).values(registered_at=utcnow() - timedelta(hours=1, minutes=1)))
    await session.commit()
    assert (await register(session, "dev-2", cap=1)).device_id == "dev-2"


async def test_cap_counts_each_organisation_apart(session: AsyncSession) -> None:
    await register(session, "dev-1", cap=1, organization_id="acme")
    assert (await register(session, "dev-2", cap=1, organization_id="globex")).organization_id == "globex"


def test_too_many_devices_is_a_documented_closing_code() -> None:
    assert "too_many_devices" in ERROR_CODES
    assert "too_many_devices" in CLOSING_CODES


async def test_server_refuses_the_hello_of_a_new_device_past_the_cap_and_closes(
    server_factory: StartServer, raw_factory: RawFactory, org: Organization
) -> None:
    server = await server_factory(max_new_devices_per_hour=1)
    await raw_factory(server.port, device_id="dev-first")
    raw = await raw_factory(server.port, hello=False)
    await raw.send(hello_message(org, device_id="dev-second"))
    error = await raw.receive()
    assert (error["type"], error["code"]) == ("error", "too_many_devices")
    assert await raw.closed_by_server()
