"""The Logs dialogs: the filter form opens on its first field, scrolls every field into view with a hint,
wraps its errors and asks before Esc throws changes away; the export goes to AIFW_EXPORT_DIR, else
Downloads, else home, never the current folder.

Layout and keys do not depend on the engine: these run on SQLite only.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from textual.widgets import Input, Label

from console.dialogs.confirm import ConfirmScreen
from console.dialogs.dialog import MORE_BELOW
from console.dialogs.export import ExportScreen
from console.dialogs.log_filters import LogFilterScreen
from console.screens.shell import ShellScreen
from console.widgets.tick_box import TickBox
from db.exports import default_export_dir
from db.logs import LogFilter
from db.settings import Settings
from tests.support.console import add_console_user, open_logs, press_and_settle, running, sign_in
from tests.support.database import make_event, store_logs

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

FIELDS = (
    "risk-green",
    "risk-amber",
    "risk-red",
    "filter-tool",
    "filter-user",
    "filter-device",
    "filter-organization",
    "filter-entity_type",
    "filter-time",
    "filter-since",
    "filter-until",
    "filter-sanitized",
    "filter-search",
)


@pytest.fixture
async def admin(engine: AsyncEngine) -> str:
    await add_console_user(engine, "alice", is_admin=True)
    return "alice"


def fully_visible(dialog: LogFilterScreen, widget_id: str) -> bool:
    """The field's whole region lies inside the dialog's scrolling list of fields."""
    widget = dialog.query_one(f"#{widget_id}")
    fields = dialog.query_one("#filter-fields").region
    return widget.region.height > 0 and fields.contains_region(widget.region)


@pytest.mark.parametrize("size", [(80, 24), (120, 36)])
async def test_the_filter_dialog_opens_on_its_first_field_and_tab_scrolls_every_field_into_view(
    engine: AsyncEngine, app_factory, admin: str, size: tuple[int, int]
) -> None:
    async with running(app_factory(), size=size) as pilot:
        await sign_in(pilot, admin)
        await open_logs(pilot)
        await press_and_settle(pilot, "f")
        dialog = pilot.app.screen
        assert isinstance(dialog, LogFilterScreen)
        assert isinstance(dialog.query_one("#risk-green"), TickBox)
        assert dialog.focused is dialog.query_one("#risk-green")
        fields = dialog.query_one("#filter-fields")
        if size == (80, 24):
            assert fields.max_scroll_y > 0, "at 80x24 the fields do not all fit"
        assert dialog.scroll_hint == (MORE_BELOW if fields.max_scroll_y > 0 else "")
        reached = []
        for _ in range(len(FIELDS) + 3):
            focused = dialog.focused
            if focused is not None and focused.id in FIELDS:
                assert fully_visible(dialog, focused.id), focused.id
                reached.append(focused.id)
            await press_and_settle(pilot, "tab")
        assert set(FIELDS) <= set(reached)


async def test_a_long_time_error_wraps_instead_of_being_cut(
    engine: AsyncEngine, app_factory, admin: str
) -> None:
    async with running(app_factory(), size=(80, 24)) as pilot:
        await sign_in(pilot, admin)
        await open_logs(pilot)
        await press_and_settle(pilot, "f")
        dialog = pilot.app.screen
        assert isinstance(dialog, LogFilterScreen)
        dialog.query_one("#filter-since", Input).value = "2026-13-45 10:00"
        await press_and_settle(pilot, "ctrl+s")
        error = dialog.query_one("#filter-error", Label)
        drawn = " ".join(
            "".join(segment.text for segment in line).strip()
            for line in error.render_lines(error.region.reset_offset)
        )
        assert "not '2026-13-45 10:00'" in drawn
        assert error.region.height >= 2  # wrapped: no part of the message is cut off
        assert error.region.right <= dialog.query_one("#filter-dialog").region.right
        assert dialog.query_one("#filter-dialog").max_scroll_y == 0, (
            "the frame holds the error and its buttons"
        )
        assert (
            dialog.query_one("#filter-apply").region.bottom
            <= dialog.query_one("#filter-dialog").region.bottom
        )


async def test_escape_asks_before_throwing_away_a_changed_filter_and_not_otherwise(
    engine: AsyncEngine, app_factory, admin: str
) -> None:
    await store_logs(engine, [make_event(0)])
    async with running(app_factory(), size=(80, 24)) as pilot:
        await sign_in(pilot, admin)
        section = await open_logs(pilot)
        await press_and_settle(pilot, "f")
        await press_and_settle(pilot, "escape")
        assert isinstance(pilot.app.screen, ShellScreen)
        await press_and_settle(pilot, "f")
        await pilot.press("space")  # ticks green: the first field
        await press_and_settle(pilot, "escape")
        assert isinstance(pilot.app.screen, ConfirmScreen)
        await press_and_settle(pilot, "n")
        dialog = pilot.app.screen
        assert isinstance(dialog, LogFilterScreen)
        assert dialog.query_one("#risk-green", TickBox).value
        await press_and_settle(pilot, "escape")
        await press_and_settle(pilot, "y")
        assert isinstance(pilot.app.screen, ShellScreen)
        assert section.filters == LogFilter()


# -- where exports go ------------------------------------------------------------------------------


def test_exports_go_to_downloads_when_it_exists_else_home(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    unset = replace(settings, export_dir=None)
    assert default_export_dir(unset) == tmp_path
    (tmp_path / "Downloads").mkdir()
    assert default_export_dir(unset) == tmp_path / "Downloads"


def test_the_export_folder_setting_wins_over_downloads(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "Downloads").mkdir()
    chosen = tmp_path / "exports"
    chosen.mkdir()
    assert default_export_dir(replace(settings, export_dir=chosen)) == chosen


async def test_the_export_dialog_opens_on_the_file_and_proposes_downloads_never_the_current_folder(
    engine: AsyncEngine, app_factory, admin: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / "Downloads").mkdir(parents=True)
    repository = tmp_path / "repository"
    repository.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(repository)
    await store_logs(engine, [make_event(0)])
    async with running(app_factory(export_dir=None)) as pilot:
        await sign_in(pilot, admin)
        section = await open_logs(pilot)
        await press_and_settle(pilot, "e")
        dialog = pilot.app.screen
        assert isinstance(dialog, ExportScreen)
        path = dialog.query_one("#export-path", Input)
        assert dialog.focused is path
        assert Path(path.value).parent == home / "Downloads"
        path.value = "bare.csv"
        await press_and_settle(pilot, "enter")
        assert section.last_export == (home / "Downloads" / "bare.csv", 1)
        assert any(str(home / "Downloads" / "bare.csv") in str(n.message) for n in pilot.app._notifications)
        assert any("1 row to" in str(n.message) for n in pilot.app._notifications)
    assert list(repository.iterdir()) == []
