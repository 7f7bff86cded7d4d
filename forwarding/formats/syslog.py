"""The RFC 5424 envelope of a syslog or RELP message: header, structured data under our SD-ID, body.

``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD-ID id="…" org="…" …] MSG``: the event id
(or alert id) travels in structured data, since MSGID is at most 32 characters and says only
"event" or "alert". The body is UTF-8 without a BOM (receivers such as rsyslog show a BOM as
text in many templates).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Final

from forwarding.items import AlertItem, EventItem
from forwarding.transport import Message

DEFAULT_SD_ID: Final = "aifw@32473"
DEFAULT_APP_NAME: Final = "aifw"
#: local0: the facility a SIEM's syslog input most often leaves free for applications.
DEFAULT_FACILITY: Final = 16

HOSTNAME_MAX: Final = 255
APP_NAME_MAX: Final = 48
PROCID_MAX: Final = 128
SD_NAME_MAX: Final = 32

#: RFC 5424 SD-NAME: printable US-ASCII but space, "=", "]" and '"'; an SD-ID of our own is name@digits.
_SD_ID = re.compile(r"[!-~]{1,32}", re.ASCII)
_SD_ID_FORBIDDEN = frozenset('= ]"')
_ENTERPRISE_SD_ID = re.compile(r"[^@]+@[0-9]+(\.[0-9]+)*", re.ASCII)


def validate_sd_id(sd_id: str) -> str:
    """Return ``sd_id`` if it is a valid private SD-ID (``name@digits``, <= 32 printable chars), else
    raise ValueError saying what is wrong."""
    if not _SD_ID.fullmatch(sd_id) or any(char in _SD_ID_FORBIDDEN for char in sd_id):
        raise ValueError(
            "sd_id must be 1 to 32 printable ASCII characters without space, '=', ']' or '\"' "
            f"(got {sd_id!r})"
        )
    if not _ENTERPRISE_SD_ID.fullmatch(sd_id):
        raise ValueError(f"sd_id must have the form name@<enterprise number>, such as {DEFAULT_SD_ID}")
    return sd_id


def validate_facility(facility: int) -> int:
    """Return ``facility`` if it is a syslog facility (0 to 23), else raise ValueError."""
    if isinstance(facility, bool) or not isinstance(facility, int) or not 0 <= facility <= 23:
        raise ValueError(f"facility must be a number from 0 to 23 (got {facility!r})")
    return facility


def header_field(value: str, max_length: int) -> str:
    """A header field: printable US-ASCII only (others become "_"), cut to ``max_length``; "-" if empty."""
    cleaned = "".join(char if "!" <= char <= "~" else "_" for char in value)[:max_length]
    return cleaned or "-"


#: RFC 5424 section 6.3.3: '"', '\\' and ']' escaped with a backslash (the backslash first).
PARAM_VALUE_ESCAPES: Final = (("\\", "\\\\"), ('"', '\\"'), ("]", "\\]"))


def escape_param_value(value: str) -> str:
    """An SD-PARAM value: '"', '\\' and ']' escaped with a backslash (RFC 5424 section 6.3.3)."""
    for character, escape in PARAM_VALUE_ESCAPES:
        value = value.replace(character, escape)
    return value


def timestamp_text(value: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a Z: ``2025-01-31T12:00:00.000000Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def structured_data(message: Message, sd_id: str) -> str:
    """``[sd_id id="…" org="…" …]``: the item's id, organisation, and its risk or alert state."""
    item = message.item
    params: list[tuple[str, str]]
    if isinstance(item, EventItem):
        params = [("id", item.id), ("org", item.organization_id), ("risk", item.risk_level)]
    else:
        assert isinstance(item, AlertItem)
        params = [
            ("id", item.alert_id),
            ("org", item.organization_id),
            ("severity", item.severity),
            ("revision", str(item.revision)),
            ("activity", item.activity),
        ]
    rendered = " ".join(f'{name}="{escape_param_value(value)}"' for name, value in params)
    return f"[{sd_id} {rendered}]"


def rfc5424(
    message: Message,
    *,
    hostname: str,
    app_name: str = DEFAULT_APP_NAME,
    facility: int = DEFAULT_FACILITY,
    sd_id: str = DEFAULT_SD_ID,
    procid: str = "-",
) -> bytes:
    """The message as one RFC 5424 syslog message (no framing), UTF-8."""
    fixed = fixed_header(hostname, app_name, procid, sd_id, facility)
    item = message.item
    when = item.timestamp if isinstance(item, EventItem) else item.changed_at
    msgid = "event" if isinstance(item, EventItem) else "alert"
    pri = facility * 8 + min(max(message.syslog_severity, 0), 7)
    return (
        f"<{pri}>1 {timestamp_text(when)} {fixed} {msgid} {structured_data(message, sd_id)} {message.body}"
    ).encode()


@lru_cache(maxsize=64)
def fixed_header(hostname: str, app_name: str, procid: str, sd_id: str, facility: int) -> str:
    """HOSTNAME APP-NAME PROCID, checked and cleaned once per destination rather than once per message."""
    validate_sd_id(sd_id)
    validate_facility(facility)
    return " ".join(
        [
            header_field(hostname, HOSTNAME_MAX),
            header_field(app_name, APP_NAME_MAX),
            header_field(procid, PROCID_MAX),
        ]
    )
