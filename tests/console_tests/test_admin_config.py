"""Config section: organisations, retention range, thresholds, tools, custom patterns with the
tester, and ingest tokens checked against a real ingest hello — every change audited."""

from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from console.dialogs.config_forms import OrganizationFormScreen, PatternFormScreen, TokenShownScreen
from console.sections.config import ConfigSection
from console.sections.config.patterns import PatternsPane
from console.sections.config.retention import RetentionPane
from console.sections.config.tester import PatternTesterPane
from console.sections.config.thresholds import ThresholdsPane
from console.sections.config.tokens import TokensPane
from console.sections.config.tools import ToolsPane
from db.configs import create_organization, get_config
from db.engine import new_sessionmaker
from db.models import IngestToken
from db.pattern_tester import PatternTestError, run_patterns
from db.settings import Settings
from tests.support.console import (
    add_org,
    audit_rows,
    confirm,
    fill,
    open_section,
    settle,
    signed_in,
    submit,
)
from tests.support.database import SETUP, Organization
from tests.support.ingest import RawClient, hello, hello_message, serving

EMPLOYEE_ID = {"name": "employee id", "regex": r"EMP-\d{6}", "entity_type": "EMPLOYEE_ID", "severity": "red"}


async def config_of(engine: AsyncEngine, organization_id: str = "acme"):
    async with new_sessionmaker(engine)() as session:
        return await get_config(session=session, organization_id=organization_id)


async def test_new_organisation_form_validates_then_creates_with_defaults(
    engine: AsyncEngine, app_factory
) -> None:
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, ConfigSection)
        assert section.organization_id is None
        section.action_new_organization()
        await settle(pilot)
        form = pilot.app.screen
        assert isinstance(form, OrganizationFormScreen)
        fill(pilot, organization_id="bad id!", log_retention_days="10")
        await submit(pilot)
        assert "organization_id must be" in form.error_of("organization_id")
        assert "between 30 and 365" in form.error_of("log_retention_days")
        fill(pilot, organization_id="acme", log_retention_days="60")
        await submit(pilot)
        await settle(pilot)
        assert section.organization_id == "acme"
        assert section.query_one("#tools-table").row_count > 5
    row = await config_of(engine)
    assert row is not None
    assert row.log_retention_days == 60
    assert row.updated_by == "alice"
    [audit] = await audit_rows(engine, "organization.create")
    assert audit.entity_id == "acme"
    assert audit.changes["log_retention_days"] == {"after": 60}
    # The organisation comes with its default alert rules, named in the same audit row.
    assert "Red burst per user" in audit.changes["alert_rules"]["after"]


async def test_retention_outside_30_to_365_is_refused_next_to_the_field(
    engine: AsyncEngine, app_factory
) -> None:
    await add_org(engine)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, ConfigSection)
        for wrong in ("29", "366", "ninety"):
            section.query_one("#log_retention_days").value = wrong
            section.query_one(RetentionPane).save()
            await settle(pilot)
            assert "log_retention_days must be" in section.field_error("log_retention_days")
    row = await config_of(engine)
    assert row is not None
    assert row.log_retention_days == 90
    assert await audit_rows(engine, "config.update") == []


async def test_saved_retention_is_stamped_audited_and_sent_to_agents_on_their_next_config_request(
    engine: AsyncEngine, app_factory, settings: Settings
) -> None:
    await add_org(engine)
    async with new_sessionmaker(engine)() as session:
        from db.tokens import create_token

        _, token = await create_token(session=session, actor=SETUP, organization_id="acme")
        await session.commit()
    async with serving(settings) as server:
        agent = await RawClient.open(server.port)
        await agent.send(
            hello_message(Organization("acme", token), device_id="d1", user_id="u@acme", agent_version="1")
        )
        welcome = await agent.receive()
        assert welcome["config"]["log_retention_days"] == 90
        async with signed_in(app_factory(), engine) as pilot:
            section = await open_section(pilot, ConfigSection)
            section.query_one("#log_retention_days").value = "120"
            section.query_one(RetentionPane).save()
            await settle(pilot)
            assert section.field_error("log_retention_days") == ""
        await agent.send({"type": "config"})
        answer = await agent.receive()
        await agent.close()
    assert answer["config"]["log_retention_days"] == 120
    assert answer["config"]["version"] != welcome["config"]["version"]
    row = await config_of(engine)
    assert row is not None
    assert row.updated_by == "alice"
    [audit] = await audit_rows(engine, "config.update")
    assert audit.changes == {"log_retention_days": {"before": 90, "after": 120}}


