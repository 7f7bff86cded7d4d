"""Organisation configuration: one validation for every caller."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from db.configs import (
    ConfigError,
    create_organization,
    effective_config,
    update_config,
    validate_custom_patterns,
    validate_retention_days,
    validate_sensitivity_thresholds,
)
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
    await create_organization(session=session, organization_id="acme", updated_by="root")
    await session.commit()
    row, changes = await update_config(
        session=session, organization_id="acme", updated_by="alice", log_retention_days=30
    )
    await session.commit()
    assert changes == {"log_retention_days": {"before": 90, "after": 30}}
    assert row.updated_by == "alice"
    assert effective_config("acme", row).version == row.updated_at.isoformat()


async def test_creating_an_existing_organisation_is_refused(session: AsyncSession) -> None:
    await create_organization(session=session, organization_id="acme", updated_by=None)
    await session.commit()
    with pytest.raises(ConfigError, match="already exists"):
        await create_organization(session=session, organization_id="acme", updated_by=None)
