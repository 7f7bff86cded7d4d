"""Validation of what agents send: ``hello`` and ``log`` messages become typed rows or a clear refusal.

Every field is checked for type and range, identifiers against db/identifiers.py,
``log_metadata`` against the organisation's closed key map (db/metadata_keys.py),
and no prompt content ever passes: a field whose normalised name says it carries
content (``prompt``, ``PrOmPt``, ``usermessage``, ``pro\u200bmpt`` …) refuses the
whole event with ``content_not_allowed``. Unknown fields and oversized objects are
refused before any per-key work. Messages are one line in plain words, e.g.
"risk_level must be one of green, amber, red; got 'purple'", and never repeat a
nested value.

A timestamp must lie in an :class:`AcceptedTimes` window: at most a day ahead, and not
before the organisation's retention cutoff (``past_retention``: the next cleanup would
delete the event, and PostgreSQL has no partition for it past 365 days).
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from asyncpg.pgproto.pgproto import UUID as FastUUID

from db.base import utcnow
from db.configs import ConfigError, validate_organization_id
from db.identifiers import (
    ENTITY_TYPE_PATTERN,
    MAX_DEVICE_ID_CHARS,
    MAX_ENTITY_TYPE_CHARS,
    MAX_METADATA_KEY_CHARS,
    MAX_METADATA_STRING_CHARS,
    MAX_TOOL_NAME_CHARS,
    MAX_USER_ID_CHARS,
    forbidden_character,
)
from db.metadata_keys import MAX_METADATA_KEYS, STANDARD_KEYS, Shape, is_content_key, metadata_problem
from db.vocabulary import DEVICE_TYPES, RISK_LEVELS, TOOL_TYPES

# Bounds, in characters unless said otherwise; identifiers' bounds are db/identifiers.py's.
MAX_AGENT_VERSION_CHARS: Final = 64
MAX_TOKEN_CHARS: Final = 256
MAX_PROMPT_LENGTH: Final = 10_000_000
MAX_ENTITY_COUNT: Final = 100_000
MAX_ENTITY_TYPES: Final = 64
MAX_FUTURE_SKEW: Final = timedelta(days=1)
#: The oldest timestamp accepted when the organisation's retention is not known (its cutoff is stricter).
MAX_EVENT_AGE: Final = timedelta(days=400)
MAX_TIMESTAMP_CHARS: Final = 64
#: Unknown field names looked at to tell content from a mere unknown field; past these the line is refused
#: as it is, so a line of thousands of keys costs no more than one of a few.
MAX_CLASSIFIED_NAMES: Final = 16
#: A hello may carry at most this many fields the server does not read (they are ignored).
MAX_HELLO_EXTRA_FIELDS: Final = 16

LOG_FIELDS: Final = frozenset(
    {
        "type",
        "id",
        "timestamp",
        "tool_name",
        "tool_type",
        "risk_level",
        "prompt_length",
        "detected_entity_types",
        "entity_count",
        "was_sanitized",
        "log_metadata",
        "user_id",
        "device_id",
        "organization_id",
    }
)
HELLO_FIELDS: Final = frozenset(
    {"type", "organization_id", "token", "device_id", "user_id", "device_type", "agent_version"}
)
#: The stable set of protocol error codes and what each means (docs/protocol.md lists them too).
#: ``closes`` codes end the connection after the error line; the others skip the one line.
ERROR_CODES: Final = {
    "invalid_json": "the line is not UTF-8 JSON, is nested too deeply, or is not a JSON object",
    "line_too_long": "the line is longer than INGEST_MAX_LINE_BYTES; it was discarded up to its newline",
    "unknown_type": "the message has no type, or a type the server does not know",
    "invalid_event": "a log event failed validation (the message says which field and why)",
    "past_retention": (
        "the event's timestamp is before its organisation's retention cutoff (now - log_retention_days): "
        "the next cleanup would delete it, so it was not stored"
    ),
    "content_not_allowed": (
        "a field may carry prompt content; the event was refused and nothing of it stored "
        "(in a hello: closes)"
    ),
    "unexpected_hello": "a second hello on a connection that already said hello",
    "hello_required": "the first message was not a hello (closes)",
    "invalid_hello": "the hello is malformed (closes)",
    "unauthorized": "wrong or revoked token, or unknown organisation (closes)",
    "device_disabled": "the device is switched off in the console (closes)",
    "device_conflict": "the device id is registered to another organisation (closes)",
    "too_many_devices": (
        "the organisation registered INGEST_MAX_NEW_DEVICES_PER_HOUR devices this hour (closes)"
    ),
    "hello_timeout": "no hello within INGEST_HELLO_TIMEOUT_SECONDS (closes)",
    "idle_timeout": "no complete line within INGEST_IDLE_TIMEOUT_SECONDS (closes)",
    "line_timeout": "a line did not end within INGEST_LINE_TIMEOUT_SECONDS of its first byte (closes)",
    "overloaded": "the server is full, or this connection was shed to make room, or its token is at "
    "INGEST_MAX_CONNECTIONS_PER_TOKEN (closes)",
    "replaced": "a newer connection of the same device said hello; this older one is closed (closes)",
    "unavailable": "the database cannot be reached right now; retry later (closes during hello)",
    "config_too_large": (
        "the organisation's configuration would make a line longer than max_line_bytes (closes during hello)"
    ),
    "proxy_refused": (
        "the connection did not start with a PROXY protocol header from a trusted load balancer, "
        "INGEST_PROXY_PROTOCOL (closes)"
    ),
    "shutting_down": "the server is stopping; what was acknowledged is stored; reconnect later (closes)",
    "internal_error": "an unexpected server fault; the event was not stored",
}
CLOSING_CODES: Final = frozenset(
    {
        "proxy_refused",
        "hello_required",
        "invalid_hello",
        "unauthorized",
        "device_disabled",
        "device_conflict",
        "too_many_devices",
        "hello_timeout",
        "idle_timeout",
        "line_timeout",
        "overloaded",
        "replaced",
        "unavailable",
        "shutting_down",
    }
)
#: The one timestamp profile: YYYY-MM-DDTHH:MM:SS[.fraction] then Z or ±HH:MM (T and Z in either case).
_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_entity_type = ENTITY_TYPE_PATTERN.fullmatch


class EventError(ValueError):
    """A message was refused; ``code`` is the protocol error code, the text says why in plain words."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> EventError:
    return EventError("invalid_event", message)


