"""The one time formatter of the console: moments from the database as UTC text, or a word for none."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from db.base import as_utc

#: How much of a moment to show: to the minute (lists), the second (logs, audit), the day, the time of day,
#: or "short" (month, day and minute: narrow tables and the chart).
Precision = Literal["day", "minute", "second", "time", "short"]
_FORMATS: dict[Precision, str] = {
    "day": "%Y-%m-%d",
    "minute": "%Y-%m-%d %H:%M",
    "second": "%Y-%m-%d %H:%M:%S",
    "time": "%H:%M:%S",
    "short": "%m-%d %H:%M",
}


def when(moment: datetime | None, *, missing: str = "—", precision: Precision = "minute") -> str:
    """``moment`` in UTC as ``YYYY-MM-DD HH:MM`` (or to the ``precision`` asked), ``missing`` for None.

    SQLite gives naive datetimes (UTC by convention), PostgreSQL aware ones: both read as UTC.
    """
    if moment is None:
        return missing
    return as_utc(moment).strftime(_FORMATS[precision])


def local_time(moment: datetime) -> str:
    """``moment`` in this machine's time zone, with the zone's name, e.g. ``2026-01-05 10:30:00 CET``."""
    return as_utc(moment).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def utc_and_local(moment: datetime | None) -> str:
    """``2026-12-05 21:46:02 UTC (22:46:02 local)``: the local date too when it is another day; "—"."""
    if moment is None:
        return "—"
    utc = as_utc(moment)
    local = utc.astimezone()
    shown = local.strftime("%H:%M:%S") if local.date() == utc.date() else local.strftime("%Y-%m-%d %H:%M:%S")
    return f"{when(utc, precision='second')} UTC ({shown} local)"
