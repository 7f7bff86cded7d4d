"""The alert evaluator: one at a time across processes, reading committed events in commit order.

How it holds together:

- **One evaluator**: the lease ``alerts:evaluator`` (db/leases.py). Every transaction that writes
  starts with :func:`db.leases.fence`; :class:`~db.leases.LeaseLost` means another process took
  over (this one died, hung or was paused past the lease), and everything held in memory is
  dropped before trying to take the lease again. A holder that is killed or stopped is replaced
  once its lease expires (``lease_seconds``).
- **Never a skipped or repeated event**: the cursor ``alerts:events`` (db/streams.py) moves only
  over committed events that nothing can join behind it (db/commit_order.py), and it is saved in
  the same transaction as the alerts a page opened or updated: a crash repeats at most the
  uncommitted page, whose alerts were not committed either.
- **Windows survive a takeover**: a new holder counts the recent events up to the saved cursor
  into its threshold windows again, so a burst straddling the takeover still raises.
- **Latency and cost**: pages of up to ``page_rows`` events are read while there are more; when
  caught up it polls every ``poll_seconds`` (1 s). What was read is evaluated and written together
  once it is a page, or would be ``flush_seconds`` old (1 s) by the next read: one write
  transaction a second at most, and one revision a second at most for an open alert that keeps
  matching, whatever the ingest rate. Each read and each write costs the same few statements
  whatever it carries, so polling once a second and writing at once costs a quarter of polling
  every 250 ms, for the same latency.
  Evaluation is O(1) per event and rule, and reads only the columns rules need of only the events
  a rule could be met by (alerts/prefilter.py: most events, green ones of monitored tools, are not
  read at all).
- **Outages**: a database that is away is logged once per outage (``aifw.alerts``) and retried
  with backoff; whatever was in memory is rebuilt from the database afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from alerts.evaluator import EVENT_KINDS, RuleSet, count_events, evaluate_page
from alerts.prefilter import candidate_filter
from alerts.rules import EVENT_COLUMNS, EVENT_COLUMNS_WITH_KEY, facts_from_row
from alerts.silence import DEFAULT_CHECK_SECONDS, SilenceSchedule, check_silent_agents
from alerts.windows import SlidingWindows
from db import alerts, leases, streams
from db.alert_rules import LIVE_GRACE_SECONDS
from db.base import utcnow
from db.engine import reading
from db.errors import error_reason, is_connection_error

log = logging.getLogger("aifw.alerts")

LEASE_NAME: Final = "alerts:evaluator"
CURSOR_NAME: Final = "alerts:events"
DEFAULT_PAGE_ROWS: Final = 5000
#: How often enabled rules (and monitored tools) are read again: an edit applies within this.
RULES_REFRESH_SECONDS: Final = 2.0
#: The most recent events a new holder counts into its windows again.
REBUILD_MAX_ROWS: Final = 200_000
#: How often groups with nothing recent are dropped from the windows.
PRUNE_SECONDS: Final = 60.0
MAX_BACKOFF_SECONDS: Final = 10.0
#: The longest read events wait to be evaluated and written together. One write a second at most,
#: whatever the ingest rate: an open alert takes one revision a second, not one per page read.
DEFAULT_FLUSH_SECONDS: Final = 1.0


class AlertEvaluator:
    """Evaluates alert rules over committed events, when it holds the evaluator's lease."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        holder: str,
        poll_seconds: float = 1.0,
        lease_seconds: float = 10.0,
        page_rows: int = DEFAULT_PAGE_ROWS,
        silent_check_seconds: float = DEFAULT_CHECK_SECONDS,
        rules_refresh_seconds: float = RULES_REFRESH_SECONDS,
        flush_seconds: float = DEFAULT_FLUSH_SECONDS,
    ) -> None:
        self.sessions = sessions
        self.flush_seconds = flush_seconds
        self.holder = holder
        self.poll_seconds = poll_seconds
        self.lease_seconds = lease_seconds
        self.page_rows = page_rows
        self.rules_refresh_seconds = rules_refresh_seconds
        self.lease: leases.Lease | None = None
        self.position: streams.Position | None = None
        self.rules = RuleSet.build([], {})
        #: What the page reader was built for (RuleSet.reading_key); None before the first.
        self._reading_key: tuple[Any, ...] | None = None
        self.pages = self._pages_of(self.rules)
        self.windows = SlidingWindows()
        self.silence = SilenceSchedule(silent_check_seconds)
        #: Alerts this evaluator opened or changed (for logs and tests).
        self.alerts_written = 0
        self._unsaved = False
        #: Events read but not evaluated yet (up to ``flush_seconds``); the saved cursor is before them.
        self._pending: list[Any] = []
        self._pending_since = 0.0
        self._rules_read_at: float | None = None
        self._fenced_at = 0.0
        self._pruned_at = 0.0

    # -- the loop --

    async def run(self, stop: asyncio.Event) -> None:
        """Evaluate until ``stop`` is set, then give the lease up. Never raises for a database outage."""
        failures = 0
        try:
            while not stop.is_set():
                try:
                    busy = await self.step()
                except leases.LeaseLost:
                    log.warning("alert evaluation taken over by another process; %s stands by", self.holder)
                    self._drop()
                    busy = False
                except Exception as error:  # noqa: BLE001 - evaluation must outlive any outage
                    self._drop()
                    failures += 1
                    if failures == 1:
                        if is_connection_error(error):
                            log.warning(
                                "alert evaluation paused, database unavailable: %s", error_reason(error)
                            )
                        else:
                            log.exception("alert evaluation failed; retrying")
                    await _wait(stop, min(MAX_BACKOFF_SECONDS, 0.25 * 2**failures))
                    continue
                if failures:
                    log.info("alert evaluation resumed after %d failed attempts", failures)
                    failures = 0
                if not busy:
                    await _wait(stop, self.poll_seconds if self.lease else min(1.0, self.lease_seconds / 4))
        finally:
            await self._release()

    async def step(self) -> bool:
        """One round: hold the lease, read rules if due, evaluate one page, check silent agents if due.

        Returns True when a full page was read (more events are waiting). Raises LeaseLost or the
        database's error; the caller drops the in-memory state then (:meth:`run` does).
        """
        loop = asyncio.get_running_loop()
        if self.lease is None and not await self._take_lease():
            return False
        now = loop.time()
        if self._rules_read_at is None or now - self._rules_read_at >= self.rules_refresh_seconds:
            await self._read_rules()
        busy = await self._evaluate_page()
        if self.silence.due(loop.time()):
            await self.check_silent_agents()
        if now - self._pruned_at >= PRUNE_SECONDS:
            self._prune()
        if loop.time() - self._fenced_at >= self.lease_seconds / 3:
            await self._renew()
        return busy

    async def catch_up(self) -> None:
        """Evaluate every committed event now (for tests and tools): rounds until one reads a short page."""
        while await self.step():
            pass
        if self._pending:
            await self._flush()

    # -- taking and losing the lease --

    async def _take_lease(self) -> bool:
        async with self.sessions() as session:
            lease = await leases.acquire(
                session, name=LEASE_NAME, holder=self.holder, seconds=self.lease_seconds
            )
            if lease is None:
                await session.rollback()
                return False
            state = await streams.start_cursor(session, name=CURSOR_NAME, stream="log_entries")
            await session.commit()
        self._fenced_at = asyncio.get_running_loop().time()
        self.lease = lease
        self.position = state.position
        self.silence.reset()
        await self._read_rules()
        counted = await self._rebuild_windows()
        log.info(
            "evaluating alerts as %s (lease epoch %d); %d recent events counted into the windows",
            self.holder,
            lease.epoch,
            counted,
        )
        return True

    def _drop(self) -> None:
        """Forget everything held in memory: the next round starts from the database again."""
        self.lease = None
        self.position = None
        self._unsaved = False
        self._pending = []
        self._rules_read_at = None
        self.windows.clear()

    async def _release(self) -> None:
        lease = self.lease
        if lease is None:
            return
        try:
            if self._pending:
                await self._flush()
            async with self.sessions() as session:
                await self._fence(session, lease)
                if self._unsaved and self.position is not None:
                    await streams.save_cursor(session, name=CURSOR_NAME, position=self.position)
                await leases.release(session, lease)
                await session.commit()
        except Exception as error:  # noqa: BLE001 - the lease expires by itself
            log.info(
                "could not give the alert evaluator's lease up (it expires by itself): %s",
                error_reason(error),
            )
        self._drop()

    async def _renew(self) -> None:
        """Keep the lease while idle; save the cursor if empty pages moved it and nothing waits before it."""
        assert self.lease is not None
        async with self.sessions() as session:
            await self._fence(session)
            if self._unsaved and self.position is not None and not self._pending:
                await streams.save_cursor(session, name=CURSOR_NAME, position=self.position)
            await session.commit()
        self._unsaved = False
        self._fenced_at = asyncio.get_running_loop().time()

    async def _fence(self, session: AsyncSession, lease: leases.Lease | None = None) -> None:
        """Start a write transaction: check the lease is ours (db.leases bounds how long it may stall)."""
        lease = lease or self.lease
        assert lease is not None
        await leases.fence(session, lease)

    # -- rules and windows --

    async def _read_rules(self) -> None:
        async with reading(self.sessions) as session:
            rows = await alerts.enabled_rules(session=session, kinds=(*EVENT_KINDS, "silent_agent"))
            organizations = {rule.organization_id for rule in rows if rule.kind == "new_tool"}
            monitored = await alerts.monitored_tool_spellings(session=session, organization_ids=organizations)
            # Leaving the block closes the session: the rows are detached as loaded (a rollback would
            # expire them).
        before = self.rules.compiled()
        self.rules = RuleSet.build(rows, monitored)
        self.pages = self._pages_of(self.rules)
        after = self.rules.compiled()
        for rule_id, rule in before.items():
            if rule_id not in after or after[rule_id].signature != rule.signature:
                self.windows.forget_rule(rule_id)
        self._rules_read_at = asyncio.get_running_loop().time()

    async def _rebuild_windows(self) -> int:
        """Count recent events already read (up to the cursor) into the threshold windows."""
        counting = [
            rule
            for rules in self.rules.by_organization.values()
            for rule in rules
            if rule.kind == "threshold" and rule.size > 1
        ]
        if not counting or self.position is None:
            return 0
        widest = max(rule.window for rule in counting)
        risk_levels: set[str] | None = set()
        for rule in counting:
            if rule.risk_levels is None or risk_levels is None:
                risk_levels = None
            else:
                risk_levels |= rule.risk_levels
        async with self.sessions() as session:
            rows = await alerts.recent_events(
                session=session,
                up_to=self.position,
                since=utcnow() - widest,
                organization_ids={rule.organization_id for rule in counting},
                risk_levels=risk_levels,
                columns=EVENT_COLUMNS_WITH_KEY,
                limit=REBUILD_MAX_ROWS,
            )
            await session.rollback()
        if len(rows) >= REBUILD_MAX_ROWS:
            log.warning(
                "more recent events than the %d counted into the windows after the takeover: "
                "a burst under way may be counted short",
                REBUILD_MAX_ROWS,
            )
        return count_events(map(facts_from_row, rows), self.rules, self.windows)

    def _pages_of(self, rules: RuleSet) -> streams.EventPages:
        """The reader of the events a rule could be met by: the only ones read (alerts/prefilter.py).

        Kept while the rules read the same events: the rules are read again every couple of seconds,
        and a new reader is a new statement for SQLAlchemy to key and compile."""
        key = rules.reading_key()
        if key != self._reading_key:
            self._reading_key = key
            self.pages = streams.EventPages(
                limit=self.page_rows, columns=EVENT_COLUMNS, where=candidate_filter(rules)
            )
        return self.pages

    def _prune(self) -> None:
        compiled = self.rules.compiled()
        now = utcnow()

        def oldest_useful(rule_id: uuid.UUID) -> datetime | None:
            rule = compiled.get(rule_id)
            return None if rule is None else now - rule.window - timedelta(seconds=LIVE_GRACE_SECONDS)

        self.windows.prune(oldest_useful)
        self._pruned_at = asyncio.get_running_loop().time()

    # -- the work --

    async def _evaluate_page(self) -> bool:
        """Read a page; evaluate and write what was read once it is a page, or would be ``flush_seconds``
        old by the next read.

        Returns True when the page read was full (more events are waiting).
        """
        assert self.lease is not None
        assert self.position is not None
        async with reading(self.sessions) as session:
            page = await self.pages.read(session, after=self.position)
            # End the read before the write: on SQLite a read snapshot cannot become the writer.
            await session.rollback()
        now = asyncio.get_running_loop().time()
        if page.rows:
            if not self._pending:
                self._pending_since = now
            self._pending.extend(page.rows)
        elif page.next_position != self.position and not self._pending:
            self._unsaved = True  # saved with the next renewal: nothing was read past it
        self.position = page.next_position
        full = len(page.rows) >= self.page_rows
        # Flush now rather than after the next read if that read would come too late: a caught-up
        # evaluator polling once a second writes what each poll read at once.
        next_read = 0.0 if full else self.poll_seconds
        if self._pending and (
            len(self._pending) >= self.page_rows
            or now - self._pending_since + next_read >= self.flush_seconds
        ):
            await self._flush()
        return full

    async def _flush(self) -> None:
        """Evaluate the events read, then write their alerts and the cursor past them in one transaction."""
        assert self.lease is not None
        assert self.position is not None
        hits = evaluate_page(map(facts_from_row, self._pending), self.rules, self.windows)
        async with self.sessions() as session:
            # The cursor goes past the events read, with their alerts written in the same transaction.
            await streams.fence_and_save_cursors(session, self.lease, [(CURSOR_NAME, self.position, None)])
            written = await alerts.apply_hits(session=session, hits=hits, rules=self.rules.rows)
            await session.commit()
        self._fenced_at = asyncio.get_running_loop().time()
        self._pending = []
        self._unsaved = False
        self.alerts_written += len(written)

    async def check_silent_agents(self) -> None:
        """Bring every organisation's silent-agent alert in line with its devices now."""
        assert self.lease is not None
        loop = asyncio.get_running_loop()
        if self.rules.silent_agent:
            async with self.sessions() as session:
                await self._fence(session)
                written = await check_silent_agents(session=session, rules=self.rules.silent_agent)
                await session.commit()
            self._fenced_at = loop.time()
            self.alerts_written += len(written)
        self.silence.done(loop.time())


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
