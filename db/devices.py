"""Devices: registered or touched when an agent says hello, kept seen while it sends (ingest), and
listed by the console.

The ingest functions come first; the console's listing functions follow them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.audit import record_change
from db.base import as_utc, utcnow
from db.engine import insert_for
from db.models import Device, LogEntry
from db.rights import Actor, require_admin
from db.settings import IngestLimits

# --- ingest: register or touch on hello ----------------------------------------------------------


class DeviceRefused(Exception):
    """The device may not send events; ``code`` is the protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


#: The window of the cap on new devices: registrations within the last hour count.
NEW_DEVICE_WINDOW = timedelta(hours=1)


async def _refuse_past_new_device_cap(
    session: AsyncSession, organization_id: str, now: datetime, max_new_per_hour: int
) -> None:
    """DeviceRefused(``too_many_devices``) if the organisation registered its hourly quota of devices.

    Counts at most ``max_new_per_hour`` entries of (organization_id, registered_at).
    Two hellos racing may both pass at the edge: the cap is a bound on flooding, not an exact quota.
    """
    recent = (
        select(Device.id)
        .where(Device.organization_id == organization_id, Device.registered_at > now - NEW_DEVICE_WINDOW)
        .limit(max_new_per_hour)
        .subquery()
    )
    registered = int(await session.scalar(select(func.count()).select_from(recent)) or 0)
    if registered >= max_new_per_hour:
        raise DeviceRefused(
            "too_many_devices",
            f"organisation {organization_id!r} registered {max_new_per_hour} new devices in the last hour, "
            "the most allowed (INGEST_MAX_NEW_DEVICES_PER_HOUR); known devices still connect; "
            "retry this new device later or ask an administrator to raise the limit",
        )


async def register_or_touch_device(
    *,
    session: AsyncSession,
    organization_id: str,
    device_id: str,
    user_id: str,
    device_type: str,
    agent_version: str | None,
    max_new_per_hour: int = IngestLimits.max_new_devices_per_hour,
) -> Device:
    """Create the device on its first hello, else update ``last_seen`` and ``agent_version``.

    Raises DeviceRefused (``device_disabled``) for a device switched off in the
    console, (``device_conflict``) for a device id registered to another
    organisation, and (``too_many_devices``) for a new device once its
    organisation registered ``max_new_per_hour`` devices in the last hour (a
    token holder can invent device ids). Safe when two hellos of a new device
    race. The caller commits.
    """
    now = utcnow()
    known = await session.scalar(select(Device.id).where(Device.device_id == device_id))
    if known is None:
        await _refuse_past_new_device_cap(session, organization_id, now, max_new_per_hour)
    insert = insert_for(session)
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


#: A long-lived connection reports its device as heard from at most this often (ingest/connection.py).
HEARD_FROM_EVERY_SECONDS = 60.0
#: Devices updated per statement by :func:`mark_devices_heard`.
HEARD_FROM_BATCH = 1000


async def mark_devices_heard(
    *, session: AsyncSession, device_ids: Collection[str], now: datetime | None = None
) -> int:
    """Set ``last_seen`` of these devices to ``now``: they sent a line (any line, not only a hello).

    The ingest server calls it throttled (each connection at most every
    :data:`HEARD_FROM_EVERY_SECONDS`, many devices per statement), so the silent-agent rule
    sees long-lived connections as alive. Never moves ``last_seen`` back. The caller commits.
    Returns how many devices were updated.
    """
    now = now or utcnow()
    ids = sorted(set(device_ids))
    updated = 0
    for start in range(0, len(ids), HEARD_FROM_BATCH):
        result = await session.execute(
            update(Device)
            .where(Device.device_id.in_(ids[start : start + HEARD_FROM_BATCH]), Device.last_seen < now)
            .values(last_seen=now)
        )
        updated += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return updated


# --- console queries ------------------------------------------------------------------------------

#: The console lists at most this many devices per filter (newest seen first); narrow the filter for more.
DEVICE_LIST_LIMIT = 500


class DeviceError(LookupError):
    """There is no such device; the message says which."""


@dataclass(frozen=True)
class DeviceFilter:
    """What the devices list shows; every field narrows it, the defaults show everything.

    ``never_seen`` means the device said hello but no event of it is stored;
    ``seen_within_days`` keeps devices whose ``last_seen`` is that recent.
    """

    search: str = ""
    device_type: str | None = None
    organization_id: str | None = None
    active: bool | None = None
    seen_within_days: int | None = None
    never_seen: bool = False


