"""ArcSight Common Event Format (CEF:0): one line per item, escaped per the CEF rules.

Header fields escape ``\\`` and ``|``; extension values escape ``\\``, ``=``, CR and LF (as ``\\r``
and ``\\n``). Extension keys are taken from the CEF dictionary where one fits, otherwise the
custom ``cs``/``cn`` pairs with their labels.
"""

from __future__ import annotations

from datetime import datetime

from forwarding.items import AlertItem, EventItem, ForwardItem
from forwarding.severity import severity_of

VENDOR = "AI Usage Firewall"
PRODUCT = "aifw"


def escape_header(value: str) -> str:
    """A CEF header field: backslash and pipe escaped; line breaks (not allowed) become spaces."""
    value = value.replace("\\", "\\\\").replace("|", "\\|")
    return value.replace("\r", " ").replace("\n", " ")


def escape_extension(value: str) -> str:
    """A CEF extension value: backslash, equals sign, CR and LF escaped."""
    value = value.replace("\\", "\\\\").replace("=", "\\=")
    return value.replace("\r", "\\r").replace("\n", "\\n")


def _epoch_ms(value: datetime) -> str:
    return str(int(value.timestamp() * 1000))


def _event_extensions(item: EventItem) -> list[tuple[str, str]]:
    return [
        ("rt", _epoch_ms(item.timestamp)),
        ("externalId", item.id),
        ("suser", item.user_id),
        ("deviceExternalId", item.device_id),
        ("app", item.tool_name),
        ("cat", item.risk_level),
        ("cs1Label", "organization"),
        ("cs1", item.organization_id),
        ("cs2Label", "toolType"),
        ("cs2", item.tool_type),
        ("cs3Label", "entityTypes"),
        ("cs3", ",".join(item.detected_entity_types)),
        ("cs4Label", "wasSanitized"),
        ("cs4", "true" if item.was_sanitized else "false"),
        ("cn1Label", "entityCount"),
        ("cn1", str(item.entity_count)),
        ("cn2Label", "promptLength"),
        ("cn2", str(item.prompt_length)),
    ]


def _alert_extensions(item: AlertItem) -> list[tuple[str, str]]:
    return [
        ("rt", _epoch_ms(item.changed_at)),
        ("externalId", item.alert_id),
        ("act", item.activity),
        ("cat", item.severity),
        ("start", _epoch_ms(item.first_event_at)),
        ("end", _epoch_ms(item.last_event_at)),
        ("outcome", item.state),
        ("cs1Label", "organization"),
        ("cs1", item.organization_id),
        ("cs2Label", "ruleName"),
        ("cs2", item.rule_name),
        ("cs3Label", "groupKey"),
        ("cs3", item.group_key),
        ("cs4Label", "eventIds"),
        ("cs4", ",".join(item.event_ids)),
        ("cn1Label", "eventCount"),
        ("cn1", str(item.event_count)),
        ("cn2Label", "revision"),
        ("cn2", str(item.revision)),
    ]


def render_cef(item: ForwardItem, *, product_version: str) -> str:
    """``CEF:0|AI Usage Firewall|aifw|<version>|<signature id>|<name>|<severity>|<extensions>``."""
    if isinstance(item, EventItem):
        signature, name = f"event:{item.risk_level}", f"AI tool use, risk {item.risk_level}"
        extensions = _event_extensions(item)
    else:
        signature, name = f"alert:{item.rule_kind}", f"Alert {item.activity}: {item.rule_name}"
        extensions = _alert_extensions(item)
    header = [
        "CEF:0",
        escape_header(VENDOR),
        escape_header(PRODUCT),
        escape_header(product_version),
        escape_header(signature),
        escape_header(name),
        str(severity_of(item).cef),
    ]
    return "|".join(header) + "|" + " ".join(f"{key}={escape_extension(value)}" for key, value in extensions)
