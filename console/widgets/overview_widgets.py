"""Overview widgets: risk totals per window, open alerts and ranked lists.

The chart is :mod:`console.widgets.risk_chart`.

The ranked lists show keys agents chose (tool names, user ids, entity types) as plain text, and
the open alerts the names of rules and the group keys (users, devices, tools) as plain text too,
their severities as :mod:`console.widgets.severity` shows them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text
from textual.geometry import Size
from textual.widget import Widget
from textual.widgets import Static

from console.untrusted import plain
from console.widgets.risk import risk_text
from console.widgets.severity import ALERT_SEVERITY_STYLES, severity_text
from console.widgets.time_format import when
from db.vocabulary import RISK_LEVELS
from db.wording import counted

if TYPE_CHECKING:
    from db.alerts import OpenAlerts
    from db.overview import RiskTotals


class RiskTotalsView(Static):
    """Events by risk level (rows) for each window (columns), the chart's window underlined."""

    def show(self, totals: Sequence[RiskTotals], window: str | None = None) -> None:
        self.totals = list(totals)
        table = Table(box=None, pad_edge=False, padding=(0, 0, 0, 3))
        table.add_column("Events by risk", no_wrap=True, header_style="bold")
        for column in totals:
            style = "bold underline" if column.window == window else "bold"
            table.add_column(column.window, justify="right", no_wrap=True, header_style=style)
        for level in RISK_LEVELS:
            table.add_row(risk_text(level), *(f"{column.counts.get(level, 0):,}" for column in totals))
        table.add_row(
            Text("total", style="bold"), *(Text(f"{column.total:,}", style="bold") for column in totals)
        )
        self.update(table)


class OpenAlertsView(Static):
    """Alerts not resolved yet: how many of each severity, then the newest few."""

    def show(self, alerts: OpenAlerts, rows: int | None = None) -> None:
        """Show ``alerts``: the counts, then the first ``rows`` of its newest (all of them by default)."""
        self.alerts = alerts
        title = Text.assemble(("Open alerts", "bold"), f" ({alerts.total:,}")
        if alerts.total:
            title.append(": ")
            counts = [
                severity_text(level, label=f"{alerts.by_severity[level]:,} {level}")
                for level in ALERT_SEVERITY_STYLES
                if alerts.by_severity.get(level)
            ]
            title.append_text(Text(" · ").join(counts))
            title.append(") · 7 opens the Alerts section")
        else:
            title.append(")")
            title.append(": none, no rule has raised anything still open", style="dim")
        table = Table(title=title, expand=True, box=None, title_justify="left", show_header=False)
        table.add_column("Severity", no_wrap=True)
        table.add_column("State", no_wrap=True)
        table.add_column("Rule", overflow="ellipsis", no_wrap=True, ratio=2)
        table.add_column("Group", overflow="ellipsis", no_wrap=True, ratio=2)
        table.add_column("Org", overflow="ellipsis", no_wrap=True, ratio=1)
        table.add_column("Events", justify="right", no_wrap=True)
        table.add_column("Last event", no_wrap=True)
        for alert in alerts.newest[:rows]:
            table.add_row(
                severity_text(alert.severity),
                "open" if alert.state == "open" else "ack'd",
                plain(alert.rule_name),
                plain(alert.group_key),
                plain(alert.organization_id),
                counted(alert.event_count, "event"),
                when(alert.last_event_at),
            )
        self.table = table
        self.update(table)


class RankedList(Widget):
    """A titled list of (name, count), most first: as many rows as its height holds, every count whole.

    Names are cut (with an ellipsis) to leave room for the counts, never the other way round.
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id, classes=classes)
        self.title = ""
        self.items: list[tuple[str, int]] = []

    def show(self, title: str, items: Sequence[tuple[str, int]]) -> None:
        """Show ``items`` (name, count) under ``title``; those that do not fit the height are left out."""
        self.title = title
        self.items = list(items)
        self.refresh(layout=True)

    def rows_shown(self) -> list[tuple[str, int]]:
        """The items the list has room for (one line goes to the title)."""
        return self.items[: max(0, self.size.height - 1)]

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return 1 + max(1, len(self.items))

    def render(self) -> Text:
        width = self.size.width
        shown = self.rows_shown()
        counts = [f"{count:,}" for _, count in shown]
        count_width = max((len(text) for text in counts), default=0)
        title = Text(self.title, style="bold", end="")
        heading = "events" if len(self.title) + 8 <= width else ""
        title.truncate(max(1, width - len(heading)), overflow="ellipsis", pad=True)
        lines = [title + Text(heading, style="dim", end="")]
        for (name, _), count in zip(shown, counts, strict=True):
            cell = plain(name)
            cell.truncate(max(1, width - count_width - 1), overflow="ellipsis", pad=True)
            lines.append(cell + Text(" " + count.rjust(count_width), end=""))
        if not self.items:
            lines.append(Text("none yet", style="dim", end=""))
        return Text("\n", end="").join(lines)
