"""Overview widgets: risk totals per window, open alerts, the events-over-time chart and ranked lists.

The ranked lists show keys agents chose (tool names, user ids, entity types) as plain text, and
the open alerts the names of rules and the group keys (users, devices, tools) as plain text too,
their severities as :mod:`console.widgets.severity` shows them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, Sparkline, Static

from console.untrusted import plain
from console.widgets.risk import RISK_COLORS
from console.widgets.severity import ALERT_SEVERITY_STYLES, severity_text
from console.widgets.time_format import when
from db.vocabulary import RISK_LEVELS

if TYPE_CHECKING:
    from db.alerts import OpenAlerts
    from db.overview import RiskTotals, Timeline


class RiskTotalsView(Static):
    """Events by risk level (rows) for each window (columns)."""

    def show(self, totals: Sequence[RiskTotals]) -> None:
        self.totals = list(totals)
        table = Table(title="Events by risk", expand=True, box=None, title_justify="left")
        table.add_column("Risk")
        for window in totals:
            table.add_column(window.window, justify="right")
        for level in RISK_LEVELS:
            table.add_row(
                f"[{RISK_COLORS[level]}]{level}[/]",
                *(f"{window.counts.get(level, 0):,}" for window in totals),
            )
        table.add_row("[b]total[/b]", *(f"[b]{window.total:,}[/b]" for window in totals))
        self.update(table)


class OpenAlertsView(Static):
    """Alerts not resolved yet: how many of each severity, then the newest few."""

    def show(self, alerts: OpenAlerts) -> None:
        self.alerts = alerts
        title = Text.assemble(("Open alerts", "bold"), f" ({alerts.total:,}")
        if alerts.total:
            title.append(": ")
            counts = [
                severity_text(f"{alerts.by_severity[level]:,} {level}")
                for level in ALERT_SEVERITY_STYLES
                if alerts.by_severity.get(level)
            ]
            title.append_text(Text(" · ").join(counts))
        title.append(") · 7 opens the Alerts section" if alerts.total else ")")
        table = Table(title=title, expand=True, box=None, title_justify="left", show_header=False)
        table.add_column("Severity", no_wrap=True)
        table.add_column("State", no_wrap=True)
        table.add_column("Rule", overflow="ellipsis", no_wrap=True, ratio=2)
        table.add_column("Group", overflow="ellipsis", no_wrap=True, ratio=2)
        table.add_column("Org", overflow="ellipsis", no_wrap=True, ratio=1)
        table.add_column("Events", justify="right", no_wrap=True)
        table.add_column("Last event", no_wrap=True)
        for alert in alerts.newest:
            table.add_row(
                severity_text(alert.severity),
                "open" if alert.state == "open" else "ack'd",
                plain(alert.rule_name),
                plain(alert.group_key),
                plain(alert.organization_id),
                f"{alert.event_count:,}",
                when(alert.last_event_at),
            )
        if not alerts.total:
            table.add_row(Text("none: no rule has raised anything that is still open", style="dim"))
        self.table = table
        self.update(table)


class RankedList(Static):
    """A titled list of (name, count), most first."""

    def show(self, title: str, items: Sequence[tuple[str, int]]) -> None:
        self.items = list(items)
        table = Table(title=title, expand=True, box=None, title_justify="left")
        table.add_column("Name", overflow="ellipsis", no_wrap=True)
        table.add_column("Events", justify="right")
        for name, value in items:
            table.add_row(plain(name), f"{value:,}")
        if not items:
            table.add_row(Text("none yet", style="dim"), "")
        self.update(table)


class RiskChart(Vertical):
    """Events over time, one sparkline per risk level, over the same bins."""

    def compose(self) -> ComposeResult:
        yield Label("Events over time", id="chart-title")
        for level in RISK_LEVELS:
            yield Label(level, classes=f"chart-label risk-{level}")
            yield Sparkline([], id=f"spark-{level}", classes=f"risk-{level}")

    def show(self, timeline: Timeline, window: str) -> None:
        self.timeline = timeline
        first = timeline.starts[0].strftime("%m-%d %H:00") if timeline.starts else ""
        self.query_one("#chart-title", Label).update(
            f"Events over time, last {window} ({timeline.bin_hours} h per bar, from {first} UTC)"
        )
        for level in RISK_LEVELS:
            values = [float(value) for value in timeline.series.get(level, [])]
            self.query_one(f"#spark-{level}", Sparkline).data = values
            self.query_one(f".chart-label.risk-{level}", Label).update(f"{level}: {sum(values):,.0f}")
