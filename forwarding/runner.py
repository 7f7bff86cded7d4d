"""All destinations' forwarders in one process: one delivery task per destination whose lease it holds.

Every few seconds the runner lists the enabled destinations and starts a
:class:`~forwarding.delivery.DestinationForwarder` for each one whose lease it can take
(another process may hold some: one forwarder per destination, however many processes run
this). It stops the tasks of destinations disabled or deleted, restarts one that ended (a
lost lease is taken again only once it is free), and on stop releases its leases so another
process takes over at once instead of after the lease time. A database outage is waited out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.destinations import lease_name, list_destinations
from db.engine import reading
from db.leases import Lease, acquire, release
from db.secrets import SecretBox
from forwarding.delivery import FRAME_PAGE_ROWS, PAGE_ROWS, DestinationForwarder

log = logging.getLogger("aifw.forward")

#: How often the runner looks for new, removed and free destinations.
SCAN_SECONDS = 2.0


@dataclass
class _Running:
    lease: Lease
    task: asyncio.Task[None]


class Forwarders:
    """Runs the forwarders of every enabled destination this process can take the lease of."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        holder: str,
        secrets: SecretBox,
        poll_seconds: float = 0.25,
        lease_seconds: float = 10.0,
        scan_seconds: float = SCAN_SECONDS,
        page_rows: int = PAGE_ROWS,
        frame_page_rows: int = FRAME_PAGE_ROWS,
        retry_first_seconds: float = 1.0,
        retry_most_seconds: float = 60.0,
    ) -> None:
        self._sessions = sessions
        self.holder = holder
        self._secrets = secrets
        self._poll = poll_seconds
        self._lease_seconds = lease_seconds
        self._scan_seconds = scan_seconds
        self._page_rows = page_rows
        self._frame_page_rows = frame_page_rows
        self._retry = (retry_first_seconds, retry_most_seconds)
        self._running: dict[uuid.UUID, _Running] = {}
        self._database_down = False

    @property
    def destinations(self) -> frozenset[uuid.UUID]:
        """The destinations this process forwards now."""
        return frozenset(key for key, running in self._running.items() if not running.task.done())

    async def run(self, stop: asyncio.Event) -> None:
        """Forward until ``stop`` is set, then stop every task and release its lease."""
        try:
            while not stop.is_set():
                await self._scan()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._scan_seconds)
        finally:
            await asyncio.shield(self._stop_all())

    async def _scan(self) -> None:
        try:
            async with reading(self._sessions) as session:
                enabled = await list_destinations(session=session, enabled_only=True)
        except (SQLAlchemyError, OSError) as error:
            if not self._database_down:
                self._database_down = True
                log.warning("forwarders wait for the database: %s", type(error).__name__)
            return
        if self._database_down:
            self._database_down = False
            log.info("forwarders: the database is reachable again")
        wanted = {destination.id for destination in enabled}
        for destination_id in list(self._running):
            running = self._running[destination_id]
            if running.task.done() or destination_id not in wanted:
                await self._stop(destination_id)
        for destination in enabled:
            if destination.id not in self._running:
                await self._start(destination.id)

    async def _start(self, destination_id: uuid.UUID) -> None:
        try:
            async with self._sessions() as session:
                lease = await acquire(
                    session, name=lease_name(destination_id), holder=self.holder, seconds=self._lease_seconds
                )
                await session.commit()
        except (SQLAlchemyError, OSError):
            return
        if lease is None:
            return  # another process forwards it
        forwarder = DestinationForwarder(
            self._sessions,
            destination_id=destination_id,
            lease=lease,
            secrets=self._secrets,
            poll_seconds=self._poll,
            page_rows=self._page_rows,
            frame_page_rows=self._frame_page_rows,
            retry_first_seconds=self._retry[0],
            retry_most_seconds=self._retry[1],
        )
        task = asyncio.create_task(forwarder.run(), name=f"forward:{destination_id}")
        self._running[destination_id] = _Running(lease=lease, task=task)

    async def _stop(self, destination_id: uuid.UUID) -> None:
        running = self._running.pop(destination_id)
        running.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            try:
                await running.task
            except Exception:
                log.exception("the forwarder of destination %s ended with an error", destination_id)
        try:
            async with self._sessions() as session:
                await release(session, running.lease)
                await session.commit()
        except (SQLAlchemyError, OSError):
            pass  # the lease expires by itself

    async def _stop_all(self) -> None:
        for destination_id in list(self._running):
            await self._stop(destination_id)
