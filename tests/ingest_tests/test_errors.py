"""Every error code over a real socket: a bad line is answered and skipped, the connection goes on;
refusals of the hello close the connection. Nothing of a refused event is stored."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from db.base import utcnow
from db.event_schema import ERROR_CODES
from db.models import Device
from db.rights import Actor
from db.settings import MIN_MAX_LINE_BYTES
from db.tokens import list_tokens, revoke_token
from simulation.events import EventGenerator
from tests.support.database import Organization, count_events, stored_ids
from tests.support.ingest import RawClient, RawFactory, ServerHandle, StartServer, hello_message


def good_event(generator: EventGenerator, **changes: Any) -> dict[str, Any]:
    event = generator.event()
    event.update(changes)
    return {key: value for key, value in event.items() if value is not ...}


async def expect_error_then_pong(raw: RawClient, code: str) -> dict[str, Any]:
    """The error for the bad line, then proof the connection still works."""
    error = await raw.receive()
    assert error["type"] == "error", error
    assert error["code"] == code, error
    assert error["message"]
    await raw.send({"type": "ping"})
    assert await raw.receive() == {"type": "pong"}
    return error


async def test_line_that_is_not_json_gets_invalid_json(raw: RawClient) -> None:
    await raw.write(b"this is not json\n")
    error = await expect_error_then_pong(raw, "invalid_json")
    assert error["line"] == 2


async def test_line_that_is_not_utf8_gets_invalid_json(raw: RawClient) -> None:
    await raw.write(b'{"type":"ping","x":"\xff\xfe"}\n')
    error = await expect_error_then_pong(raw, "invalid_json")
    assert "UTF-8" in error["message"]


@pytest.mark.parametrize(
    "line",
    [b"[1, 2, 3]", b"42", b'"log"', b"null", b"true"],
    ids=["array", "number", "string", "null", "boolean"],
)
async def test_json_that_is_not_an_object_gets_invalid_json(raw: RawClient, line: bytes) -> None:
    await raw.write(line + b"\n")
    await expect_error_then_pong(raw, "invalid_json")


async def test_deeply_nested_json_gets_invalid_json(raw: RawClient) -> None:
    await raw.write(b'{"type":"log","a":' + b"[" * 5000 + b"]" * 5000 + b"}\n")
    await expect_error_then_pong(raw, "invalid_json")


async def test_message_without_type_gets_unknown_type(raw: RawClient) -> None:
    await raw.send({"hello": "there"})
    await expect_error_then_pong(raw, "unknown_type")


async def test_message_of_unknown_type_gets_unknown_type(raw: RawClient) -> None:
    await raw.send({"type": "subscribe"})
    error = await expect_error_then_pong(raw, "unknown_type")
    assert "subscribe" in error["message"]


async def test_second_hello_gets_unexpected_hello(raw: RawClient, org: Organization) -> None:
    await raw.send(hello_message(org))
    await expect_error_then_pong(raw, "unexpected_hello")


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"risk_level": "purple"}, "risk_level must be one of green, amber, red; got 'purple'"),
        ({"tool_type": "mobile"}, "tool_type must be one of web, desktop, cli"),
        ({"prompt_length": "812"}, "prompt_length must be a whole number"),
        ({"prompt_length": -1}, "prompt_length must not be negative"),
        ({"prompt_length": 10**12}, "prompt_length must be at most"),
        ({"prompt_length": 3.5}, "prompt_length must be a whole number"),
        ({"entity_count": True}, "entity_count must be a whole number"),
        ({"was_sanitized": "yes"}, "was_sanitized must be true or false"),
        ({"detected_entity_types": "EMAIL"}, "detected_entity_types must be a list"),
        ({"detected_entity_types": [1, 2]}, "detected_entity_types[0] must be 1-48 capital letters"),
        ({"detected_entity_types": ["X" * 49]}, "detected_entity_types[0] must be 1-48 capital letters"),
        ({"detected_entity_types": ["EMAIL\u202e"]}, "detected_entity_types[0] must be 1-48 capital letters"),
        ({"tool_name": ""}, "tool_name must not be empty"),
        ({"tool_name": "T" * 101}, "tool_name must be at most 100 characters"),
        ({"tool_name": 7}, "tool_name must be a string"),
        ({"tool_name": ...}, "tool_name is required"),
        ({"id": ...}, "id is required"),
        ({"id": "not-a-uuid"}, "id must be a UUID"),
        ({"timestamp": "yesterday"}, "timestamp must be YYYY-MM-DDTHH:MM:SS[.fraction] then Z or ±HH:MM"),
        ({"timestamp": "2026-11-20 10:00:00Z"}, "timestamp must be YYYY-MM-DDTHH:MM:SS"),
        ({"timestamp": "2016-12-31T23:59:60Z"}, "leap second"),
        ({"timestamp": "0001-01-01T00:00:00+01:00"}, "out of range once converted to UTC"),
        ({"timestamp": "9999-12-31T23:59:59-01:00"}, "out of range once converted to UTC"),
        ({"timestamp": "2026-11-20T10:00:00"}, "must say its time zone"),
        ({"timestamp": 1700000000}, "timestamp must be a string"),
        ({"log_metadata": ["a"]}, "log_metadata must be an object"),
        ({"log_metadata": {"os": {"name": "macOS"}}}, "values are flat"),
        ({"log_metadata": {f"k{i}": i for i in range(33)}}, "at most 32 keys"),
        ({"log_metadata": {"os": "x" * 257}}, "log_metadata.os must be like 'macOS 15'"),
        ({"log_metadata": {"os": "a\u0000b"}}, "log_metadata.os must be like 'macOS 15'"),
        ({"log_metadata": {"colour": "blue"}}, "unknown metadata key 'colour'"),
        ({"log_metadata": {"tab_count": 3}}, "unknown metadata key 'tab_count'"),
        ({"tool_name": "Chat\u001b[31mGPT"}, "tool_name must not contain control"),
        ({"tool_name": "Chat\u202eGPT"}, "tool_name must not contain control"),
        ({"device_id": [[[[[[[[]]]]]]]]}, "device_id comes from the hello"),
        ({"device_id": "someone-else"}, "device_id comes from the hello"),
        ({"organization_id": "other"}, "organization_id comes from the hello"),
        ({"colour": "blue"}, "unknown field 'colour'"),
        ({"user_id": "a\nb"}, "user_id must not contain control"),
    ],
    ids=lambda value: str(value)[:40] if isinstance(value, str) else None,
)
async def test_event_with_a_wrong_field_gets_invalid_event_and_is_not_stored(
    raw: RawClient, generator: EventGenerator, engine: AsyncEngine, changes: dict[str, Any], words: str
) -> None:
    event = good_event(generator, **changes)
    await raw.send(event)
    error = await expect_error_then_pong(raw, "invalid_event")
    assert words in error["message"]
    if isinstance(event.get("id"), str) and len(event["id"]) == 36:
        assert error["id"] == event["id"]
    assert await count_events(engine) == 0


async def test_timestamp_more_than_a_day_ahead_gets_invalid_event(
    raw: RawClient, generator: EventGenerator
) -> None:
    ahead = (utcnow() + timedelta(days=2)).isoformat()
    await raw.send(good_event(generator, timestamp=ahead))
    error = await expect_error_then_pong(raw, "invalid_event")
    assert "future" in error["message"]


async def test_timestamp_absurdly_old_gets_invalid_event(raw: RawClient, generator: EventGenerator) -> None:
    await raw.send(good_event(generator, timestamp="1999-01-01T00:00:00Z"))
    error = await expect_error_then_pong(raw, "invalid_event")
    assert "days old" in error["message"]


async def test_timestamp_with_an_offset_is_accepted(raw: RawClient, generator: EventGenerator) -> None:
    moment = (utcnow() - timedelta(hours=1)).astimezone().isoformat()
    event = good_event(
        generator, timestamp=moment.replace("+00:00", "+02:00") if moment.endswith("+00:00") else moment
    )
    await raw.send(event)
    reply = await raw.receive()
    assert reply == {"type": "ack", "ids": [event["id"]]}


@pytest.mark.parametrize(
    "changes",
    [
        {"prompt": "my salary is 10k"},
        {"messages": [{"role": "user", "content": "hi"}]},
        {"completion": "sure"},
        {"text": "x"},
        {"log_metadata": {"prompt_text": "secret"}},
        {"log_metadata": {"userPrompt": "secret"}},
        {"log_metadata": {"Response": "x"}},
        {"log_metadata": {"query": "x"}},
        {"log_metadata": {"lastuserprompt": "x"}},
        {"log_metadata": {"prompt_length": "the whole prompt"}},
        {"log_metadata": {"details": {"body": "x"}}},
        {"log_metadata": {"PrOmPt": "x"}},
        {"log_metadata": {"usermessage": "x"}},
        {"log_metadata": {"payload": "x"}},
        {"log_metadata": {"texto": "x"}},
        {"log_metadata": {"提示词": "x"}},
        {"log_metadata": {"pro\u200bmpt": "x"}},
        {"log_metadata": {"\u0440rompt": "x"}},
        {"log_metadata": {"prompt_id": "My_SSN_is_123-45-6789"}},
    ],
    ids=lambda value: next(iter(value.get("log_metadata", value))),
)
async def test_content_anywhere_gets_content_not_allowed_and_nothing_is_stored(
    raw: RawClient, generator: EventGenerator, engine: AsyncEngine, changes: dict[str, Any]
) -> None:
    await raw.send(good_event(generator, **changes))
    await expect_error_then_pong(raw, "content_not_allowed")
    assert await count_events(engine) == 0


async def test_measure_of_content_in_metadata_is_an_unknown_key_not_content(
    raw: RawClient, generator: EventGenerator
) -> None:
    await raw.send(good_event(generator, log_metadata={"response_length": 120}))
    error = await expect_error_then_pong(raw, "invalid_event")
    assert "unknown metadata key 'response_length'" in error["message"]


async def test_line_too_long_is_discarded_and_the_connection_goes_on(
    server_factory: StartServer, raw_factory: RawFactory, generator: EventGenerator
) -> None:
    server = await server_factory(max_line_bytes=MIN_MAX_LINE_BYTES)
    raw = await raw_factory(server.port)
    await raw.write(b'{"type":"ping","pad":"' + b"x" * (MIN_MAX_LINE_BYTES + 100) + b'"}\n')
    await expect_error_then_pong(raw, "line_too_long")
    event = generator.event()
    await raw.send(event)
    assert await raw.receive() == {"type": "ack", "ids": [event["id"]]}


async def expect_refusal(raw: RawClient, code: str) -> dict[str, Any]:
    error = await raw.receive()
    assert error["type"] == "error", error
    assert error["code"] == code, error
    assert await raw.closed_by_server()
    return error


async def test_anything_but_hello_first_gets_hello_required_and_is_closed(
    server: ServerHandle, raw_factory: RawFactory
) -> None:
    raw = await raw_factory(server.port, hello=False)
    await raw.send({"type": "ping"})
    await expect_refusal(raw, "hello_required")


async def test_malformed_hello_gets_invalid_hello_and_is_closed(
    server: ServerHandle, raw_factory: RawFactory, org: Organization
) -> None:
    raw = await raw_factory(server.port, hello=False)
    await raw.send(hello_message(org, device_type="toaster"))
    error = await expect_refusal(raw, "invalid_hello")
    assert "device_type must be one of browser, desktop, cli" in error["message"]


@pytest.mark.parametrize(
    "overrides",
    [{"token": "aifw_wrong"}, {"organization_id": "nobody"}],
    ids=["wrong-token", "unknown-organisation"],
)
async def test_wrong_token_or_unknown_organisation_gets_unauthorized_and_is_closed(
    server: ServerHandle, raw_factory: RawFactory, org: Organization, overrides: dict[str, str]
) -> None:
    raw = await raw_factory(server.port, hello=False)
    await raw.send(hello_message(org, **overrides))
    await expect_refusal(raw, "unauthorized")


async def test_revoked_token_gets_unauthorized(
    server: ServerHandle, raw_factory: RawFactory, org: Organization, session: AsyncSession
) -> None:
    (token,) = await list_tokens(session=session, organization_id="acme")
    await revoke_token(session=session, actor=Actor.cli(), token_id=token.id)
    await session.commit()
    raw = await raw_factory(server.port, hello=False)
    await raw.send(hello_message(org))
    await expect_refusal(raw, "unauthorized")


async def test_disabled_device_gets_device_disabled(
    server: ServerHandle, raw_factory: RawFactory, org: Organization, session: AsyncSession
) -> None:
    first = await raw_factory(server.port)
    await first.close()
    await session.execute(update(Device).where(Device.device_id == "dev-raw").values(is_active=False))
    await session.commit()
    raw = await raw_factory(server.port, hello=False)
    await raw.send(hello_message(org))
    await expect_refusal(raw, "device_disabled")


async def test_device_of_another_organisation_gets_device_conflict(
    server: ServerHandle, raw_factory: RawFactory, org: Organization, session: AsyncSession
) -> None:
    session.add(Device(device_id="dev-raw", user_id="x", device_type="cli", organization_id="other"))
    await session.commit()
    raw = await raw_factory(server.port, hello=False)
    await raw.send(hello_message(org))
    await expect_refusal(raw, "device_conflict")


async def test_no_hello_in_time_gets_hello_timeout(
    server_factory: StartServer, raw_factory: RawFactory
) -> None:
    server = await server_factory(hello_timeout_seconds=0.3)
    raw = await raw_factory(server.port, hello=False)
    await expect_refusal(raw, "hello_timeout")


async def test_idle_client_gets_idle_timeout(server_factory: StartServer, raw_factory: RawFactory) -> None:
    server = await server_factory(idle_timeout_seconds=0.3)
    raw = await raw_factory(server.port)
    await expect_refusal(raw, "idle_timeout")


async def test_client_past_the_connection_limit_gets_overloaded_and_others_go_on(
    server_factory: StartServer, raw_factory: RawFactory
) -> None:
    server = await server_factory(max_connections=2)
    first = await raw_factory(server.port)
    await raw_factory(
        server.port, device_id="dev-raw-2"
    )  # a second hello of one device would replace the first
    third = await raw_factory(server.port, hello=False)
    await expect_refusal(third, "overloaded")
    await first.send({"type": "ping"})
    assert await first.receive() == {"type": "pong"}


async def test_error_lines_count_in_the_stats(raw: RawClient, server: ServerHandle) -> None:
    await raw.write(b"nope\n")
    await expect_error_then_pong(raw, "invalid_json")
    assert server.stats.errors["invalid_json"] == 1


def test_every_error_code_is_documented() -> None:
    from pathlib import Path

    protocol = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    missing = [code for code in ERROR_CODES if f"`{code}`" not in protocol]
    assert not missing


def test_event_ids_in_examples_are_uuids() -> None:
    assert uuid.UUID(EventGenerator(seed=1).event()["id"]).version == 4


async def test_validator_fault_gets_internal_error_and_the_connection_goes_on(
    raw: RawClient, generator: EventGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ingest import protocol

    def broken(message: dict[str, Any], **_: Any) -> dict[str, Any]:
        raise RuntimeError("bug")

    monkeypatch.setattr(protocol, "validate_log", broken)
    event = generator.event()
    await raw.send(event)
    error = await expect_error_then_pong(raw, "internal_error")
    assert error["id"] == event["id"]


async def test_event_the_database_refuses_is_answered_and_the_rest_of_its_batch_stored(
    raw: RawClient, generator: EventGenerator, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ingest import protocol

    events = [generator.event() for _ in range(5)]
    poisoned = events[2]["id"]
    validate = protocol.validate_log

    def slipping(message: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        row = validate(message, **kwargs)
        if message["id"] == poisoned:
            row["risk_level"] = "purple"  # as if the validator let a bad value through
        return row

    monkeypatch.setattr(protocol, "validate_log", slipping)
    await raw.write(b"".join(orjson.dumps(event) + b"\n" for event in events))
    acked: set[str] = set()
    refusal: dict[str, Any] | None = None
    while len(acked) < 4 or refusal is None:
        reply = await raw.receive()
        if reply["type"] == "ack":
            acked.update(reply["ids"])
        else:
            refusal = reply
    assert refusal["code"] == "invalid_event"
    assert refusal["id"] == poisoned
    assert poisoned not in acked
    assert sorted(await stored_ids(engine)) == sorted(e["id"] for e in events if e["id"] != poisoned)
