"""Timestamps are UTC and timezone-aware on both engines; the schema's constraints hold."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Device, FirewallConfig, LogEntry


def log_entry(**overrides: object) -> LogEntry:
    values: dict[str, object] = {
        "timestamp": datetime(2026, 11, 20, 10, 0, tzinfo=UTC),
        "device_id": "dev-1",
        "user_id": "alice@acme.com",
        "tool_name": "ChatGPT",
        "tool_type": "web",
        "risk_level": "amber",
        "prompt_length": 812,
        "detected_entity_types": ["EMAIL"],
        "entity_count": 1,
        "was_sanitized": True,
        "log_metadata": {"browser": "Chrome 131"},
    }
    values.update(overrides)
    return LogEntry(**values)


async def test_timestamps_come_back_aware_and_in_utc(session: AsyncSession) -> None:
    paris = timezone(timedelta(hours=1))
    entry = log_entry(timestamp=datetime(2026, 11, 20, 11, 30, tzinfo=paris))
    session.add(entry)
    await session.commit()
    session.expunge_all()
    stored = await session.scalar(select(LogEntry))
    assert stored is not None
    assert stored.timestamp.tzinfo is not None
    assert stored.timestamp.utcoffset() == timedelta(0)
    assert stored.timestamp == datetime(2026, 11, 20, 10, 30, tzinfo=UTC)
    assert stored.created_at.tzinfo is not None


async def test_comparisons_use_utc_whatever_the_offset_of_the_bound_value(session: AsyncSession) -> None:
    session.add(log_entry(timestamp=datetime(2026, 11, 20, 10, 0, tzinfo=UTC)))
    await session.commit()
    # 10:30 in UTC+1 is 09:30 UTC: the row at 10:00 UTC is after it.
    bound = datetime(2026, 11, 20, 10, 30, tzinfo=timezone(timedelta(hours=1)))
    later = await session.scalars(select(LogEntry.id).where(LogEntry.timestamp > bound))
    assert len(later.all()) == 1


async def test_organization_defaults_to_default(session: AsyncSession) -> None:
    session.add(log_entry())
    session.add(Device(device_id="dev-1", user_id="alice", device_type="browser"))
    await session.commit()
    assert (await session.scalar(select(LogEntry.organization_id))) == "default"
    assert (await session.scalar(select(Device.organization_id))) == "default"


@pytest.mark.parametrize("days", [29, 366])
async def test_database_refuses_retention_outside_30_to_365(session: AsyncSession, days: int) -> None:
    session.add(FirewallConfig(organization_id="acme", log_retention_days=days))
    with pytest.raises(IntegrityError):
        await session.commit()


@pytest.mark.parametrize(
    "overrides", [{"risk_level": "purple"}, {"tool_type": "fax"}, {"prompt_length": -1}, {"entity_count": -5}]
)
async def test_database_refuses_values_outside_the_vocabulary(session: AsyncSession, overrides: dict) -> None:
    session.add(log_entry(id=uuid.uuid4(), **overrides))
    with pytest.raises(IntegrityError):
        await session.commit()


async def test_device_id_is_unique(session: AsyncSession) -> None:
    session.add(Device(device_id="dev-1", user_id="alice", device_type="browser"))
    session.add(Device(device_id="dev-1", user_id="bob", device_type="cli"))
    with pytest.raises(IntegrityError):
        await session.commit()
