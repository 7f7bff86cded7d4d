"""Forwarding tests: formats and transports against real receivers, and the delivery loop.

The helpers below build items and messages the way the delivery loop does, without a database.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from forwarding.formats import render_body, syslog_severity
from forwarding.items import AlertActivity, AlertItem, EventItem, ForwardItem
from forwarding.transport import Message

PRODUCT_VERSION = "0.1.0"
#: Times with microseconds, so rounding to milliseconds or seconds shows.
EVENT_TIME = datetime(2025, 3, 14, 15, 9, 26, 535897, tzinfo=UTC)


def make_event(number: int = 0, **changes: Any) -> EventItem:
    """An amber event (``evt-<number>``) of organisation acme; ``changes`` replace fields."""
    event = EventItem(
        id=f"evt-{number:06d}",
        organization_id="acme",
        timestamp=EVENT_TIME + timedelta(seconds=number),
        device_id="laptop-042",
        user_id="alice@acme.example",
        tool_name="ChatGPT",
        tool_type="web",
        risk_level="amber",
        prompt_length=812,
        detected_entity_types=["EMAIL", "PHONE"],
        entity_count=2,
        was_sanitized=True,
        log_metadata={"browser": "firefox"},
        created_at=EVENT_TIME + timedelta(seconds=number, milliseconds=120),
    )
    return replace(event, **changes)


def make_alert(revision: int = 1, **changes: Any) -> AlertItem:
    """Revision ``revision`` of a high threshold alert; ``changes`` replace fields."""
    activity: AlertActivity = "create" if revision == 1 else "update"
    alert = AlertItem(
        alert_id="7d1c6a8e-3c1f-4b7e-9a55-0f6f1f2b9e01",
        organization_id="acme",
        revision=revision,
        activity=activity,
        changed_at=EVENT_TIME + timedelta(minutes=revision),
        rule_name="Red burst from one user",
        rule_kind="threshold",
        severity="high",
        group_key="user:alice@acme.example",
        state="open",
        first_event_at=EVENT_TIME,
        last_event_at=EVENT_TIME + timedelta(minutes=4),
        event_count=5,
        event_ids=["evt-000001", "evt-000002"],
        details={},
    )
    return replace(alert, **changes)


def message_of(item: ForwardItem, fmt: str = "json") -> Message:
    """The message the delivery loop would build for ``item`` in format ``fmt``."""
    body = render_body(item, fmt, product_version=PRODUCT_VERSION)  # type: ignore[arg-type]
    return Message(item=item, body=body, syslog_severity=syslog_severity(item))
