"""`python -m console org create` and `ingest-token create|list|revoke`, as real processes."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import AuditEvent, IngestToken
from db.security import hash_token
from tests.support.cli import console_command


async def test_token_lifecycle_from_the_command_line(
    subprocess_env: dict[str, str], session: AsyncSession
) -> None:
    env = {**subprocess_env, "USER": "carol"}
    refused = console_command(env, "ingest-token", "create", "--organization", "acme")
    assert refused.returncode == 2
    assert "python -m console org create acme" in refused.stderr

    assert console_command(env, "org", "create", "acme", "--retention-days", "60").returncode == 0
    created = console_command(env, "ingest-token", "create", "--organization", "acme", "--name", "laptops")
    assert created.returncode == 0, created.stderr
    clear = created.stdout.strip().splitlines()[-1]
    row = await session.scalar(select(IngestToken))
    assert row is not None
    assert row.token_hash == hash_token(clear)
    assert row.created_by == "carol"

    listed = console_command(env, "ingest-token", "list", "--organization", "acme")
    assert str(row.id) in listed.stdout
    assert clear not in listed.stdout

    token_id = row.id
    revoked = console_command(env, "ingest-token", "revoke", str(token_id))
    assert revoked.returncode == 0, revoked.stderr
    session.expire_all()
    assert await session.scalar(select(IngestToken.revoked_at).where(IngestToken.id == token_id)) is not None

    actions = (await session.scalars(select(AuditEvent.action).order_by(AuditEvent.occurred_at))).all()
    assert actions == ["organization.create", "ingest_token.create", "ingest_token.revoke"]
    audit = (await session.scalars(select(AuditEvent))).all()
    assert all(event.actor == "carol" and event.source == "cli" for event in audit)
    assert all(clear not in str(event.changes) for event in audit)


def test_revoking_an_id_that_is_not_a_uuid_is_a_usage_error(subprocess_env: dict[str, str]) -> None:
    result = console_command(subprocess_env, "ingest-token", "revoke", "abc")
    assert result.returncode == 2
    assert "not a token id" in result.stderr
