"""The one time formatter of the console: moments from the database as UTC text, or a word for none."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

#: How much of a moment to show: to the minute (lists), the second (logs, audit), the day, or the time of day.
Precision = Literal["day", "minute", "second", "time"]
_FORMATS: dict[Precision, str] = {
    "day": "%Y-%m-%d",
    "minute": "%Y-%m-%d %H:%M",
    "second": "%Y-%m-%d %H:%M:%S",
    "time": "%H:%M:%S",
}


def when(moment: datetime | None, *, missing: str = "—", precision: Precision = "minute") -> str:
    """``moment`` in UTC as ``YYYY-MM-DD HH:MM`` (or to the ``precision`` asked), ``missing`` for None.

    SQLite gives naive datetimes (UTC by convention), PostgreSQL aware ones: both read as UTC.
    """
    if moment is None:
        return missing
    utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return utc.strftime(_FORMATS[precision])
