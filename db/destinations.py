"""Forwarding destinations and their dead letters: what the console reads and changes.

Every change checks the actor in its own transaction (db/rights.py) and is audited; a
secret (HEC token, webhook key, TLS client key) is encrypted before it is stored
(db/secrets.py) and never appears in an audit row (only ``{"changed": true}``), a message
or a log line.

Format × transport combinations offered (:data:`FORMATS_BY_TRANSPORT`):

============================================  ===================
transport                                     formats
============================================  ===================
syslog_tcp, syslog_tls, syslog_udp, relp      json, cef, ocsf
hec                                           json, cef, ocsf
webhook                                       json, ocsf
============================================  ===================

Each destination reads two commit-ordered streams (db/streams.py) through its own cursors,
``forward:<id>:events`` and ``forward:<id>:alerts``, created at the streams' current end.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final
from urllib.parse import urlsplit

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.audit import record_change
from db.base import as_utc, utcnow
from db.commit_order import Stream, visible_bound
from db.configs import get_config
from db.engine import name_in_use, row_for_update
from db.field_lengths import length_problem
from db.identifiers import visible
from db.models import (
    FORWARD_FORMATS,
    FORWARD_TRANSPORTS,
    AlertChange,
    DeadLetter,
    ForwardDestination,
    LogEntry,
    WorkLease,
)
from db.rights import Actor, require_admin
from db.secrets import SecretBox, SecretUnreadable
from db.streams import (
    CursorState,
    Position,
    after_event_condition,
    delete_cursors,
    load_cursor,
    save_cursor,
    start_cursor,
)
from db.vocabulary import RISK_LEVELS

DEAD_LETTER_PAGE_SIZE = 200

SYSLOG_TRANSPORTS: Final = ("syslog_tcp", "syslog_tls", "syslog_udp", "relp")
HTTP_TRANSPORTS: Final = ("hec", "webhook")
#: Which formats each transport offers (the module docstring's table).
FORMATS_BY_TRANSPORT: Final[dict[str, tuple[str, ...]]] = {
    **{transport: ("json", "cef", "ocsf") for transport in SYSLOG_TRANSPORTS},
    "hec": ("json", "cef", "ocsf"),
    "webhook": ("json", "ocsf"),
}
#: Transports that cannot work without a secret (the HEC token, the webhook signing key).
SECRET_REQUIRED: Final = frozenset({"hec", "webhook"})
#: Transports that may carry a secret: the TLS client key (then ``client_cert_file`` is required).
SECRET_OPTIONAL: Final = frozenset({"syslog_tls"})
OCSF_GREEN_REFUSED = "OCSF carries findings; green events are not findings: forward red and amber only"
DEFAULT_SD_ID = "aifw@32473"
MAX_SECRET_CHARS = 16_384
MAX_PATH_CHARS = 1024
MAX_TEXT_OPTION_CHARS = 255
MAX_TIMEOUT_SECONDS = 300

_SYSLOG_OPTIONS: Final = ("sd_id", "app_name", "hostname", "facility", "timeout_seconds")
#: The options each transport accepts; anything else is refused by name.
OPTIONS_BY_TRANSPORT: Final[dict[str, tuple[str, ...]]] = {
    "syslog_tcp": _SYSLOG_OPTIONS,
    "syslog_udp": _SYSLOG_OPTIONS,
    "syslog_tls": (*_SYSLOG_OPTIONS, "ca_file", "client_cert_file", "server_name"),
    "relp": _SYSLOG_OPTIONS,
    "hec": ("hec_ack", "host", "index", "source", "sourcetype", "ca_file", "timeout_seconds"),
    "webhook": ("ca_file", "timeout_seconds"),
}
# RFC 5424 SD-NAME: printable US-ASCII but '=', ' ', ']', '"' (and '@', which ends the name part).
_SD_ID = re.compile(r"[\x21\x23-\x3c\x3e\x3f\x41-\x5c\x5e-\x7e]+@[0-9]+")
_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]+")
_HOST_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?"
)
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


class DestinationError(ValueError):
    """A destination's settings are not valid (the message says why), or it does not exist."""


