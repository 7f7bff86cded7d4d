"""Users: bcrypt-only storage, validation, duplicates, sign-in."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from db.security import hash_password, verify_password
from db.sign_in import SignInOutcome, sign_in
from db.users import UserError, UsersExist, create_administrator, get_by_username
from tests.support.database import PASSWORD, add_user


async def test_password_is_hashed_with_bcrypt_and_verifies() -> None:
    hashed = await hash_password("correct horse", rounds=4)
    assert hashed.startswith("$2b$04$")
    assert "correct horse" not in hashed
    assert await verify_password("correct horse", hashed)
    assert not await verify_password("wrong horse", hashed)


async def test_verify_never_raises_on_a_malformed_hash() -> None:
    assert await verify_password("anything", "not-a-bcrypt-hash") is False


async def test_created_user_stores_only_the_hash(session: AsyncSession) -> None:
    user = await add_user(session, "alice")
    assert user.hashed_password != PASSWORD
    assert await verify_password(PASSWORD, user.hashed_password)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"password": "short"}, "password"),
        ({"password": "x" * 73}, "password"),
        ({"email": "not-an-email"}, "email"),
    ],
)
async def test_invalid_fields_are_refused_with_the_field_named(
    session: AsyncSession, overrides: dict, field: str
) -> None:
    with pytest.raises(UserError) as error:
        await add_user(session, "alice", **overrides)
    assert error.value.field == field


async def test_duplicate_username_and_email_are_refused(session: AsyncSession) -> None:
    await add_user(session, "alice")
    with pytest.raises(UserError, match="taken"):
        await add_user(session, "alice", email="other@example.com")
    with pytest.raises(UserError, match="already used"):
        await add_user(session, "alice2", email="ALICE@example.com")


async def test_sign_in_stamps_last_login(session: AsyncSession) -> None:
    await add_user(session, "alice")
    user = (await sign_in(session=session, username="alice", password=PASSWORD, bcrypt_rounds=4)).user
    assert user is not None
    assert user.last_login is not None
    assert user.last_login.tzinfo is not None


async def test_sign_in_refuses_wrong_password_and_inactive_user(session: AsyncSession) -> None:
    await add_user(session, "alice")
    wrong = await sign_in(session=session, username="alice", password="wrong horse!", bcrypt_rounds=4)
    assert (wrong.outcome, wrong.user) == (SignInOutcome.WRONG, None)
    user = await get_by_username(session=session, username="alice")
    assert user is not None
    user.is_active = False
    await session.commit()
    disabled = await sign_in(session=session, username="alice", password=PASSWORD, bcrypt_rounds=4)
    assert (disabled.outcome, disabled.user) == (SignInOutcome.DISABLED, None)


async def test_the_first_administrator_is_refused_once_a_user_exists(session: AsyncSession) -> None:
    first = {"email": "root@acme.com", "password": "correct horse battery staple 99", "full_name": None}
    await create_administrator(session=session, username="root", bcrypt_rounds=4, actor=None, **first)
    with pytest.raises(UsersExist) as refused:
        await create_administrator(
            session=session, username="other", bcrypt_rounds=4, actor=None, **{**first, "email": "o@acme.com"}
        )
    assert isinstance(refused.value, UserError)
