"""The ingest protocol without I/O: lines in, typed messages or a ProtocolError out, and every answer's bytes.

Nothing here reads a socket or a database. The connection (ingest/connection.py) feeds it
lines from the framing and writes what it returns, so a unit test drives the whole
vocabulary with plain bytes: :func:`parse_line` turns a line into a JSON object,
:func:`check_hello` and :func:`check_log` turn messages into a :class:`~db.event_schema.Hello`
or an :class:`EventRow`, :func:`refuse_type` answers a message of a type not expected here,
and the ``*_line`` builders make each answer the server sends (welcome, config, pong, ack,
error). Every refusal is one :class:`ProtocolError`; its ``code`` is one of
``db.event_schema.ERROR_CODES``. :class:`EventTimes` keeps a connection's window of accepted
timestamps (its organisation's retention cutoff to a day ahead) current at the cost of a
clock read per event.

Why validation stays in ``db/event_schema.py``: a validated ``log`` message *is* the row
``log_entries`` stores, and its rules (identifiers, vocabulary, metadata key shapes, the
prompt-content refusal) are the stored data's invariants, used by db code too: db/scrub.py
re-checks stored rows with the same identifier rules and db/metadata_keys.py builds its
refusals as its ``EventError``. Moving them here would make ``db/`` import from ``ingest/``,
against the layers. So the rules stay with the data they protect, and this module is the
protocol boundary: it calls them and turns their ``EventError`` (and the database's
``DeviceRefused``, in ingest/server.py) into a :class:`ProtocolError`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Final, TypedDict, cast

import orjson

from db.base import utcnow
from db.event_schema import (
    CLOSING_CODES,
    MAX_EVENT_AGE,
    AcceptedTimes,
    EventError,
    Hello,
    validate_hello,
    validate_log,
)
from db.metadata_keys import Shape
from db.settings import IngestLimits
from ingest.framing import TOO_LONG, TooLong

#: The message types an agent may send.
MESSAGE_TYPES: Final = ("hello", "log", "config", "ping")
#: Longest event or ping id echoed back in an answer (a longer one is left out).
MAX_ECHOED_ID_CHARS: Final = 64
#: How often a connection re-reads its organisation's retention through the config path: a change
#: made in the console applies to connected agents within this (read when an EventTimes is made).
RETENTION_REFRESH_SECONDS: Final = 30.0
#: How long a re-read of the retention may take before the last one is kept until the next period.
RETENTION_REFRESH_TIMEOUT_SECONDS: Final = 2.0
#: How often the accepted window moves with the clock: a timestamp this close to a bound may go either way.
WINDOW_SLIDE_SECONDS: Final = 1.0


class ProtocolError(Exception):
    """A refusal the client is told about as one ``error`` line, or, with ``code`` None, a silent close.

    ``code`` is one of ``db.event_schema.ERROR_CODES``; :attr:`closes` says whether the
    connection ends after the error line (the other codes cost the one line only; before the
    hello is accepted, every refusal closes).
    ``event_id`` is the id of the refused event, echoed back when it is a short string.
    """

    def __init__(self, code: str | None, message: str = "", *, event_id: object = None) -> None:
        super().__init__(message or code or "connection closed")
        self.code = code
        self.message = message
        self.event_id = event_id

    @property
    def closes(self) -> bool:
        """True if the connection ends after this error (always, for a silent close)."""
        return self.code is None or self.code in CLOSING_CODES

    def __repr__(self) -> str:
        return f"ProtocolError({self.code!r}, {self.message!r})"


class EventRow(TypedDict):
    """A checked ``log`` message: the columns of ``log_entries`` plus the id to acknowledge it under."""

    id: uuid.UUID
    timestamp: datetime
    device_id: str
    user_id: str
    organization_id: str
    tool_name: str
    tool_type: str
    risk_level: str
    prompt_length: int
    detected_entity_types: list[str]
    entity_count: int
    was_sanitized: bool
    log_metadata: dict[str, Any]
    #: The event id exactly as the agent sent it (upper case, braces, urn:uuid: …): acks echo it.
    ack_id: str


class EventTimes:
    """Which event timestamps one connection accepts now: its organisation's retention cutoff to a day
    ahead (:class:`~db.event_schema.AcceptedTimes`), kept current without per-event date arithmetic.

    The window is recomputed from the wall clock at most every :data:`WINDOW_SLIDE_SECONDS`, so
    an event costs a monotonic clock read and one comparison. The retention comes from the
    organisation's configuration as agents get it (``log_retention_days`` of the welcome and of
    each ``config`` answer, :meth:`follow`); :meth:`refresh_due` says, once every
    :data:`RETENTION_REFRESH_SECONDS`, that the connection should re-read it (:meth:`refresh`),
    so a change in the console reaches connected agents within that period without a reconnect.
    """

    __slots__ = ("_accepted", "_clock", "_refresh_at", "_refresh_seconds", "_slide_at", "_wall")

    def __init__(
        self,
        retention_days: int | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = utcnow,
        refresh_seconds: float | None = None,
    ) -> None:
        self._clock = clock
        self._wall = wall
        self._refresh_seconds = RETENTION_REFRESH_SECONDS if refresh_seconds is None else refresh_seconds
        self._refresh_at = clock() + self._refresh_seconds
        self._accepted = AcceptedTimes.at(wall(), retention_days)
        self._slide_at = clock() + WINDOW_SLIDE_SECONDS

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **options: Any) -> EventTimes:
        """The window of an organisation whose configuration (as agents get it) is ``config``."""
        return cls(_retention_days(config), **options)

    @property
    def retention_days(self) -> int | None:
        """The retention the cutoff follows (None: not known, MAX_EVENT_AGE bounds instead)."""
        return self._accepted.retention_days

    def current(self) -> AcceptedTimes:
        """The window now (moved with the clock at most every WINDOW_SLIDE_SECONDS)."""
        now = self._clock()
        if now >= self._slide_at:
            self._slide_at = now + WINDOW_SLIDE_SECONDS
            self._accepted = AcceptedTimes.at(self._wall(), self._accepted.retention_days)
        return self._accepted

    def refresh_due(self) -> bool:
        """True once per RETENTION_REFRESH_SECONDS: time to re-read the retention (a failed re-read waits for
        the next period, so a database that is away costs one attempt per period)."""
        now = self._clock()
        if now < self._refresh_at:
            return False
        self._refresh_at = now + self._refresh_seconds
        return True

    def follow(self, config: Mapping[str, Any]) -> None:
        """Take the retention of ``config`` (the organisation's configuration as agents get it)."""
        days = _retention_days(config)
        self._refresh_at = self._clock() + self._refresh_seconds
        if days != self._accepted.retention_days:
            self._accepted = AcceptedTimes.at(self._wall(), days)
            self._slide_at = self._clock() + WINDOW_SLIDE_SECONDS

    async def refresh(self, read_config: Callable[[], Awaitable[Mapping[str, Any]]]) -> bool:
        """Re-read the configuration through ``read_config`` and follow its retention; False (the last
        retention kept) if that fails or takes longer than RETENTION_REFRESH_TIMEOUT_SECONDS."""
        try:
            async with asyncio.timeout(RETENTION_REFRESH_TIMEOUT_SECONDS):
                config = await read_config()
        except Exception:  # noqa: BLE001 - the database away: the last retention holds until the next try
            return False
        self.follow(config)
        return True


def _retention_days(config: Mapping[str, Any]) -> int | None:
    """``log_retention_days`` of an agent's configuration, or None if it is missing or not a sane number."""
    days = config.get("log_retention_days")
    if type(days) is not int or not 0 < days <= MAX_EVENT_AGE.days:
        return None
    return days


# --- reading -------------------------------------------------------------------------------------


def parse_line(line: bytes | TooLong, max_line_bytes: int) -> dict[str, Any]:
    """The line as a JSON object; ProtocolError ``line_too_long`` or ``invalid_json`` otherwise."""
    if line is TOO_LONG:
        raise ProtocolError(
            "line_too_long",
            f"line longer than {max_line_bytes} bytes; it was discarded up to its newline",
        )
    try:
        message = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        if "UTF-8" in error.msg:
            raise ProtocolError("invalid_json", "the line is not valid UTF-8 text") from None
        if "depth limit" in error.msg or "ecursion" in error.msg:
            raise ProtocolError(
                "invalid_json", f"the line is nested too deeply (column {error.colno})"
            ) from None
        raise ProtocolError(
            "invalid_json", f"the line is not valid JSON: {error.msg} (column {error.colno})"
        ) from None
    if not isinstance(message, dict):
        kind = "a list" if isinstance(message, list) else type(message).__name__.replace("NoneType", "null")
        raise ProtocolError("invalid_json", f'each line must be a JSON object with a "type"; got {kind}')
    return message


def check_hello(message: dict[str, Any]) -> Hello:
    """The first message as a Hello; ProtocolError (closing) ``hello_required``, ``invalid_hello`` or
    ``content_not_allowed`` otherwise."""
    if message.get("type") != "hello":
        raise ProtocolError("hello_required", 'the first message must be {"type":"hello", ...}')
    try:
        return validate_hello(message)
    except EventError as error:
        raise ProtocolError(error.code, error.message) from None


def check_log(
    message: dict[str, Any],
    *,
    hello: Hello,
    metadata_keys: Mapping[str, Shape] | None,
    times: EventTimes | None = None,
) -> EventRow:
    """A ``log`` message as the row to store; ProtocolError ``invalid_event``, ``content_not_allowed`` or
    ``past_retention`` (its timestamp is before the retention cutoff of ``times``).

    Without ``times`` the timestamp is checked against the clock alone (at most a day ahead,
    MAX_EVENT_AGE old). A fault of the validator itself becomes ``internal_error`` for this one
    event, with the fault as the error's ``__cause__`` (the connection logs it and goes on).
    """
    try:
        accepted = times.current() if times is not None else None
        return cast(
            EventRow, validate_log(message, hello=hello, metadata_keys=metadata_keys, accepted=accepted)
        )
    except EventError as error:
        raise ProtocolError(error.code, error.message, event_id=message.get("id")) from None
    except Exception as error:  # a validator bug must cost one event, not the connection
        raise ProtocolError(
            "internal_error",
            "the server could not check this event; it was not stored",
            event_id=message.get("id"),
        ) from error


def refuse_type(kind: object) -> ProtocolError:
    """The refusal of a message whose ``type`` is not one handled after the hello."""
    if kind == "hello":
        return ProtocolError("unexpected_hello", "this connection already said hello")
    types = ", ".join(MESSAGE_TYPES)
    if kind is None:
        return ProtocolError("unknown_type", f'the message has no "type"; use one of {types}')
    shown = repr(kind) if isinstance(kind, str) and len(kind) <= 32 else "of this kind"
    return ProtocolError("unknown_type", f"type {shown} is not one of {types}")


# --- refusals the server decides -----------------------------------------------------------------


def timed_out(code: str, limits: IngestLimits) -> ProtocolError:
    """The closing error of a connection that ran out of time: ``hello_timeout``, ``line_timeout`` or
    ``idle_timeout``."""
    if code == "hello_timeout":
        return ProtocolError(code, f"no hello within {limits.hello_timeout_seconds:g} seconds; closing")
    if code == "line_timeout":
        return ProtocolError(
            code, f"a line did not end within {limits.line_timeout_seconds:g} seconds; closing"
        )
    return ProtocolError(code, f"no complete line for {limits.idle_timeout_seconds:g} seconds; closing")


def unauthorized(organization_id: str) -> ProtocolError:
    """The hello's token is not a live token of its organisation."""
    return ProtocolError(
        "unauthorized",
        f"the token is not valid for organisation {organization_id!r} "
        "(unknown organisation, wrong token or revoked token)",
    )


def hello_unavailable() -> ProtocolError:
    """The hello could not be checked: the database is away."""
    return ProtocolError("unavailable", "the database cannot be reached right now; retry later")


def config_unavailable() -> ProtocolError:
    """A config request could not be answered; the connection goes on."""
    return ProtocolError(
        "unavailable", "the configuration cannot be read right now; keep the last one and retry"
    )


def server_full() -> ProtocolError:
    """A new connection the server has no room for."""
    return ProtocolError("overloaded", "the server has too many connections; retry later with backoff")


def shed() -> ProtocolError:
    """A connection closed to make room for a new one."""
    return ProtocolError(
        "overloaded", "the server is full and this connection was the least active; retry with backoff"
    )


def token_full(max_connections_per_token: int) -> ProtocolError:
    """A hello whose token already holds its share of connections."""
    return ProtocolError(
        "overloaded",
        f"this ingest token already has {max_connections_per_token} connections on this "
        "server (INGEST_MAX_CONNECTIONS_PER_TOKEN); retry later with backoff",
    )


def replaced() -> ProtocolError:
    """The older connection of a device that connected again."""
    return ProtocolError("replaced", "a newer connection of this device said hello; this one is closed")


def not_accepting() -> ProtocolError:
    """A new connection during shutdown."""
    return ProtocolError("shutting_down", "the server is stopping; reconnect later")


def stopping() -> ProtocolError:
    """The goodbye of every connection at shutdown, once what it sent is acknowledged (or the grace is
    over)."""
    return ProtocolError("shutting_down", "the server is stopping; acknowledged events are stored")


def store_fault(event_id: str) -> ProtocolError:
    """An event the writer could not store for an unexpected reason (a bug): the agent resends it."""
    return ProtocolError(
        "internal_error", "the server could not store this event; resend it later", event_id=event_id
    )


def refused_by_database(event_id: str, reason: str) -> ProtocolError:
    """An event the database refused (a constraint the validator let through): never resent."""
    return ProtocolError("invalid_event", f"the database refused the event: {reason}", event_id=event_id)


# --- answers ---------------------------------------------------------------------------------------


def welcome_message(config: dict[str, Any], limits: IngestLimits) -> dict[str, Any]:
    """The ``welcome`` answer to a good hello: the configuration and the limits the agent must keep."""
    return {
        "type": "welcome",
        "config": config,
        "limits": {
            "max_line_bytes": limits.max_line_bytes,
            "max_in_flight": limits.max_in_flight_per_connection,
            "idle_timeout_seconds": limits.idle_timeout_seconds,
        },
    }


def config_message(config: dict[str, Any]) -> dict[str, Any]:
    """The answer to a ``config`` request."""
    return {"type": "config", "config": config}


def answer_line(answer: dict[str, Any], limits: IngestLimits) -> bytes:
    """``answer`` (a welcome or a config) as the line to send, newline included, encoded once.

    Raises ProtocolError ``config_too_large`` when it would pass ``max_line_bytes`` or holds
    text that is not Unicode. The console's validators keep every configuration within the
    limit (db/configs.py); this catches one written around them (by SQL).
    """
    try:
        encoded = orjson.dumps(answer)
    except orjson.JSONEncodeError:  # a lone surrogate stored around the validators (SQLite's JSON text)
        raise ProtocolError(
            "config_too_large",
            "the organisation's configuration holds text that is not valid Unicode; "
            "an administrator must fix it",
        ) from None
    if len(encoded) > limits.max_line_bytes:
        raise ProtocolError(
            "config_too_large",
            f"the organisation's configuration makes a {len(encoded):,}-byte line, over the "
            f"{limits.max_line_bytes:,}-byte line limit; an administrator must remove or shorten "
            "custom patterns, monitored tools or metadata keys",
        )
    return encoded + b"\n"


def welcome_line(config: dict[str, Any], limits: IngestLimits) -> bytes:
    """The ``welcome`` line; ProtocolError ``config_too_large`` (the hello is then refused)."""
    return answer_line(welcome_message(config, limits), limits)


def config_line(config: dict[str, Any], limits: IngestLimits) -> bytes:
    """The ``config`` answer line; ProtocolError ``config_too_large`` (the agent keeps its last one)."""
    try:
        return answer_line(config_message(config), limits)
    except ProtocolError as error:
        raise ProtocolError(error.code, f"{error.message}; keep the last configuration") from None


#: The answer to a health probe's ``{"type":"health"}`` (docs/protocol.md), sent before the connection closes.
HEALTH_LINE: Final = b'{"type":"health","status":"ok"}\n'


def pong_line(ping: dict[str, Any]) -> bytes:
    """The answer to a ``ping``: its ``id`` echoed when it is a short string or a number."""
    pong: dict[str, Any] = {"type": "pong"}
    ping_id = ping.get("id")
    if isinstance(ping_id, str | int) and len(str(ping_id)) <= MAX_ECHOED_ID_CHARS:
        pong["id"] = ping_id
    return orjson.dumps(pong) + b"\n"


def ack_line(ids: list[str]) -> bytes:
    """The ``ack`` of events committed (or found already stored), under the ids as the agent sent them."""
    return orjson.dumps({"type": "ack", "ids": ids}) + b"\n"


def error_message(error: ProtocolError, line: int) -> dict[str, Any]:
    """The ``error`` answer: code, message, the line number it answers, the event id when short."""
    answer: dict[str, Any] = {"type": "error", "code": error.code, "message": error.message, "line": line}
    event_id = error.event_id
    if isinstance(event_id, str) and len(event_id) <= MAX_ECHOED_ID_CHARS:
        answer["id"] = event_id
    return answer


def error_line(error: ProtocolError, line: int) -> bytes:
    """:func:`error_message` as the line to send, newline included."""
    return orjson.dumps(error_message(error, line)) + b"\n"
