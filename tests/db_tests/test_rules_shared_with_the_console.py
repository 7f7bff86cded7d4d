"""Rules a console form checks before saving are ``db/``'s own, so the command line gets them too."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from db.configs import ConfigError, custom_pattern_name_taken, validate_custom_patterns
from db.users import UserError, UsersExist, create_administrator

PATTERN = {"name": "Employee id", "regex": r"EMP-\d{6}", "entity_type": "EMPLOYEE_ID", "severity": "amber"}


@pytest.mark.parametrize("name", ["Employee id", "EMPLOYEE ID", "  employee id ", "employee ID"])
def test_a_form_finds_a_taken_pattern_name_as_the_validator_refuses_it(name: str) -> None:
    assert custom_pattern_name_taken([PATTERN], name)
    with pytest.raises(ConfigError, match="is used twice"):
        validate_custom_patterns([PATTERN, {**PATTERN, "name": name}])


def test_a_new_pattern_name_is_free() -> None:
    assert not custom_pattern_name_taken([PATTERN], "Badge number")


async def test_the_first_administrator_is_refused_once_a_user_exists(session: AsyncSession) -> None:
    first = {"email": "root@acme.com", "password": "correct horse battery staple 99", "full_name": None}
    await create_administrator(session=session, username="root", bcrypt_rounds=4, actor=None, **first)
    with pytest.raises(UsersExist) as refused:
        await create_administrator(
            session=session, username="other", bcrypt_rounds=4, actor=None, **{**first, "email": "o@acme.com"}
        )
    assert isinstance(refused.value, UserError)
