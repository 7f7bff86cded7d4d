"""The server's counters, the rate-limited log of repeated events, and the periodic stats line."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from db.errors import error_reason

log = logging.getLogger("aifw.ingest")

#: Lines a minute the log gets about one kind of bad input; the rest are counted, then reported.
LOG_REPEATS_PER_MINUTE: Final = 5


@dataclass
class IngestStats:
    """Counters of a running server (read by tests, the stats line and benchmarks)."""

    connections: int = 0
    connections_total: int = 0
    events_received: int = 0
    #: Events acknowledged: committed now or found already stored (a resend is acknowledged again).
    events_acknowledged: int = 0
    #: Rows newly inserted: an acknowledged resend is not stored twice, so it is not counted here.
    events_stored: int = 0
    batches: int = 0
    db_retries: int = 0
    #: Wall time of successful batch writes (insert, rollups, commit), seconds.
    store_seconds: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    max_line_buffer_bytes: int = 0
    #: Connections closed to make room (silent before their hello, or holding an unfinished line).
    connections_shed: int = 0

    def line(self, *, queued: int, events_per_second: float) -> str:
        """The one-line summary logged every stats interval."""
        errors = ",".join(f"{code}:{count}" for code, count in sorted(self.errors.items())) or "none"
        return (
            f"ingest stats connections={self.connections} events_per_s={events_per_second:.1f} "
            f"received={self.events_received} acknowledged={self.events_acknowledged} "
            f"stored={self.events_stored} queued={queued} "
            f"batches={self.batches} db_retries={self.db_retries} errors={errors}"
        )


class RepeatedLog:
    """Logs each kind of repeated event (one bad input, one slow client…) a few times a minute at most.

    What is not logged is counted, and the next line of that kind says how many were left out, so
    a client sending bad lines at line rate cannot flood the log (the stats line counts them all).
    """

    def __init__(
        self,
        logger: logging.Logger,
        per_minute: int = LOG_REPEATS_PER_MINUTE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._per_minute = per_minute
        self._clock = clock
        #: Per kind: start of its current minute, lines logged in it, events left out since the last line.
        self._kinds: dict[str, list[float]] = {}

    def info(self, kind: str, message: str, *args: Any) -> None:
        """Log at INFO unless this kind was logged ``per_minute`` times in the last minute."""
        self._log(logging.INFO, kind, message, args)

    def warning(self, kind: str, message: str, *args: Any) -> None:
        """Log at WARNING unless this kind was logged ``per_minute`` times in the last minute."""
        self._log(logging.WARNING, kind, message, args)

    def _log(self, level: int, kind: str, message: str, args: tuple[Any, ...]) -> None:
        now = self._clock()
        state = self._kinds.setdefault(kind, [now, 0, 0])
        if now - state[0] >= 60.0:
            state[0], state[1] = now, 0
        if state[1] >= self._per_minute:
            state[2] += 1
            return
        state[1] += 1
        if state[2]:
            message += " (and %d more like it not logged)"
            args = (*args, int(state[2]))
            state[2] = 0
        if self._logger.isEnabledFor(level):
            self._logger.log(level, message, *args)


async def report_stats(stats: IngestStats, queued: Callable[[], int], interval: float) -> None:
    """Every interval, one line on stderr, only when something happened (quiet when idle).

    ``queued`` says how many events wait for the writer. Runs until cancelled.
    """
    # The rate is of acknowledged events: resends are work the server did too.
    last_acked, last_received = stats.events_acknowledged, stats.events_received
    last_errors, last_connections = sum(stats.errors.values()), 0
    last_time = time.monotonic()
    while True:
        await asyncio.sleep(interval)
        now = time.monotonic()
        errors = sum(stats.errors.values())
        # Events received but not acknowledged count as activity: a database outage shows as a growing queue.
        if (stats.events_acknowledged, stats.events_received, errors, stats.connections) != (
            last_acked,
            last_received,
            last_errors,
            last_connections,
        ):
            rate = (stats.events_acknowledged - last_acked) / max(now - last_time, 1e-9)
            log.info(stats.line(queued=queued(), events_per_second=rate))
        last_acked, last_received, last_errors, last_connections, last_time = (
            stats.events_acknowledged,
            stats.events_received,
            errors,
            stats.connections,
            now,
        )


def short_reason(error: BaseException) -> str:
    """Why ``error`` happened, on one line of at most 300 characters, for the log (never a secret)."""
    return error_reason(error)[:300]