@dataclass(frozen=True)
class Hello:
    """Who is on the other end of a connection, as the agent says in its first line."""

    organization_id: str
    token: str
    device_id: str
    user_id: str
    device_type: str
    agent_version: str | None


@dataclass(frozen=True, slots=True)
class AcceptedTimes:
    """The event timestamps accepted at one moment: ``earliest`` to ``latest``, both included.

    ``earliest`` is the organisation's retention cutoff, ``now - retention_days``: the instant
    before which retention deletes (db/retention.py ``cutoff_for``; a log exactly at the cutoff
    stays). Without a known retention it is ``now -`` :data:`MAX_EVENT_AGE`. ``latest`` is
    ``now +`` :data:`MAX_FUTURE_SKEW`. Computed once and reused for many events, so that checking
    a timestamp is one comparison. Refused: before the cutoff ``past_retention``; later than
    ``latest``, or older than MAX_EVENT_AGE (a wrong clock, more likely), ``invalid_event``.
    """

    earliest: datetime
    latest: datetime
    #: The organisation's log_retention_days that set ``earliest``, or None (then MAX_EVENT_AGE did).
    retention_days: int | None = None

    @classmethod
    def at(cls, now: datetime, retention_days: int | None = None) -> AcceptedTimes:
        """The window at ``now`` for an organisation keeping its logs ``retention_days`` (None: unknown)."""
        oldest = now - MAX_EVENT_AGE
        if retention_days is not None:
            oldest = max(oldest, now - timedelta(days=retention_days))
        return cls(earliest=oldest, latest=now + MAX_FUTURE_SKEW, retention_days=retention_days)

    def refusal(self, value: str, moment: datetime) -> EventError:
        """Why ``moment`` (the timestamp ``value`` as sent) is outside the window."""
        if moment > self.latest:
            return invalid(
                f"timestamp {value!r} is more than a day in the future; is the device clock right?"
            )
        if self.retention_days is None or moment < self.latest - MAX_FUTURE_SKEW - MAX_EVENT_AGE:
            # Older than any retention keeps: more likely a wrong clock than an event held back.
            return invalid(f"timestamp {value!r} is more than {MAX_EVENT_AGE.days} days old")
        cutoff = self.earliest.strftime("%Y-%m-%dT%H:%M:%SZ")
        return EventError(
            "past_retention",
            f"timestamp {value!r} is before the organisation's retention cutoff {cutoff} "
            f"(log_retention_days {self.retention_days}): the next cleanup would delete it, so it was not "
            "stored",
        )


