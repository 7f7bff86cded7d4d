"""Overview widgets: risk totals per window, the events-over-time chart and ranked lists.

The ranked lists show keys agents chose (tool names, user ids, entity types) as plain text.
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
from db.vocabulary import RISK_LEVELS

if TYPE_CHECKING:
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
