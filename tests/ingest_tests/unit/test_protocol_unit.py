"""The protocol without a socket or a database: lines in, messages or ProtocolError out, answers as bytes."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest

from db.event_schema import CLOSING_CODES, ERROR_CODES, Hello
from db.settings import IngestLimits
from ingest import protocol
from ingest.framing import TOO_LONG
from ingest.protocol import (
    ProtocolError,
    ack_line,
    answer_line,
    check_hello,
    check_log,
    config_line,
    error_line,
    parse_line,
    pong_line,
    refuse_type,
    welcome_line,
)
from simulation.events import EventGenerator

HELLO = Hello("acme", "t0ken", "dev-1", "alice@acme.example", "browser", "1.0")
LIMITS = IngestLimits()


def refusal(call: Any, *args: Any, **kwargs: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as refused:
        call(*args, **kwargs)
    return refused.value


def hello(**overrides: Any) -> dict[str, Any]:
    message = {
        "type": "hello",
        "organization_id": "acme",
        "token": "t0ken",
        "device_id": "dev-1",
        "user_id": "alice@acme.example",
        "device_type": "browser",
        "agent_version": "1.0",
    }
    message.update(overrides)
    return message


def decoded(line: bytes) -> dict[str, Any]:
    assert line.endswith(b"\n"), line
    assert line.count(b"\n") == 1, line
    return orjson.loads(line)


# --- reading a line --------------------------------------------------------------------------------


def test_a_json_object_line_is_parsed() -> None:
    assert parse_line(b'{"type":"ping","id":7}', LIMITS.max_line_bytes) == {"type": "ping", "id": 7}


def test_a_too_long_line_is_line_too_long_naming_the_limit_and_does_not_close() -> None:
    error = refusal(parse_line, TOO_LONG, 4096)
    assert error.code == "line_too_long"
    assert "4096 bytes" in error.message
    assert not error.closes


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b"not json", "the line is not valid JSON"),
        (b'{"type": "log"', "the line is not valid JSON"),
        (b'{"type":"\xff"}', "not valid UTF-8"),
        (b"[" * 2000 + b"]" * 2000, "nested too deeply"),
        (b"[1, 2]", "got a list"),
        (b"null", "got null"),
        (b'"text"', "got str"),
        (b"42", "got int"),
    ],
)
def test_a_line_that_is_not_a_json_object_is_invalid_json(line: bytes, says: str) -> None:
    error = refusal(parse_line, line, LIMITS.max_line_bytes)
    assert error.code == "invalid_json"
    assert says in error.message
    assert not error.closes


def test_invalid_json_says_the_column() -> None:
    assert "(column 10)" in refusal(parse_line, b'{"type": x}', 1000).message


# --- the hello ---------------------------------------------------------------------------------------


def test_a_valid_hello_becomes_a_hello() -> None:
    assert check_hello(hello()) == HELLO


def test_a_first_message_that_is_not_a_hello_is_hello_required_and_closes() -> None:
    error = refusal(check_hello, {"type": "ping"})
    assert (error.code, error.closes) == ("hello_required", True)


def test_a_hello_without_a_token_is_invalid_hello_and_closes() -> None:
    error = refusal(check_hello, hello(token=None))
    assert (error.code, error.closes) == ("invalid_hello", True)
    assert "token" in error.message


def test_a_hello_with_a_content_field_is_content_not_allowed() -> None:
    # Closing is the connection's doing here: every refusal of a hello ends the connection.
    error = refusal(check_hello, hello(prompt="secret"))
    assert error.code == "content_not_allowed"
    assert "secret" not in error.message


# --- log events --------------------------------------------------------------------------------------


def test_a_valid_log_becomes_a_row_acknowledged_under_the_id_as_sent() -> None:
    event = EventGenerator(seed=3).event()
    event["id"] = event["id"].upper()
    row = check_log(event, hello=HELLO, metadata_keys=None)
    assert row["ack_id"] == event["id"]
    assert str(row["id"]) == event["id"].lower()
    assert (row["organization_id"], row["device_id"]) == ("acme", "dev-1")


def test_an_invalid_log_is_invalid_event_naming_the_field_and_echoing_the_id() -> None:
    event = EventGenerator(seed=3).event() | {"risk_level": "purple"}
    error = refusal(check_log, event, hello=HELLO, metadata_keys=None)
    assert error.code == "invalid_event"
    assert "risk_level" in error.message
    assert error.event_id == event["id"]
    assert not error.closes


def test_a_log_with_a_content_field_is_content_not_allowed_and_does_not_close() -> None:
    event = EventGenerator(seed=3).event() | {"userPrompt": "my password is hunter2"}
    error = refusal(check_log, event, hello=HELLO, metadata_keys=None)
    assert error.code == "content_not_allowed"
    assert "hunter2" not in error.message
    assert not error.closes


def test_a_validator_fault_is_internal_error_for_the_one_event_with_the_fault_as_cause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(message: dict[str, Any], **_: Any) -> dict[str, Any]:
        raise KeyError("bug")

    monkeypatch.setattr(protocol, "validate_log", broken)
    error = refusal(check_log, {"type": "log", "id": "abc"}, hello=HELLO, metadata_keys=None)
    assert (error.code, error.event_id, error.closes) == ("internal_error", "abc", False)
    assert isinstance(error.__cause__, KeyError)


# --- other types -------------------------------------------------------------------------------------


def test_a_second_hello_is_unexpected_hello() -> None:
    assert refuse_type("hello").code == "unexpected_hello"


def test_a_message_without_a_type_is_unknown_type_listing_the_types() -> None:
    error = refuse_type(None)
    assert error.code == "unknown_type"
    assert 'no "type"' in error.message
    assert "hello, log, config, ping" in error.message


def test_an_unknown_type_is_named_only_when_short() -> None:
    assert "'upload'" in refuse_type("upload").message
    assert "x" * 40 not in refuse_type("x" * 40).message
    assert "of this kind" in refuse_type({"a": 1}).message


# --- answers -----------------------------------------------------------------------------------------


def test_ack_line_lists_the_ids_as_sent() -> None:
    assert ack_line(["A", "{b}"]) == b'{"type":"ack","ids":["A","{b}"]}\n'


@pytest.mark.parametrize(
    ("ping", "pong"),
    [
        ({"type": "ping"}, {"type": "pong"}),
        ({"type": "ping", "id": "p-1"}, {"type": "pong", "id": "p-1"}),
        ({"type": "ping", "id": 12}, {"type": "pong", "id": 12}),
        ({"type": "ping", "id": "x" * 65}, {"type": "pong"}),
        ({"type": "ping", "id": {"nested": 1}}, {"type": "pong"}),
    ],
)
def test_pong_echoes_a_short_string_or_number_id_only(ping: dict[str, Any], pong: dict[str, Any]) -> None:
    assert decoded(pong_line(ping)) == pong


def test_error_line_has_code_message_line_and_a_short_string_event_id() -> None:
    error = ProtocolError("invalid_event", "risk_level must be one of …", event_id="e-1")
    assert decoded(error_line(error, 7)) == {
        "type": "error",
        "code": "invalid_event",
        "message": "risk_level must be one of …",
        "line": 7,
        "id": "e-1",
    }


@pytest.mark.parametrize("event_id", ["x" * 65, 5, None, ["e"]])
def test_error_line_leaves_out_an_id_that_is_long_or_not_a_string(event_id: object) -> None:
    assert "id" not in decoded(error_line(ProtocolError("invalid_event", "bad", event_id=event_id), 1))


def test_welcome_line_carries_the_config_and_the_limits_the_agent_must_keep() -> None:
    limits = replace(LIMITS, max_in_flight_per_connection=77)
    welcome = decoded(welcome_line({"version": 3}, limits))
    assert welcome == {
        "type": "welcome",
        "config": {"version": 3},
        "limits": {
            "max_line_bytes": limits.max_line_bytes,
            "max_in_flight": 77,
            "idle_timeout_seconds": limits.idle_timeout_seconds,
        },
    }


def test_config_line_answers_a_config_request() -> None:
    assert decoded(config_line({"version": 3}, LIMITS)) == {"type": "config", "config": {"version": 3}}


def test_an_answer_of_exactly_the_line_limit_is_sent_and_one_byte_more_is_config_too_large() -> None:
    empty = len(orjson.dumps({"type": "config", "config": {"p": ""}}))
    limits = replace(LIMITS, max_line_bytes=200)
    fits = {"type": "config", "config": {"p": "x" * (200 - empty)}}
    assert len(answer_line(fits, limits)) == 201
    over = {"type": "config", "config": {"p": "x" * (201 - empty)}}
    error = refusal(answer_line, over, limits)
    assert error.code == "config_too_large"
    assert "201-byte line, over the 200-byte line limit" in error.message


def test_a_config_too_large_for_a_config_request_tells_the_agent_to_keep_its_last_one() -> None:
    error = refusal(config_line, {"p": "x" * 300}, replace(LIMITS, max_line_bytes=200))
    assert error.code == "config_too_large"
    assert error.message.endswith("keep the last configuration")


def test_a_config_with_text_that_is_not_unicode_is_config_too_large_not_a_crash() -> None:
    error = refusal(welcome_line, {"pattern": "\ud800"}, LIMITS)
    assert error.code == "config_too_large"
    assert "not valid Unicode" in error.message


# --- the codes ---------------------------------------------------------------------------------------


def every_built_error() -> list[ProtocolError]:
    return [
        protocol.timed_out("hello_timeout", LIMITS),
        protocol.timed_out("line_timeout", LIMITS),
        protocol.timed_out("idle_timeout", LIMITS),
        protocol.unauthorized("acme"),
        protocol.hello_unavailable(),
        protocol.config_unavailable(),
        protocol.server_full(),
        protocol.shed(),
        protocol.token_full(4),
        protocol.replaced(),
        protocol.not_accepting(),
        protocol.stopping(),
        protocol.store_fault("e"),
        protocol.refused_by_database("e", "check constraint"),
        refuse_type("hello"),
        refuse_type("nope"),
    ]


def test_every_error_the_protocol_builds_has_a_documented_code_and_a_message() -> None:
    for error in every_built_error():
        assert error.code in ERROR_CODES, error
        assert error.message, error


@pytest.mark.parametrize(
    ("error", "closes"),
    [
        (protocol.timed_out("idle_timeout", LIMITS), True),
        (protocol.unauthorized("acme"), True),
        (protocol.shed(), True),
        (protocol.replaced(), True),
        (protocol.stopping(), True),
        (protocol.store_fault("e"), False),
        (protocol.refused_by_database("e", "x"), False),
        (ProtocolError(None), True),
    ],
    ids=repr,
)
def test_closing_codes_close_and_the_others_cost_one_line(error: ProtocolError, closes: bool) -> None:
    assert error.closes is closes
    assert error.code is None or (error.code in CLOSING_CODES) is closes


def test_timeouts_name_their_limit_in_seconds() -> None:
    limits = replace(LIMITS, hello_timeout_seconds=2.5, line_timeout_seconds=4, idle_timeout_seconds=90)
    assert "2.5 seconds" in protocol.timed_out("hello_timeout", limits).message
    assert "4 seconds" in protocol.timed_out("line_timeout", limits).message
    assert "90 seconds" in protocol.timed_out("idle_timeout", limits).message


def test_the_event_the_database_refused_is_named_with_its_id_and_reason() -> None:
    error = protocol.refused_by_database("e-9", "violates check constraint ck_risk_level")
    assert error.event_id == "e-9"
    assert error.message == "the database refused the event: violates check constraint ck_risk_level"
