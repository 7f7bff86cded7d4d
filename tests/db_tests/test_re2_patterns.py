"""Custom patterns run on agents, so they must be RE2 (linear time): refused on save with RE2's reason,
and the tester runs them with RE2 too."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from db.configs import ConfigError, create_organization, get_config, update_config, validate_custom_patterns
from db.pattern_tester import run_patterns, try_organization_patterns
from db.rights import Actor


def pattern(regex: str, name: str = "employee id") -> dict[str, str]:
    return {"name": name, "regex": regex, "entity_type": "EMPLOYEE_ID", "severity": "red"}


def test_a_lookahead_is_refused_on_save_with_re2s_reason() -> None:
    with pytest.raises(ConfigError) as error:
        validate_custom_patterns([pattern(r"EMP-(?=\d{6})")])
    assert "custom pattern 'employee id': regex does not compile as RE2" in str(error.value)
    assert str(error.value).endswith("invalid perl operator: (?=")


async def test_a_backreference_is_refused_and_nothing_is_saved(session: AsyncSession) -> None:
    await create_organization(session=session, organization_id="acme", actor=Actor.cli())
    await session.commit()
    with pytest.raises(ConfigError, match=r"invalid escape sequence: \\1"):
        await update_config(
            session=session, organization_id="acme", actor=Actor.cli(), custom_patterns=[pattern(r"(\w+) \1")]
        )
    row = await get_config(session=session, organization_id="acme")
    assert row is not None
    assert row.custom_patterns == []


def test_re2_refusals_are_not_written_to_standard_error(capfd: pytest.CaptureFixture[str]) -> None:
    # RE2 logs to file descriptor 2 by default, which would scribble over the console's screen.
    with pytest.raises(ConfigError):
        validate_custom_patterns([pattern("(unclosed")])
    assert capfd.readouterr().err == ""


async def test_a_pattern_saved_before_the_re2_check_shows_re2s_reason_in_the_tester(
    session: AsyncSession,
) -> None:
    row = await create_organization(session=session, organization_id="acme", actor=Actor.cli())
    # As an older version could save it: Python's re accepts a lookahead, RE2 does not.
    row.custom_patterns = [pattern(r"EMP-(?=\d)\d+", name="old"), pattern(r"EMP-\d{6}")]
    await session.commit()
    result = await try_organization_patterns(session=session, organization_id="acme", sample="EMP-123456")
    old, current = result.hits
    assert old.error == "invalid perl operator: (?="
    assert old.count == 0
    assert current.count == 1


async def test_the_tester_reports_character_offsets_on_non_ascii_samples() -> None:
    # RE2 matches UTF-8 bytes; the tester must still report positions in characters.
    result = await run_patterns([pattern(r"EMP-\d{6}")], "Zoë, Ærø: EMP-123456")
    [hit] = result.hits
    assert hit.matches == ((10, 20, "EMP-123456"),)
