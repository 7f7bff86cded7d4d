"""OCSF Data Security Finding (class 2006, category 2 Findings), schema version pinned in OCSF_VERSION.

Alerts and amber and red events are findings; green events are not, so they are never rendered
here (a destination in OCSF refuses a filter that includes green). Attributes follow the 1.3.0
schema (events/findings/data_security_finding.json, finding.json, base_event.json and the objects
they name): every required attribute is set, and the recommended ones where we have the data.
Fields with no OCSF attribute (group key, rule kind, event ids) go under ``unmapped``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import orjson

from forwarding.items import AlertItem, EventItem, ForwardItem
from forwarding.severity import severity_of

#: The OCSF schema version every finding says it follows (``metadata.version``).
OCSF_VERSION: Final = "1.3.0"

CLASS_UID: Final = 2006
CLASS_NAME: Final = "Data Security Finding"
CATEGORY_UID: Final = 2
CATEGORY_NAME: Final = "Findings"
ACTIVITY_IDS: Final = {"create": 1, "update": 2, "close": 3}
#: finding.json ``status_id``: New, In Progress, Resolved.
ALERT_STATUS: Final = {"open": (1, "New"), "acknowledged": (2, "In Progress"), "resolved": (4, "Resolved")}
PRODUCT_NAME: Final = "AI Usage Firewall"
GREEN_REFUSED: Final = "OCSF carries findings: green events are not forwarded in OCSF"


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _common(item: ForwardItem, *, activity: str, time: datetime, product_version: str) -> dict[str, Any]:
    activity_id = ACTIVITY_IDS[activity]
    severity = severity_of(item)
    return {
        "class_uid": CLASS_UID,
        "class_name": CLASS_NAME,
        "category_uid": CATEGORY_UID,
        "category_name": CATEGORY_NAME,
        "activity_id": activity_id,
        "activity_name": activity.capitalize(),
        "type_uid": CLASS_UID * 100 + activity_id,
        "type_name": f"{CLASS_NAME}: {activity.capitalize()}",
        "time": _ms(time),
        "severity_id": severity.ocsf_id,
        "severity": severity.ocsf_name,
        "metadata": {
            "version": OCSF_VERSION,
            "product": {"name": PRODUCT_NAME, "vendor_name": PRODUCT_NAME, "version": product_version},
            "tenant_uid": item.organization_id,
            "uid": item.key,
        },
    }


def _event_finding(item: EventItem, *, product_version: str) -> dict[str, Any]:
    finding = _common(item, activity="create", time=item.timestamp, product_version=product_version)
    entity_types = ", ".join(item.detected_entity_types) or "none"
    finding.update(
        {
            "message": f"{item.risk_level} use of {item.tool_name} by {item.user_id}",
            # security_control profile (part of class 2006): a sanitised prompt was changed, not blocked.
            "action_id": 99 if item.was_sanitized else 1,
            "action": "Sanitized" if item.was_sanitized else "Allowed",
            "status_id": 1,
            "status": "New",
            "count": 1,
            "finding_info": {
                "uid": item.id,
                "title": f"Sensitive data ({entity_types}) sent to {item.tool_name}",
                "types": ["AI tool use", *item.detected_entity_types],
                "created_time": _ms(item.created_at),
                "first_seen_time": _ms(item.timestamp),
                "last_seen_time": _ms(item.timestamp),
                "data_sources": ["aifw agent"],
            },
            "actor": {"user": {"uid": item.user_id, "name": item.user_id}},
            "device": {"uid": item.device_id, "type_id": 0, "type": "Unknown"},
            "resources": [{"name": item.tool_name, "type": item.tool_type}],
            "data_security": {
                # An agent on the device saw the data on its way to the AI tool.
                "detection_system_id": 1,
                "detection_system": "Endpoint",
                "data_lifecycle_state_id": 2,
                "data_lifecycle_state": "Data in-Transit",
                "pattern_match": ",".join(item.detected_entity_types),
            },
            "unmapped": {
                "risk_level": item.risk_level,
                "entity_count": item.entity_count,
                "prompt_length": item.prompt_length,
                "was_sanitized": item.was_sanitized,
                "log_metadata": item.log_metadata,
            },
        }
    )
    return finding


def _alert_finding(item: AlertItem, *, product_version: str) -> dict[str, Any]:
    finding = _common(item, activity=item.activity, time=item.changed_at, product_version=product_version)
    status_id, status = ALERT_STATUS.get(item.state, (99, item.state))
    finding.update(
        {
            "message": f"Alert {item.activity}: {item.rule_name} ({item.group_key})",
            "action_id": 0,
            "action": "Unknown",
            "status_id": status_id,
            "status": status,
            "count": item.event_count,
            "start_time": _ms(item.first_event_at),
            "end_time": _ms(item.last_event_at),
            "finding_info": {
                "uid": item.alert_id,
                "title": item.rule_name,
                "types": [item.rule_kind],
                "created_time": _ms(item.changed_at) if item.activity == "create" else None,
                "modified_time": _ms(item.changed_at),
                "first_seen_time": _ms(item.first_event_at),
                "last_seen_time": _ms(item.last_event_at),
                "data_sources": ["aifw alert rules"],
            },
            "unmapped": {
                "revision": item.revision,
                "rule_kind": item.rule_kind,
                "group_key": item.group_key,
                "state": item.state,
                "event_ids": item.event_ids,
                "details": item.details,
            },
        }
    )
    if finding["finding_info"]["created_time"] is None:
        del finding["finding_info"]["created_time"]
    return finding


def ocsf_finding(item: ForwardItem, *, product_version: str) -> dict[str, Any]:
    """The item as an OCSF Data Security Finding; ValueError for a green event (not a finding)."""
    if isinstance(item, EventItem):
        if item.risk_level == "green":
            raise ValueError(GREEN_REFUSED)
        return _event_finding(item, product_version=product_version)
    return _alert_finding(item, product_version=product_version)


def render_ocsf(item: ForwardItem, *, product_version: str) -> str:
    """:func:`ocsf_finding` as compact JSON text."""
    return orjson.dumps(ocsf_finding(item, product_version=product_version)).decode()