# --- content detection -------------------------------------------------------------------------


def _content_path(value: object, path: str, budget: list[int], depth: int = 0) -> str | None:
    """The first content-named field inside ``value`` (objects and lists), looking at ``budget[0]`` names at
    most."""
    if depth > 4:
        return None
    if isinstance(value, dict):
        for name, item in value.items():
            if budget[0] <= 0:
                return None
            budget[0] -= 1
            if is_content_key(name, item):
                return f"{path}.{name[:64]}"
            found = _content_path(item, f"{path}.{name[:64]}", budget, depth + 1)
            if found is not None:
                return found
    elif isinstance(value, list):
        for item in value[:MAX_CLASSIFIED_NAMES]:
            found = _content_path(item, path, budget, depth + 1)
            if found is not None:
                return found
    return None


def find_content_field(message: dict[str, Any], names: Iterable[str]) -> str | None:
    """Among ``names`` (fields of ``message`` it does not know), the first that carries content, or None.

    At most :data:`MAX_CLASSIFIED_NAMES` names are looked at, nested ones included, so the cost
    of a refusal is bounded however many keys a line has.
    """
    budget = [MAX_CLASSIFIED_NAMES]
    for name in itertools.islice(names, MAX_CLASSIFIED_NAMES):
        budget[0] -= 1
        if is_content_key(name, message[name]):
            return name
        found = _content_path(message[name], name, budget)
        if found is not None or budget[0] <= 0:
            return found
    return None


def _refuse_content(field_name: str) -> EventError:
    return EventError(
        "content_not_allowed",
        f"field {field_name!r} may carry prompt content; "
        "events carry metadata only, so nothing of it was stored",
    )


# --- field checks --------------------------------------------------------------------------------


def identifier_problem(name: str, value: object) -> str | None:
    """Why ``value`` is not a valid identifier ``name`` under today's rules, or None if it is.

    ``name`` is one of ``tool_name``, ``user_id``, ``device_id``, ``organization_id``,
    ``entity_type``, ``metadata_key``, ``metadata_value`` (db/identifiers.py has the rules).
    Used by the validator and to scrub rows stored under older rules.
    """
    if name == "organization_id":
        if not isinstance(value, str):
            return f"organization_id must be a string; got {_kind(value)}"
        try:
            validate_organization_id(value)
        except ConfigError as error:
            return str(error)
        return None
    if not isinstance(value, str):
        return f"{name} must be a string; got {_kind(value)}"
    if name == "entity_type":
        if _entity_type(value) is None:
            return (
                f"entity types must be 1-{MAX_ENTITY_TYPE_CHARS} capital letters, digits or '_', "
                f"starting with a letter (EMAIL, API_KEY); got {_shown(value)}"
            )
        return None
    maximum = _IDENTIFIER_BOUNDS.get(name)
    if maximum is None:
        raise ValueError(f"no identifier rule for {name!r}; one of {', '.join(IDENTIFIER_NAMES)}")
    if not value.strip():
        return f"{name} must not be empty"
    if len(value) > maximum:
        return f"{name} must be at most {maximum} characters; got {len(value)}"
    bad = forbidden_character(value, joiners_between_letters=name == "user_id")
    if bad is not None:
        return (
            f"{name} must not contain control, invisible or direction-changing characters"
            f" (ANSI escapes, zero-width, bidi overrides, byte order marks); found {bad}"
        )
    return None


