"""A long-lived connection keeps its device's ``last_seen`` current, so it is never taken for silent."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from db import devices
from db.base import utcnow
from db.engine import new_sessionmaker
from db.models import Device
from db.settings import Settings
from tests.support.database import add_organization
from tests.support.ingest import RawClient, hello_message, serving
from tests.support.waiting import wait_until

#: The heartbeat period for this test: a real minute would make a slow test.
HEARD_EVERY_SECONDS = 0.3


async def last_seen(engine: AsyncEngine, device_id: str) -> object:
    async with new_sessionmaker(engine)() as session:
        return await session.scalar(select(Device.last_seen).where(Device.device_id == device_id))


async def test_any_line_on_a_long_lived_connection_keeps_last_seen_current(
    engine: AsyncEngine, session: AsyncSession, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devices, "HEARD_FROM_EVERY_SECONDS", HEARD_EVERY_SECONDS)
    org = await add_organization(session, "acme")
    async with serving(settings) as server:
        client = await RawClient.open(server.port)
        try:
            await client.send(hello_message(org, device_id="laptop-1"))
            assert (await client.receive())["type"] == "welcome"
            long_ago = utcnow() - timedelta(days=4)
            await session.execute(
                update(Device).where(Device.device_id == "laptop-1").values(last_seen=long_ago)
            )
            await session.commit()

            # Silence on the connection changes nothing: only lines received count.
            await asyncio.sleep(5 * HEARD_EVERY_SECONDS + 1.0)
            assert await last_seen(engine, "laptop-1") == long_ago

            async def seen_again() -> bool:
                await client.write(b"\n")  # a keep-alive: any line counts, not only events or a hello
                seen = await last_seen(engine, "laptop-1")
                return isinstance(seen, type(long_ago)) and seen > utcnow() - timedelta(minutes=1)

            await wait_until(seen_again, timeout=15, what="last_seen brought up to date by keep-alives")
        finally:
            await client.close()
