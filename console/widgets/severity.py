"""The one look of alert severities: how each severity is shown wherever an alert is (Overview, Alerts)."""

from __future__ import annotations

from rich.text import Text

#: Alert severities, most severe first (db.models.ALERT_SEVERITIES, reversed), and how each looks: the
#: two highest also bold, so they read without colour.
ALERT_SEVERITY_STYLES: dict[str, str] = {
    "critical": "bold reverse red",
    "high": "bold red",
    "medium": "yellow",
    "low": "cyan",
    "informational": "dim",
}


def severity_text(severity: str) -> Text:
    """An alert's ``severity`` as a cell, in its style (an unknown one unstyled)."""
    return Text(severity, style=ALERT_SEVERITY_STYLES.get(severity, ""), end="")
