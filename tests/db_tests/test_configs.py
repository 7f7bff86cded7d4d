"""Organisation configuration: one validation for every caller."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from db.configs import (
    AGENT_ENVELOPE_BYTES,
    AGENT_LINE_BYTES,
    CUSTOM_PATTERNS_MAX_BYTES,
    MAX_CUSTOM_PATTERNS,
    MAX_MONITORED_TOOLS,
    MAX_PATTERN_REGEX_CHARS,
    MAX_RED_ENTITY_TYPES,
    METADATA_KEYS_MAX_BYTES,
    MONITORED_TOOLS_MAX_BYTES,
    SENSITIVITY_THRESHOLDS_MAX_BYTES,
    ConfigError,
    create_organization,
    custom_pattern_name_taken,
    effective_config,
    update_config,
    validate_custom_patterns,
    validate_monitored_tools,
    validate_retention_days,
    validate_sensitivity_thresholds,
)
from db.rights import Actor
from db.settings import IngestLimits
from db.vocabulary import DEFAULT_RETENTION_DAYS


@pytest.mark.parametrize("days", [30, 90, 365, "120"])
def test_retention_inside_30_to_365_is_accepted(days: object) -> None:
    assert validate_retention_days(days) == int(days)


@pytest.mark.parametrize("days", [29, 366, 0, -1, "abc", 1.5, True, None])
def test_retention_outside_30_to_365_is_refused(days: object) -> None:
    with pytest.raises(ConfigError, match="log_retention_days"):
        validate_retention_days(days)


def test_a_pattern_that_does_not_compile_is_refused_with_the_regex_error() -> None:
    with pytest.raises(ConfigError, match="does not compile"):
        validate_custom_patterns([{"name": "bad", "regex": "([a-z", "entity_type": "X", "severity": "red"}])


def test_thresholds_must_be_ordered() -> None:
    with pytest.raises(ConfigError, match="must not exceed"):
        validate_sensitivity_thresholds({"amber_min_entities": 9, "red_min_entities": 3})


def test_an_organisation_without_a_row_gets_the_defaults() -> None:
    config = effective_config("acme", None)
    assert config.log_retention_days == DEFAULT_RETENTION_DAYS
    assert config.for_agent()["version"] == "default"
    assert any(tool["name"] == "ChatGPT" for tool in config.monitored_tools)


async def test_update_reports_before_and_after_and_stamps_the_editor(session: AsyncSession) -> None:
    await create_organization(session=session, organization_id="acme", actor=Actor.cli())
    await session.commit()
    row, changes = await update_config(
        session=session, organization_id="acme", actor=Actor("alice", "cli"), log_retention_days=30
    )
    await session.commit()
    assert changes == {"log_retention_days": {"before": 90, "after": 30}}
    assert row.updated_by == "alice"
    assert effective_config("acme", row).version == row.updated_at.isoformat()


async def test_creating_an_existing_organisation_is_refused(session: AsyncSession) -> None:
    await create_organization(session=session, organization_id="acme", actor=Actor.cli())
    await session.commit()
    with pytest.raises(ConfigError, match="already exists"):
        await create_organization(session=session, organization_id="acme", actor=Actor.cli())


# --- bounds: the whole configuration fits one protocol line ---------------------------------------


def test_the_budgets_add_up_to_one_protocol_line() -> None:
    total = (
        AGENT_ENVELOPE_BYTES
        + METADATA_KEYS_MAX_BYTES
        + SENSITIVITY_THRESHOLDS_MAX_BYTES
        + MONITORED_TOOLS_MAX_BYTES
        + CUSTOM_PATTERNS_MAX_BYTES
    )
    assert total <= AGENT_LINE_BYTES == IngestLimits().max_line_bytes


def test_more_custom_patterns_than_allowed_are_refused_by_count() -> None:
    patterns = [
        {"name": f"p{index}", "regex": "x", "entity_type": "X", "severity": "red"} for index in range(5000)
    ]
    with pytest.raises(ConfigError, match=f"at most {MAX_CUSTOM_PATTERNS} custom patterns; got 5,000"):
        validate_custom_patterns(patterns)


def test_custom_patterns_over_their_byte_budget_are_refused() -> None:
    patterns = [
        {"name": f"p{index}", "regex": "y" * MAX_PATTERN_REGEX_CHARS, "entity_type": "X", "severity": "red"}
        for index in range(MAX_CUSTOM_PATTERNS)
    ]
    with pytest.raises(
        ConfigError, match="custom patterns take .* bytes as sent to agents, more than 28,672"
    ):
        validate_custom_patterns(patterns)


def test_more_monitored_tools_than_allowed_are_refused() -> None:
    tools = [{"name": f"tool {index}", "tool_type": "web", "enabled": True} for index in range(65)]
    with pytest.raises(ConfigError, match=f"at most {MAX_MONITORED_TOOLS} monitored tools; got 65"):
        validate_monitored_tools(tools)


def test_more_red_entity_types_than_allowed_are_refused() -> None:
    with pytest.raises(
        ConfigError, match=f"red_entity_types: at most {MAX_RED_ENTITY_TYPES} entity types; got 33"
    ):
        validate_sensitivity_thresholds({"red_entity_types": [f"T{index}" for index in range(33)]})


@pytest.mark.parametrize("second", ["Employee ID", "employee id", "EMPLOYEE ID", "  employee id "])
def test_a_custom_pattern_name_used_twice_regardless_of_case_is_refused(second: str) -> None:
    patterns = [
        {"name": "Employee ID", "regex": r"E\d{6}", "entity_type": "EMPLOYEE_ID", "severity": "amber"},
        {"name": second, "regex": r"EMP\d{6}", "entity_type": "EMPLOYEE_ID", "severity": "amber"},
    ]
    with pytest.raises(ConfigError, match=f"custom pattern name {second.strip()!r} is used twice"):
        validate_custom_patterns(patterns)


#: A pattern a console form checks a new name against, as the validator will.
EMPLOYEE_PATTERN = {
    "name": "Employee id",
    "regex": r"EMP-\d{6}",
    "entity_type": "EMPLOYEE_ID",
    "severity": "amber",
}


@pytest.mark.parametrize("name", ["Employee id", "EMPLOYEE ID", "  employee id ", "employee ID"])
def test_a_form_finds_a_taken_pattern_name_as_the_validator_refuses_it(name: str) -> None:
    assert custom_pattern_name_taken([EMPLOYEE_PATTERN], name)
    with pytest.raises(ConfigError, match="is used twice"):
        validate_custom_patterns([EMPLOYEE_PATTERN, {**EMPLOYEE_PATTERN, "name": name}])


def test_a_new_pattern_name_is_free() -> None:
    assert not custom_pattern_name_taken([EMPLOYEE_PATTERN], "Badge number")


def test_text_that_is_not_unicode_is_refused_before_it_reaches_agents() -> None:
    with pytest.raises(ConfigError, match="not valid Unicode"):
        validate_monitored_tools([{"name": "bad \ud800 tool", "tool_type": "web", "enabled": True}])
