"""Our own JSON format: every stored field of the item, times in ISO 8601 UTC, compact."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import orjson

from forwarding.items import AlertItem, EventItem, ForwardItem

#: orjson writes aware datetimes as RFC 3339 and, with this option, UTC as ``Z``.
_OPTIONS = orjson.OPT_UTC_Z


_FIELD_NAMES: dict[type, tuple[str, ...]] = {
    kind: tuple(field.name for field in fields(kind)) for kind in (EventItem, AlertItem)
}


def item_fields(item: ForwardItem) -> dict[str, Any]:
    """The item as a dict: ``type`` first, then its fields as they are (no deep copy: orjson reads them)."""
    result: dict[str, Any] = {"type": "event" if isinstance(item, EventItem) else "alert"}
    for name in _FIELD_NAMES[type(item)]:
        result[name] = getattr(item, name)
    return result


def render_json(item: ForwardItem) -> str:
    """The item as one line of compact JSON (alerts include their ``activity`` and ``revision``)."""
    return orjson.dumps(item_fields(item), option=_OPTIONS).decode()
