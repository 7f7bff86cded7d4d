"""Validation of what agents send: ``hello`` and ``log`` messages become typed rows or a clear refusal.

Every field is checked for type and range, and no prompt content ever passes:
a field whose name says it carries content (``prompt``, ``text``, ``messages``,
``userPrompt``, ``prompt_text`` …), at the top level or inside ``log_metadata``,
refuses the whole event with ``content_not_allowed``. Messages are one line in
plain words, e.g. "risk_level must be one of green, amber, red; got 'purple'".
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from db.base import as_utc, utcnow
from db.configs import ConfigError, validate_organization_id
from db.vocabulary import DEVICE_TYPES, RISK_LEVELS, TOOL_TYPES

# Bounds, in characters unless said otherwise (columns: device_id 128, user_id 255, tool_name 100).
MAX_DEVICE_ID_CHARS: Final = 128
MAX_USER_ID_CHARS: Final = 255
MAX_TOOL_NAME_CHARS: Final = 100
MAX_AGENT_VERSION_CHARS: Final = 64
MAX_TOKEN_CHARS: Final = 256
MAX_PROMPT_LENGTH: Final = 10_000_000
MAX_ENTITY_COUNT: Final = 100_000
MAX_ENTITY_TYPES: Final = 64
MAX_ENTITY_TYPE_CHARS: Final = 64
MAX_METADATA_KEYS: Final = 32
MAX_METADATA_KEY_CHARS: Final = 64
MAX_METADATA_STRING_CHARS: Final = 256
MAX_METADATA_BYTES: Final = 4096
MAX_FUTURE_SKEW: Final = timedelta(days=1)
MAX_EVENT_AGE: Final = timedelta(days=400)
MAX_TIMESTAMP_CHARS: Final = 64

#: Words that, as part of a field name, say the field carries prompt or answer content.
CONTENT_WORDS: Final = frozenset(
    {
        "prompt", "prompts", "content", "contents", "text", "texts", "completion", "completions",
        "response", "responses", "message", "messages", "input", "inputs", "output", "outputs",
        "query", "queries", "body", "answer", "answers", "reply", "replies", "question", "questions",
        "transcript", "conversation", "conversations", "chat", "snippet", "snippets", "clipboard",
        "selection", "instruction", "instructions", "document", "attachment", "attachments",
    }
)
#: Content words distinctive enough to spot inside run-together names such as "userprompt".
CONTENT_STEMS: Final = ("prompt", "completion", "messages", "transcript", "conversation", "clipboard")
#: A last word that makes a content-named field a measure ("prompt_length"), allowed when its value is a number.
MEASURE_WORDS: Final = frozenset(
    {"length", "len", "count", "size", "chars", "characters", "tokens", "bytes", "words", "lines", "ms"}
)
#: A last word that makes a content-named field a label ("conversation_id", "prompt_type"), allowed
#: when its value is a number or a single short token (no spaces), which cannot hold a sentence.
LABEL_WORDS: Final = frozenset({"id", "ids", "uuid", "hash", "type", "kind", "format", "mode", "lang", "language"})
MAX_LABEL_CHARS: Final = 64
_LABEL_VALUE = re.compile(rf"^\S{{0,{MAX_LABEL_CHARS}}}$")

LOG_FIELDS: Final = frozenset(
    {
        "type", "id", "timestamp", "tool_name", "tool_type", "risk_level", "prompt_length",
        "detected_entity_types", "entity_count", "was_sanitized", "log_metadata", "user_id",
        "device_id", "organization_id",
    }
)
#: The stable set of protocol error codes and what each means (docs/protocol.md lists them too).
#: ``closes`` codes end the connection after the error line; the others skip the one line.
ERROR_CODES: Final = {
    "invalid_json": "the line is not UTF-8 JSON, is nested too deeply, or is not a JSON object",
    "line_too_long": "the line is longer than INGEST_MAX_LINE_BYTES; it was discarded up to its newline",
    "unknown_type": "the message has no type, or a type the server does not know",
    "invalid_event": "a log event failed validation (the message says which field and why)",
    "content_not_allowed": "a field may carry prompt content; the event was refused and nothing of it stored",
    "unexpected_hello": "a second hello on a connection that already said hello",
    "hello_required": "the first message was not a hello (closes)",
    "invalid_hello": "the hello is malformed (closes)",
    "unauthorized": "wrong or revoked token, or unknown organisation (closes)",
    "device_disabled": "the device is switched off in the console (closes)",
    "device_conflict": "the device id is registered to another organisation (closes)",
    "hello_timeout": "no hello within INGEST_HELLO_TIMEOUT_SECONDS (closes)",
    "idle_timeout": "no complete line within INGEST_IDLE_TIMEOUT_SECONDS (closes)",
    "overloaded": "the server has INGEST_MAX_CONNECTIONS connections already (closes)",
    "unavailable": "the database cannot be reached right now; retry later (closes during hello)",
    "shutting_down": "the server is stopping; what was acknowledged is stored; reconnect later (closes)",
    "internal_error": "an unexpected server fault; the event was not stored",
}
CLOSING_CODES: Final = frozenset(
    {
        "hello_required",
        "invalid_hello",
        "unauthorized",
        "device_disabled",
        "device_conflict",
        "hello_timeout",
        "idle_timeout",
        "overloaded",
        "unavailable",
        "shutting_down",
    }
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_WORDS = re.compile(r"[^a-z0-9]+")


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


# --- content detection -------------------------------------------------------------------------


def _name_words(name: str) -> list[str]:
    return [word for word in _WORDS.split(_CAMEL.sub(r"\1_\2", name).lower()) if word]


@functools.lru_cache(maxsize=4096)
def _classify_name(name: str) -> tuple[bool, str | None]:
    """(mentions content, "measure" or "label" if its last word qualifies it); names repeat, so cached."""
    words = _name_words(name)
    if not words:
        return False, None
    mentions_content = any(word in CONTENT_WORDS for word in words) or any(
        stem in word for word in words for stem in CONTENT_STEMS
    )
    qualifier = None
    if len(words) > 1 and words[-1] in MEASURE_WORDS:
        qualifier = "measure"
    elif len(words) > 1 and words[-1] in LABEL_WORDS:
        qualifier = "label"
    return mentions_content, qualifier


def is_content_field(name: str, value: object) -> bool:
    """True if a field of this name (and value) would carry prompt or answer content.

    ``prompt_length: 812`` is a measure and ``conversation_id: "c-81f2"`` a label, both allowed;
    ``prompt_length: "…"`` or ``conversation_id: "my salary is…"`` are content.
    """
    mentions_content, qualifier = _classify_name(name[:200])
    if not mentions_content:
        return False
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if qualifier == "measure":
        return not is_number
    if qualifier == "label":
        return not (is_number or value is None or (isinstance(value, str) and _LABEL_VALUE.match(value)))
    return True


def find_content_field(message: dict[str, Any], *, allowed: frozenset[str] = LOG_FIELDS) -> str | None:
    """The first field (``log_metadata.x`` for nested ones) that carries content, or None."""
    return _find_content(message, message.keys() - allowed if allowed else message.keys())


def _find_content(message: dict[str, Any], names: Iterable[str]) -> str | None:
    """:func:`find_content_field` once the names not allowed at the top level are known."""
    for name in names:
        if is_content_field(name, message[name]):
            return name
    metadata = message.get("log_metadata")
    if isinstance(metadata, dict):
        found = _find_nested_content(metadata, "log_metadata", depth=0)
        if found is not None:
            return found
    return None


def _find_nested_content(value: dict[str, Any], path: str, *, depth: int) -> str | None:
    for name, item in value.items():
        if is_content_field(str(name), item):
            return f"{path}.{name}"
        # Hot path: a flat metadata object (the usual case) builds no path strings.
        if isinstance(item, dict) and depth < 8:
            found = _find_nested_content(item, f"{path}.{name}", depth=depth + 1)
            if found is not None:
                return found
        elif isinstance(item, list) and depth < 8:
            for element in item:
                if isinstance(element, dict):
                    found = _find_nested_content(element, f"{path}.{name}", depth=depth + 1)
                    if found is not None:
                        return found
    return None


# --- field checks --------------------------------------------------------------------------------


def _text(message: dict[str, Any], name: str, *, max_chars: int, required: bool = True) -> str | None:
    value = message.get(name)
    if value is None:
        if required:
            raise invalid(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise invalid(f"{name} must be a string; got {_kind(value)}")
    if not value.strip():
        raise invalid(f"{name} must not be empty")
    if len(value) > max_chars:
        raise invalid(f"{name} must be at most {max_chars} characters; got {len(value)}")
    if _CONTROL.search(value):
        raise invalid(f"{name} must not contain control characters")
    return value


def _choice(message: dict[str, Any], name: str, choices: tuple[str, ...]) -> str:
    value = message.get(name)
    if value is None:
        raise invalid(f"{name} is required (one of {', '.join(choices)})")
    if value not in choices:
        shown = repr(value) if isinstance(value, str) and len(value) <= 40 else _kind(value)
        raise invalid(f"{name} must be one of {', '.join(choices)}; got {shown}")
    return str(value)


def _whole(message: dict[str, Any], name: str, *, maximum: int, default: int) -> int:
    value = message.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"{name} must be a whole number; got {_kind(value)}")
    if value < 0:
        raise invalid(f"{name} must not be negative; got {value}")
    if value > maximum:
        raise invalid(f"{name} must be at most {maximum}; got {value}")
    return value


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the string {value[:40]!r}" if len(value) <= 40 else "a long string"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def parse_event_id(value: object) -> uuid.UUID:
    """The agent's event id: a UUID string."""
    if value is None:
        raise invalid("id is required (a UUID the agent generates, e.g. from uuid4)")
    if not isinstance(value, str) or len(value) > 45:
        raise invalid(f"id must be a UUID string; got {_kind(value)}")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise invalid(f"id must be a UUID; got {value!r}") from None


