"""Overview section: events by risk per window, devices, last cleanup, open alerts, a chart over time
and top lists.

The figures come from :mod:`db.overview` (the hourly rollups, never raw rows), the open alerts
from :func:`db.alerts.open_alerts` in the same refresh.
It refreshes itself every few seconds while shown; the next refresh is armed
only when the previous one has finished, so a slow database never piles up
queries.

The chart (:class:`console.widgets.risk_chart.RiskChart`) and the top lists share the height left
by the figures above them, so both grow with the terminal; below :data:`ROOMY_HEIGHT` rows the
panels lose the blank lines between them and the open alerts list fewer rows.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.timer import Timer
from textual.widgets import Static

from console.sections.section import Section, SectionCommand
from console.untrusted import plain
from console.widgets.overview_widgets import OpenAlertsView, RankedList, RiskTotalsView
from console.widgets.risk_chart import RiskChart
from console.widgets.time_format import when
from db.alerts import OpenAlerts, open_alerts
from db.overview import WINDOWS, Overview, OverviewCache, load_overview
from db.wording import counted

REFRESH_SECONDS = 5.0
#: How many of the newest open alerts the overview lists (fewer below ROOMY_HEIGHT: SHORT_ALERTS).
NEWEST_ALERTS = 5
SHORT_ALERTS = 2
#: From this height on the panels get a blank line between them and the newest alerts all their rows.
ROOMY_HEIGHT = 30
#: The least height of the chart (its header, three rows of bars, the time axis) and of the top lists.
CHART_MIN_HEIGHT = 7
LISTS_MIN_HEIGHT = 4


class OverviewSection(Section):
    """What happened lately, at a glance."""

    TITLE = "Overview"
    KEY = "1"
    COMMANDS = (
        SectionCommand(
            "Overview: next window", "Switch the chart and top lists between 24h, 7d and 30d", "next_window"
        ),
        SectionCommand(
            "Overview: log or linear scale",
            "Switch the chart between a log and a linear scale",
            "toggle_scale",
        ),
        SectionCommand("Overview: refresh", "Read the figures again now", "refresh_now"),
    )
    BINDINGS = [
        Binding("w", "next_window", "Window"),
        Binding("l", "toggle_scale", "Log/linear"),
        Binding("r", "refresh_now", "Refresh"),
    ]
    HELP = """\
What happened lately, read again every few seconds from the hourly counts (never the raw rows).

- **Events by risk**: events per risk level in the last 24 hours, 7 days and 30 days; the column
  of the window shown is underlined. Beside it: when the figures were read, the devices seen in
  the last day and the last retention run.
- **Open alerts**: alerts not resolved yet, by severity, and the newest (`7` opens Alerts).
- **The chart**: events of the window as stacked bars, red (█ ●) at the bottom, then amber
  (▒ ◐) and green (░ ○), so it reads without colour. The title says how many hours a bar holds
  (neighbouring hours are added up when the width is short, never left out) and the legend the
  peak bar; the time axis is in UTC. The y axis is a **log scale** by default, so quiet hours stay
  visible beside a burst (a bar's height is its total, its parts share it in proportion); `l`
  switches to a linear scale and back. Any bar with events is at least one row high.
- **Top lists**: tools, users by red events and entity types of the window, most first, as
  many as the height holds, each with its count of events.

`w` cycles the window of the chart and the lists (24h, 7d, 30d); `r` reads everything again now.
"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.window = "24h"
        self.overview: Overview | None = None
        self.open_alerts: OpenAlerts | None = None
        self._timer: Timer | None = None
        self._cache = OverviewCache()

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="overview-scroll", can_focus=True):
            with Horizontal(id="overview-top"):
                yield RiskTotalsView(id="risk-totals")
                with Vertical(id="overview-side"):
                    yield Static("Loading…", id="overview-status")
                    yield Static("", id="overview-facts")
            yield OpenAlertsView(id="open-alerts")
            yield RiskChart(id="risk-chart")
            with Horizontal(id="overview-lists"):
                yield RankedList(id="top-tools", classes="ranked")
                yield RankedList(id="top-red-users", classes="ranked")
                yield RankedList(id="top-entities", classes="ranked")

    def reload(self) -> None:
        self.refresh_overview()

    def on_resize(self) -> None:
        roomy = self.size.height >= ROOMY_HEIGHT
        if roomy != self.has_class("-roomy"):
            self.set_class(roomy, "-roomy")
            self._show_alerts()
        self.call_after_refresh(self._share_height)

    def _share_height(self) -> None:
        """Give the chart and the top lists the height the figures above them leave, half each.

        Set here rather than with ``fr`` units: below their minimum heights (80×24 with open
        alerts) the section scrolls instead of squeezing them.
        """
        if not self.is_attached:
            return
        taken = sum(
            widget.outer_size.height
            for widget in (self.query_one("#overview-top"), self.query_one(OpenAlertsView))
        )
        gaps = 3 if self.has_class("-roomy") else 0
        left = self.size.height - taken - gaps
        chart = max(CHART_MIN_HEIGHT, left - left // 2)
        lists = max(LISTS_MIN_HEIGHT, left - chart)
        for widget, height in (
            (self.query_one(RiskChart), chart),
            (self.query_one("#overview-lists"), lists),
        ):
            if widget.styles.height is None or widget.styles.height.value != height:
                widget.styles.height = height

    def action_refresh_now(self) -> None:
        self.refresh_overview()

    def action_toggle_scale(self) -> None:
        chart = self.query_one(RiskChart)
        chart.log_scale = not chart.log_scale

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
        self._show_alerts()
        self.call_after_refresh(self._share_height)

    def _show_alerts(self) -> None:
        if self.open_alerts is not None:
            rows = NEWEST_ALERTS if self.has_class("-roomy") else SHORT_ALERTS
            self.query_one(OpenAlertsView).show(self.open_alerts, rows=rows)

    def show(self, overview: Overview) -> None:
        self.overview = overview
        status = Text(f"updated {when(overview.generated_at, precision='time')} UTC", end="")
        if sum(window.total for window in overview.totals) == 0:
            status.append(" · ")
            status.append("no events yet", style="bold")
            status.append(": agents have not reported anything")
        self.query_one("#overview-status", Static).update(status)
        self.query_one(RiskTotalsView).show(overview.totals, overview.window)
        run = overview.last_retention_run
        if run is None:
            retention = Text("never", end="")
        else:
            kind = "dry run, " if run.dry_run else ""
            retention = Text.assemble(
                f"{when(run.started_at)} UTC\n{kind}{run.status}, {counted(run.rows_deleted, 'row')}, ",
                plain(run.organization_id),
            )
        self.query_one("#overview-facts", Static).update(
            Text.assemble(
                f"{counted(overview.devices_seen_last_day, 'device')} seen in 24 h\n",
                ("Last retention run", "bold"),
                "\n",
                retention,
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
