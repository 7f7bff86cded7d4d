"""Overview section: events by risk per window, open alerts, a chart over time, top lists, devices, last
cleanup.

The figures come from :mod:`db.overview` (the hourly rollups, never raw rows), the open alerts
from :func:`db.alerts.open_alerts` in the same refresh.
It refreshes itself every few seconds while shown; the next refresh is armed
only when the previous one has finished, so a slow database never piles up
queries.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.timer import Timer
from textual.widgets import Static

from console.sections.section import Section, SectionCommand
from console.untrusted import plain
from console.widgets.overview_widgets import OpenAlertsView, RankedList, RiskChart, RiskTotalsView
from console.widgets.time_format import when
from db.alerts import OpenAlerts, open_alerts
from db.overview import WINDOWS, Overview, TopListCache, load_overview

REFRESH_SECONDS = 5.0
#: How many of the newest open alerts the overview lists.
NEWEST_ALERTS = 5


class OverviewSection(Section):
    """What happened lately, at a glance."""

    TITLE = "Overview"
    KEY = "1"
    COMMANDS = (
        SectionCommand(
            "Overview: next window", "Switch the chart and top lists between 24h, 7d and 30d", "next_window"
        ),
        SectionCommand("Overview: refresh", "Read the figures again now", "refresh_now"),
    )
    BINDINGS = [
        Binding("w", "next_window", "Window"),
        Binding("r", "refresh_now", "Refresh"),
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.window = "24h"
        self.overview: Overview | None = None
        self.open_alerts: OpenAlerts | None = None
        self._timer: Timer | None = None
        self._cache = TopListCache()

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="overview-scroll", can_focus=True):
            yield Static("Loading…", id="overview-status")
            with Horizontal(id="overview-top"):
                yield RiskTotalsView(id="risk-totals")
                yield Static("", id="overview-facts")
            yield OpenAlertsView(id="open-alerts")
            yield RiskChart(id="risk-chart")
            with Horizontal(id="overview-lists"):
                yield RankedList(id="top-tools", classes="ranked")
                yield RankedList(id="top-red-users", classes="ranked")
                yield RankedList(id="top-entities", classes="ranked")

    def reload(self) -> None:
        self.refresh_overview()

    def action_refresh_now(self) -> None:
        self.refresh_overview()

    def action_next_window(self) -> None:
        windows = list(WINDOWS)
        self.window = windows[(windows.index(self.window) + 1) % len(windows)]
        self.refresh_overview()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(REFRESH_SECONDS, self._tick)

    def _tick(self) -> None:
        # Only while shown: a hidden overview costs nothing.
        if self.is_attached and self.display and self.parent is not None and self.screen.is_current:
            switcher = self.parent
            if getattr(switcher, "current", None) == self.id:
                self.refresh_overview()
                return
        self._arm()

    @work(exclusive=True, group="overview-refresh", exit_on_error=False)
    async def refresh_overview(self) -> None:
        try:
            async with self.context.sessions() as session:
                overview = await load_overview(session=session, window=self.window, cache=self._cache)
                alerts = await open_alerts(session=session, newest=NEWEST_ALERTS)
        finally:
            self._arm()
        self.show(overview)
        self.open_alerts = alerts
        self.query_one(OpenAlertsView).show(alerts)

    def show(self, overview: Overview) -> None:
        self.overview = overview
        total = sum(window.total for window in overview.totals)
        status = (
            f"Window [b]{overview.window}[/b] (w to change) · "
            f"updated {when(overview.generated_at, precision='time')} UTC"
        )
        if total == 0:
            status += " · [b]no events yet[/b]: agents have not reported anything"
        self.query_one("#overview-status", Static).update(status)
        self.query_one(RiskTotalsView).show(overview.totals)
        run = overview.last_retention_run
        if run is None:
            retention = "never"
        else:
            kind = "dry run, " if run.dry_run else ""
            retention = (
                f"{when(run.started_at)} UTC ({kind}{run.status}, {run.rows_deleted:,} rows, "
                f"org {run.organization_id})"
            )
        self.query_one("#overview-facts", Static).update(
            Text.assemble(
                ("Devices seen in the last day", "bold"),
                f"\n{overview.devices_seen_last_day:,}\n\n",
                ("Last retention run", "bold"),
                "\n",
                plain(retention),
            )
        )
        self.query_one(RiskChart).show(overview.timeline, overview.window)
        self.query_one("#top-tools", RankedList).show(f"Top tools ({overview.window})", overview.top_tools)
        self.query_one("#top-red-users", RankedList).show(
            f"Top users by red ({overview.window})", overview.top_red_users
        )
        self.query_one("#top-entities", RankedList).show(
            f"Top entity types ({overview.window})", overview.top_entity_types
        )