async def test_thresholds_with_amber_above_red_are_refused_next_to_the_field(
    engine: AsyncEngine, app_factory
) -> None:
    await add_org(engine)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, ConfigSection)
        section.query_one("#amber_min_entities").value = "9"
        section.query_one("#red_min_entities").value = "3"
        section.query_one(ThresholdsPane).save()
        await settle(pilot)
        assert "must not exceed" in section.field_error("amber_min_entities")
        section.query_one("#amber_min_entities").value = "two"
        section.query_one(ThresholdsPane).save()
        await settle(pilot)
        assert "whole number" in section.field_error("amber_min_entities")
        section.query_one("#amber_min_entities").value = "2"
        section.query_one("#red_entity_types").value = "API_KEY, EMPLOYEE_ID"
        section.query_one(ThresholdsPane).save()
        await settle(pilot)
    row = await config_of(engine)
    assert row is not None
    assert row.sensitivity_thresholds == {
        "amber_min_entities": 2,
        "red_min_entities": 3,
        "red_entity_types": ["API_KEY", "EMPLOYEE_ID"],
    }
    [audit] = await audit_rows(engine, "config.update")
    assert audit.changes["sensitivity_thresholds"]["before"]["red_min_entities"] == 5


async def test_tools_can_be_added_disabled_and_removed(engine: AsyncEngine, app_factory) -> None:
    await add_org(engine)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, ConfigSection)
        section.query_one(ToolsPane).add_entry()
        await settle(pilot)
        fill(pilot, name="ChatGPT")
        await submit(pilot)
        assert "twice" in pilot.app.screen.error_of("name")
        fill(pilot, name="Le Chat Pro", tool_type="desktop")
        await submit(pilot)
        await settle(pilot)
        table = section.query_one("#tools-table")
        table.move_cursor(row=table.get_row_index("ChatGPT"))
        section.query_one(ToolsPane).toggle_entry()
        await settle(pilot)
        table.move_cursor(row=table.get_row_index("Claude"))
        section.query_one(ToolsPane).remove_entry()
        await confirm(pilot)
    row = await config_of(engine)
    assert row is not None
    tools = {tool["name"]: tool for tool in row.monitored_tools}
    assert tools["Le Chat Pro"] == {"name": "Le Chat Pro", "tool_type": "desktop", "enabled": True}
    assert tools["ChatGPT"]["enabled"] is False
    assert "Claude" not in tools
    assert len(await audit_rows(engine, "config.update")) == 3


async def test_a_pattern_that_does_not_compile_is_refused_with_the_regex_error(
    engine: AsyncEngine, app_factory
) -> None:
    await add_org(engine)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, ConfigSection)
        section.query_one(PatternsPane).add_entry()
        await settle(pilot)
        form = pilot.app.screen
        assert isinstance(form, PatternFormScreen)
        fill(pilot, name="broken", regex="EMP-(\\d{6}", entity_type="EMPLOYEE_ID")
        await submit(pilot)
        assert "regex does not compile" in form.error_of("regex")
        assert "missing )" in form.error_of("regex")
        fill(pilot, **{k: v for k, v in EMPLOYEE_ID.items() if k != "severity"}, severity="red")
        await submit(pilot)
        assert not isinstance(pilot.app.screen, PatternFormScreen)
    row = await config_of(engine)
    assert row is not None
    assert row.custom_patterns == [EMPLOYEE_ID]
    [audit] = await audit_rows(engine, "config.update")
    assert audit.changes["custom_patterns"] == {"before": [], "after": [EMPLOYEE_ID]}


async def test_the_tester_shows_what_the_patterns_find_and_stores_nothing(
    engine: AsyncEngine, app_factory
) -> None:
    await add_org(engine, patterns=[EMPLOYEE_ID])
    before = await config_of(engine)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, ConfigSection)
        section.action_show_tester()
        await settle(pilot)
        section.query_one("#tester-sample").text = "ticket for EMP-123456, cc EMP-654321 and EMP-12"
        await pilot.click("#tester-run")
        await settle(pilot)
        result = section.query_one(PatternTesterPane).result
        assert result is not None, str(section.query_one("#tester-result").render())
        [hit] = result.matched
        assert hit.count == 2
        assert [m[2] for m in hit.matches] == ["EMP-123456", "EMP-654321"]
        assert result.highest_severity == "red"
        assert "EMP-123456" in str(section.query_one("#tester-result").render())
    after = await config_of(engine)
    assert after is not None
    assert before is not None
    assert after.updated_at == before.updated_at
    assert await audit_rows(engine) == []


