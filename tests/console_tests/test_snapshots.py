"""Snapshots of the console's main screens at 80×24 and 120×36, compared with the SVGs in ``__snapshots__``.

Overview, Logs with its detail pane, the Logs filter dialog, Alerts, Config and Cleanup, each signed in
as an administrator on the fixed data of :mod:`tests.support.snapshot_data` (SQLite: the layout does not
depend on the engine), with the clock frozen at :data:`~tests.support.snapshot_data.FIXED` and local
time in UTC.

A screen changed on purpose? Regenerate the pictures, then look at every changed SVG before committing
(``git diff --stat tests/console_tests/__snapshots__``; open the files in a browser)::

    .venv/bin/python -m pytest tests/console_tests/test_snapshots.py --snapshot-update

A failing comparison writes ``snapshot_report.html`` (expected and actual side by side) in the folder
pytest ran from.

These are plain ``def`` tests: ``snap_compare`` runs the app in its own event loop (``App.run``), so no
asynchronous fixture of the suite may be used here; the data is built once per module with
``asyncio.run`` and copied for each test. The clock is frozen with ``time_machine`` (``tick=False``),
which leaves ``time.monotonic`` running, so Textual's and asyncio's timers still fire.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import time_machine
from textual.pilot import Pilot
from textual.widgets import Input, TextArea

from console.app import FirewallConsole
from console.screens.login import LoginScreen
from console.screens.shell import ShellScreen
from console.sections.logs import LogsSection
from console.widgets.log_detail import LogDetail
from tests.support.console import press_and_settle, settle, sign_in
from tests.support.database import PASSWORD
from tests.support.snapshot_data import (
    ADMIN,
    DATABASE_FILE,
    FIXED,
    build_snapshot_database,
    snapshot_settings,
)

SIZES = {"80x24": (80, 24), "120x36": (120, 36)}
sizes = pytest.mark.parametrize("size", list(SIZES.values()), ids=list(SIZES))
RunBefore = Callable[[Pilot[Any]], Awaitable[None]]


@pytest.fixture(scope="module")
def snapshot_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixed data, built once per module (per xdist worker)."""
    path = tmp_path_factory.mktemp("snapshot-data") / DATABASE_FILE
    build_snapshot_database(path)
    return path


@pytest.fixture
def console(
    snapshot_database: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FirewallConsole]:
    """The console on a copy of the fixed data, under a frozen clock and UTC local time.

    The database is named relative to the working directory (this test's folder), so the title bar
    reads "SQLite file console.db" wherever pytest keeps its temporary files.
    """
    shutil.copyfile(snapshot_database, tmp_path / DATABASE_FILE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NO_COLOR", raising=False)  # the pictures are in colour wherever they are taken
    monkeypatch.setenv("TZ", "UTC")  # "local time" in the log detail
    time.tzset()
    with time_machine.travel(FIXED, tick=False):
        app = FirewallConsole(snapshot_settings(f"sqlite+aiosqlite:///{DATABASE_FILE}", tmp_path))
        app.animation_level = "none"
        yield app
    monkeypatch.undo()
    time.tzset()


async def sign_in_as_admin(pilot: Pilot[Any]) -> None:
    """Sign in through the sign-in screen (the fields filled, then Enter: typing the 20 keys one by one
    took 2.7 s a test)."""
    await settle(pilot)
    assert isinstance(pilot.app.screen, LoginScreen)
    await sign_in(pilot, ADMIN, PASSWORD)
    assert isinstance(pilot.app.screen, ShellScreen), "the administrator could not sign in"


async def steady(pilot: Pilot[Any]) -> None:
    """Wait for every worker, and stop text cursors blinking so the picture does not depend on timing."""
    await settle(pilot)
    for screen in pilot.app.screen_stack:
        for box in screen.query(Input):
            box.cursor_blink = False
        for area in screen.query(TextArea):
            area.cursor_blink = False
    await settle(pilot)
    # A toast would vanish (or not) depending on how long the run took.
    assert not pilot.app._notifications, [n.message for n in pilot.app._notifications]


def signed_in_then(*keys: str, show_log_detail: bool = False) -> RunBefore:
    """Sign in, press ``keys`` (each followed by waiting for the workers), and settle."""

    async def run_before(pilot: Pilot[Any]) -> None:
        await sign_in_as_admin(pilot)
        for key in keys:
            await press_and_settle(pilot, key)
        if show_log_detail:
            screen = pilot.app.screen
            assert isinstance(screen, ShellScreen)
            if not screen.query_one(LogsSection).query_one(LogDetail).display:
                await press_and_settle(pilot, "d")
        await steady(pilot)

    return run_before


@sizes
def test_overview(snap_compare: Any, console: FirewallConsole, size: tuple[int, int]) -> None:
    """Overview: events by risk per window, open alerts, the chart, the top lists, the last cleanup."""
    assert snap_compare(console, terminal_size=size, run_before=signed_in_then("1"))


@sizes
def test_logs_with_detail(snap_compare: Any, console: FirewallConsole, size: tuple[int, int]) -> None:
    """Logs: the newest page with the detail pane of the first row (shown with d where it starts hidden)."""
    assert snap_compare(console, terminal_size=size, run_before=signed_in_then("2", show_log_detail=True))


@sizes
def test_logs_filter_dialog(snap_compare: Any, console: FirewallConsole, size: tuple[int, int]) -> None:
    """The Logs filter dialog (f), opened over the newest page."""
    assert snap_compare(console, terminal_size=size, run_before=signed_in_then("2", "f"))


@sizes
def test_alerts(snap_compare: Any, console: FirewallConsole, size: tuple[int, int]) -> None:
    """Alerts: the open and the acknowledged alert, newest change first."""
    assert snap_compare(console, terminal_size=size, run_before=signed_in_then("7"))


@sizes
def test_config(snap_compare: Any, console: FirewallConsole, size: tuple[int, int]) -> None:
    """Config: the first organisation's monitored tools."""
    assert snap_compare(console, terminal_size=size, run_before=signed_in_then("5"))


@sizes
def test_cleanup(snap_compare: Any, console: FirewallConsole, size: tuple[int, int]) -> None:
    """Cleanup: what a cleanup would delete now, and the finished run."""
    assert snap_compare(console, terminal_size=size, run_before=signed_in_then("6"))
