"""Every text a person types is checked against its column in db/, the same on both engines, naming the field;
no refusal, from db/ or from the database, carries a hash."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from db.configs import ConfigError, create_organization, update_config
from db.models import IngestToken, User
from db.rights import Actor
from db.tokens import TokenError, create_token
from db.users import UserError, update_user
from tests.support.database import add_user


async def test_an_over_long_full_name_is_refused_naming_the_field(session: AsyncSession) -> None:
    with pytest.raises(UserError) as error:
        await add_user(session, "alice", full_name="x" * 3000)
    assert str(error.value) == "full_name must be at most 255 characters; got 3,000"
    assert error.value.field == "full_name"
    assert await session.scalar(select(User)) is None


async def test_an_over_long_full_name_is_refused_when_editing(session: AsyncSession) -> None:
    await add_user(session, "alice", is_admin=True)
    with pytest.raises(UserError, match="full_name must be at most 255 characters; got 256") as error:
        await update_user(session=session, username="alice", actor=Actor.cli(), full_name="y" * 256)
    assert error.value.field == "full_name"


async def test_an_over_long_email_is_refused_naming_the_field(session: AsyncSession) -> None:
    with pytest.raises(UserError, match="email must be at most 255 characters; got 260") as error:
        await add_user(session, "alice", email="a" * 60 + "@" + "b" * 195 + ".com")
    assert error.value.field == "email"


async def test_an_over_long_username_is_refused_naming_the_field(session: AsyncSession) -> None:
    with pytest.raises(UserError, match="username must be at most 64 characters; got 65") as error:
        await add_user(session, "a" * 65)
    assert error.value.field == "username"


async def test_an_over_long_token_name_is_refused_naming_the_field(session: AsyncSession) -> None:
    await create_organization(session=session, organization_id="acme", actor=Actor.cli())
    with pytest.raises(TokenError, match="^token name must be at most 100 characters; got 101$"):
        await create_token(session=session, actor=Actor.cli(), organization_id="acme", name="t" * 101)
    assert await session.scalar(select(IngestToken)) is None


async def test_an_over_long_organization_id_is_refused_naming_the_field(session: AsyncSession) -> None:
    with pytest.raises(ConfigError, match="^organization_id must be at most 64 characters; got 65$"):
        await create_organization(session=session, organization_id="o" * 65, actor=Actor.cli())


async def test_an_over_long_updated_by_is_refused_naming_the_field(session: AsyncSession) -> None:
    with pytest.raises(ConfigError, match="^updated_by must be at most 64 characters; got 65$"):
        await create_organization(session=session, organization_id="acme", actor=Actor("u" * 65, "cli"))
    await create_organization(session=session, organization_id="acme", actor=Actor.cli())
    with pytest.raises(ConfigError, match="^updated_by must be at most 64 characters; got 70$"):
        await update_config(
            session=session, organization_id="acme", actor=Actor("u" * 70, "cli"), log_retention_days=60
        )


async def test_database_errors_never_carry_the_statement_parameters(session: AsyncSession) -> None:
    hashed = (await add_user(session, "alice")).hashed_password
    # Past db/'s checks (a race, a bug): the database refuses, and its error must not quote the hash.
    session.add(User(username="ALICE", email="other@acme.com", hashed_password=hashed))
    with pytest.raises(SQLAlchemyError) as error:
        await session.flush()
    await session.rollback()
    assert hashed not in str(error.value)
    assert "parameters hidden" in str(error.value)
