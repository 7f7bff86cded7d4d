"""The largest configuration the validators of db/configs.py allow still fits one protocol line, as a
welcome or a config answer, and an answer that would not is named, not sent: no socket, no database."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from db.configs import (
    CUSTOM_PATTERNS_MAX_BYTES,
    MAX_CUSTOM_PATTERNS,
    MAX_MONITORED_TOOLS,
    MAX_PATTERN_ENTITY_TYPE_CHARS,
    MAX_PATTERN_NAME_CHARS,
    MAX_PATTERN_REGEX_CHARS,
    MAX_RED_ENTITY_TYPE_CHARS,
    MAX_RED_ENTITY_TYPES,
    MAX_TOOL_NAME_CHARS,
    METADATA_KEYS_MAX_BYTES,
    ConfigError,
    agent_json_bytes,
    effective_config,
    validate_custom_patterns,
    validate_monitored_tools,
    validate_sensitivity_thresholds,
)
from db.identifiers import MAX_METADATA_KEY_CHARS
from db.metadata_keys import (
    MAX_ENUM_VALUES,
    MAX_ORGANIZATION_KEYS,
    MAX_TOKEN_CHARS,
    STANDARD_KEYS,
    Shape,
    keys_for_agent,
)
from db.models import FirewallConfig
from db.settings import IngestLimits
from ingest.protocol import ProtocolError, answer_line, welcome_message

#: The costliest character to send: outside the BMP, four bytes of UTF-8 (a control character would
#: cost six as \u00XX, but the byte budgets count what is sent, whatever the characters).
WIDE = "\U0001f600"


def largest_patterns() -> list[dict[str, object]]:
    """As many maximal custom patterns as the validator accepts: the count bound or the byte budget."""
    pattern = {
        "name": "",
        "regex": "a" * MAX_PATTERN_REGEX_CHARS,
        "entity_type": WIDE * MAX_PATTERN_ENTITY_TYPE_CHARS,
        "severity": "amber",
    }
    patterns = [
        {**pattern, "name": f"{index:03d}" + WIDE * (MAX_PATTERN_NAME_CHARS - 3)}
        for index in range(MAX_CUSTOM_PATTERNS)
    ]
    while True:
        try:
            return validate_custom_patterns(patterns)
        except ConfigError:
            patterns.pop()


def largest_tools() -> list[dict[str, object]]:
    tools = [
        {"name": f"{index:03d}" + WIDE * (MAX_TOOL_NAME_CHARS - 3), "tool_type": "desktop", "enabled": False}
        for index in range(MAX_MONITORED_TOOLS)
    ]
    while True:
        try:
            return validate_monitored_tools(tools)
        except ConfigError:
            tools.pop()


def largest_thresholds() -> dict[str, object]:
    types = [f"{index:02d}" + WIDE * (MAX_RED_ENTITY_TYPE_CHARS - 2) for index in range(MAX_RED_ENTITY_TYPES)]
    while True:
        try:
            return validate_sensitivity_thresholds(
                {"amber_min_entities": 1000, "red_min_entities": 1000, "red_entity_types": types}
            )
        except ConfigError:
            types.pop()


def largest_metadata_keys(budget: int | None = None) -> dict[str, dict[str, object]]:
    """The standard keys and as many maximal enum keys as db/metadata_keys.py allows (within ``budget``)."""
    shapes = dict(STANDARD_KEYS)
    values = tuple(f"{index:02d}" + "v" * (MAX_TOKEN_CHARS - 2) for index in range(MAX_ENUM_VALUES))
    for index in range(MAX_ORGANIZATION_KEYS):
        key = f"k{index:02d}" + "x" * (MAX_METADATA_KEY_CHARS - 3)
        shapes[key] = Shape("enum", values=values)
        if budget is not None and agent_json_bytes(keys_for_agent(shapes), field="keys") > budget:
            del shapes[key]
            break
    return keys_for_agent(shapes)


@pytest.mark.parametrize("kind", ["welcome", "config"])
def test_the_largest_configuration_the_validators_allow_fits_the_welcome_line(kind: str) -> None:
    limits = IngestLimits()
    row = FirewallConfig(
        organization_id="o" * 64,
        monitored_tools=largest_tools(),
        sensitivity_thresholds=largest_thresholds(),
        custom_patterns=largest_patterns(),
        log_retention_days=365,
        updated_at=datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    )
    config = effective_config(row.organization_id, row).for_agent()
    config["metadata_keys"] = largest_metadata_keys(budget=METADATA_KEYS_MAX_BYTES)
    answer = welcome_message(config, limits) if kind == "welcome" else {"type": "config", "config": config}
    line = orjson.dumps(answer)
    assert len(line) <= limits.max_line_bytes
    assert answer_line(answer, limits) == line + b"\n"
    # Not vacuous: each part is near its budget.
    assert len(orjson.dumps(config["custom_patterns"])) > CUSTOM_PATTERNS_MAX_BYTES * 0.9


def test_an_oversized_answer_is_named_not_sent() -> None:
    answer = {"type": "config", "config": {"custom_patterns": ["x" * 70_000]}}
    with pytest.raises(ProtocolError, match="line limit"):
        answer_line(answer, IngestLimits())
