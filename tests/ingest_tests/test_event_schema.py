"""Validation rules of db/event_schema.py that need no server: content names, closed metadata, identifiers,
the timestamp profile, event ids, numbers, bounds and hello checks."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from db.base import utcnow
from db.event_schema import (
    EventError,
    Hello,
    identifier_problem,
    parse_timestamp,
    validate_hello,
    validate_log,
)
from db.metadata_keys import STANDARD_KEYS, Shape, is_content_key, metadata_problem
from simulation.events import EventGenerator

HELLO = Hello("acme", "t", "dev-1", "alice@acme.example", "browser", "1.0")
NOW = datetime(2026, 11, 20, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    "name",
    [
        "prompt",
        "Prompt",
        "PROMPT",
        "prompt_text",
        "userPrompt",
        "user-prompt",
        "systemprompt",
        "content",
        "text",
        "completion",
        "response",
        "messages",
        "message",
        "input",
        "output",
        "query",
        "body",
        "chatTranscript",
        "conversation_history",
        "rawResponse",
    ],
)
def test_field_names_that_carry_content_are_recognised(name: str) -> None:
    assert is_content_key(name, "anything")


@pytest.mark.parametrize(
    "name", ["browser", "os", "app_version", "shell", "locale", "tab_count", "extension_id"]
)
def test_ordinary_metadata_names_are_not_content(name: str) -> None:
    assert not is_content_key(name, "x")


def test_a_measure_of_content_is_allowed_only_as_a_number() -> None:
    assert not is_content_key("prompt_length", 80)
    assert is_content_key("prompt_length", "the whole prompt")


def event(**changes: Any) -> dict[str, Any]:
    message = EventGenerator(seed=3).event()
    message.update(changes)
    return message


def refusal(message: dict[str, Any], **kwargs: Any) -> EventError:
    with pytest.raises(EventError) as refused:
        validate_log(message, hello=HELLO, **kwargs)
    return refused.value


# --- log_metadata is closed ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "PrOmPt",
        "usermessage",
        "payload",
        "texto",
        "提示词",
        "pro\u200bmpt",
        "\u0440rompt",
        "ｐｒｏｍｐｔ",
        "user_Mess\u00adage",
        "réponse",
        "prompt_id",
    ],
    ids=[
        "mixed-case",
        "run-together",
        "payload",
        "spanish",
        "chinese",
        "zero-width-space",
        "cyrillic-er",
        "fullwidth",
        "soft-hyphen",
        "accented",
        "label-of-content",
    ],
)
def test_spellings_of_content_in_metadata_are_refused_as_content(key: str) -> None:
    refused = refusal(event(log_metadata={key: "My_SSN_is_123-45-6789"}))
    assert refused.code == "content_not_allowed"


def test_unknown_metadata_key_is_invalid_event_naming_it() -> None:
    refused = refusal(event(log_metadata={"os": "macOS 15", "colour": "blue"}))
    assert refused.code == "invalid_event"
    assert "unknown metadata key 'colour'" in refused.message


@pytest.mark.parametrize(
    "key", ["Browser", "BROWSER", "browser ", "br\u200bowser", "\u0440rowser"[0] + "rowser"]
)
def test_a_look_alike_of_a_standard_key_is_not_accepted(key: str) -> None:
    assert refusal(event(log_metadata={key: "Chrome 131"})).code == "invalid_event"


def test_standard_keys_accept_what_the_reference_client_sends() -> None:
    generator = EventGenerator(seed=9)
    for device_type in ("browser", "desktop", "cli"):
        for _ in range(200):
            validate_log(generator.event(device_type=device_type), hello=HELLO)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("browser", "Firefox 133.0.3"),
        ("os", "Ubuntu 24.04"),
        ("os_version", "15.1"),
        ("shell", "zsh"),
        ("app_version", "2.0.0-beta.1+5"),
        ("locale", "pt-BR"),
        ("locale", "zh_Hans_CN"),
        ("arch", "arm64"),
        ("browser", None),
    ],
)
def test_standard_keys_accept_their_shape(key: str, value: object) -> None:
    assert validate_log(event(log_metadata={key: value}), hello=HELLO)["log_metadata"] == {key: value}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("browser", "My SSN is 123-45-6789"),
        ("browser", "Chrome_My_SSN_is_123"),
        ("os", "x" * 65),
        ("shell", "bash; cat ~/.ssh/id_rsa"),
        ("app_version", "one.two"),
        ("locale", "english please"),
        ("browser", 131),
        ("shell", True),
        ("os", {"name": "macOS"}),
        ("os", ["macOS"]),
    ],
)
def test_a_value_outside_its_keys_shape_is_refused(key: str, value: object) -> None:
    refused = refusal(event(log_metadata={key: value}))
    assert refused.code == "invalid_event"
    assert f"log_metadata.{key} must be" in refused.message


def test_an_organisations_extra_keys_are_accepted_in_their_shape_only() -> None:
    keys = {
        **STANDARD_KEYS,
        "team": Shape("enum", values=("red", "blue")),
        "tabs": Shape("number"),
        "managed": Shape("boolean"),
        "ticket": Shape("token"),
    }
    metadata = {"team": "red", "tabs": 12, "managed": True, "ticket": "OPS-1234"}
    assert (
        validate_log(event(log_metadata=metadata), hello=HELLO, metadata_keys=keys)["log_metadata"]
        == metadata
    )
    for bad in ({"team": "green"}, {"tabs": "12"}, {"managed": 1}, {"ticket": "my salary is 10k"}):
        assert refusal(event(log_metadata=bad), metadata_keys=keys).code == "invalid_event"
    assert refusal(event(log_metadata=metadata)).code == "invalid_event"  # another organisation's event


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 2**64, 10**30, 1e300], ids=str)
def test_numbers_beyond_64_bits_are_refused_not_rounded(value: int | float) -> None:
    # Parsed as the server parses: orjson turns integers past 64 bits into (rounded) floats.
    message = orjson.loads(
        orjson.dumps(event(log_metadata={})).replace(
            b'"log_metadata":{}', b'"log_metadata":{"tabs":%s}' % str(value).encode()
        )
    )
    refused = refusal(message, metadata_keys={**STANDARD_KEYS, "tabs": Shape("number")})
    assert refused.code == "invalid_event"
    assert "2^63" in refused.message


def test_metadata_problem_tells_the_refusal_of_one_entry() -> None:
    assert metadata_problem("browser", "Chrome 131") is None
    refused = metadata_problem("userPrompt", "x")
    assert refused is not None
    assert refused.code == "content_not_allowed"
    refused = metadata_problem("colour", "blue")
    assert refused is not None
    assert refused.code == "invalid_event"
    assert metadata_problem("team", "red", allowed={"team": Shape("enum", values=("red",))}) is None


def test_metadata_with_more_than_32_keys_is_refused() -> None:
    refused = refusal(event(log_metadata={f"k{i}": i for i in range(33)}))
    assert "at most 32 keys" in refused.message


# --- CPU: unknown fields and oversized objects cost no per-key work ---------------------------------


@pytest.mark.parametrize("where", ["top-level", "log_metadata"])
def test_a_line_of_thousands_of_distinct_keys_is_refused_in_well_under_a_millisecond(where: str) -> None:
    many = {f"field_{i}_{uuid.uuid4().hex[:6]}": i for i in range(5000)}
    message = event(**many) if where == "top-level" else event(log_metadata=many)
    refusal(event(log_metadata={"pro\u200bmpt": "x"}))  # one-time: the confusables table loads on first use
    started = time.perf_counter()
    for _ in range(20):
        refusal(message)
    assert (time.perf_counter() - started) / 20 < 0.002


def test_a_hello_of_thousands_of_distinct_keys_is_refused_in_well_under_a_millisecond() -> None:
    hello = {
        "type": "hello",
        "organization_id": "acme",
        "token": "t",
        "device_id": "d",
        "user_id": "u",
        "device_type": "cli",
        **{f"field_{i}_{uuid.uuid4().hex[:6]}": i for i in range(5000)},
    }
    refusal(event(log_metadata={"pro\u200bmpt": "x"}))  # one-time: the confusables table loads on first use
    started = time.perf_counter()
    for _ in range(20):
        with pytest.raises(EventError, match="fields the server does not know"):
            validate_hello(hello)
    assert (time.perf_counter() - started) / 20 < 0.002


# --- identifiers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    ["Chat\x1b[31mGPT", "Chat\u009bGPT", "Chat\u202eGPT", "Chat\u200bGPT", "\ufeffChatGPT", "Chat\u2066GPT"],
    ids=["ansi-escape", "c1-csi", "bidi-override", "zero-width-space", "byte-order-mark", "bidi-isolate"],
)
def test_identifiers_refuse_controls_escapes_bidi_and_invisible_characters(bad: str) -> None:
    for field in ("tool_name", "user_id"):
        refused = refusal(event(**{field: bad}))
        assert refused.code == "invalid_event"
        assert f"{field} must not contain" in refused.message
    with pytest.raises(EventError, match="device_id must not contain"):
        validate_hello(
            {
                "type": "hello",
                "organization_id": "acme",
                "token": "t",
                "device_id": bad,
                "user_id": "u",
                "device_type": "cli",
            }
        )


def test_user_id_may_hold_a_joiner_between_letters_only() -> None:
    assert validate_log(event(user_id="\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"), hello=HELLO)
    assert refusal(event(user_id="alice\u200c")).code == "invalid_event"
    assert refusal(event(tool_name="Chat\u200cGPT")).code == "invalid_event"


@pytest.mark.parametrize("bad", ["email", "E" * 49, "1PASSWORD", "API KEY", "API-KEY", ""])
def test_entity_types_look_like_email_or_api_key(bad: str) -> None:
    refused = refusal(event(detected_entity_types=["EMAIL", bad]))
    assert "detected_entity_types[1] must be 1-48 capital letters" in refused.message


def test_identifier_problem_checks_one_stored_value() -> None:
    assert identifier_problem("tool_name", "ChatGPT") is None
    assert identifier_problem("tool_name", "Chat\u202eGPT") is not None
    assert identifier_problem("entity_type", "api_key") is not None
    assert identifier_problem("organization_id", "acme corp") is not None
    assert identifier_problem("metadata_value", "Chrome\x00") is not None


# --- nesting, ids, timestamps ----------------------------------------------------------------------


def nested(depth: int) -> Any:
    return orjson.loads(b"[" * depth + b"]" * depth)


@pytest.mark.parametrize(
    "field", ["device_id", "organization_id", "tool_name", "id", "timestamp", "risk_level"]
)
def test_a_deeply_nested_array_in_an_event_field_is_refused_with_a_message(field: str) -> None:
    refused = refusal(event(**{field: nested(1000)}))
    assert refused.code == "invalid_event"
    assert field in refused.message


@pytest.mark.parametrize("field", ["organization_id", "device_id", "user_id", "token", "device_type"])
def test_a_deeply_nested_array_in_a_hello_field_is_refused_with_a_message(field: str) -> None:
    hello = {
        "type": "hello",
        "organization_id": "acme",
        "token": "t",
        "device_id": "d",
        "user_id": "u",
        "device_type": "cli",
        field: nested(1000),
    }
    with pytest.raises(EventError) as refused:
        validate_hello(hello)
    assert refused.value.code == "invalid_hello"
    assert field in refused.value.message


@pytest.mark.parametrize(
    "form",
    [lambda u: str(u).upper(), lambda u: "{" + str(u) + "}", lambda u: f"urn:uuid:{u}", lambda u: u.hex],
    ids=["upper-case", "braces", "urn", "no-hyphens"],
)
def test_an_id_in_another_form_is_acknowledged_as_sent_and_stored_as_its_uuid(form: Any) -> None:
    event_id = uuid.uuid4()
    sent = form(event_id)
    row = validate_log(event(id=sent), hello=HELLO)
    assert row["ack_id"] == sent
    assert row["id"] == event_id


def test_timestamp_bounds_are_a_day_ahead_and_four_hundred_days_back() -> None:
    now = utcnow()
    assert parse_timestamp((now + timedelta(hours=23)).isoformat(), now=now)
    assert parse_timestamp((now - timedelta(days=399)).isoformat(), now=now)
    with pytest.raises(EventError):
        parse_timestamp((now + timedelta(hours=25)).isoformat(), now=now)
    with pytest.raises(EventError):
        parse_timestamp((now - timedelta(days=401)).isoformat(), now=now)


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-20T10:00:00Z",
        "2026-11-20t10:00:00z",
        "2026-11-20T10:00:00.5Z",
        "2026-11-20T10:00:00.123456789Z",
        "2026-11-20T11:30:00+01:30",
        "2026-11-20T05:00:00-05:00",
        "2026-11-20T10:00:00+00:00",
    ],
)
def test_timestamps_in_the_profile_are_accepted(text: str) -> None:
    assert parse_timestamp(text, now=NOW) == datetime(2026, 11, 20, 10, tzinfo=UTC) + (
        timedelta(microseconds=500_000)
        if ".5" in text
        else timedelta(microseconds=123_456)
        if ".1" in text
        else timedelta(0)
    )


@pytest.mark.parametrize(
    "text",
    [
        "2026-W47-5T10:00:00Z",
        "20261120T100000Z",
        "2026-11-20 10:00:00Z",
        "2026-11-20T10:00:00Z ",
        "2026-11-20T10:00Z",
        "2026-11-20T10:00:00+0100",
        "2026-11-20T10:00:00+01",
        "2026-324T10:00:00Z",
        "2026-11-20",
        "２０２６-11-20T10:00:00Z",
        "2026-11-20T10:00:00.Z",
        "2026-11-20T10:00:00Zjunk",
    ],
)
def test_timestamps_outside_the_profile_are_refused(text: str) -> None:
    with pytest.raises(EventError, match="timestamp must be YYYY-MM-DDTHH:MM:SS"):
        parse_timestamp(text, now=NOW)


def test_a_leap_second_is_refused_with_a_message() -> None:
    with pytest.raises(EventError, match="leap second"):
        parse_timestamp("2016-12-31T23:59:60Z", now=NOW)


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_timestamps_that_overflow_when_converted_are_invalid_event(text: str) -> None:
    refused = refusal(event(timestamp=text))
    assert refused.code == "invalid_event"
    assert "out of range" in refused.message


def test_a_timestamp_without_a_zone_says_so() -> None:
    with pytest.raises(EventError, match="must say its time zone"):
        parse_timestamp("2026-11-20T10:00:00", now=NOW)


# --- bounds and hello ------------------------------------------------------------------------------


def test_entity_types_list_is_bounded() -> None:
    with pytest.raises(EventError, match="at most 64 types"):
        validate_log(event(detected_entity_types=["EMAIL"] * 65), hello=HELLO)


def test_valid_event_becomes_a_row_with_the_hellos_identity() -> None:
    row = validate_log(event(), hello=HELLO)
    assert (row["device_id"], row["organization_id"], row["user_id"]) == (
        "dev-1",
        "acme",
        "alice@acme.example",
    )
    assert row["timestamp"].tzinfo is not None


def test_hello_refusals_use_the_invalid_hello_code() -> None:
    with pytest.raises(EventError) as refused:
        validate_hello({"type": "hello", "organization_id": "acme", "token": 5})
    assert refused.value.code == "invalid_hello"
    assert "token" in refused.value.message


@pytest.mark.parametrize("field", ["prompt", "PrOmPt", "usermessage", "pro\u200bmpt"])
def test_hello_with_content_is_refused_as_content(field: str) -> None:
    hello = {
        "type": "hello",
        "organization_id": "acme",
        "token": "t",
        "device_id": "d",
        "user_id": "u",
        "device_type": "cli",
        field: "x",
    }
    with pytest.raises(EventError) as refused:
        validate_hello(hello)
    assert refused.value.code == "content_not_allowed"


def test_a_label_of_content_is_content_whatever_its_value() -> None:
    assert is_content_key("conversation_id", "c-81f2a9")
    assert is_content_key("prompt_id", "My_SSN_is_123-45-6789")
