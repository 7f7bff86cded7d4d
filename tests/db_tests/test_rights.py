"""Rights are checked in db/, in the change's own transaction: every change function refuses a viewer,
a deactivated administrator and a deleted account (changing nothing, auditing nothing), and accepts an
active administrator or the command line, writing exactly one audit row itself."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from db.configs import create_organization, update_config
from db.devices import delete_device, register_or_touch_device, set_device_active
from db.engine import new_sessionmaker
from db.metadata_keys import allow_key, remove_key
from db.models import AuditEvent, Device, FirewallConfig, IngestToken, OrganizationMetadataKey, User
from db.rights import Actor, NotAllowed
from db.scrub import scrub
from db.tokens import create_token, revoke_token
from db.users import (
    UserError,
    create_administrator,
    create_user,
    delete_user,
    reset_password,
    update_user,
)

PASSWORD = "s3cret-password"
SEEDER = Actor(name="seeder", source="cli")
Change = Callable[[AsyncSession, Actor, dict[str, Any]], Awaitable[object]]


async def add_user(session: AsyncSession, username: str, *, is_admin: bool, active: bool = True) -> None:
    user = await create_user(
        session=session,
        actor=SEEDER,
        username=username,
        email=f"{username}@example.com",
        password=PASSWORD,
        is_admin=is_admin,
        bcrypt_rounds=4,
    )
    user.is_active = active


async def seed(engine: AsyncEngine) -> dict[str, Any]:
    """An administrator (root), a viewer, a deactivated administrator, a user to act on, an organisation
    with a token, a device and a metadata key; the audit trail is then emptied."""
    async with new_sessionmaker(engine)() as session:
        await add_user(session, "root", is_admin=True)
        await add_user(session, "viewer", is_admin=False)
        await add_user(session, "former", is_admin=True, active=False)
        await add_user(session, "target", is_admin=False)
        await create_organization(session=session, organization_id="acme", actor=SEEDER)
        token, _ = await create_token(session=session, organization_id="acme", name="laptops", actor=SEEDER)
        await register_or_touch_device(
            session=session,
            organization_id="acme",
            device_id="dev-1",
            user_id="u@example.com",
            device_type="cli",
            agent_version="1.0.0",
        )
        await allow_key(session=session, organization_id="acme", key="floor", shape="number", actor=SEEDER)
        await session.execute(AuditEvent.__table__.delete())
        await session.commit()
        return {"token_id": token.id}


async def snapshot(engine: AsyncEngine) -> dict[str, Any]:
    """Everything a change could touch, to compare before and after a refusal."""
    async with new_sessionmaker(engine)() as session:

        async def rows(*columns: Any) -> list[tuple[Any, ...]]:
            return sorted(tuple(row) for row in (await session.execute(select(*columns))).all())

        return {
            "users": await rows(
                User.username, User.email, User.full_name, User.is_admin, User.is_active, User.hashed_password
            ),
            "configs": await rows(
                FirewallConfig.organization_id,
                FirewallConfig.log_retention_days,
                FirewallConfig.updated_at,
                FirewallConfig.updated_by,
            ),
            "tokens": await rows(IngestToken.id, IngestToken.revoked_at),
            "devices": await rows(Device.device_id, Device.is_active),
            "keys": await rows(OrganizationMetadataKey.organization_id, OrganizationMetadataKey.key),
            "audit": await session.scalar(select(func.count()).select_from(AuditEvent)),
        }


async def audit_trail(engine: AsyncEngine) -> list[tuple[str, str, str]]:
    async with new_sessionmaker(engine)() as session:
        return [
            (row.action, row.actor, row.source) for row in (await session.scalars(select(AuditEvent))).all()
        ]


#: Each change function, called as the actor, and the audit action it records.
CHANGES: dict[str, tuple[Change, str]] = {
    "create_user": (
        lambda s, a, _: create_user(
            session=s,
            actor=a,
            username="carol",
            email="carol@example.com",
            password=PASSWORD,
            bcrypt_rounds=4,
        ),
        "user.create",
    ),
    "create_administrator": (
        lambda s, a, _: create_administrator(
            session=s,
            actor=a,
            username="carol",
            email="carol@example.com",
            password=PASSWORD,
            full_name=None,
            bcrypt_rounds=4,
        ),
        "user.create",
    ),
    "update_user": (
        lambda s, a, _: update_user(session=s, actor=a, username="target", is_admin=True),
        "user.update",
    ),
    "deactivate_user": (
        lambda s, a, _: update_user(session=s, actor=a, username="target", is_active=False),
        "user.deactivate",
    ),
    "reset_password": (
        lambda s, a, _: reset_password(
            session=s, actor=a, username="target", password="brand-new-secret", bcrypt_rounds=4
        ),
        "user.reset_password",
    ),
    "delete_user": (lambda s, a, _: delete_user(session=s, actor=a, username="target"), "user.delete"),
    "create_organization": (
        lambda s, a, _: create_organization(session=s, actor=a, organization_id="globex"),
        "organization.create",
    ),
    "update_config": (
        lambda s, a, _: update_config(session=s, actor=a, organization_id="acme", log_retention_days=45),
        "config.update",
    ),
    "create_token": (
        lambda s, a, _: create_token(session=s, actor=a, organization_id="acme", name="desktops"),
        "ingest_token.create",
    ),
    "revoke_token": (
        lambda s, a, seeded: revoke_token(session=s, actor=a, token_id=seeded["token_id"]),
        "ingest_token.revoke",
    ),
    "set_device_active": (
        lambda s, a, _: set_device_active(session=s, actor=a, device_id="dev-1", active=False),
        "device.deactivate",
    ),
    "delete_device": (lambda s, a, _: delete_device(session=s, actor=a, device_id="dev-1"), "device.delete"),
    "allow_key": (
        lambda s, a, _: allow_key(session=s, actor=a, organization_id="acme", key="team", shape="token"),
        "metadata_key.allow",
    ),
    "remove_key": (
        lambda s, a, _: remove_key(session=s, actor=a, organization_id="acme", key="floor"),
        "metadata_key.remove",
    ),
    "scrub": (lambda s, a, _: scrub(session=s, actor=a, apply=True), "scrub.apply"),
}
#: Console accounts that may not change anything now, and whether the console must sign them out.
REFUSED = {
    "a viewer": ("viewer", False),
    "a deactivated administrator": ("former", True),
    "a deleted account": ("ghost", True),
}


async def run_change(engine: AsyncEngine, name: str, actor: Actor, seeded: dict[str, Any]) -> None:
    change, _ = CHANGES[name]
    async with new_sessionmaker(engine)() as session:
        await change(session, actor, seeded)
        await session.commit()


@pytest.mark.parametrize("who", REFUSED)
@pytest.mark.parametrize("name", CHANGES)
async def test_a_change_is_refused_to_who_may_not_make_it_and_changes_nothing(
    engine: AsyncEngine, name: str, who: str
) -> None:
    seeded = await seed(engine)
    before = await snapshot(engine)
    username, signed_out = REFUSED[who]
    with pytest.raises(NotAllowed) as refused:
        await run_change(engine, name, Actor.console(username), seeded)
    assert refused.value.signed_out is signed_out
    assert repr(username) in str(refused.value)
    assert await snapshot(engine) == before


@pytest.mark.parametrize("name", CHANGES)
async def test_an_active_administrator_makes_the_change_with_one_audit_row(
    engine: AsyncEngine, name: str
) -> None:
    seeded = await seed(engine)
    before = await snapshot(engine)
    await run_change(engine, name, Actor.console("root"), seeded)
    assert await audit_trail(engine) == [(CHANGES[name][1], "root", "console")]
    after = await snapshot(engine)
    if name != "scrub":  # a scrub of clean rows changes nothing but the audit trail
        assert {key: after[key] for key in after if key != "audit"} != {
            key: before[key] for key in before if key != "audit"
        }


@pytest.mark.parametrize("name", CHANGES)
async def test_the_command_line_acts_with_database_rights_and_is_recorded(
    engine: AsyncEngine, name: str
) -> None:
    seeded = await seed(engine)
    await run_change(engine, name, Actor(name="ops-oscar", source="cli"), seeded)
    assert await audit_trail(engine) == [(CHANGES[name][1], "ops-oscar", "cli")]


async def test_the_usernames_case_does_not_matter_to_the_check(engine: AsyncEngine) -> None:
    seeded = await seed(engine)
    await run_change(engine, "create_token", Actor.console("ROOT"), seeded)
    with pytest.raises(NotAllowed):
        await run_change(engine, "create_token", Actor.console("VIEWER"), seeded)


async def test_an_administrator_demoted_since_signing_in_is_refused_from_then_on(engine: AsyncEngine) -> None:
    seeded = await seed(engine)
    async with new_sessionmaker(engine)() as session:
        await add_user(session, "second", is_admin=True)
        await session.commit()
    await run_change(engine, "create_organization", Actor.console("second"), seeded)
    async with new_sessionmaker(engine)() as session:
        await update_user(session=session, actor=Actor.console("root"), username="second", is_admin=False)
        await session.commit()
    with pytest.raises(NotAllowed, match="only administrators can create ingest tokens") as refused:
        await run_change(engine, "create_token", Actor.console("second"), seeded)
    assert not refused.value.signed_out


async def test_the_first_administrator_needs_no_actor_but_only_while_there_are_no_users(
    engine: AsyncEngine,
) -> None:
    async with new_sessionmaker(engine)() as session:
        await create_administrator(
            session=session,
            actor=None,
            username="first",
            email="first@example.com",
            password=PASSWORD,
            full_name=None,
            bcrypt_rounds=4,
        )
        await session.commit()
    assert await audit_trail(engine) == [("user.create", "first", "console")]
    async with new_sessionmaker(engine)() as session:
        with pytest.raises(UserError, match="users exist already"):
            await create_administrator(
                session=session,
                actor=None,
                username="second",
                email="second@example.com",
                password=PASSWORD,
                full_name=None,
                bcrypt_rounds=4,
            )
    async with new_sessionmaker(engine)() as session:
        assert await session.scalar(select(func.count()).select_from(User)) == 1


async def test_an_edit_applies_to_the_configuration_as_it_is_now(engine: AsyncEngine) -> None:
    """Two administrators adding a tool each, from lists read earlier, both land (the row is read locked)."""
    await seed(engine)
    for name in ("Le Chat", "Grok"):
        async with new_sessionmaker(engine)() as session:
            await update_config(
                session=session,
                actor=Actor.console("root"),
                organization_id="acme",
                edits={"monitored_tools": lambda tools, name=name: [*tools, {"name": name}]},
            )
            await session.commit()
    async with new_sessionmaker(engine)() as session:
        row = await session.scalar(select(FirewallConfig))
        assert row is not None
        assert {"Le Chat", "Grok"} <= {tool["name"] for tool in row.monitored_tools}
        assert row.updated_by == "root"