@dataclass(frozen=True)
class DestinationSpec:
    """What an administrator sets on a destination; ``secret`` None keeps the stored one."""

    name: str
    transport: str
    format: str
    address: str
    options: dict[str, Any] = field(default_factory=dict)
    forward_alerts: bool = True
    event_risk_levels: frozenset[str] = frozenset({"red", "amber"})
    enabled: bool = True
    secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class DestinationLag:
    """How far behind a destination is: events and alert changes not yet delivered, and the oldest."""

    events_behind: int
    alerts_behind: int
    oldest_undelivered_at: datetime | None


# --- cursors ---------------------------------------------------------------------------------------


def events_cursor_name(destination_id: uuid.UUID) -> str:
    return f"forward:{destination_id}:events"


def alerts_cursor_name(destination_id: uuid.UUID) -> str:
    return f"forward:{destination_id}:alerts"


def lease_name(destination_id: uuid.UUID) -> str:
    """The lease its forwarder holds: one forwarder per destination, however many processes."""
    return f"forward:{destination_id}"


# --- validation ------------------------------------------------------------------------------------


def _has_control(value: str) -> bool:
    return any(ord(character) < 0x20 or 0x7F <= ord(character) < 0xA0 for character in value)


def validate_name(name: object) -> str:
    if not isinstance(name, str):
        raise DestinationError("name must be text")
    name = name.strip()
    if not name:
        raise DestinationError("name must not be blank")
    if (problem := length_problem(ForwardDestination.name, name)) is not None:
        raise DestinationError(problem)
    if _has_control(name):
        raise DestinationError("name must not contain control characters")
    return name


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return _HOST_NAME.fullmatch(host) is not None


def validate_host_port(address: str) -> str:
    """``host:port`` (IPv6 in brackets, port 1–65535), as syslog and RELP take it."""
    bracketed = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:([0-9]{1,5})", address)
    plain = re.fullmatch(r"([^:\[\]]+):([0-9]{1,5})", address)
    match = bracketed or plain
    if match is None:
        raise DestinationError(
            f"address must be host:port (an IPv6 address in brackets: [::1]:6514); got {visible(address)!r}"
        )
    host, port = match.group(1), int(match.group(2))
    if bracketed is not None:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise DestinationError(f"address: {visible(host)!r} is not an IPv6 address") from None
    elif not _valid_host(host):
        raise DestinationError(f"address: {visible(host)!r} is not a host name or an IP address")
    if not 1 <= port <= 65535:
        raise DestinationError(f"address: port must be 1–65535; got {port}")
    return address


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_url(address: str) -> str:
    """An https:// URL (http:// only to a loopback host: tests and the demo)."""
    try:
        parts = urlsplit(address)
        host = parts.hostname or ""
        port = parts.port
    except ValueError as error:
        raise DestinationError(f"address is not a URL: {error}") from None
    if parts.scheme not in ("https", "http") or not host:
        raise DestinationError(f"address must be an https:// URL; got {visible(address)!r}")
    if parts.scheme == "http" and not _is_loopback(host):
        raise DestinationError("address must use https:// (http:// only to a loopback host, for tests)")
    if parts.username is not None or parts.password is not None:
        raise DestinationError(
            "address must not carry a user or password: put the secret in the secret field"
        )
    if not _valid_host(host):
        raise DestinationError(f"address: {visible(host)!r} is not a host name or an IP address")
    if port is not None and not 1 <= port <= 65535:
        raise DestinationError(f"address: port must be 1–65535; got {port}")
    return address


def validate_address(transport: str, address: object) -> str:
    if not isinstance(address, str):
        raise DestinationError("address must be text")
    address = address.strip()
    if not address:
        raise DestinationError("address must not be blank")
    if (problem := length_problem(ForwardDestination.address, address)) is not None:
        raise DestinationError(problem)
    if _has_control(address) or " " in address:
        raise DestinationError("address must not contain spaces or control characters")
    if transport in HTTP_TRANSPORTS:
        return validate_url(address)
    return validate_host_port(address)


