"""The demo's preparation goes through the audited change functions of the command line (``org create``,
``ingest-token create|revoke``, ``create-admin``): what it makes and revokes is in the audit trail, under
the demo's own name."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import new_sessionmaker
from db.models import AuditEvent, IngestToken
from db.settings import Settings
from simulation.demo import DEMO_ACTOR, DEMO_ORGANIZATIONS, _prepare, generate_password


async def test_a_second_demo_run_audits_the_tokens_it_revokes(
    engine: AsyncEngine, settings: Settings
) -> None:
    password = generate_password()
    await _prepare(settings, password)
    await _prepare(settings, password)
    async with new_sessionmaker(engine)() as session:
        revoked = {str(token.id) for token in await session.scalars(select(IngestToken)) if token.revoked_at}
        audited = (await session.scalars(select(AuditEvent).order_by(AuditEvent.id))).all()
    revocations = [row for row in audited if row.action == "ingest_token.revoke"]
    assert len(revoked) == len(DEMO_ORGANIZATIONS)
    assert {row.entity_id for row in revocations} == revoked
    assert {(row.actor, row.source) for row in audited} == {(DEMO_ACTOR, "cli")}
    assert sum(row.action == "ingest_token.create" for row in audited) == 2 * len(DEMO_ORGANIZATIONS)


async def test_the_demo_writes_the_audit_rows_of_the_commands_it_stands_for(
    engine: AsyncEngine, settings: Settings
) -> None:
    await _prepare(settings, generate_password())
    async with new_sessionmaker(engine)() as session:
        audited = (await session.scalars(select(AuditEvent))).all()
    # Those of `org create`, `ingest-token create` and `create-admin`, one per thing made.
    actions = sorted(row.action for row in audited)
    assert actions == sorted(
        ["organization.create", "ingest_token.create"] * len(DEMO_ORGANIZATIONS) + ["user.create"]
    )
