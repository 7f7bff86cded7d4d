"""Untrusted text stays text: markup, ANSI escapes and naughty strings from agents, users and the database
reach every screen and dialog of the console as exactly that text, and the console stays up.

Each test seeds hostile values where an agent or an administrator can put them (or writes rows
directly, as old data would be), visits the screen, acts on the rows, and reads what was drawn.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.text import Text
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine
from textual.geometry import Region
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import DataTable, Label, Static

from console.dialogs.confirm import ConfirmScreen
from console.dialogs.export import ExportScreen
from console.dialogs.log_filters import LogFilterScreen
from console.dialogs.user_forms import UserFormScreen
from console.screens.shell import ShellScreen
from console.sections.audit import AuditSection
from console.sections.cleanup import CleanupSection
from console.sections.config import ConfigSection
from console.sections.config.tester import PatternTesterPane
from console.sections.devices import DevicesSection
from console.sections.logs import LogsSection
from console.sections.overview import OverviewSection
from console.sections.users import UsersSection
from console.untrusted import plain
from console.widgets.log_detail import LogDetail
from console.widgets.log_record import as_plain_text
from console.widgets.log_table import LogTable
from console.widgets.overview_widgets import RankedList
from db.audit import record_change
from db.base import utcnow
from db.configs import create_organization
from db.devices import register_or_touch_device
from db.engine import new_sessionmaker
from db.identifiers import visible
from db.models import FirewallConfig, RetentionRun, User
from db.rights import Actor
from db.tokens import create_token
from tests.console_tests.naughty_strings import IDENTIFIERS, NAUGHTY, WITH_CONTROLS
from tests.support.console import confirm, open_section, press_and_settle, settle, signed_in
from tests.support.database import make_event, store_logs

HOSTILE_TOOL = "[/]EvilTool"
HOSTILE_USER = "[/]mallory"
HOSTILE_ENTITY = "[/]X"
HOSTILE_DEVICE = "naughty[/]dev"
ANSI = "\x1b[31mred\x1b[0m"
#: How ANSI is shown: the escape written out, never sent to the terminal.
ANSI_SHOWN = "\\x1b[31mred\\x1b[0m"


def drawn(widget: Widget) -> str:
    """The text the widget draws now, line by line (what an operator sees of it)."""
    width, height = widget.size
    lines = widget.render_lines(Region(0, 0, width, height))
    return "\n".join("".join(segment.text for segment in line) for line in lines)


def text_of(widget: Static) -> str:
    """All the text a Static or Label holds, drawn or not (a long line is cut where it is drawn)."""
    return str(widget.visual)


def notifications(pilot: Pilot[Any]) -> list[str]:
    return [notification.message for notification in pilot.app._notifications]


def cells(table: DataTable[Any]) -> list[str]:
    """Every cell of a table as the plain text it shows."""
    return [
        cell.plain if isinstance(cell, Text) else str(cell)
        for row in range(table.row_count)
        for cell in table.get_row_at(row)
    ]


def assert_up(pilot: Pilot[Any]) -> None:
    assert pilot.app.is_running
    assert pilot.app._exception is None


def assert_no_raw_controls(text: str) -> None:
    for control in ("\x1b", "\x9b", "\x07", "\x7f", "\u202e"):
        assert control not in text


# -- the one helper ------------------------------------------------------------------------------


def test_visible_writes_control_bidi_and_zero_width_characters_as_escapes() -> None:
    assert visible(ANSI) == ANSI_SHOWN
    assert visible("a\x9bb\x7fc\u202ed\u200be\nf\tg") == "a\\x9bb\\x7fc\\u202ed\\u200be\\nf\\tg"
    # A joiner between two letters is part of a Persian or Indic name; elsewhere it hides something.
    assert visible("می\u200cخواهم") == "می\u200cخواهم"
    assert visible("\u200dbob") == "\\u200dbob"


def test_visible_leaves_markup_and_naughty_strings_exactly_as_they_are() -> None:
    for value in IDENTIFIERS:
        assert visible(value) == value
    assert plain("[b]x[/b]").plain == "[b]x[/b]"
    assert plain("[b]x[/b]").spans == []


# -- overview ------------------------------------------------------------------------------------


async def test_overview_shows_markup_rollup_keys_as_text_instead_of_crashing(
    engine: AsyncEngine, app_factory
) -> None:
    await store_logs(
        engine,
        [
            make_event(
                index,
                tool_name=HOSTILE_TOOL,
                user_id=HOSTILE_USER,
                device_id=HOSTILE_DEVICE,
                risk_level="red",
                detected_entity_types=[HOSTILE_ENTITY],
                entity_count=1,
                timestamp=utcnow() - timedelta(minutes=index + 1),
            )
            for index in range(3)
        ],
    )
    async with signed_in(app_factory(), engine) as pilot:
        section = pilot.app.screen.query_one(OverviewSection)
        await settle(pilot)
        assert_up(pilot)
        assert section.overview is not None
        assert (HOSTILE_TOOL, 3) in section.overview.top_tools
        assert HOSTILE_TOOL in drawn(section.query_one("#top-tools", RankedList))
        assert HOSTILE_USER in drawn(section.query_one("#top-red-users", RankedList))
        assert HOSTILE_ENTITY in drawn(section.query_one("#top-entities", RankedList))


async def test_overview_top_lists_show_every_naughty_string(engine: AsyncEngine, app_factory) -> None:
    async with signed_in(app_factory(), engine) as pilot:
        section = pilot.app.screen.query_one(OverviewSection)
        assert section.overview is not None
        values = [*NAUGHTY, *WITH_CONTROLS]
        ranked = section.query_one("#top-tools", RankedList)
        rows = ranked.size.height - 1  # the list shows as many names as fit: feed them a screenful at a time
        shown = ""
        for start in range(0, len(values), rows):
            chunk = values[start : start + rows]
            section.show(replace(section.overview, top_tools=[(value, 1) for value in chunk]))
            await pilot.pause()
            assert_up(pilot)
            assert ranked.items == [(value, 1) for value in chunk]
            shown += drawn(ranked)
        assert_no_raw_controls(shown)
        for value in ("[/]EvilTool", "[B]x", "[$accent]x", "\\[x", "[@click=app.quit]q[/]", "%s%s%s%n"):
            assert value in shown


# -- logs ----------------------------------------------------------------------------------------


async def test_logs_search_for_markup_is_shown_as_typed(engine: AsyncEngine, app_factory) -> None:
    await store_logs(engine, [make_event(0, tool_name=HOSTILE_TOOL), make_event(1)])
    async with signed_in(app_factory(), engine) as pilot:
        await press_and_settle(pilot, "2")
        section = pilot.app.screen.query_one(LogsSection)
        for search in ("[/]", HOSTILE_TOOL, "[$accent]x", "[link=https://evil.example]x"):
            await pilot.press("slash")
            section.query_one("#logs-search").value = search
            await press_and_settle(pilot, "enter")
            assert_up(pilot)
            assert f"search={search!r}" in drawn(section.query_one("#logs-summary", Static))
        section.query_one("#logs-search").value = HOSTILE_TOOL
        await press_and_settle(pilot, "slash", "enter")
        assert [entry.tool_name for entry in section.page_state.rows] == [HOSTILE_TOOL]
        await pilot.press("t")  # follow mode adds its styled tag beside the typed search
        await settle(pilot)
        assert "FOLLOW" in drawn(section.query_one("#logs-summary", Static))
        await pilot.press("t")


async def test_filter_dialog_takes_markup_filters_and_shows_a_markup_time_error_as_typed(
    engine: AsyncEngine, app_factory
) -> None:
    await store_logs(engine, [make_event(0, tool_name=HOSTILE_TOOL, detected_entity_types=[HOSTILE_ENTITY])])
    async with signed_in(app_factory(), engine) as pilot:
        await press_and_settle(pilot, "2")
        section = pilot.app.screen.query_one(LogsSection)
        await press_and_settle(pilot, "f")
        dialog = pilot.app.screen
        assert isinstance(dialog, LogFilterScreen)
        dialog.query_one("#filter-tool").value = HOSTILE_TOOL
        dialog.query_one("#filter-since").value = "[/]yesterday"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert_up(pilot)
        assert "not '[/]yesterday'" in text_of(dialog.query_one("#filter-error", Label))
        dialog.query_one("#filter-since").value = ""
        await press_and_settle(pilot, "ctrl+s")
        assert [entry.tool_name for entry in section.page_state.rows] == [HOSTILE_TOOL]
        assert f"tool={HOSTILE_TOOL}" in drawn(section.query_one("#logs-summary", Static))


async def test_log_rows_and_detail_show_naughty_identifiers_and_metadata_exactly(
    engine: AsyncEngine, app_factory
) -> None:
    events = [
        make_event(
            index,
            tool_name=value[:100],
            user_id=value,
            device_id=value[:128],
            log_metadata={"note": WITH_CONTROLS[index % len(WITH_CONTROLS)], value: "key"},
        )
        for index, value in enumerate(IDENTIFIERS)
    ]
    await store_logs(engine, events)
    async with signed_in(app_factory(), engine) as pilot:
        await press_and_settle(pilot, "2")
        section = pilot.app.screen.query_one(LogsSection)
        table = section.query_one(LogTable)
        assert table.row_count == len(IDENTIFIERS)
        detail = section.query_one(LogDetail)
        for raw in (False, True):
            if raw:
                await pilot.press("J")  # the raw JSON: each value escaped as JSON, then shown as text
                await settle(pilot)
            for row in range(table.row_count):
                table.move_cursor(row=row)
                await settle(pilot)
                assert_up(pilot)
                entry = section._rows[table.row_keys[row]]
                assert detail.entry is entry
                # Read at a width where nothing wraps: the values must be there exactly, as text.
                shown = as_plain_text(detail.renderable, 2000)
                if raw:
                    assert f'"user_id": {_json(entry.user_id)}' in shown
                    assert f'"tool_name": {_json(entry.tool_name)}' in shown
                    assert "\n  " in shown, "the JSON keeps its layout: one field per line"
                else:
                    assert visible(entry.user_id) in shown
                    assert visible(entry.tool_name) in shown
                    assert '"user_id":' not in shown
                assert_no_raw_controls(shown)
                assert_no_raw_controls(drawn(detail.query_one("#log-detail-body", Static)))
                assert_no_raw_controls(drawn(table))


def _json(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


async def test_export_dialog_and_notice_show_a_markup_filter_and_file_name(
    engine: AsyncEngine, app_factory, tmp_path: Path
) -> None:
    await store_logs(engine, [make_event(0, tool_name=HOSTILE_TOOL)])
    target = tmp_path / "[b]logs[$accent]x[@click=app.quit]q.csv"
    async with signed_in(app_factory(), engine) as pilot:
        await press_and_settle(pilot, "2")
        section = pilot.app.screen.query_one(LogsSection)
        section.query_one("#logs-search").value = HOSTILE_TOOL
        await press_and_settle(pilot, "slash", "enter")
        await press_and_settle(pilot, "e")
        dialog = pilot.app.screen
        assert isinstance(dialog, ExportScreen)
        assert f"search={HOSTILE_TOOL!r}" in drawn(dialog.query_one("#export-title", Label))
        dialog.query_one("#export-path").value = str(tmp_path / "[/]no-such" / "x.csv")
        dialog.query_one("#export-path").focus()
        await press_and_settle(pilot, "enter")
        # The whole message: a long temporary path wraps inside the label, which drawn() would split.
        assert "[/]no-such" in text_of(dialog.query_one("#export-error", Label))
        dialog.query_one("#export-path").value = str(target)
        await press_and_settle(pilot, "enter")
        assert_up(pilot)
        assert section.last_export == (target, 1)
        assert f"Exported 1 row to {target}" in notifications(pilot)
        assert target.exists()


# -- devices, users, audit -----------------------------------------------------------------------


async def test_acting_on_a_markup_device_shows_its_id_in_the_dialog_and_the_notice(
    engine: AsyncEngine, app_factory
) -> None:
    async with new_sessionmaker(engine)() as session:
        for device_id, user_id, version in (
            (HOSTILE_DEVICE, HOSTILE_USER, ANSI),
            ("[B]x", "[$accent]x", "[link=https://evil.example]1[/link]"),
        ):
            await register_or_touch_device(
                session=session,
                organization_id="default",
                device_id=device_id,
                user_id=user_id,
                device_type="cli",
                agent_version=version,
            )
        await session.commit()
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, DevicesSection)
        table = section.query_one("#devices-table", DataTable)
        shown = cells(table)
        for value in (
            HOSTILE_DEVICE,
            HOSTILE_USER,
            ANSI_SHOWN,
            "[B]x",
            "[$accent]x",
            "[link=https://evil.example]1[/link]",
        ):
            assert value in shown
        table.move_cursor(row=table.get_row_index(HOSTILE_DEVICE))
        await settle(pilot)
        # The activity pane is hidden below 130 columns: what it holds is checked, not what it draws.
        assert text_of(section.query_one("#device-activity-text", Static)).startswith(HOSTILE_DEVICE)
        await press_and_settle(pilot, "a")
        dialog = pilot.app.screen
        assert isinstance(dialog, ConfirmScreen)
        assert f"Deactivate {HOSTILE_DEVICE!r}?" in drawn(dialog.query_one("#confirm-question", Label))
        await confirm(pilot)
        assert_up(pilot)
        assert section.devices[HOSTILE_DEVICE].is_active is False
        assert f"{HOSTILE_DEVICE!r} is now inactive." in notifications(pilot)
        await pilot.press("a")  # an inactive device is activated without a question
        await settle(pilot)
        assert f"{HOSTILE_DEVICE!r} is now active." in notifications(pilot)
        await press_and_settle(pilot, "delete")
        assert HOSTILE_DEVICE in drawn(pilot.app.screen.query_one("#confirm-question", Label))
        await confirm(pilot)
        assert_up(pilot)
        assert f"Device {HOSTILE_DEVICE!r} deleted." in notifications(pilot)


async def test_users_screen_and_edit_form_show_hostile_full_names_exactly(
    engine: AsyncEngine, app_factory
) -> None:
    names = [*NAUGHTY[:20], *WITH_CONTROLS]
    async with new_sessionmaker(engine)() as session:
        for index, name in enumerate(names):
            session.add(
                User(
                    username=f"user{index:02d}",
                    email=f"user{index:02d}@example.com",
                    full_name=name,
                    hashed_password="x",
                    is_admin=False,
                    is_active=True,
                )
            )
        await session.commit()
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, UsersSection)
        table = section.query_one("#users-table", DataTable)
        shown = cells(table)
        for name in names:
            assert visible(name) in shown
        assert_no_raw_controls(drawn(table))
        section.query_one("#users-search").value = "[/]"
        await press_and_settle(pilot, "slash", "enter")
        assert_up(pilot)
        assert "matching '[/]'" in text_of(section.query_one("#users-summary", Static))
        section.query_one("#users-search").value = ""
        await press_and_settle(pilot, "slash", "enter")
        table.move_cursor(row=table.get_row_index("user00"))
        await press_and_settle(pilot, "e")
        form = pilot.app.screen
        assert isinstance(form, UserFormScreen)
        assert form.query_one("#full_name").value == names[0]
        await press_and_settle(pilot, "escape")
        assert_up(pilot)


async def test_audit_browser_shows_hostile_actors_ids_and_changes_exactly(
    engine: AsyncEngine, app_factory
) -> None:
    async with new_sessionmaker(engine)() as session:
        await record_change(
            session=session,
            actor=Actor(HOSTILE_USER + ANSI, "cli"),
            action="[b]device.delete",
            entity_type="device",
            entity_id=HOSTILE_DEVICE,
            changes={"user_id": {"before": "[$accent]x" + WITH_CONTROLS[1]}},
        )
        await session.commit()
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, AuditSection)
        table = section.query_one("#audit-table", DataTable)
        shown = cells(table)
        assert {HOSTILE_USER + ANSI_SHOWN, HOSTILE_DEVICE, "[b]device.delete"} <= set(shown)
        table.move_cursor(row=0)
        await settle(pilot)
        detail = text_of(section.query_one("#audit-detail", Static))
        assert_up(pilot)
        assert f"[b]device.delete device {HOSTILE_DEVICE} by {HOSTILE_USER}{ANSI_SHOWN}" in detail
        assert "[$accent]x" in detail
        assert_no_raw_controls(detail)


# -- config and cleanup --------------------------------------------------------------------------


async def test_config_shows_hostile_tool_pattern_and_token_names_and_acts_on_them(
    engine: AsyncEngine, app_factory
) -> None:
    pattern_name = "[/]pat" + ANSI
    async with new_sessionmaker(engine)() as session:
        await create_organization(
            session=session, organization_id="acme", actor=Actor(name=HOSTILE_USER, source="cli")
        )
        await create_token(
            session=session,
            organization_id="acme",
            name=ANSI + "[b]laptops",
            actor=Actor(name="[B]x", source="cli"),
        )
        await session.commit()
        # Written directly, as rows from before validation would be.
        await session.execute(
            update(FirewallConfig)
            .where(FirewallConfig.organization_id == "acme")
            .values(
                monitored_tools=[{"name": HOSTILE_TOOL, "tool_type": "[b]web", "enabled": True}],
                custom_patterns=[
                    {
                        "name": pattern_name,
                        "regex": "EMP-[0-9]+",
                        "entity_type": HOSTILE_ENTITY,
                        "severity": "red",
                    }
                ],
            )
        )
        await session.commit()
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, ConfigSection)
        assert HOSTILE_USER in text_of(section.query_one("#config-summary", Static))
        assert {HOSTILE_TOOL, "[b]web"} <= set(cells(section.query_one("#tools-table", DataTable)))
        assert {visible(pattern_name), HOSTILE_ENTITY} <= set(
            cells(section.query_one("#patterns-table", DataTable))
        )
        assert {visible(ANSI + "[b]laptops"), "[B]x"} <= set(
            cells(section.query_one("#tokens-table", DataTable))
        )
        section.action_next_tab(2)  # patterns
        await settle(pilot)
        await press_and_settle(pilot, "delete")
        dialog = pilot.app.screen
        assert isinstance(dialog, ConfirmScreen)
        assert visible(repr(pattern_name)) in drawn(dialog.query_one("#confirm-question", Label))
        await confirm(pilot, yes=False)
        section.action_show_tester()
        section.query_one(PatternTesterPane).run_tester("EMP-42")
        await settle(pilot)
        result = text_of(section.query_one("#tester-result", Static))
        assert_up(pilot)
        assert f"{visible(pattern_name)} ({HOSTILE_ENTITY}, red): 1 match" in result
        assert_no_raw_controls(result)


async def test_cleanup_history_shows_a_hostile_error_exactly(engine: AsyncEngine, app_factory) -> None:
    error = "[/]boom " + ANSI
    async with new_sessionmaker(engine)() as session:
        session.add(
            RetentionRun(
                id=uuid.uuid4(),
                organization_id="acme",
                retention_days=30,
                cutoff=utcnow(),
                rows_deleted=0,
                dry_run=False,
                trigger="[b]cli",
                status="failed",
                error=error,
                started_at=utcnow(),
                finished_at=utcnow(),
            )
        )
        await session.commit()
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, CleanupSection)
        assert_up(pilot)
        shown = cells(section.query_one("#cleanup-history", DataTable))
        assert {visible(error), "[b]cli"} <= set(shown)


# -- shell ---------------------------------------------------------------------------------------


async def test_database_banner_and_notifications_show_markup_reasons_as_text(
    engine: AsyncEngine, app_factory
) -> None:
    async with signed_in(app_factory(), engine) as pilot:
        shell = pilot.app.screen
        assert isinstance(shell, ShellScreen)
        reason = "cannot connect to PostgreSQL at [::1]:5432 ([/]refused) " + ANSI
        shell.database_lost(reason)
        pilot.app.notify("[b]" + ANSI, title="[/]")
        await pilot.pause()
        assert_up(pilot)
        banner = drawn(shell.query_one("#db-banner", Static))
        assert "cannot connect to PostgreSQL at [::1]:5432 ([/]refused) " + ANSI_SHOWN in banner
        assert_no_raw_controls(banner)
        assert "[b]" + ANSI_SHOWN in notifications(pilot)
