"""Silent agents: checked on a timer, not per event, one alert per organisation.

An active device not heard from (``devices.last_seen``, kept current by the ingest server
while a connection sends anything) for a silent-agent rule's ``window_seconds`` is silent.
:func:`check_silent_agents` brings each organisation's alert in line with its devices
(db.alerts.sync_silent_agents: opened, updated as the list changes, resolved by ``system``
when none is left); :class:`SilenceSchedule` says when the evaluator should run it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from db.alerts import sync_silent_agents
from db.models import Alert, AlertRule

#: How often the evaluator looks for silent devices.
DEFAULT_CHECK_SECONDS = 60.0


class SilenceSchedule:
    """When the next check is due (a monotonic clock's seconds)."""

    def __init__(self, every_seconds: float = DEFAULT_CHECK_SECONDS) -> None:
        self.every_seconds = every_seconds
        self._last: float | None = None

    def due(self, now: float) -> bool:
        return self._last is None or now - self._last >= self.every_seconds

    def done(self, now: float) -> None:
        self._last = now

    def reset(self) -> None:
        """Check at the next chance (a new lease holder)."""
        self._last = None


async def check_silent_agents(
    *, session: AsyncSession, rules: Sequence[AlertRule], now: datetime | None = None
) -> list[Alert]:
    """Sync every silent-agent rule's alert in the caller's fenced transaction; the alerts changed."""
    changed = []
    for rule in rules:
        alert = await sync_silent_agents(session=session, rule=rule, now=now)
        if alert is not None:
            changed.append(alert)
    return changed
