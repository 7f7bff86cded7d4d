"""Devices: registered or touched when an agent says hello (ingest), and listed by the console.

The ingest functions come first; the console's listing functions follow them.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.base import utcnow
from db.models import Device

# --- ingest: register or touch on hello ----------------------------------------------------------


class DeviceRefused(Exception):
    """The device may not send events; ``code`` is the protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def register_or_touch_device(
    *,
    session: AsyncSession,
    organization_id: str,
    device_id: str,
    user_id: str,
    device_type: str,
    agent_version: str | None,
) -> Device:
    """Create the device on its first hello, else update ``last_seen`` and ``agent_version``.

    Raises DeviceRefused (``device_disabled``) for a device switched off in the
    console, and (``device_conflict``) for a device id registered to another
    organisation. Safe when two hellos of a new device race. The caller commits.
    """
    now = utcnow()
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    await session.execute(
        insert(Device)
        .values(
            device_id=device_id,
            user_id=user_id,
            device_type=device_type,
            organization_id=organization_id,
            agent_version=agent_version,
            registered_at=now,
            last_seen=now,
            is_active=True,
        )
        .on_conflict_do_nothing(index_elements=["device_id"])
    )
    device = await session.scalar(
        select(Device).where(Device.device_id == device_id).execution_options(populate_existing=True)
    )
    assert device is not None
    if device.organization_id != organization_id:
        raise DeviceRefused(
            "device_conflict",
            f"device {device_id!r} is registered to another organisation; use a different device_id",
        )
    if not device.is_active:
        raise DeviceRefused(
            "device_disabled", f"device {device_id!r} is disabled in the console; ask an administrator"
        )
    device.last_seen = now
    if agent_version is not None:
        device.agent_version = agent_version
    await session.flush()
    return device
