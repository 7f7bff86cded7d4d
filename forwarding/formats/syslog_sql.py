"""The RFC 5424 message of an event with our JSON body, as a PostgreSQL expression over ``log_entries``.

The fast path of syslog over TCP and TLS in the JSON format (forwarding/delivery.py): PostgreSQL
builds each message while it reads the row, and the forwarder only relays the bytes it reads
(db.streams.EventLines). Building a message in Python from a decoded row costs about 30 µs;
relaying one costs under 1.

The message is the one :func:`forwarding.formats.syslog.rfc5424` writes around
:func:`forwarding.formats.json_body.render_json` for the same row, byte for byte (the tests compare
the two on awkward rows), with one exception: a JSON column holding a backslash, or a string ending in
", ", is written in PostgreSQL's own ``jsonb`` spelling (a space after ":" and ","). That is the same
JSON value; it never happens with the shapes ``log_metadata`` accepts today.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, ColumnElement, Text, and_, case, cast, func, literal

from db.streams import ColumnCollection, LineTemplate
from forwarding.formats.syslog import PARAM_VALUE_ESCAPES, fixed_header
from forwarding.severity import EVENT_SEVERITIES

#: RFC 3339 in UTC with microseconds, without the zone: timestamp_text() and orjson, before their "Z".
_UTC_MICROSECONDS = 'YYYY-MM-DD"T"HH24:MI:SS.US'


def _text(*parts: ColumnElement[Any] | str) -> ColumnElement[str]:
    """The parts concatenated with ``||`` (strings as literals)."""
    result: ColumnElement[str] = literal(parts[0], Text) if isinstance(parts[0], str) else parts[0]
    for part in parts[1:]:
        result = result.op("||")(literal(part, Text) if isinstance(part, str) else part)
    return result


def _utc(column: ColumnElement[Any]) -> ColumnElement[str]:
    return func.to_char(func.timezone("UTC", column), _UTC_MICROSECONDS)


def _orjson_time(utc_text: ColumnElement[str]) -> ColumnElement[str]:
    """As orjson writes an aware datetime with OPT_UTC_Z: the fraction only when it is not zero."""
    return func.replace(_text(utc_text, "Z"), ".000000Z", "Z")


def _json_string(column: ColumnElement[Any]) -> ColumnElement[str]:
    """A JSON string: PostgreSQL escapes as orjson does (quote, backslash, control characters)."""
    return cast(func.to_json(column), Text)


#: A backslash, or a string ending in ", " (its closing quote then meets one of "],}:").
_NOT_COMPACTABLE = ("\\", ', "]', ', ",', ', "}', ', ":')


def _compact_json(text: ColumnElement[str]) -> ColumnElement[str]:
    """``jsonb`` text without the space after ":" and ",", as orjson writes it.

    With no backslash in the text, every double quote delimits a string, so ``": `` follows only a
    key and ``, "`` only separates members, unless a string ends in ", " (then a quote and one of
    ``],}:`` follow): that and any backslash keep PostgreSQL's spelling, the same JSON value.
    """
    compactable = and_(*(func.strpos(text, marker) == 0 for marker in _NOT_COMPACTABLE))
    compact = func.replace(func.replace(text, '": ', '":'), ', "', ',"')
    return case((compactable, compact), else_=text)


def _escape_param_value(column: ColumnElement[str]) -> ColumnElement[str]:
    """forwarding.formats.syslog.escape_param_value in SQL: the same replacements, in the same order."""
    escaped = column
    for character, escape in PARAM_VALUE_ESCAPES:
        escaped = func.replace(escaped, character, escape)
    return escaped


def _values(row: ColumnCollection) -> list[ColumnElement[Any]]:
    """What each row of the page computes once (labelled), for the message to use where it needs them."""
    return [
        _utc(row.timestamp).label("utc_timestamp"),
        _utc(row.created_at).label("utc_created_at"),
        cast(row.id, Text).label("event_id"),
        row.risk_level.label("risk_level"),
        _json_string(row.device_id).label("device_id"),
        _json_string(row.user_id).label("user_id"),
        _json_string(row.tool_name).label("tool_name"),
        row.tool_type.label("tool_type"),
        cast(row.prompt_length, Text).label("prompt_length"),
        cast(row.detected_entity_types, Text).label("detected_entity_types"),
        cast(row.entity_count, Text).label("entity_count"),
        cast(cast(row.was_sanitized, Boolean), Text).label("was_sanitized"),
        cast(row.log_metadata, Text).label("log_metadata"),
    ]


def event_message_sql(
    *, hostname: str, app_name: str, facility: int, sd_id: str, procid: str = "-"
) -> LineTemplate:
    """The event's RFC 5424 message with our JSON body (no framing), as ``rfc5424`` writes it."""
    fixed = fixed_header(hostname, app_name, procid, sd_id, facility)
    default_pri = f"<{facility * 8 + EVENT_SEVERITIES['green'].syslog}>1 "

    def line(row: ColumnCollection) -> ColumnElement[str]:
        pri = case(
            {level: f"<{facility * 8 + severity.syslog}>1 " for level, severity in EVENT_SEVERITIES.items()},
            value=row.risk_level,
            else_=default_pri,
        )
        # tool_type and risk_level are held to their vocabularies by CHECK constraints: no escaping needed.
        return _text(
            pri,
            row.utc_timestamp,
            f'Z {fixed} event [{sd_id} id="',
            row.event_id,
            '" org="',
            _escape_param_value(row.organization_id),
            '" risk="',
            row.risk_level,
            '"] {"type":"event","id":"',
            row.event_id,
            '","organization_id":',
            _json_string(row.organization_id),
            ',"timestamp":"',
            _orjson_time(row.utc_timestamp),
            '","device_id":',
            row.device_id,
            ',"user_id":',
            row.user_id,
            ',"tool_name":',
            row.tool_name,
            ',"tool_type":"',
            row.tool_type,
            '","risk_level":"',
            row.risk_level,
            '","prompt_length":',
            row.prompt_length,
            ',"detected_entity_types":',
            _compact_json(row.detected_entity_types),
            ',"entity_count":',
            row.entity_count,
            ',"was_sanitized":',
            row.was_sanitized,
            ',"log_metadata":',
            _compact_json(row.log_metadata),
            ',"created_at":"',
            _orjson_time(row.utc_created_at),
            '"}',
        )

    return LineTemplate(values=_values, line=line)