async def test_the_tester_runs_a_catastrophic_pattern_in_linear_time_and_refuses_oversized_samples() -> None:
    # Python's re would backtrack for longer than the universe's age on this; RE2 answers at once.
    evil = {"name": "evil", "regex": r"(a+)+$", "entity_type": "X", "severity": "amber"}
    started = time.monotonic()
    result = await run_patterns([evil], "a" * 4999 + "!")
    assert time.monotonic() - started < 2
    assert result.matched == ()
    with pytest.raises(PatternTestError, match="at most"):
        await run_patterns([EMPLOYEE_ID], "x" * 100_000)


async def test_token_is_shown_once_accepted_at_hello_and_refused_once_revoked(
    engine: AsyncEngine, app_factory, settings: Settings
) -> None:
    await add_org(engine)
    async with serving(settings) as server, signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, ConfigSection)
        section.action_create_token()
        await settle(pilot)
        fill(pilot, name="x" * 101)
        await submit(pilot)
        assert "at most 100 characters" in pilot.app.screen.error_of("name")
        fill(pilot, name="laptops")
        await submit(pilot)
        await settle(pilot)
        shown = pilot.app.screen
        assert isinstance(shown, TokenShownScreen)
        token = shown.shown_token
        await pilot.click("#token-close")
        await settle(pilot)
        assert (await hello(server.port, Organization("acme", token)))["type"] == "welcome"
        tokens = section.query_one(TokensPane)
        [token_id] = tokens.tokens
        tokens.table.move_cursor(row=0)
        tokens.remove_entry()
        await confirm(pilot)
        assert tokens.tokens[token_id].revoked_at is not None
        refused = await hello(server.port, Organization("acme", token))
        assert (refused["type"], refused["code"]) == ("error", "unauthorized")
    created, revoked = (
        await audit_rows(engine, "ingest_token.create"),
        await audit_rows(engine, "ingest_token.revoke"),
    )
    assert created[0].changes["name"] == {"after": "laptops"}
    assert revoked[0].entity_id == token_id
    assert token not in str(created[0].changes)
    assert token not in str(revoked[0].changes)
    async with new_sessionmaker(engine)() as session:
        stored = await session.get(IngestToken, uuid.UUID(token_id))
        assert stored is not None
        assert stored.token_hash != token


async def test_an_organisation_whose_config_cannot_be_shown_keeps_no_field_of_the_one_shown_before(
    engine: AsyncEngine, app_factory
) -> None:
    async with new_sessionmaker(engine)() as session:
        await create_organization(
            session=session, organization_id="acme", actor=SETUP, log_retention_days=365
        )
        globex = await create_organization(
            session=session, organization_id="globex", actor=SETUP, log_retention_days=30
        )
        # Written around the validators, as SQL would: the same tool twice breaks its table.
        globex.monitored_tools = [{"name": "ChatGPT", "tool_type": "web", "enabled": True}] * 2
        await session.commit()
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, ConfigSection)
        section.query_one("#config-org").value = "acme"
        await settle(pilot)
        assert section.query_one("#log_retention_days").value == "365"
        section.query_one("#config-org").value = "globex"
        await settle(pilot)
        assert section.organization_id == "globex"
        assert section.row is None
        for field in ("log_retention_days", "amber_min_entities", "red_min_entities", "red_entity_types"):
            assert section.query_one(f"#{field}").value == ""
            assert section.query_one(f"#{field}").disabled
        for table in ("#tools-table", "#patterns-table", "#tokens-table"):
            assert section.query_one(table).row_count == 0
        assert section.query_one("#save-retention").disabled
        assert "cannot be shown" in str(section.query_one("#config-summary").render())
        section.query_one("#log_retention_days").value = "365"  # what the old screen kept, typed back
        section.query_one(RetentionPane).save()
        await settle(pilot)
        section.query_one("#config-org").value = "acme"  # a good one again: every field is back
        await settle(pilot)
        assert section.query_one("#log_retention_days").value == "365"
        assert not section.query_one("#save-retention").disabled
        assert section.query_one("#tools-table").row_count > 5
    row = await config_of(engine, "globex")
    assert row is not None
    assert row.log_retention_days == 30
    assert await audit_rows(engine, "config.update") == []
