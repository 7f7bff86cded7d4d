"""Config → Alert rules: the organisation's rules, added, edited, disabled and deleted through the form and
keys (audited), db's refusals shown under their field, a viewer refused, and hostile names shown as text."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from console.dialogs.alert_rule_form import AlertRuleFormScreen, format_duration, parse_duration
from console.dialogs.confirm import ConfirmScreen
from console.sections.config import ConfigSection
from console.sections.config.alert_rules import AlertRulesPane
from db.alerts import list_rules
from db.engine import new_sessionmaker
from db.identifiers import visible
from db.models import AlertRule
from tests.console_tests.naughty_strings import NAUGHTY, WITH_CONTROLS
from tests.support.console import (
    add_org,
    audit_rows,
    confirm,
    fill,
    open_section,
    press_and_settle,
    settle,
    signed_in,
    submit,
)


async def rules_of(engine: AsyncEngine, organization_id: str = "acme") -> dict[str, AlertRule]:
    async with new_sessionmaker(engine)() as session:
        return {
            rule.name: rule for rule in await list_rules(session=session, organization_id=organization_id)
        }


async def open_rules(pilot) -> tuple[ConfigSection, AlertRulesPane]:
    section = await open_section(pilot, ConfigSection)
    pane = section.query_one(AlertRulesPane)
    section.show_pane(pane)
    pane.table.focus()
    await settle(pilot)
    return section, pane


def test_durations_read_and_write_in_the_largest_unit() -> None:
    assert [parse_duration(text) for text in ("90s", "10m", "72h", "3d", "600", " 2 H ")] == [
        90,
        600,
        259_200,
        259_200,
        600,
        7200,
    ]
    assert [format_duration(seconds) for seconds in (90, 600, 259_200, 0, 3600)] == [
        "90s",
        "10m",
        "3d",
        "0s",
        "1h",
    ]
    for wrong in ("", "ten minutes", "-5m", "5w"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(wrong)


async def test_the_pane_lists_the_organisations_default_rules(engine: AsyncEngine, app_factory) -> None:
    await add_org(engine)
    await add_org(engine, "globex")
    async with signed_in(app_factory(), engine) as pilot:
        _, pane = await open_rules(pilot)
        stored = await rules_of(engine)
        assert set(pane.rules) == {str(rule.id) for rule in stored.values()}
        burst = stored["Red burst per user"]
        cells = [str(cell) for cell in pane.table.get_row(str(burst.id))]
        assert cells == [
            "Red burst per user",
            "threshold",
            "yes",
            "high",
            "5",
            "10m",
            "user",
            "15m",
            "risk=red",
        ]


async def test_an_admin_adds_a_rule_and_db_refusals_land_under_their_field(
    engine: AsyncEngine, app_factory
) -> None:
    await add_org(engine)
    async with signed_in(app_factory(), engine) as pilot:
        _, pane = await open_rules(pilot)
        await press_and_settle(pilot, "a")
        form = pilot.app.screen
        assert isinstance(form, AlertRuleFormScreen)
        fill(pilot, name="Amber storm", threshold="0", window="5m", cooldown="1h")
        await submit(pilot)
        assert "threshold must be from 1" in form.error_of("threshold")
        fill(pilot, threshold="many")
        await submit(pilot)
        assert "not a whole number" in form.error_of("threshold")
        fill(pilot, threshold="20", window="five")
        await submit(pilot)
        assert "not a duration" in form.error_of("window")
        fill(pilot, window="5m", tool_names="ChatGPT, Claude", group_by="device")
        form.query_one("#risk-amber").value = True
        await submit(pilot)
        assert not isinstance(pilot.app.screen, AlertRuleFormScreen)
        rule = (await rules_of(engine))["Amber storm"]
        assert (rule.kind, rule.threshold, rule.window_seconds, rule.cooldown_seconds, rule.group_by) == (
            "threshold",
            20,
            300,
            3600,
            "device",
        )
        assert rule.filters == {"risk_levels": ["amber"], "tool_names": ["ChatGPT", "Claude"]}
        assert pane.table.selected_key == str(rule.id)
        # An entity rule without entity types is refused by db, under the entity types.
        await press_and_settle(pilot, "a")
        form = pilot.app.screen
        fill(pilot, name="Secrets", kind="entity")
        await settle(pilot)
        assert not form.query_one("#threshold").parent.parent.display
        await submit(pilot)
        assert "entity_types" in form.error_of("entity_types")
        fill(pilot, name="Red burst per user", entity_types="API_KEY")
        await submit(pilot)
        assert "already has a rule named" in form.error_of("name")
        fill(pilot, name="Secrets")
        await submit(pilot)
        assert (await rules_of(engine))["Secrets"].filters == {"entity_types": ["API_KEY"]}
        assert [row.action for row in await audit_rows(engine)] == ["alert_rule.create", "alert_rule.create"]


async def test_an_admin_edits_disables_and_deletes_a_rule(engine: AsyncEngine, app_factory) -> None:
    await add_org(engine)
    silent = (await rules_of(engine))["Silent agents"]
    async with signed_in(app_factory(), engine) as pilot:
        _, pane = await open_rules(pilot)
        pane.table.select_key(str(silent.id))
        await press_and_settle(pilot, "e")
        form = pilot.app.screen
        assert isinstance(form, AlertRuleFormScreen)
        assert form.query_one("#window").value == "3d"
        assert str(form.query_one("#label-window").render()) == "Silent for"
        assert not form.query_one("#group_by").parent.parent.display
        fill(pilot, window="30m")
        await submit(pilot)
        assert "silence" in form.error_of("window")
        fill(pilot, window="96h", severity="high")
        await submit(pilot)
        assert not isinstance(pilot.app.screen, AlertRuleFormScreen)
        edited = (await rules_of(engine))["Silent agents"]
        assert (edited.window_seconds, edited.severity, edited.group_by) == (
            96 * 3600,
            "high",
            "organization",
        )
        await press_and_settle(pilot, "t")
        assert isinstance(pilot.app.screen, ConfirmScreen)
        await confirm(pilot)
        assert (await rules_of(engine))["Silent agents"].enabled is False
        assert "off" in str(pane.table.get_row(str(silent.id))[2])
        await pilot.press("t")  # enabling needs no question
        await settle(pilot)
        assert (await rules_of(engine))["Silent agents"].enabled is True
        await pilot.press("delete")
        await confirm(pilot)
        assert "Silent agents" not in await rules_of(engine)
        assert str(silent.id) not in pane.rules
        actions = [row.action for row in await audit_rows(engine)]
        assert actions == ["alert_rule.update"] * 3 + ["alert_rule.delete"]


async def test_a_viewer_is_refused_changes_to_rules(engine: AsyncEngine, app_factory) -> None:
    await add_org(engine)
    async with signed_in(app_factory(), engine, "victor", is_admin=False) as pilot:
        _, pane = await open_rules(pilot)
        assert len(pane.rules) == len(await rules_of(engine))
        for key in ("a", "e", "t", "delete"):
            await press_and_settle(pilot, key)
            assert not isinstance(pilot.app.screen, AlertRuleFormScreen | ConfirmScreen)
        assert await audit_rows(engine) == []


async def test_hostile_rule_names_stay_text(engine: AsyncEngine, app_factory) -> None:
    await add_org(engine)
    names = [*NAUGHTY[:15], *WITH_CONTROLS]
    async with new_sessionmaker(engine)() as session:
        # Written around the validators, as SQL could: the pane must still show them as they are.
        for name in names:
            session.add(
                AlertRule(
                    organization_id="acme",
                    name=name,
                    kind="threshold",
                    filters={"tool_names": [name], "user_ids": ["[b]x"]},
                )
            )
        await session.commit()
    async with signed_in(app_factory(), engine) as pilot:
        _, pane = await open_rules(pilot)
        by_name = {rule.name: key for key, rule in pane.rules.items()}
        for name in names:
            cells = pane.table.get_row(by_name[name])
            assert cells[0].plain == visible(name)
            assert visible(name) in cells[8].plain
        pane.table.select_key(by_name[names[0]])
        await press_and_settle(pilot, "e")
        assert isinstance(pilot.app.screen, AlertRuleFormScreen)
        assert pilot.app.screen.query_one("#name").value == names[0]
        await press_and_settle(pilot, "escape")
        assert pilot.app.is_running
