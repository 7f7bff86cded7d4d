"""Organisations' extra log_metadata keys: vetted, stored, listed, removed, audited; on both engines."""

from __future__ import annotations

import re

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from db.audit import recent_changes
from db.configs import METADATA_KEYS_MAX_BYTES, agent_json_bytes, create_organization, get_config
from db.metadata_keys import (
    MAX_ENUM_VALUES,
    MAX_ORGANIZATION_KEYS,
    MAX_TOKEN_CHARS,
    STANDARD_KEYS,
    MetadataKeyError,
    Shape,
    allow_key,
    keys_for_agent,
    list_keys,
    organization_shapes,
    remove_key,
    shapes_from_agent,
    vet_key,
)
from db.rights import Actor


@pytest.mark.parametrize(
    "key",
    [
        "prompt",
        "user_prompt",
        "usermessage",
        "payload",
        "chat_transcript",
        "texto",
        "conversation_id",
        "prompt_id",
    ],
)
def test_a_key_named_for_content_cannot_be_allowed(key: str) -> None:
    with pytest.raises(MetadataKeyError, match="names prompt or answer content"):
        vet_key(key, "token")


def test_a_measure_of_content_can_be_allowed_as_a_number_only() -> None:
    assert vet_key("prompt_tokens", "number") == Shape("number")
    with pytest.raises(MetadataKeyError, match="content"):
        vet_key("prompt_tokens", "token")


@pytest.mark.parametrize(
    ("key", "shape", "values", "words"),
    [
        ("Team", "token", None, "lower-case letters"),
        ("te\u200bam", "token", None, "lower-case letters"),
        ("\u0440roject", "token", None, "lower-case letters"),
        ("browser", "token", None, "standard key"),
        ("team", "text", None, "shape must be one of"),
        ("team", "enum", [], "needs its values"),
        ("team", "enum", ["red", "my salary"], "enum values must be"),
        ("team", "enum", ["red", "red"], "must not repeat"),
        ("team", "number", ["red"], "only an enum"),
    ],
)
def test_keys_and_shapes_an_administrator_gives_are_vetted(
    key: str, shape: str, values: list[str] | None, words: str
) -> None:
    with pytest.raises(MetadataKeyError, match=words):
        vet_key(key, shape, values)


ANA = Actor(name="ana", source="cli")


async def test_allowed_keys_are_stored_listed_and_removed_with_audit_rows(session: AsyncSession) -> None:
    config = await create_organization(session=session, organization_id="acme", actor=Actor.cli())
    version = config.updated_at
    await allow_key(
        session=session, organization_id="acme", key="team", shape="enum", values="red, blue", actor=ANA
    )
    await allow_key(session=session, organization_id="acme", key="tabs", shape="number", actor=ANA)
    await session.commit()
    assert [
        (row.key, row.shape, row.enum_values)
        for row in await list_keys(session=session, organization_id="acme")
    ] == [
        ("tabs", "number", []),
        ("team", "enum", ["red", "blue"]),
    ]
    shapes = await organization_shapes(session=session, organization_id="acme")
    assert shapes["team"] == Shape("enum", values=("red", "blue"))
    assert STANDARD_KEYS.items() <= shapes.items()
    assert (
        await get_config(session=session, organization_id="acme")
    ).updated_at > version  # agents see a new version
    assert await remove_key(session=session, organization_id="acme", key="team", actor=ANA)
    assert not await remove_key(session=session, organization_id="acme", key="team", actor=ANA)
    await session.commit()
    assert [row.key for row in await list_keys(session=session, organization_id="acme")] == ["tabs"]
    actions = [(row.action, row.actor, row.entity_id) for row in await recent_changes(session=session)]
    assert ("metadata_key.allow", "ana", "acme") in actions
    assert ("metadata_key.remove", "ana", "acme") in actions


async def test_a_key_cannot_be_allowed_twice_nor_for_an_unknown_organisation(session: AsyncSession) -> None:
    await create_organization(session=session, organization_id="acme", actor=Actor.cli())
    await allow_key(session=session, organization_id="acme", key="team", shape="token", actor=Actor.cli())
    with pytest.raises(MetadataKeyError, match="allowed already"):
        await allow_key(
            session=session, organization_id="acme", key="team", shape="number", actor=Actor.cli()
        )
    with pytest.raises(MetadataKeyError, match="does not exist"):
        await allow_key(
            session=session, organization_id="nobody", key="team", shape="token", actor=Actor.cli()
        )


def test_the_key_map_sent_to_agents_reads_back_as_the_same_shapes() -> None:
    shapes = {**STANDARD_KEYS, "team": Shape("enum", values=("red", "blue")), "tabs": Shape("number")}
    assert shapes_from_agent(keys_for_agent(shapes)) == shapes


async def test_a_key_that_would_push_the_key_map_past_its_share_of_the_welcome_is_refused(
    session: AsyncSession,
) -> None:
    await create_organization(session=session, organization_id="acme", actor=Actor.cli())
    values = ",".join(f"{index:02d}" + "v" * (MAX_TOKEN_CHARS - 2) for index in range(MAX_ENUM_VALUES))
    refusal: MetadataKeyError | None = None
    allowed = 0
    while refusal is None and allowed < MAX_ORGANIZATION_KEYS:
        key = f"k{allowed:02d}"
        try:
            await allow_key(
                session=session,
                organization_id="acme",
                key=key,
                shape="enum",
                values=values,
                actor=Actor.cli(),
            )
        except MetadataKeyError as error:
            refusal = error
        else:
            allowed += 1
    assert refusal is not None
    assert re.search(r"would take [\d,]+ bytes as sent to agents, more than 24,576", str(refusal))
    # Refused by size long before the count limit, and what was allowed fits its share.
    assert 0 < allowed < MAX_ORGANIZATION_KEYS
    shapes = await organization_shapes(session=session, organization_id="acme")
    assert agent_json_bytes(keys_for_agent(shapes), field="keys") <= METADATA_KEYS_MAX_BYTES
