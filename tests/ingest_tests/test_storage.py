"""db/events.py, db/tokens.py and db/devices.py on both engines (COPY path on PostgreSQL)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.configs import create_organization
from db.devices import DeviceRefused, register_or_touch_device
from db.event_schema import Hello, validate_log
from db.events import StoredBatch, store_events
from db.models import Device, IngestToken, LogEntry, LogHourlyCount
from db.rights import Actor
from db.security import hash_token
from db.tokens import TokenError, create_token, list_tokens, revoke_token, verify
from simulation.events import EventGenerator

HELLO = Hello("acme", "t", "dev-1", "alice@acme.example", "browser", "1.0")


def rows(count: int, seed: int = 5) -> list[dict[str, Any]]:
    generator = EventGenerator(seed=seed)
    return [validate_log(generator.event(), hello=HELLO) for _ in range(count)]


async def risk_total(session: AsyncSession) -> int:
    total = await session.scalar(
        select(func.sum(LogHourlyCount.event_count)).where(LogHourlyCount.dimension == "risk")
    )
    return int(total or 0)


async def test_store_events_inserts_new_events_and_says_how_many(session: AsyncSession) -> None:
    events = rows(300)
    stored = await store_events(session=session, events=events)
    await session.commit()
    assert stored == StoredBatch(events=300, inserted=300)
    assert await session.scalar(select(func.count()).select_from(LogEntry)) == 300
    assert await risk_total(session) == 300


async def test_store_events_counts_already_present_events_as_stored_without_storing_or_counting_again(
    session: AsyncSession,
) -> None:
    events = rows(10)
    await store_events(session=session, events=events[:6])
    await session.commit()
    stored = await store_events(session=session, events=events)
    await session.commit()
    assert stored == StoredBatch(events=10, inserted=4)
    assert await session.scalar(select(func.count()).select_from(LogEntry)) == 10
    assert await risk_total(session) == 10


async def test_duplicates_within_one_batch_are_stored_once(session: AsyncSession) -> None:
    (event,) = rows(1)
    stored = await store_events(session=session, events=[event, event, event])
    await session.commit()
    assert stored == StoredBatch(events=1, inserted=1)
    assert await risk_total(session) == 1


async def test_stored_event_keeps_every_field(session: AsyncSession) -> None:
    (event,) = rows(1)
    await store_events(session=session, events=[event])
    await session.commit()
    row = await session.get(LogEntry, (event["organization_id"], event["id"], event["timestamp"]))
    assert row is not None
    for name in (
        "timestamp",
        "device_id",
        "user_id",
        "organization_id",
        "tool_name",
        "tool_type",
        "risk_level",
        "prompt_length",
        "detected_entity_types",
        "entity_count",
        "was_sanitized",
        "log_metadata",
    ):
        assert getattr(row, name) == event[name], name


async def test_rolled_back_batch_leaves_nothing(session: AsyncSession) -> None:
    await store_events(session=session, events=rows(5))
    await session.rollback()
    assert await session.scalar(select(func.count()).select_from(LogEntry)) == 0
    assert await risk_total(session) == 0


@pytest.fixture
async def acme(session: AsyncSession) -> str:
    await create_organization(session=session, organization_id="acme", actor=Actor.cli())
    await session.commit()
    return "acme"


async def test_created_token_is_stored_only_as_a_hash(session: AsyncSession, acme: str) -> None:
    row, clear = await create_token(session=session, actor=Actor.cli(), organization_id=acme, name="laptops")
    await session.commit()
    assert row.token_hash == hash_token(clear)
    assert clear.startswith(row.token_prefix)
    stored = (await session.scalars(select(IngestToken))).all()
    assert all(clear not in (t.token_hash, t.token_prefix, t.name) for t in stored)


async def test_token_for_an_unknown_organisation_is_refused_with_the_way_out(session: AsyncSession) -> None:
    with pytest.raises(TokenError, match="org create nowhere"):
        await create_token(session=session, actor=Actor.cli(), organization_id="nowhere")


async def test_verify_accepts_the_token_and_records_its_use(session: AsyncSession, acme: str) -> None:
    row, clear = await create_token(session=session, actor=Actor.cli(), organization_id=acme)
    assert await verify(session=session, organization_id=acme, token=clear) is row
    assert row.last_used_at is not None


async def test_verify_refuses_wrong_token_other_organisation_and_revoked_token(
    session: AsyncSession, acme: str
) -> None:
    await create_organization(session=session, organization_id="other", actor=Actor.cli())
    row, clear = await create_token(session=session, actor=Actor.cli(), organization_id=acme)
    assert await verify(session=session, organization_id=acme, token=clear + "x") is None
    assert await verify(session=session, organization_id="other", token=clear) is None
    await revoke_token(session=session, actor=Actor.cli(), token_id=row.id)
    assert await verify(session=session, organization_id=acme, token=clear) is None


async def test_revoking_twice_or_an_unknown_token_is_an_error(session: AsyncSession, acme: str) -> None:
    row, _ = await create_token(session=session, actor=Actor.cli(), organization_id=acme)
    await revoke_token(session=session, actor=Actor.cli(), token_id=row.id)
    with pytest.raises(TokenError, match="already revoked"):
        await revoke_token(session=session, actor=Actor.cli(), token_id=row.id)
    with pytest.raises(TokenError, match="no ingest token"):
        await revoke_token(session=session, actor=Actor.cli(), token_id=uuid.uuid4())


async def test_tokens_are_listed_per_organisation(session: AsyncSession, acme: str) -> None:
    await create_organization(session=session, organization_id="other", actor=Actor.cli())
    await create_token(session=session, actor=Actor.cli(), organization_id=acme)
    await create_token(session=session, actor=Actor.cli(), organization_id="other")
    assert [t.organization_id for t in await list_tokens(session=session, organization_id=acme)] == [acme]
    assert len(await list_tokens(session=session)) == 2


async def register(
    session: AsyncSession, organization_id: str = "acme", version: str | None = "1.0"
) -> Device:
    return await register_or_touch_device(
        session=session,
        organization_id=organization_id,
        device_id="dev-1",
        user_id="alice",
        device_type="browser",
        agent_version=version,
    )


async def test_first_hello_creates_the_device_and_the_next_touches_it(session: AsyncSession) -> None:
    created = await register(session)
    await session.commit()
    first_seen = created.last_seen
    touched = await register(session, version="2.0")
    await session.commit()
    assert touched.id == created.id
    assert touched.agent_version == "2.0"
    assert touched.last_seen >= first_seen
    assert await session.scalar(select(func.count()).select_from(Device)) == 1


async def test_disabled_device_is_refused(session: AsyncSession) -> None:
    device = await register(session)
    device.is_active = False
    await session.commit()
    with pytest.raises(DeviceRefused) as refused:
        await register(session)
    assert refused.value.code == "device_disabled"


async def test_device_of_another_organisation_is_refused(session: AsyncSession) -> None:
    await register(session, organization_id="other")
    await session.commit()
    with pytest.raises(DeviceRefused) as refused:
        await register(session)
    assert refused.value.code == "device_conflict"