_IDENTIFIER_BOUNDS: Final[dict[str, int]] = {
    "tool_name": MAX_TOOL_NAME_CHARS,
    "user_id": MAX_USER_ID_CHARS,
    "device_id": MAX_DEVICE_ID_CHARS,
    "agent_version": MAX_AGENT_VERSION_CHARS,
    "metadata_key": MAX_METADATA_KEY_CHARS,
    "metadata_value": MAX_METADATA_STRING_CHARS,
}
#: The names :func:`identifier_problem` knows.
IDENTIFIER_NAMES: Final = ("organization_id", "entity_type", *_IDENTIFIER_BOUNDS)


def _text(message: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = message.get(name)
    if value is None:
        if required:
            raise invalid(f"{name} is required")
        return None
    problem = identifier_problem(name, value)
    if problem is not None:
        raise invalid(problem)
    return value


def _choice(message: dict[str, Any], name: str, choices: tuple[str, ...]) -> str:
    value = message.get(name)
    if value is None:
        raise invalid(f"{name} is required (one of {', '.join(choices)})")
    if type(value) is not str or value not in choices:
        raise invalid(f"{name} must be one of {', '.join(choices)}; got {_shown(value)}")
    return value


def _whole(message: dict[str, Any], name: str, *, maximum: int, default: int) -> int:
    value = message.get(name, default)
    if type(value) is not int:
        raise invalid(f"{name} must be a whole number; got {_kind(value)}")
    if value < 0:
        raise invalid(f"{name} must not be negative; got {value}")
    if value > maximum:
        raise invalid(f"{name} must be at most {maximum}; got {value}")
    return value


def _kind(value: object) -> str:
    """A short description of a value for a message; never a repr of an object or list (they may nest
    deeply)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the string {value[:40]!r}" if len(value) <= 40 else "a long string"
    if isinstance(value, int | float):
        return f"the number {value!r}" if abs(value) < 1e21 else "a number too large"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _shown(value: object) -> str:
    return repr(value) if isinstance(value, str) and len(value) <= 40 else _kind(value)


def parse_event_id(value: object) -> uuid.UUID:
    """The agent's event id: a UUID string, in any form ``uuid.UUID`` reads (upper case, braces,
    ``urn:uuid:``)."""
    if value is None:
        raise invalid("id is required (a UUID the agent generates, e.g. from uuid4)")
    if not isinstance(value, str) or len(value) > 45:
        raise invalid(f"id must be a UUID string; got {_kind(value)}")
    try:
        # asyncpg's UUID (a uuid.UUID subclass, equal and hashing alike) parses in C, about 8x faster,
        # and COPY writes its 16 bytes directly; it reads no braces or urn:uuid: prefix (uuid.UUID does).
        return FastUUID(value)
    except ValueError:
        pass
    try:
        return uuid.UUID(value)
    except ValueError:
        raise invalid(f"id must be a UUID; got {value!r}") from None


def parse_timestamp(
    value: object, *, now: datetime | None = None, accepted: AcceptedTimes | None = None
) -> datetime:
    """A time in the protocol's one profile, ``YYYY-MM-DDTHH:MM:SS[.fraction]`` then ``Z`` or ``±HH:MM``,
    in UTC, within ``accepted`` (default: :meth:`AcceptedTimes.at` ``now``, no retention known).

    Raises EventError ``invalid_event``, or ``past_retention`` for a time before ``accepted``'s
    retention cutoff.
    """
    if value is None:
        raise invalid("timestamp is required (e.g. 2026-11-20T10:00:00Z or 2026-11-20T11:00:00+01:00)")
    if not isinstance(value, str) or len(value) > MAX_TIMESTAMP_CHARS:
        raise invalid(f"timestamp must be a string like 2026-11-20T10:00:00Z; got {_kind(value)}")
    if _TIMESTAMP.fullmatch(value) is None:
        raise invalid(_timestamp_form_problem(value))
    if value[17:19] == "60":
        raise invalid(f"timestamp {value!r} has a leap second (:60), which is not accepted; send :59 instead")
    try:
        # The profile is a subset of what fromisoformat reads, once T and Z are upper case.
        text = value.upper() if "t" in value or "z" in value else value
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is not UTC:  # "Z" and "+00:00" already read as UTC: no conversion needed
            moment = moment.astimezone(UTC)
    except ValueError as error:
        raise invalid(f"timestamp {value!r} is not a real time: {error}") from None
    except OverflowError:
        raise invalid(f"timestamp {value!r} is out of range once converted to UTC") from None
    window = accepted if accepted is not None else AcceptedTimes.at(now or utcnow())
    if not window.earliest <= moment <= window.latest:
        raise window.refusal(value, moment)
    return moment


def _timestamp_form_problem(value: str) -> str:
    shown = repr(value) if len(value) <= 40 else "a long string"
    if (
        len(value) >= 19
        and value[:10].count("-") == 2
        and value[10:11] in ("T", "t")
        and (_TIMESTAMP.fullmatch(value + "Z") is not None)
    ):
        return f"timestamp must say its time zone (Z or +01:00); got {shown}"
    return (
        "timestamp must be YYYY-MM-DDTHH:MM:SS[.fraction] then Z or ±HH:MM (e.g. 2026-11-20T10:00:00Z);"
        f" got {shown}"
    )


def _entity_types(message: dict[str, Any]) -> list[str]:
    value = message.get("detected_entity_types", [])
    if type(value) is not list:
        raise invalid(f"detected_entity_types must be a list of names; got {_kind(value)}")
    if len(value) > MAX_ENTITY_TYPES:
        raise invalid(f"detected_entity_types may list at most {MAX_ENTITY_TYPES} types; got {len(value)}")
    for index, item in enumerate(value):
        if type(item) is not str or _entity_type(item) is None:
            raise invalid(
                f"detected_entity_types[{index}] must be 1-{MAX_ENTITY_TYPE_CHARS} capital letters, "
                f"digits or '_', starting with a letter (EMAIL, API_KEY); got {_shown(item)}"
            )
    return value


def _metadata(message: dict[str, Any], shapes: Mapping[str, Shape]) -> dict[str, Any]:
    value = message.get("log_metadata")
    if value is None:
        return {}
    if type(value) is not dict:
        raise invalid(f"log_metadata must be an object; got {_kind(value)}")
    # Bounded before any per-key work: a line of thousands of keys costs no more than one of a few.
    if len(value) > MAX_METADATA_KEYS:
        raise invalid(f"log_metadata may have at most {MAX_METADATA_KEYS} keys; got {len(value)}")
    for key, item in value.items():
        shape = shapes.get(key)
        if shape is None or (item is not None and not shape.accepts(item)):
            _refuse_metadata(value, shapes)
    return value


def _refuse_metadata(metadata: dict[str, Any], shapes: Mapping[str, Shape]) -> None:
    """Raise the refusal of a metadata object that failed the fast check: content first, then the first
    problem."""
    unknown = [key for key in metadata if key not in shapes]
    found = find_content_field(metadata, unknown)
    if found is not None:
        raise _refuse_content(f"log_metadata.{found}")
    for key, item in metadata.items():
        refusal = metadata_problem(key, item, allowed=shapes)
        if refusal is not None:
            raise refusal


# --- messages ------------------------------------------------------------------------------------


def validate_hello(message: dict[str, Any]) -> Hello:
    """Check a hello (its ``type`` already read).

    Raises EventError with code ``content_not_allowed`` if a field the hello does not
    define may carry content, ``invalid_hello`` otherwise; both close the connection.
    """
    extra = message.keys() - HELLO_FIELDS
    if extra:
        found = find_content_field(message, sorted(extra) if len(extra) <= MAX_CLASSIFIED_NAMES else extra)
        if found is not None:
            raise EventError(
                "content_not_allowed", f"field {found!r} may carry prompt content; it is not accepted"
            )
        if len(extra) > MAX_HELLO_EXTRA_FIELDS:
            raise EventError(
                "invalid_hello",
                f"the hello has {len(extra)} fields the server does not know; at most "
                f"{MAX_HELLO_EXTRA_FIELDS} are ignored",
            )
    try:
        problem = identifier_problem("organization_id", message.get("organization_id"))
        if problem is not None:
            raise invalid(problem)
        organization_id: str = message["organization_id"]
        token = message.get("token")
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise invalid("token must be the organisation's ingest token (a string)")
        device_id = _text(message, "device_id")
        user_id = _text(message, "user_id")
        device_type = _choice(message, "device_type", DEVICE_TYPES)
        agent_version = _text(message, "agent_version", required=False)
    except EventError as error:
        raise EventError("invalid_hello", error.message) from None
    assert device_id is not None
    assert user_id is not None
    return Hello(
        organization_id=organization_id,
        token=token,
        device_id=device_id,
        user_id=user_id,
        device_type=device_type,
        agent_version=agent_version,
    )


def validate_log(
    message: dict[str, Any],
    *,
    hello: Hello,
    now: datetime | None = None,
    metadata_keys: Mapping[str, Shape] | None = None,
    accepted: AcceptedTimes | None = None,
) -> dict[str, Any]:
    """Check a log event and return the row to store (columns of ``log_entries``) plus ``ack_id``.

    ``ack_id`` is the event id exactly as the agent sent it: the server acknowledges under
    that string, while the row's ``id`` is the ``uuid.UUID``. ``metadata_keys`` is the
    organisation's key map (db/metadata_keys.py); the standard keys when None. ``accepted``
    is the window of timestamps (with the organisation's retention cutoff); when None, the
    one at ``now`` without a retention (see :func:`parse_timestamp`).

    Raises EventError with code ``content_not_allowed``, ``invalid_event`` or ``past_retention``.
    """
    extra = message.keys() - LOG_FIELDS
    if extra:
        # Sorted only when few, so thousands of keys cost one set difference, not a sort.
        names = sorted(extra) if len(extra) <= MAX_CLASSIFIED_NAMES else extra
        content = find_content_field(message, names)
        if content is not None:
            raise _refuse_content(content)
        shown = ", ".join(repr(name[:40]) for name in itertools.islice(names, 5))
        raise invalid(
            f"unknown field {shown}; put extra details in log_metadata (docs/protocol.md lists its keys)"
        )
    raw_id = message.get("id")
    event_id = parse_event_id(raw_id)
    device_id = message.get("device_id")
    if device_id is not None and device_id != hello.device_id:
        raise invalid(f"device_id comes from the hello ({hello.device_id!r}); got {_shown(device_id)}")
    organization_id = message.get("organization_id")
    # The hello's id is the organisation's as created; the agent may spell it in another case.
    if organization_id is not None and (
        not isinstance(organization_id, str)
        or not organization_id.isascii()
        or organization_id.lower() != hello.organization_id.lower()
    ):
        raise invalid(
            f"organization_id comes from the hello ({hello.organization_id!r}); got {_shown(organization_id)}"
        )
    user_id = _text(message, "user_id", required=False) if "user_id" in message else None
    was_sanitized = message.get("was_sanitized", False)
    if type(was_sanitized) is not bool:
        raise invalid(f"was_sanitized must be true or false; got {_kind(was_sanitized)}")
    return {
        "id": event_id,
        "timestamp": parse_timestamp(message.get("timestamp"), now=now, accepted=accepted),
        "device_id": hello.device_id,
        "user_id": user_id or hello.user_id,
        "organization_id": hello.organization_id,
        "tool_name": _text(message, "tool_name"),
        "tool_type": _choice(message, "tool_type", TOOL_TYPES),
        "risk_level": _choice(message, "risk_level", RISK_LEVELS),
        "prompt_length": _whole(message, "prompt_length", maximum=MAX_PROMPT_LENGTH, default=0),
        "detected_entity_types": _entity_types(message),
        "entity_count": _whole(message, "entity_count", maximum=MAX_ENTITY_COUNT, default=0),
        "was_sanitized": was_sanitized,
        "log_metadata": _metadata(message, STANDARD_KEYS if metadata_keys is None else metadata_keys),
        "ack_id": raw_id,
    }
