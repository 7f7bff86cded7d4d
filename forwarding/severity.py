"""The one severity table every format and transport uses.

| What is forwarded             | CEF severity | OCSF severity_id | Syslog severity (PRI) |
|-------------------------------|--------------|------------------|-----------------------|
| event, risk green             | 1            | 1 Informational  | 6 informational       |
| event, risk amber             | 5            | 3 Medium         | 4 warning             |
| event, risk red               | 8            | 4 High           | 3 error               |
| alert, severity informational | 1            | 1 Informational  | 6 informational       |
| alert, severity low           | 3            | 2 Low            | 5 notice              |
| alert, severity medium        | 5            | 3 Medium         | 4 warning             |
| alert, severity high          | 8            | 4 High           | 3 error               |
| alert, severity critical      | 10           | 5 Critical       | 2 critical            |

An alert carries its rule's severity (db.models.ALERT_SEVERITIES); an event its risk level
(db.vocabulary.RISK_LEVELS). A value outside both lists (a row written by a later version) is
treated as the lowest level rather than failing the delivery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from forwarding.items import EventItem, ForwardItem


@dataclass(frozen=True)
class Severity:
    """One row of the table: what each format says for one risk level or alert severity."""

    cef: int
    ocsf_id: int
    ocsf_name: str
    syslog: int


EVENT_SEVERITIES: Final[dict[str, Severity]] = {
    "green": Severity(cef=1, ocsf_id=1, ocsf_name="Informational", syslog=6),
    "amber": Severity(cef=5, ocsf_id=3, ocsf_name="Medium", syslog=4),
    "red": Severity(cef=8, ocsf_id=4, ocsf_name="High", syslog=3),
}

ALERT_SEVERITY_TABLE: Final[dict[str, Severity]] = {
    "informational": Severity(cef=1, ocsf_id=1, ocsf_name="Informational", syslog=6),
    "low": Severity(cef=3, ocsf_id=2, ocsf_name="Low", syslog=5),
    "medium": Severity(cef=5, ocsf_id=3, ocsf_name="Medium", syslog=4),
    "high": Severity(cef=8, ocsf_id=4, ocsf_name="High", syslog=3),
    "critical": Severity(cef=10, ocsf_id=5, ocsf_name="Critical", syslog=2),
}


def severity_of(item: ForwardItem) -> Severity:
    """The table's row for an event (by risk level) or an alert revision (by its rule's severity)."""
    if isinstance(item, EventItem):
        return EVENT_SEVERITIES.get(item.risk_level, EVENT_SEVERITIES["green"])
    return ALERT_SEVERITY_TABLE.get(item.severity, ALERT_SEVERITY_TABLE["informational"])
