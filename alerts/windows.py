"""Sliding windows of event time, per rule and group: pure state, no I/O.

A threshold rule is met for a group when its ``size`` (N) most recent matching events lie
within ``width`` (W) of each other: the N-th most recent is at or after the newest minus W.
Only the N most recent (time, event id) pairs of each group are kept, in time order, so
adding an event in time order costs O(1); one that arrives late (commit order is not
event-time order) is slotted in place, or dropped if older than all N kept.
"""

from __future__ import annotations

import bisect
import uuid
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta

WindowKey = tuple[uuid.UUID, str]
Entry = tuple[datetime, str]


class SlidingWindows:
    """The last N matching events of each (rule, group)."""

    def __init__(self) -> None:
        self._windows: dict[WindowKey, deque[Entry]] = {}

    def __len__(self) -> int:
        return len(self._windows)

    def add(self, key: WindowKey, at: datetime, event_id: str, *, size: int, width: timedelta) -> bool:
        """Count one event; True if the group's ``size`` most recent events now lie within ``width``."""
        window = self._windows.get(key)
        if window is None or window.maxlen != size:
            window = self._windows[key] = deque(maxlen=size)
        entry = (at, event_id)
        if not window or at >= window[-1][0]:
            window.append(entry)  # the usual case; a full deque drops its oldest
        elif len(window) == size and at < window[0][0]:
            return False  # older than every kept event: it cannot be among the N most recent
        else:
            if len(window) == size:
                window.popleft()
            window.insert(bisect.bisect_right([kept for kept, _ in window], at), entry)
        return len(window) == size and window[-1][0] - window[0][0] <= width

    def contents(self, key: WindowKey) -> list[Entry]:
        """The kept events of a group, oldest first."""
        return list(self._windows.get(key, ()))

    def forget_rule(self, rule_id: uuid.UUID) -> None:
        """Drop every group of a rule (edited or gone: what it counted no longer applies)."""
        for key in [key for key in self._windows if key[0] == rule_id]:
            del self._windows[key]

    def prune(self, oldest_useful: Callable[[uuid.UUID], datetime | None]) -> int:
        """Drop groups whose newest event is before ``oldest_useful(rule_id)`` (None: the rule is gone)."""
        stale = []
        for key, window in self._windows.items():
            cutoff = oldest_useful(key[0])
            if cutoff is None or not window or window[-1][0] < cutoff:
                stale.append(key)
        for key in stale:
            del self._windows[key]
        return len(stale)

    def clear(self) -> None:
        self._windows.clear()
