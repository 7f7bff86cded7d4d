"""Config → metadata keys: an administrator allows a key with its shape (vetted, audited), sees the list
as plain text, and removes a key after confirming."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from console.dialogs.metadata_keys import MetadataKeyFormScreen, MetadataKeysScreen
from console.sections.config import ConfigSection
from db.engine import new_sessionmaker
from db.metadata_keys import list_keys
from db.models import OrganizationMetadataKey
from tests.support.console import add_org, audit_rows, confirm, fill, open_section, settle, signed_in, submit


async def keys_of(engine: AsyncEngine) -> list[tuple[str, str, list[str]]]:
    async with new_sessionmaker(engine)() as session:
        return [
            (r.key, r.shape, r.enum_values) for r in await list_keys(session=session, organization_id="acme")
        ]


async def test_administrator_allows_a_vetted_metadata_key_and_it_is_audited(
    engine: AsyncEngine, app_factory
) -> None:
    await add_org(engine)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, ConfigSection)
        section.action_metadata_keys()
        await settle(pilot)
        listing = pilot.app.screen
        assert isinstance(listing, MetadataKeysScreen)
        listing.action_add()
        await settle(pilot)
        form = pilot.app.screen
        assert isinstance(form, MetadataKeyFormScreen)
        fill(pilot, key="user_Prompt")
        await submit(pilot)
        assert "lower-case" in form.error_of("key")
        fill(pilot, key="usermessage")
        await submit(pilot)
        assert "names prompt or answer content" in form.error_of("key")
        fill(pilot, key="team", shape="enum", values="")
        await submit(pilot)
        assert "needs its values" in form.error_of("values")
        fill(pilot, values="red, blue")
        await submit(pilot)
        await settle(pilot)
        assert pilot.app.screen is listing
        assert listing.query_one("#metadata-keys-table").row_count == 1
    assert await keys_of(engine) == [("team", "enum", ["red", "blue"])]
    [audit] = await audit_rows(engine, "metadata_key.allow")
    assert (audit.actor, audit.source, audit.entity_id) == ("alice", "console", "acme")


async def test_metadata_keys_show_stored_strings_as_text_and_are_removed_after_confirming(
    engine: AsyncEngine, app_factory
) -> None:
    await add_org(engine)
    async with new_sessionmaker(engine)() as session:
        # Written past the vetting, as an old or hostile row could be: shown as text, never as markup.
        session.add(
            OrganizationMetadataKey(
                organization_id="acme",
                key="team",
                shape="enum",
                enum_values=["[/]", "[link=https://x]y", "\x1b[31mred"],
                created_at=datetime.now(UTC),
                created_by="[b]mallory[/b",
            )
        )
        await session.commit()
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, ConfigSection)
        section.action_metadata_keys()
        await settle(pilot)
        listing = pilot.app.screen
        assert isinstance(listing, MetadataKeysScreen)
        table = listing.query_one("#metadata-keys-table")
        assert "[link=https://x]y" in str(table.get_row_at(0)[2])
        assert str(table.get_row_at(0)[3]) == "[b]mallory[/b"
        listing.action_remove_key()
        await confirm(pilot)
        await settle(pilot)
        assert listing.query_one("#metadata-keys-table").row_count == 0
    assert await keys_of(engine) == []
    assert len(await audit_rows(engine, "metadata_key.remove")) == 1
