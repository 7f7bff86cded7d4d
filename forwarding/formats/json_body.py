"""Our own JSON format: every stored field of the item, times in ISO 8601 UTC, compact."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import orjson

from forwarding.items import EventItem, ForwardItem


def _utc_text(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def item_fields(item: ForwardItem) -> dict[str, Any]:
    """The item as a JSON-ready dict: ``type`` first, then its fields, datetimes as ISO 8601 UTC text."""
    fields: dict[str, Any] = {"type": "event" if isinstance(item, EventItem) else "alert"}
    for name, value in asdict(item).items():
        fields[name] = _utc_text(value) if isinstance(value, datetime) else value
    return fields


def render_json(item: ForwardItem) -> str:
    """The item as one line of compact JSON (alerts include their ``activity`` and ``revision``)."""
    return orjson.dumps(item_fields(item)).decode()
