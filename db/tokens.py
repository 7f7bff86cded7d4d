"""Ingest tokens: created (the clear token shown once), listed, revoked, and verified on hello.

Only the SHA-256 of a token and its first characters (to recognise it in a
list) are stored; the clear token exists only in the output of :func:`create_token`.
Neither the clear token nor its hash ever appears in an error message.

Organisations are looked up regardless of case (``ACME`` finds ``acme``); a token
is stored with the organisation's id as it was created, and :func:`verify` takes
that spelling (the ingest server resolves a hello's id to it first, so the events
of an agent that writes ``ACME`` are kept under ``acme``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.audit import record_change
from db.base import as_utc, utcnow
from db.configs import get_config
from db.field_lengths import length_problem, max_length
from db.models import IngestToken
from db.rights import Actor, require_admin
from db.security import generate_token, hash_token

#: How many leading characters of a token are kept to recognise it ("aifw_AbC1…").
PREFIX_CHARS = 12
MAX_NAME_CHARS = max_length(IngestToken.name)
#: last_used_at is written at most this often per token, so hellos do not all write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class TokenError(ValueError):
    """A token cannot be created or revoked; the message says why and what to do."""


async def create_token(
    *, session: AsyncSession, organization_id: str, actor: Actor, name: str = ""
) -> tuple[IngestToken, str]:
    """Create a token for an existing organisation on behalf of ``actor``, audited.

    Returns the row and the clear token (show it once). Raises NotAllowed unless the
    actor is an administrator now, TokenError for an unknown organisation or a bad name.
    """
    await require_admin(session=session, actor=actor, what="create ingest tokens")
    organization = await get_config(session=session, organization_id=organization_id)
    if organization is None:
        raise TokenError(
            f"organisation {organization_id!r} does not exist; create it first with "
            f"`python -m console org create {organization_id}`"
        )
    name = name.strip()
    if (problem := length_problem(IngestToken.name, name)) is not None:
        raise TokenError(f"token {problem}")
    if (problem := length_problem(IngestToken.created_by, actor.name)) is not None:
        raise TokenError(problem)
    clear = generate_token()
    row = IngestToken(
        organization_id=organization.organization_id,
        name=name,
        token_prefix=clear[:PREFIX_CHARS],
        token_hash=hash_token(clear),
        created_at=utcnow(),
        created_by=actor.name,
    )
    session.add(row)
    await session.flush()
    await record_change(
        session=session,
        actor=actor,
        action="ingest_token.create",
        entity_type="ingest_token",
        entity_id=str(row.id),
        changes={
            "organization_id": {"after": row.organization_id},
            "name": {"after": row.name},
            "token_prefix": {"after": row.token_prefix},
        },
    )
    return row, clear


async def list_tokens(*, session: AsyncSession, organization_id: str | None = None) -> Sequence[IngestToken]:
    """Tokens, newest first, optionally of one organisation whatever its case (revoked ones included)."""
    statement = select(IngestToken).order_by(IngestToken.created_at.desc(), IngestToken.id)
    if organization_id is not None:
        statement = statement.where(func.lower(IngestToken.organization_id) == organization_id.lower())
    return (await session.scalars(statement)).all()


async def get_token(*, session: AsyncSession, token_id: uuid.UUID) -> IngestToken | None:
    """The token with this id (revoked or not), or None."""
    return await session.get(IngestToken, token_id)


async def revoke_token(*, session: AsyncSession, token_id: uuid.UUID, actor: Actor) -> IngestToken:
    """Revoke a token from now on, on behalf of ``actor``, audited.

    Raises NotAllowed unless the actor is an administrator now; TokenError if there is
    no such token or it is already revoked.
    """
    await require_admin(session=session, actor=actor, what="revoke ingest tokens")
    row = await get_token(session=session, token_id=token_id)
    if row is None:
        raise TokenError(f"no ingest token with id {token_id}")
    if row.revoked_at is not None:
        raise TokenError(f"ingest token {token_id} was already revoked at {row.revoked_at.isoformat()}")
    row.revoked_at = utcnow()
    await session.flush()
    await record_change(
        session=session,
        actor=actor,
        action="ingest_token.revoke",
        entity_type="ingest_token",
        entity_id=str(row.id),
        changes={"revoked_at": {"before": None, "after": row.revoked_at}},
    )
    return row


async def verify(*, session: AsyncSession, organization_id: str, token: str) -> IngestToken | None:
    """The live token of this organisation matching ``token``, or None; touches ``last_used_at``.

    The lookup is by hash (unique index); the caller commits.
    """
    row = await session.scalar(select(IngestToken).where(IngestToken.token_hash == hash_token(token)))
    if row is None or row.organization_id != organization_id or row.revoked_at is not None:
        return None
    now = utcnow()
    if row.last_used_at is None or now - as_utc(row.last_used_at) >= LAST_USED_RESOLUTION:
        row.last_used_at = now
        await session.flush()
    return row
