"""Alert rules as administrators set them: the bounds of each field and the check of a rule, once.

db/alerts.py validates with :func:`validate_rule` before a rule is stored; alerts/rules.py
reads the filters validated here when it matches events. What each kind means is said in
alerts/rules.py; this module only says what a rule may hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from db.models import ALERT_GROUP_KEYS, ALERT_RULE_KINDS, ALERT_SEVERITIES
from db.vocabulary import RISK_LEVELS

MAX_RULE_NAME_CHARS: Final = 100
MIN_THRESHOLD: Final = 1
MAX_THRESHOLD: Final = 10_000
MINUTE: Final = 60
HOUR: Final = 3600
DAY: Final = 86_400
#: A threshold rule's sliding window W.
MIN_WINDOW_SECONDS: Final = MINUTE
MAX_WINDOW_SECONDS: Final = 7 * DAY
#: A silent-agent rule's silence H.
MIN_SILENCE_SECONDS: Final = HOUR
MAX_SILENCE_SECONDS: Final = 90 * DAY
MAX_COOLDOWN_SECONDS: Final = 7 * DAY
#: New tools: the most alerts an organisation gets per hour (the rule's ``threshold``).
MAX_NEW_TOOL_ALERTS_PER_HOUR: Final = 1000
#: How late an event may be stored, beyond the rule's window, and still raise an alert.
LIVE_GRACE_SECONDS: Final = 300

#: The filter keys a rule may hold, and the most values a list filter may hold.
FILTER_LIST_KEYS: Final = ("risk_levels", "tool_names", "entity_types", "user_ids", "device_ids")
FILTER_KEYS: Final = (*FILTER_LIST_KEYS, "was_sanitized")
MAX_FILTER_VALUES: Final = 100
MAX_FILTER_VALUE_CHARS: Final = 255

#: Which ``group_by`` each kind accepts.
GROUP_BY_FOR_KIND: Final[dict[str, tuple[str, ...]]] = {
    "threshold": ALERT_GROUP_KEYS,
    "entity": ALERT_GROUP_KEYS,
    "silent_agent": ("organization",),
    "new_tool": ("tool",),
    "forwarding": ("organization",),
}


class RuleProblem(ValueError):
    """A rule field is out of bounds or malformed; the message says which and why."""


def _whole_number(name: str, value: object, low: int, high: int, unit: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RuleProblem(f"{name} must be a whole number{unit and ' of ' + unit}; got {value!r}")
    if not low <= value <= high:
        raise RuleProblem(f"{name} must be from {low:,} to {high:,}{unit and ' ' + unit}; got {value:,}")
    return value


def validate_filters(filters: object, *, kind: str) -> dict[str, Any]:
    """The filters cleaned (lists deduplicated, in order; risk levels known; tool names as typed)."""
    if filters is None:
        return {}
    if not isinstance(filters, Mapping):
        raise RuleProblem("filters must be an object")
    unknown = sorted(str(key) for key in filters if key not in FILTER_KEYS)
    if unknown:
        raise RuleProblem(f"filters has unknown keys: {', '.join(unknown)} (known: {', '.join(FILTER_KEYS)})")
    cleaned: dict[str, Any] = {}
    for key in FILTER_LIST_KEYS:
        if key not in filters or filters[key] is None:
            continue
        values = filters[key]
        if not isinstance(values, list | tuple):
            raise RuleProblem(f"filters.{key} must be a list")
        if len(values) > MAX_FILTER_VALUES:
            raise RuleProblem(f"filters.{key}: at most {MAX_FILTER_VALUES} values; got {len(values):,}")
        unique: list[str] = []
        for value in values:
            if not isinstance(value, str) or not value.strip() or len(value) > MAX_FILTER_VALUE_CHARS:
                raise RuleProblem(f"filters.{key} values must be 1-{MAX_FILTER_VALUE_CHARS} characters")
            value = value.strip()
            if key == "risk_levels" and value not in RISK_LEVELS:
                raise RuleProblem(f"filters.risk_levels: {value!r} is not one of {', '.join(RISK_LEVELS)}")
            if value not in unique:
                unique.append(value)
        if unique:
            cleaned[key] = unique
    if filters.get("was_sanitized") is not None:
        if not isinstance(filters["was_sanitized"], bool):
            raise RuleProblem("filters.was_sanitized must be true, false or absent")
        cleaned["was_sanitized"] = filters["was_sanitized"]
    if kind == "entity" and not cleaned.get("entity_types"):
        raise RuleProblem("an entity rule needs filters.entity_types: the entity types that raise it")
    if kind == "new_tool" and "tool_names" in cleaned:
        raise RuleProblem("a new-tool rule cannot filter on tool_names: it watches tools not monitored")
    if kind in ("silent_agent", "forwarding") and cleaned:
        raise RuleProblem(f"a {kind} rule takes no filters")
    return cleaned


def validate_rule(
    *,
    name: object,
    kind: object,
    enabled: object,
    severity: object,
    threshold: object,
    window_seconds: object,
    group_by: object,
    cooldown_seconds: object,
    filters: object,
) -> dict[str, Any]:
    """Every field of a rule checked for its kind; the column values to store. RuleProblem says why not."""
    if not isinstance(name, str) or not name.strip():
        raise RuleProblem("a rule needs a name")
    name = name.strip()
    if len(name) > MAX_RULE_NAME_CHARS:
        raise RuleProblem(f"name must be at most {MAX_RULE_NAME_CHARS} characters; got {len(name):,}")
    if not name.isprintable():
        raise RuleProblem("name must not contain control characters")
    if kind not in ALERT_RULE_KINDS:
        raise RuleProblem(f"kind must be one of {', '.join(ALERT_RULE_KINDS)}; got {kind!r}")
    assert isinstance(kind, str)
    if not isinstance(enabled, bool):
        raise RuleProblem("enabled must be true or false")
    if severity not in ALERT_SEVERITIES:
        raise RuleProblem(f"severity must be one of {', '.join(ALERT_SEVERITIES)}; got {severity!r}")
    allowed_groups = GROUP_BY_FOR_KIND[kind]
    if group_by not in allowed_groups:
        raise RuleProblem(f"a {kind} rule groups by {' or '.join(allowed_groups)}; got {group_by!r}")
    if kind == "threshold":
        threshold = _whole_number("threshold", threshold, MIN_THRESHOLD, MAX_THRESHOLD, "events")
    elif kind == "new_tool":
        threshold = _whole_number(
            "threshold (alerts per hour)", threshold, 1, MAX_NEW_TOOL_ALERTS_PER_HOUR, "alerts"
        )
    else:
        threshold = 1  # unused by the other kinds
    if kind == "silent_agent":
        window_seconds = _whole_number(
            "silence (window_seconds)", window_seconds, MIN_SILENCE_SECONDS, MAX_SILENCE_SECONDS, "seconds"
        )
    else:
        window_seconds = _whole_number(
            "window_seconds", window_seconds, MIN_WINDOW_SECONDS, MAX_WINDOW_SECONDS, "seconds"
        )
    cooldown_seconds = _whole_number("cooldown_seconds", cooldown_seconds, 0, MAX_COOLDOWN_SECONDS, "seconds")
    return {
        "name": name,
        "kind": kind,
        "enabled": enabled,
        "severity": severity,
        "threshold": threshold,
        "window_seconds": window_seconds,
        "group_by": group_by,
        "cooldown_seconds": cooldown_seconds,
        "filters": validate_filters(filters, kind=kind),
    }