def _text_option(name: str, value: object, *, limit: int, printable_ascii: bool = False) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DestinationError(f"option {name} must be non-empty text")
    value = value.strip()
    if len(value) > limit:
        raise DestinationError(f"option {name} must be at most {limit:,} characters; got {len(value):,}")
    if printable_ascii and _PRINTABLE_ASCII.fullmatch(value) is None:
        raise DestinationError(f"option {name} must be printable ASCII without spaces")
    if _has_control(value):
        raise DestinationError(f"option {name} must not contain control characters")
    return value


def _sd_id(value: object) -> str:
    if not isinstance(value, str) or len(value) > 32 or _SD_ID.fullmatch(value) is None:
        raise DestinationError(
            f"option sd_id must be NAME@NUMBER (RFC 5424 SD-ID, at most 32 characters, no '=', ']', '\"' "
            f"or spaces), like {DEFAULT_SD_ID}; got {visible(value)!r}"
        )
    return value


def _facility(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 23:
        raise DestinationError(f"option facility must be a whole number 0–23; got {visible(value)!r}")
    return value


def _timeout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_TIMEOUT_SECONDS:
        raise DestinationError(
            f"option timeout_seconds must be a number of seconds above 0, at most {MAX_TIMEOUT_SECONDS}; "
            f"got {visible(value)!r}"
        )
    return float(value)


def _boolean(name: str) -> Callable[[object], bool]:
    def check(value: object) -> bool:
        if not isinstance(value, bool):
            raise DestinationError(f"option {name} must be true or false; got {visible(value)!r}")
        return value

    return check


def _server_name(value: object) -> str:
    host = _text_option("server_name", value, limit=253)
    if not _valid_host(host):
        raise DestinationError(f"option server_name: {visible(host)!r} is not a host name")
    return host


_OPTION_CHECKS: Final[dict[str, Callable[[object], Any]]] = {
    "sd_id": _sd_id,
    "app_name": lambda value: _text_option("app_name", value, limit=48, printable_ascii=True),
    "hostname": lambda value: _text_option("hostname", value, limit=255, printable_ascii=True),
    "facility": _facility,
    "ca_file": lambda value: _text_option("ca_file", value, limit=MAX_PATH_CHARS),
    "client_cert_file": lambda value: _text_option("client_cert_file", value, limit=MAX_PATH_CHARS),
    "server_name": _server_name,
    "hec_ack": _boolean("hec_ack"),
    "timeout_seconds": _timeout,
    "host": lambda value: _text_option("host", value, limit=MAX_TEXT_OPTION_CHARS),
    "index": lambda value: _text_option("index", value, limit=MAX_TEXT_OPTION_CHARS),
    "source": lambda value: _text_option("source", value, limit=MAX_TEXT_OPTION_CHARS),
    "sourcetype": lambda value: _text_option("sourcetype", value, limit=MAX_TEXT_OPTION_CHARS),
}


def validate_options(transport: str, options: object) -> dict[str, Any]:
    if not isinstance(options, dict):
        raise DestinationError("options must be a mapping of names to values")
    allowed = OPTIONS_BY_TRANSPORT[transport]
    checked: dict[str, Any] = {}
    for name, value in options.items():
        if name not in allowed:
            raise DestinationError(
                f"option {visible(name)!r} is not known for {transport}; known: {', '.join(allowed)}"
            )
        checked[name] = _OPTION_CHECKS[name](value)
    return checked


@dataclass(frozen=True)
class _Checked:
    name: str
    transport: str
    format: str
    address: str
    options: dict[str, Any]
    forward_alerts: bool
    event_risk_levels: list[str]
    enabled: bool


def validate_spec(spec: DestinationSpec, *, has_stored_secret: bool = False) -> _Checked:
    """Check every field of ``spec`` (but the name's uniqueness); DestinationError says what is wrong."""
    name = validate_name(spec.name)
    if spec.transport not in FORWARD_TRANSPORTS:
        raise DestinationError(
            f"transport must be one of {', '.join(FORWARD_TRANSPORTS)}; got {visible(spec.transport)!r}"
        )
    offered = FORMATS_BY_TRANSPORT[spec.transport]
    if spec.format not in FORWARD_FORMATS or spec.format not in offered:
        raise DestinationError(
            f"format {visible(spec.format)!r} is not offered over {spec.transport}; "
            f"choose {', '.join(offered)}"
        )
    levels = set(spec.event_risk_levels)
    if unknown := sorted(levels - set(RISK_LEVELS)):
        raise DestinationError(
            f"unknown risk levels {', '.join(map(repr, unknown))}; known: {', '.join(RISK_LEVELS)}"
        )
    if spec.format == "ocsf" and "green" in levels:
        raise DestinationError(OCSF_GREEN_REFUSED)
    if not spec.forward_alerts and not levels:
        raise DestinationError("forward alerts, events of some risk levels, or both")
    address = validate_address(spec.transport, spec.address)
    options = validate_options(spec.transport, spec.options)
    secret_given = spec.secret is not None
    if secret_given and (not isinstance(spec.secret, str) or not spec.secret.strip()):
        raise DestinationError("the secret must not be blank")
    if secret_given and len(spec.secret or "") > MAX_SECRET_CHARS:
        raise DestinationError(f"the secret must be at most {MAX_SECRET_CHARS:,} characters")
    will_have_secret = secret_given or has_stored_secret
    if spec.transport in SECRET_REQUIRED and not will_have_secret:
        what = "the HEC token" if spec.transport == "hec" else "the webhook signing key"
        raise DestinationError(f"{spec.transport} needs a secret: enter {what}")
    if spec.transport in SECRET_OPTIONAL and secret_given and "client_cert_file" not in options:
        raise DestinationError(
            "a TLS client key (the secret) needs its certificate: set option client_cert_file"
        )
    if secret_given and spec.transport not in SECRET_REQUIRED | SECRET_OPTIONAL:
        raise DestinationError(f"{spec.transport} takes no secret")
    if not isinstance(spec.forward_alerts, bool) or not isinstance(spec.enabled, bool):
        raise DestinationError("forward_alerts and enabled must be true or false")
    return _Checked(
        name=name,
        transport=spec.transport,
        format=spec.format,
        address=address,
        options=options,
        forward_alerts=spec.forward_alerts,
        event_risk_levels=[level for level in RISK_LEVELS if level in levels],
        enabled=spec.enabled,
    )


async def _check_name_free(
    session: AsyncSession, *, organization_id: str, name: str, except_id: uuid.UUID | None = None
) -> None:
    if await name_in_use(
        session, ForwardDestination, organization_id=organization_id, name=name, other_than=except_id
    ):
        raise DestinationError(f"organisation {organization_id!r} already has a destination named {name!r}")


def _settings_of(row: ForwardDestination) -> dict[str, Any]:
    """The audited fields (never the secret)."""
    return {
        "organization_id": row.organization_id,
        "name": row.name,
        "transport": row.transport,
        "format": row.format,
        "address": row.address,
        "options": dict(row.options or {}),
        "forward_alerts": row.forward_alerts,
        "event_risk_levels": list(row.event_risk_levels or []),
        "enabled": row.enabled,
    }


def _updated_by(actor: Actor) -> str:
    if (problem := length_problem(ForwardDestination.updated_by, actor.name)) is not None:
        raise DestinationError(problem)
    return actor.name


# --- reading ---------------------------------------------------------------------------------------


async def list_destinations(
    *, session: AsyncSession, organization_id: str | None = None, enabled_only: bool = False
) -> Sequence[ForwardDestination]:
    """Destinations by organisation and name (``enabled_only``: what the forwarders run)."""
    statement = select(ForwardDestination).order_by(
        ForwardDestination.organization_id, func.lower(ForwardDestination.name)
    )
    if organization_id is not None:
        statement = statement.where(ForwardDestination.organization_id == organization_id)
    if enabled_only:
        statement = statement.where(ForwardDestination.enabled.is_(True))
    return (await session.scalars(statement.execution_options(populate_existing=True))).all()


async def find_destination(*, session: AsyncSession, destination_id: uuid.UUID) -> ForwardDestination | None:
    """The destination as stored now, or None."""
    return await session.get(ForwardDestination, destination_id, populate_existing=True)


async def get_destination(*, session: AsyncSession, destination_id: uuid.UUID) -> ForwardDestination:
    """Raises DestinationError if there is no such destination."""
    row = await find_destination(session=session, destination_id=destination_id)
    if row is None:
        raise DestinationError(f"no destination with id {destination_id}")
    return row


# --- changes ---------------------------------------------------------------------------------------


async def create_destination(
    *, session: AsyncSession, organization_id: str, spec: DestinationSpec, actor: Actor, secrets: SecretBox
) -> ForwardDestination:
    """Validate and add a destination (an administrator now), audited (``destination.create``).

    Its cursors start at the current end of both streams: history is not forwarded.
    """
    await require_admin(session=session, actor=actor, what="add forwarding destinations")
    updated_by = _updated_by(actor)
    organization = await get_config(session=session, organization_id=organization_id)
    if organization is None:
        raise DestinationError(f"organisation {visible(organization_id)!r} does not exist")
    checked = validate_spec(spec)
    await _check_name_free(session, organization_id=organization.organization_id, name=checked.name)
    now = utcnow()
    row = ForwardDestination(
        organization_id=organization.organization_id,
        name=checked.name,
        transport=checked.transport,
        format=checked.format,
        address=checked.address,
        options=checked.options,
        secret_ciphertext=secrets.encrypt(spec.secret) if spec.secret is not None else None,
        forward_alerts=checked.forward_alerts,
        event_risk_levels=checked.event_risk_levels,
        enabled=checked.enabled,
        state="active" if checked.enabled else "disabled",
        delivered_count=0,
        created_at=now,
        updated_at=now,
        updated_by=updated_by,
    )
    session.add(row)
    await session.flush()
    await start_cursor(session, name=events_cursor_name(row.id), stream="log_entries")
    await start_cursor(session, name=alerts_cursor_name(row.id), stream="alert_changes")
    changes: dict[str, Any] = {name: {"after": value} for name, value in _settings_of(row).items()}
    if row.secret_ciphertext is not None:
        changes["secret"] = {"changed": True}
    await record_change(
        session=session,
        actor=actor,
        action="destination.create",
        entity_type="destination",
        entity_id=str(row.id),
        changes=changes,
    )
    return row


async def _locked_destination(session: AsyncSession, destination_id: uuid.UUID) -> ForwardDestination:
    row = await row_for_update(session, ForwardDestination, destination_id)
    if row is None:
        raise DestinationError(f"no destination with id {destination_id}")
    return row


async def _restart_at_end(session: AsyncSession, name: str, stream: Stream) -> None:
    await save_cursor(session, name=name, position=Position(await visible_bound(session, stream)))


async def update_destination(
    *,
    session: AsyncSession,
    destination_id: uuid.UUID,
    spec: DestinationSpec,
    actor: Actor,
    secrets: SecretBox,
) -> tuple[ForwardDestination, dict[str, dict[str, Any]]]:
    """Validate and apply ``spec``; audited (``destination.update``; a new secret shows as changed only).

    A transport that takes no secret drops the stored one. The cursors stay where they are.
    """
    await require_admin(session=session, actor=actor, what="change forwarding destinations")
    updated_by = _updated_by(actor)
    row = await _locked_destination(session, destination_id)
    keeps_secret = spec.transport in SECRET_REQUIRED | SECRET_OPTIONAL
    checked = validate_spec(spec, has_stored_secret=keeps_secret and row.secret_ciphertext is not None)
    if spec.transport in SECRET_OPTIONAL and spec.secret is None and row.secret_ciphertext is not None:
        if "client_cert_file" not in checked.options:
            raise DestinationError(
                "a TLS client key (the secret) needs its certificate: set option client_cert_file"
            )
    await _check_name_free(session, organization_id=row.organization_id, name=checked.name, except_id=row.id)
    before = _settings_of(row)
    row.name = checked.name
    row.transport = checked.transport
    row.format = checked.format
    row.address = checked.address
    row.options = checked.options
    row.forward_alerts = checked.forward_alerts
    row.event_risk_levels = checked.event_risk_levels
    if row.enabled != checked.enabled:
        row.enabled = checked.enabled
        row.state = "active" if checked.enabled else "disabled"
    # A stream the destination did not take was not read: taking it up starts at its end, as a new
    # destination does, rather than sending what passed meanwhile.
    if checked.forward_alerts and not before["forward_alerts"]:
        await _restart_at_end(session, alerts_cursor_name(row.id), "alert_changes")
    if checked.event_risk_levels and not before["event_risk_levels"]:
        await _restart_at_end(session, events_cursor_name(row.id), "log_entries")
    changes: dict[str, dict[str, Any]] = {
        name: {"before": before[name], "after": value}
        for name, value in _settings_of(row).items()
        if before[name] != value
    }
    if spec.secret is not None:
        row.secret_ciphertext = secrets.encrypt(spec.secret)
        changes["secret"] = {"changed": True}
    elif not keeps_secret and row.secret_ciphertext is not None:
        row.secret_ciphertext = None
        changes["secret"] = {"changed": True}
    if changes:
        row.updated_at = utcnow()
        row.updated_by = updated_by
        await session.flush()
        await record_change(
            session=session,
            actor=actor,
            action="destination.update",
            entity_type="destination",
            entity_id=str(row.id),
            changes=changes,
        )
    return row, changes


async def set_destination_enabled(
    *, session: AsyncSession, destination_id: uuid.UUID, enabled: bool, actor: Actor
) -> ForwardDestination:
    """Switch a destination on or off (its forwarder stops within a round), audited
    (``destination.enable`` / ``destination.disable``); nothing happens if it already is."""
    await require_admin(session=session, actor=actor, what="enable or disable forwarding destinations")
    updated_by = _updated_by(actor)
    row = await _locked_destination(session, destination_id)
    if row.enabled == enabled:
        return row
    row.enabled = enabled
    row.state = "active" if enabled else "disabled"
    row.updated_at = utcnow()
    row.updated_by = updated_by
    await session.flush()
    await record_change(
        session=session,
        actor=actor,
        action="destination.enable" if enabled else "destination.disable",
        entity_type="destination",
        entity_id=str(row.id),
        changes={"enabled": {"before": not enabled, "after": enabled}},
    )
    return row


async def delete_destination(
    *, session: AsyncSession, destination_id: uuid.UUID, actor: Actor
) -> ForwardDestination:
    """Delete a destination with its cursors and dead letters, audited (``destination.delete``)."""
    await require_admin(session=session, actor=actor, what="delete forwarding destinations")
    row = await _locked_destination(session, destination_id)
    settings = _settings_of(row)
    await session.execute(delete(DeadLetter).where(DeadLetter.destination_id == row.id))
    await delete_cursors(session, names=[events_cursor_name(row.id), alerts_cursor_name(row.id)])
    # Without its lease row, a forwarder still running for it fails its next fence and writes nothing.
    await session.execute(delete(WorkLease).where(WorkLease.name == lease_name(row.id)))
    await session.delete(row)
    await session.flush()
    await record_change(
        session=session,
        actor=actor,
        action="destination.delete",
        entity_type="destination",
        entity_id=str(row.id),
        changes={name: {"before": value} for name, value in settings.items()},
    )
    return row


# --- lag and retention -----------------------------------------------------------------------------


def _after_alert_change(position: Position) -> Any:
    after_id = int(position.item_id) if position.item_id else 0
    seq = AlertChange.commit_seq
    return and_(seq >= position.seq, or_(seq > position.seq, AlertChange.id > after_id))


def _undelivered_events(destination: ForwardDestination, cursor: CursorState) -> Any:
    """The condition on ``log_entries`` for the events this destination wants and has not passed."""
    return and_(
        LogEntry.organization_id == destination.organization_id,
        LogEntry.commit_seq.is_not(None),
        LogEntry.risk_level.in_(list(destination.event_risk_levels)),
        after_event_condition(cursor.position),
    )


async def destination_lag(*, session: AsyncSession, destination: ForwardDestination) -> DestinationLag:
    """Events and alert changes committed after the destination's cursors that its filter wants, and the
    oldest of them (event time, or when the alert changed)."""
    events_behind, alerts_behind = 0, 0
    oldest: list[datetime] = []
    if destination.event_risk_levels:
        cursor = await load_cursor(session, name=events_cursor_name(destination.id))
        if cursor is not None:
            row = (
                await session.execute(
                    select(func.count(), func.min(LogEntry.timestamp)).where(
                        _undelivered_events(destination, cursor)
                    )
                )
            ).one()
            events_behind = int(row[0])
            if row[1] is not None:
                oldest.append(as_utc(row[1]))
    if destination.forward_alerts:
        cursor = await load_cursor(session, name=alerts_cursor_name(destination.id))
        if cursor is not None:
            row = (
                await session.execute(
                    select(func.count(), func.min(AlertChange.changed_at)).where(
                        AlertChange.organization_id == destination.organization_id,
                        AlertChange.commit_seq.is_not(None),
                        _after_alert_change(cursor.position),
                    )
                )
            ).one()
            alerts_behind = int(row[0])
            if row[1] is not None:
                oldest.append(as_utc(row[1]))
    return DestinationLag(
        events_behind=events_behind,
        alerts_behind=alerts_behind,
        oldest_undelivered_at=min(oldest, default=None),
    )


async def _undelivered_conditions(session: AsyncSession, organization_id: str) -> list[Any]:
    """One condition per enabled destination of the organisation that forwards events."""
    conditions = []
    for destination in await list_destinations(
        session=session, organization_id=organization_id, enabled_only=True
    ):
        if not destination.event_risk_levels:
            continue
        cursor = await load_cursor(session, name=events_cursor_name(destination.id))
        if cursor is not None:
            conditions.append(_undelivered_events(destination, cursor))
    return conditions


async def oldest_undelivered_event_at(*, session: AsyncSession, organization_id: str) -> datetime | None:
    """The oldest event time among the organisation's events that an enabled destination wants and has
    not received yet (its cursor has not passed them); None when every destination is up to date.

    For the retention cleanup: it holds back deleting these (for a configured number of days)."""
    conditions = await _undelivered_conditions(session, organization_id)
    if not conditions:
        return None
    oldest = await session.scalar(
        select(func.min(LogEntry.timestamp)).where(
            LogEntry.organization_id == organization_id, or_(*conditions)
        )
    )
    return None if oldest is None else as_utc(oldest)


async def count_undelivered_events_before(
    *, session: AsyncSession, organization_id: str, before: datetime
) -> int:
    """How many of the organisation's events with a time before ``before`` some enabled destination wants
    and has not received yet (each event once, however many destinations miss it).

    For the retention cleanup: what it records as expired undelivered when it deletes them."""
    conditions = await _undelivered_conditions(session, organization_id)
    if not conditions:
        return 0
    count = await session.scalar(
        select(func.count()).where(
            LogEntry.organization_id == organization_id, LogEntry.timestamp < before, or_(*conditions)
        )
    )
    return int(count or 0)


# --- dead letters ----------------------------------------------------------------------------------


async def list_dead_letters(
    *,
    session: AsyncSession,
    destination_id: uuid.UUID | None = None,
    organization_id: str | None = None,
    limit: int = DEAD_LETTER_PAGE_SIZE,
) -> Sequence[DeadLetter]:
    """Dead letters, newest first, of one destination or organisation or all."""
    statement = select(DeadLetter).order_by(DeadLetter.created_at.desc(), DeadLetter.id).limit(limit)
    if destination_id is not None:
        statement = statement.where(DeadLetter.destination_id == destination_id)
    if organization_id is not None:
        statement = statement.where(DeadLetter.organization_id == organization_id)
    return (await session.scalars(statement.execution_options(populate_existing=True))).all()


async def _dead_letters(session: AsyncSession, ids: Sequence[uuid.UUID]) -> Sequence[DeadLetter]:
    if not ids:
        return []
    statement = select(DeadLetter).where(DeadLetter.id.in_(list(ids))).order_by(DeadLetter.created_at)
    if session.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update()
    return (await session.scalars(statement.execution_options(populate_existing=True))).all()


async def retry_dead_letters(*, session: AsyncSession, ids: Sequence[uuid.UUID], actor: Actor) -> int:
    """Mark dead letters to be sent again by their forwarder; audited; returns how many."""
    await require_admin(session=session, actor=actor, what="retry dead letters")
    rows = [row for row in await _dead_letters(session, ids) if not row.retry_requested]
    for row in rows:
        row.retry_requested = True
        await record_change(
            session=session,
            actor=actor,
            action="dead_letter.retry",
            entity_type="dead_letter",
            entity_id=str(row.id),
            changes={
                "destination_id": {"after": str(row.destination_id)},
                "item_id": {"after": row.item_id},
                "retry_requested": {"before": False, "after": True},
            },
        )
    await session.flush()
    return len(rows)


async def discard_dead_letters(*, session: AsyncSession, ids: Sequence[uuid.UUID], actor: Actor) -> int:
    """Delete dead letters for good; audited; returns how many."""
    await require_admin(session=session, actor=actor, what="discard dead letters")
    rows = await _dead_letters(session, ids)
    for row in rows:
        await record_change(
            session=session,
            actor=actor,
            action="dead_letter.discard",
            entity_type="dead_letter",
            entity_id=str(row.id),
            changes={
                "destination_id": {"before": str(row.destination_id)},
                "stream": {"before": row.stream},
                "item_id": {"before": row.item_id},
                "revision": {"before": row.revision},
                "error": {"before": row.error},
            },
        )
        await session.delete(row)
    await session.flush()
    return len(rows)


# --- key rotation ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretRotation:
    """What ``secrets rotate`` did: secrets now under the first key, and destinations whose secret no key
    reads (to be entered again)."""

    rotated: int
    unreadable: list[ForwardDestination]


async def rotate_secrets(*, session: AsyncSession, secrets: SecretBox, actor: Actor) -> SecretRotation:
    """Re-encrypt every stored destination secret with the first key of ``secrets``, audited per
    destination (``destination.rotate_secret``, the secret shown as changed only); unreadable ones are
    left as they are."""
    await require_admin(session=session, actor=actor, what="rotate destination secrets")
    statement = (
        select(ForwardDestination)
        .where(ForwardDestination.secret_ciphertext.is_not(None))
        .order_by(ForwardDestination.organization_id, ForwardDestination.name)
    )
    if session.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update()
    rows = (await session.scalars(statement.execution_options(populate_existing=True))).all()
    rotated, unreadable = 0, []
    for row in rows:
        assert row.secret_ciphertext is not None
        try:
            row.secret_ciphertext = secrets.rotate(row.secret_ciphertext)
        except SecretUnreadable:
            unreadable.append(row)
            continue
        rotated += 1
        await record_change(
            session=session,
            actor=actor,
            action="destination.rotate_secret",
            entity_type="destination",
            entity_id=str(row.id),
            changes={"secret": {"changed": True}},
        )
    await session.flush()
    return SecretRotation(rotated=rotated, unreadable=unreadable)
