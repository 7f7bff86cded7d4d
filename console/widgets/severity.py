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
#: The short words narrow tables use (the detail and the Overview say the whole word).
SHORT_SEVERITIES: dict[str, str] = {"critical": "crit", "medium": "med", "informational": "info"}


def severity_text(severity: str, *, label: str | None = None, short: bool = False) -> Text:
    """An alert's ``severity`` as a cell in its style (an unknown one unstyled).

    The cell reads ``label`` if given ("3 high"), else the severity, shortened for a narrow
    column when ``short`` ("crit", "med", "info").
    """
    words = label if label is not None else (SHORT_SEVERITIES.get(severity, severity) if short else severity)
    return Text(words, style=ALERT_SEVERITY_STYLES.get(severity, ""), end="")
