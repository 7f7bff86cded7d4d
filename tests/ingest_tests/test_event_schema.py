"""Validation rules of db/event_schema.py that need no server: content names, bounds, hello checks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from console.simulator import EventGenerator
from db.base import utcnow
from db.event_schema import EventError, Hello, is_content_field, parse_timestamp, validate_hello, validate_log

HELLO = Hello("acme", "t", "dev-1", "alice@acme.example", "browser", "1.0")


@pytest.mark.parametrize(
    "name",
    ["prompt", "Prompt", "PROMPT", "prompt_text", "userPrompt", "user-prompt", "systemprompt", "content", "text",
     "completion", "response", "messages", "message", "input", "output", "query", "body", "chatTranscript",
     "conversation_history", "rawResponse"],
)  # fmt: skip
def test_field_names_that_carry_content_are_recognised(name: str) -> None:
    assert is_content_field(name, "anything")


@pytest.mark.parametrize("name", ["browser", "os", "app_version", "shell", "locale", "tab_count", "extension_id"])
def test_ordinary_metadata_names_are_not_content(name: str) -> None:
    assert not is_content_field(name, "x")


def test_a_measure_of_content_is_allowed_only_as_a_number() -> None:
    assert not is_content_field("prompt_length", 80)
    assert is_content_field("prompt_length", "the whole prompt")


def event(**changes: Any) -> dict[str, Any]:
    message = EventGenerator(seed=3).event()
    message.update(changes)
    return message


def test_metadata_over_four_kibibytes_is_refused() -> None:
    metadata = {f"key{i}": "v" * 200 for i in range(25)}
    with pytest.raises(EventError, match="at most 4096 bytes"):
        validate_log(event(log_metadata=metadata), hello=HELLO)


def test_entity_types_list_is_bounded() -> None:
    with pytest.raises(EventError, match="at most 64 types"):
        validate_log(event(detected_entity_types=["EMAIL"] * 65), hello=HELLO)


def test_valid_event_becomes_a_row_with_the_hellos_identity() -> None:
    row = validate_log(event(), hello=HELLO)
    assert (row["device_id"], row["organization_id"], row["user_id"]) == ("dev-1", "acme", "alice@acme.example")
    assert row["timestamp"].tzinfo is not None


def test_timestamp_bounds_are_a_day_ahead_and_four_hundred_days_back() -> None:
    now = utcnow()
    assert parse_timestamp((now + timedelta(hours=23)).isoformat(), now=now)
    assert parse_timestamp((now - timedelta(days=399)).isoformat(), now=now)
    with pytest.raises(EventError):
        parse_timestamp((now + timedelta(hours=25)).isoformat(), now=now)
    with pytest.raises(EventError):
        parse_timestamp((now - timedelta(days=401)).isoformat(), now=now)


def test_hello_refusals_use_the_invalid_hello_code() -> None:
    with pytest.raises(EventError) as refused:
        validate_hello({"type": "hello", "organization_id": "acme", "token": 5})
    assert refused.value.code == "invalid_hello"
    assert "token" in refused.value.message


def test_hello_with_content_is_refused() -> None:
    hello = {"type": "hello", "organization_id": "acme", "token": "t", "device_id": "d", "user_id": "u",
             "device_type": "cli", "prompt": "x"}  # fmt: skip
    with pytest.raises(EventError) as refused:
        validate_hello(hello)
    assert refused.value.code == "content_not_allowed"


def test_a_label_of_content_is_allowed_only_as_a_short_token() -> None:
    assert not is_content_field("conversation_id", "c-81f2a9")
    assert not is_content_field("prompt_type", "code")
    assert is_content_field("conversation_id", "my salary is 10k")
    assert is_content_field("message_hash", "x" * 65)
