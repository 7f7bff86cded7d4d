"""The hardened input rules over a real socket: content in a hello, deep nesting, event ids in other forms,
numbers the parser cannot represent, and the organisation's metadata keys in welcome, config and events."""

from __future__ import annotations

import uuid

import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from db.metadata_keys import STANDARD_KEYS, allow_key
from db.models import Device, LogEntry
from db.rights import Actor
from simulation.events import EventGenerator
from tests.support.database import Organization, count_events, stored_ids
from tests.support.ingest import RawClient, RawFactory, ServerHandle, hello_message


async def expect_refusal(raw: RawClient, code: str) -> dict[str, object]:
    error = await raw.receive()
    assert error["type"] == "error", error
    assert error["code"] == code, error
    assert await raw.closed_by_server()
    return error


@pytest.mark.parametrize("field", ["prompt", "PrOmPt", "usermessage", "pro\u200bmpt"])
async def test_hello_carrying_content_gets_content_not_allowed_and_is_closed(
    server: ServerHandle, raw_factory: RawFactory, org: Organization, field: str
) -> None:
    raw = await raw_factory(server.port, hello=False)
    await raw.send(hello_message(org, **{field: "my salary is 10k"}))
    await expect_refusal(raw, "content_not_allowed")


async def test_deeply_nested_array_in_a_hello_field_gets_an_error_line_and_is_closed(
    server: ServerHandle, raw_factory: RawFactory, org: Organization
) -> None:
    raw = await raw_factory(server.port, hello=False)
    line = orjson.dumps(hello_message(org, organization_id="PLACEHOLDER"))
    await raw.write(line.replace(b'"PLACEHOLDER"', b"[" * 1000 + b"]" * 1000) + b"\n")
    error = await expect_refusal(raw, "invalid_hello")
    assert "organization_id" in error["message"]


@pytest.mark.parametrize("field", ["device_id", "tool_name", "timestamp", "id"])
async def test_deeply_nested_array_in_an_event_field_gets_invalid_event_and_the_connection_goes_on(
    raw: RawClient, generator: EventGenerator, field: str
) -> None:
    event = generator.event()
    event[field] = "PLACEHOLDER"
    await raw.write(orjson.dumps(event).replace(b'"PLACEHOLDER"', b"[" * 1000 + b"]" * 1000) + b"\n")
    error = await raw.receive()
    assert error["code"] == "invalid_event", error
    assert field in error["message"]
    await raw.send({"type": "ping"})
    assert await raw.receive() == {"type": "pong"}


@pytest.mark.parametrize(
    "form",
    [lambda u: str(u).upper(), lambda u: "{" + str(u) + "}", lambda u: f"urn:uuid:{u}", lambda u: u.hex],
    ids=["upper-case", "braces", "urn", "no-hyphens"],
)
async def test_event_id_in_another_form_is_acked_under_the_string_sent_and_stored_once(
    raw: RawClient, generator: EventGenerator, engine: AsyncEngine, form: object
) -> None:
    event_id = uuid.uuid4()
    sent = form(event_id)  # type: ignore[operator]
    event = generator.event()
    event["id"] = sent
    await raw.send(event)
    assert await raw.receive() == {"type": "ack", "ids": [sent]}
    event["id"] = str(event_id)  # the same event resent in canonical form
    await raw.send(event)
    assert await raw.receive() == {"type": "ack", "ids": [str(event_id)]}
    assert await stored_ids(engine) == [str(event_id)]


async def test_a_number_the_parser_cannot_represent_gets_invalid_json_with_its_position(
    raw: RawClient,
) -> None:
    await raw.write(b'{"type":"ping","n":1e400}\n')
    error = await raw.receive()
    assert error["code"] == "invalid_json"
    assert "column 20" in error["message"]


async def test_welcome_and_config_carry_the_organisations_metadata_keys(
    server: ServerHandle, raw_factory: RawFactory, org: Organization, session: AsyncSession
) -> None:
    await allow_key(
        session=session,
        organization_id=org.organization_id,
        key="team",
        shape="enum",
        values=["red", "blue"],
        actor=Actor.cli(),
    )
    await session.commit()
    raw = await raw_factory(server.port, hello=False)
    await raw.send(hello_message(org))
    welcome = await raw.receive()
    keys = welcome["config"]["metadata_keys"]
    assert keys["team"] == {"shape": "enum", "values": ["red", "blue"]}
    assert set(STANDARD_KEYS) <= set(keys)
    assert keys["shell"]["shape"] == "enum"
    await raw.send({"type": "config"})
    assert (await raw.receive())["config"]["metadata_keys"] == keys


async def test_a_key_the_organisation_allowed_is_stored_and_a_number_past_64_bits_is_refused(
    server: ServerHandle,
    raw_factory: RawFactory,
    org: Organization,
    session: AsyncSession,
    engine: AsyncEngine,
) -> None:
    await allow_key(
        session=session, organization_id=org.organization_id, key="tabs", shape="number", actor=Actor.cli()
    )
    await session.commit()
    raw = await raw_factory(server.port)
    generator = EventGenerator(seed=5)
    event = generator.event()
    event["log_metadata"] = {"os": "macOS 15", "tabs": 12}
    await raw.send(event)
    assert await raw.receive() == {"type": "ack", "ids": [event["id"]]}
    refused = generator.event()
    refused["log_metadata"] = {"tabs": 0}
    # 2^64 is parsed as a rounded float: refused, not stored.
    await raw.write(orjson.dumps(refused).replace(b'"tabs":0', b'"tabs":18446744073709551616') + b"\n")
    error = await raw.receive()
    assert error["code"] == "invalid_event"
    assert "2^63" in error["message"]
    assert await count_events(engine) == 1


async def test_hello_naming_the_organisation_in_another_case_is_stored_under_the_id_as_created(
    server: ServerHandle,
    raw_factory: RawFactory,
    org: Organization,
    generator: EventGenerator,
    engine: AsyncEngine,
) -> None:
    raw = await raw_factory(server.port, hello=False)
    await raw.send(hello_message(org, organization_id=org.organization_id.upper()))
    welcome = await raw.receive()
    assert welcome["type"] == "welcome", welcome
    assert welcome["config"]["organization_id"] == org.organization_id
    event = generator.event()
    event["organization_id"] = org.organization_id.upper()
    await raw.send(event)
    assert await raw.receive() == {"type": "ack", "ids": [event["id"]]}
    async with engine.connect() as connection:
        events = (await connection.scalars(select(LogEntry.organization_id))).all()
        devices = (await connection.scalars(select(Device.organization_id))).all()
    assert (events, devices) == ([org.organization_id], [org.organization_id])