def parse_timestamp(value: object, *, now: datetime | None = None) -> datetime:
    """An ISO-8601 time with ``Z`` or an offset, not more than a day ahead nor 400 days old."""
    if value is None:
        raise invalid("timestamp is required (ISO-8601 with Z or an offset, e.g. 2026-11-20T10:00:00Z)")
    if not isinstance(value, str) or len(value) > MAX_TIMESTAMP_CHARS:
        raise invalid(f"timestamp must be an ISO-8601 string; got {_kind(value)}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise invalid(f"timestamp must be ISO-8601 like 2026-11-20T10:00:00Z; got {value!r}") from None
    if moment.tzinfo is None:
        raise invalid(f"timestamp must say its time zone (Z or +01:00); got {value!r}")
    moment = as_utc(moment)
    now = now or utcnow()
    if moment > now + MAX_FUTURE_SKEW:
        raise invalid(f"timestamp {value!r} is more than a day in the future; is the device clock right?")
    if moment < now - MAX_EVENT_AGE:
        raise invalid(f"timestamp {value!r} is more than {MAX_EVENT_AGE.days} days old")
    return moment


def _entity_types(message: dict[str, Any]) -> list[str]:
    value = message.get("detected_entity_types", [])
    if not isinstance(value, list):
        raise invalid(f"detected_entity_types must be a list of names; got {_kind(value)}")
    if len(value) > MAX_ENTITY_TYPES:
        raise invalid(f"detected_entity_types may list at most {MAX_ENTITY_TYPES} types; got {len(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise invalid(f"detected_entity_types[{index}] must be a non-empty string; got {_kind(item)}")
        if len(item) > MAX_ENTITY_TYPE_CHARS or _CONTROL.search(item):
            raise invalid(
                f"detected_entity_types[{index}] must be at most {MAX_ENTITY_TYPE_CHARS} printable characters"
            )
    return list(value)


@functools.lru_cache(maxsize=4096)
def _metadata_key_size(key: str) -> int | None:
    """What a short metadata key adds to the size estimate, or None if it is not valid; keys repeat, so cached."""
    if not key.strip() or _CONTROL.search(key):
        return None
    return len(key.encode()) + 6


def _metadata(message: dict[str, Any]) -> dict[str, Any]:
    value = message.get("log_metadata", {})
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"log_metadata must be an object; got {_kind(value)}")
    if len(value) > MAX_METADATA_KEYS:
        raise invalid(f"log_metadata may have at most {MAX_METADATA_KEYS} keys; got {len(value)}")
    size = 2
    for key, item in value.items():
        # Long keys are refused before the cache, so it only ever holds short strings.
        key_size = _metadata_key_size(key) if len(key) <= MAX_METADATA_KEY_CHARS else None
        if key_size is None:
            raise invalid(f"log_metadata keys must be 1-{MAX_METADATA_KEY_CHARS} printable characters")
        if isinstance(item, dict | list):
            raise invalid(f"log_metadata.{key} must be a string, number, true/false or null (it must be flat)")
        if isinstance(item, str):
            if len(item) > MAX_METADATA_STRING_CHARS:
                raise invalid(
                    f"log_metadata.{key} must be at most {MAX_METADATA_STRING_CHARS} characters; got {len(item)}"
                )
            if "\x00" in item:
                raise invalid(f"log_metadata.{key} must not contain NUL characters")
            size += len(item) if item.isascii() else len(item.encode())
        elif isinstance(item, float) and item != item:
            raise invalid(f"log_metadata.{key} must be a finite number")
        else:
            size += 24
        size += key_size
    if size > MAX_METADATA_BYTES:
        raise invalid(f"log_metadata must be at most {MAX_METADATA_BYTES} bytes in all; got about {size}")
    return value


# --- messages ------------------------------------------------------------------------------------


def validate_hello(message: dict[str, Any]) -> Hello:
    """Check a hello (its ``type`` already read); raise EventError(code="invalid_hello")."""
    content = find_content_field(message, allowed=frozenset())
    if content is not None:
        raise EventError("content_not_allowed", f"field {content!r} may carry prompt content; it is not accepted")
    try:
        try:
            organization_id = validate_organization_id(message.get("organization_id"))
        except ConfigError as error:
            raise invalid(str(error)) from None
        token = message.get("token")
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise invalid("token must be the organisation's ingest token (a string)")
        device_id = _text(message, "device_id", max_chars=MAX_DEVICE_ID_CHARS)
        user_id = _text(message, "user_id", max_chars=MAX_USER_ID_CHARS)
        device_type = _choice(message, "device_type", DEVICE_TYPES)
        agent_version = _text(message, "agent_version", max_chars=MAX_AGENT_VERSION_CHARS, required=False)
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


def validate_log(message: dict[str, Any], *, hello: Hello, now: datetime | None = None) -> dict[str, Any]:
    """Check a log event and return the row to store (columns of ``log_entries``).

    Raises EventError with code ``content_not_allowed`` or ``invalid_event``.
    """
    extra = message.keys() - LOG_FIELDS
    content = _find_content(message, extra)
    if content is not None:
        raise EventError(
            "content_not_allowed",
            f"field {content!r} may carry prompt content; events carry metadata only, so nothing of it was stored",
        )
    if extra:
        unknown = sorted(extra)
        shown = ", ".join(repr(name[:40]) for name in unknown[:5])
        raise invalid(f"unknown field {shown}; put extra details in log_metadata")
    event_id = parse_event_id(message.get("id"))
    for name in ("device_id", "organization_id"):
        if name in message and message[name] != getattr(hello, name):
            raise invalid(f"{name} comes from the hello ({getattr(hello, name)!r}); got {message[name]!r}")
    user_id = _text(message, "user_id", max_chars=MAX_USER_ID_CHARS, required=False) or hello.user_id
    was_sanitized = message.get("was_sanitized", False)
    if not isinstance(was_sanitized, bool):
        raise invalid(f"was_sanitized must be true or false; got {_kind(was_sanitized)}")
    return {
        "id": event_id,
        "timestamp": parse_timestamp(message.get("timestamp"), now=now),
        "device_id": hello.device_id,
        "user_id": user_id,
        "organization_id": hello.organization_id,
        "tool_name": _text(message, "tool_name", max_chars=MAX_TOOL_NAME_CHARS),
        "tool_type": _choice(message, "tool_type", TOOL_TYPES),
        "risk_level": _choice(message, "risk_level", RISK_LEVELS),
        "prompt_length": _whole(message, "prompt_length", maximum=MAX_PROMPT_LENGTH, default=0),
        "detected_entity_types": _entity_types(message),
        "entity_count": _whole(message, "entity_count", maximum=MAX_ENTITY_COUNT, default=0),
        "was_sanitized": was_sanitized,
        "log_metadata": _metadata(message),
    }
