"""Usernames and organisation ids: unique regardless of case, found regardless of case; migration 0009
stops with a list of existing case-duplicates instead of an IntegrityError."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from db.base import UTCDateTime, utcnow
from db.configs import ConfigError, create_organization, get_config
from db.engine import head_revision
from db.errors import DatabaseError
from db.models import FirewallConfig, User
from db.rights import Actor
from db.settings import REPO_ROOT
from db.sign_in import sign_in
from db.tokens import create_token, list_tokens
from db.users import UserError, get_by_username
from tests.support.database import (
    PASSWORD,
    add_user,
    run_alembic,
)


async def test_a_username_differing_only_in_case_is_taken(session: AsyncSession) -> None:
    await add_user(session, "Alice")
    with pytest.raises(UserError, match="username 'alice' \\(as 'Alice'\\) is taken") as error:
        await add_user(session, "alice", email="other@acme.com")
    assert error.value.field == "username"


async def test_sign_in_finds_the_user_whatever_the_case_of_the_username(session: AsyncSession) -> None:
    await add_user(session, "Alice")
    user = (await sign_in(session=session, username="aLICE", password=PASSWORD, bcrypt_rounds=4)).user
    assert user is not None
    assert user.username == "Alice"


async def test_a_non_ascii_lookalike_of_a_username_finds_nobody(session: AsyncSession) -> None:
    await add_user(session, "kate")
    # U+212A KELVIN SIGN lowers to "k" in Python and in PostgreSQL.
    assert await get_by_username(session=session, username="\u212aate") is None


async def test_the_database_refuses_usernames_differing_only_in_case(session: AsyncSession) -> None:
    user = await add_user(session, "alice")
    session.add(User(username="ALICE", email="x@acme.com", hashed_password=user.hashed_password))
    with pytest.raises(IntegrityError):
        await session.flush()


async def test_an_organisation_differing_only_in_case_already_exists(session: AsyncSession) -> None:
    await create_organization(session=session, organization_id="Acme", actor=Actor.cli())
    with pytest.raises(ConfigError, match="^organisation 'ACME' already exists as 'Acme'$"):
        await create_organization(session=session, organization_id="ACME", actor=Actor.cli())


async def test_the_database_refuses_organisations_differing_only_in_case(session: AsyncSession) -> None:
    await create_organization(session=session, organization_id="acme", actor=Actor.cli())
    session.add(FirewallConfig(organization_id="ACME", log_retention_days=90))
    with pytest.raises(IntegrityError):
        await session.flush()


async def test_an_organisation_is_found_whatever_the_case_and_its_tokens_keep_its_spelling(
    session: AsyncSession,
) -> None:
    await create_organization(session=session, organization_id="Acme", actor=Actor.cli())
    row = await get_config(session=session, organization_id="ACME")
    assert row is not None
    assert row.organization_id == "Acme"
    token, _ = await create_token(session=session, actor=Actor.cli(), organization_id="acme", name="laptops")
    assert token.organization_id == "Acme"
    assert [t.id for t in await list_tokens(session=session, organization_id="ACME")] == [token.id]


# -- migration 0009 ----------------------------------------------------------------------------

USERS = sa.table(
    "users",
    sa.column("id", sa.Uuid),
    sa.column("username", sa.String),
    sa.column("email", sa.String),
    sa.column("hashed_password", sa.String),
    sa.column("is_active", sa.Boolean),
    sa.column("is_admin", sa.Boolean),
    sa.column("created_at", UTCDateTime),
)
CONFIGS = sa.table(
    "firewall_configs",
    sa.column("id", sa.Uuid),
    sa.column("organization_id", sa.String),
    sa.column("monitored_tools", sa.JSON),
    sa.column("sensitivity_thresholds", sa.JSON),
    sa.column("custom_patterns", sa.JSON),
    sa.column("log_retention_days", sa.Integer),
    sa.column("updated_at", UTCDateTime),
)


@pytest.fixture
def url_at_0008(fresh_url: str) -> str:
    """A fresh database migrated to 0008, the revision before case-insensitive names."""
    run_alembic(fresh_url, lambda config, _: command.upgrade(config, "0008"))
    return fresh_url


def insert_duplicates(url: str) -> None:
    def insert(_: object, connection: Connection) -> None:
        for name in ("alice", "Alice", "bob", "BOB", "carol"):
            connection.execute(
                USERS.insert().values(
                    id=uuid.uuid4(),
                    username=name,
                    email=f"{name}-{uuid.uuid4().hex[:6]}@acme.com",
                    hashed_password="$2b$04$x",
                    is_active=True,
                    is_admin=False,
                    created_at=utcnow(),
                )
            )
        for organization in ("acme", "ACME"):
            connection.execute(
                CONFIGS.insert().values(
                    id=uuid.uuid4(),
                    organization_id=organization,
                    monitored_tools=[],
                    sensitivity_thresholds={},
                    custom_patterns=[],
                    log_retention_days=90,
                    updated_at=utcnow(),
                )
            )

    run_alembic(url, insert)


EXPECTED = (
    "cannot make names unique regardless of case: usernames differ only in case: Alice, alice; BOB, bob; "
    "and organisation ids differ only in case: ACME, acme (rename one of each, then run `alembic upgrade "
    "head` again)"
)


def test_upgrade_stops_listing_case_duplicates_then_succeeds_once_renamed(url_at_0008: str) -> None:
    insert_duplicates(url_at_0008)
    with pytest.raises(DatabaseError) as error:
        run_alembic(url_at_0008, lambda config, _: command.upgrade(config, "head"))
    assert str(error.value) == EXPECTED

    def rename(_: object, connection: Connection) -> None:
        connection.execute(USERS.update().where(USERS.c.username == "Alice").values(username="alice2"))
        connection.execute(USERS.update().where(USERS.c.username == "BOB").values(username="bob2"))
        connection.execute(CONFIGS.delete().where(CONFIGS.c.organization_id == "ACME"))

    run_alembic(url_at_0008, rename)
    run_alembic(url_at_0008, lambda config, _: command.upgrade(config, "head"))
    version = run_alembic(
        url_at_0008,
        lambda _, connection: connection.execute(
            select(sa.column("version_num")).select_from(sa.table("alembic_version"))
        ).scalar(),
    )
    assert version == head_revision()


def test_alembic_command_line_prints_the_case_duplicates_in_one_line(url_at_0008: str) -> None:
    insert_duplicates(url_at_0008)
    env = {**os.environ, "DATABASE_URL": url_at_0008}
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"error: {EXPECTED}"
    assert "Traceback" not in result.stderr