@dataclass(frozen=True)
class DeviceActivity:
    """One device's events by risk level (all stored), its newest event and when it last said hello."""

    device_id: str
    by_risk: dict[str, int]
    last_event_at: datetime | None
    last_seen: datetime | None

    @property
    def total(self) -> int:
        return sum(self.by_risk.values())


async def list_devices(
    *,
    session: AsyncSession,
    filters: DeviceFilter,
    now: datetime | None = None,
    limit: int = DEVICE_LIST_LIMIT,
) -> Sequence[Device]:
    """Devices matching ``filters``, most recently seen first, at most ``limit``."""
    statement = select(Device).order_by(Device.last_seen.desc(), Device.device_id).limit(limit)
    if filters.search:
        like = f"%{filters.search.lower()}%"
        statement = statement.where(
            or_(func.lower(Device.device_id).like(like), func.lower(Device.user_id).like(like))
        )
    if filters.device_type:
        statement = statement.where(Device.device_type == filters.device_type)
    if filters.organization_id:
        statement = statement.where(Device.organization_id == filters.organization_id)
    if filters.active is not None:
        statement = statement.where(Device.is_active.is_(filters.active))
    if filters.seen_within_days is not None:
        since = as_utc(now or utcnow()) - timedelta(days=filters.seen_within_days)
        statement = statement.where(Device.last_seen >= since)
    if filters.never_seen:
        # One probe of ix_log_entries_device_timestamp per device.
        statement = statement.where(~exists().where(LogEntry.device_id == Device.device_id))
    return (await session.scalars(statement)).all()


async def get_device(*, session: AsyncSession, device_id: str) -> Device:
    """The device with this agent-chosen id; DeviceError if there is none."""
    device = await session.scalar(select(Device).where(Device.device_id == device_id))
    if device is None:
        raise DeviceError(f"there is no device {device_id!r}")
    return device


async def device_activity(*, session: AsyncSession, device_id: str) -> DeviceActivity:
    """Events of the device by risk level and its newest event, read from (device_id, timestamp)."""
    rows = await session.execute(
        select(LogEntry.risk_level, func.count(), func.max(LogEntry.timestamp))
        .where(LogEntry.device_id == device_id)
        .group_by(LogEntry.risk_level)
    )
    by_risk: dict[str, int] = {}
    newest: datetime | None = None
    for risk_level, count, last in rows.all():
        by_risk[risk_level] = int(count)
        if last is not None and (newest is None or as_utc(last) > newest):
            newest = as_utc(last)
    last_seen = await session.scalar(select(Device.last_seen).where(Device.device_id == device_id))
    return DeviceActivity(device_id, by_risk, newest, as_utc(last_seen) if last_seen else None)


async def set_device_active(
    *, session: AsyncSession, device_id: str, active: bool, actor: Actor
) -> tuple[Device, dict[str, dict[str, object]]]:
    """Activate or deactivate a device on behalf of ``actor``, audited; return the device and the change.

    A deactivated device is refused at its next hello. Raises NotAllowed unless the
    actor is an administrator now, DeviceError if there is no such device.
    """
    await require_admin(session=session, actor=actor, what="activate or deactivate devices")
    device = await get_device(session=session, device_id=device_id)
    changes: dict[str, dict[str, object]] = {}
    if device.is_active != active:
        changes["is_active"] = {"before": device.is_active, "after": active}
        device.is_active = active
        await session.flush()
        await record_change(
            session=session,
            actor=actor,
            action="device.activate" if active else "device.deactivate",
            entity_type="device",
            entity_id=device_id,
            changes=changes,
        )
    return device, changes


async def delete_device(*, session: AsyncSession, device_id: str, actor: Actor) -> Device:
    """Delete a device's registration (its logs stay) on behalf of ``actor``, audited.

    It registers again at its next hello. Raises NotAllowed unless the actor is an
    administrator now, DeviceError if there is no such device.
    """
    await require_admin(session=session, actor=actor, what="delete devices")
    device = await get_device(session=session, device_id=device_id)
    await session.execute(delete(Device).where(Device.id == device.id))
    await session.flush()
    await record_change(
        session=session,
        actor=actor,
        action="device.delete",
        entity_type="device",
        entity_id=device_id,
        changes={
            "user_id": {"before": device.user_id},
            "organization_id": {"before": device.organization_id},
            "is_active": {"before": device.is_active},
        },
    )
    return device
