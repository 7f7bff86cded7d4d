"""The dispatcher: the alert evaluator and the forwarders, run together until told to stop.

One :class:`Dispatcher` runs in ``python -m dispatch`` (dispatch/cli.py) and, with
``INGEST_DISPATCH`` on, inside each ingest server (ingest/server.py). However many
run on one database, leases (db/leases.py) keep one evaluator and one forwarder per
destination at work at a time; the others wait and take over within
``DISPATCH_LEASE_SECONDS`` when a holder dies or hangs.

Each worker is supervised: if its ``run`` ends with an unexpected error (a bug, not a
database outage, which the workers ride out themselves), the error goes to the log
and the worker starts again after a pause, so one failing part never stops the other.
On stop, every worker is told through one event, finishes or abandons its batch and
releases its leases before ``run`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.secrets import SecretBox, SecretKeyError, SecretUnreadable, secret_box_for
from db.settings import DispatchSettings, Settings

log = logging.getLogger("aifw.dispatch")

#: What ``--only`` may name: the alert evaluator or the forwarders.
Part = Literal["alerts", "forwarding"]
PARTS: Final[tuple[Part, ...]] = ("alerts", "forwarding")
#: Pauses before a worker that failed is started again: doubling up to the last.
RESTART_PAUSES_SECONDS: Final = (1.0, 2.0, 5.0, 15.0, 30.0)
#: How long :meth:`Dispatcher.stop_and_wait` waits for the workers to release their leases.
STOP_TIMEOUT_SECONDS: Final = 10.0


class Worker(Protocol):
    """The alert evaluator and the forwarders: run until ``stop`` is set, then release their leases."""

    async def run(self, stop: asyncio.Event) -> None: ...


class KeylessSecretBox(SecretBox):
    """Stands in for the key file when it cannot be read or made (a read-only data folder): destinations
    without a secret (syslog, RELP) still forward; those with one pause and say why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def _refuse(self) -> SecretUnreadable:
        return SecretUnreadable(f"{self.reason}; set AIFW_SECRET_KEY or make the key file readable")

    def encrypt(self, secret: str) -> str:
        raise self._refuse()

    def decrypt(self, ciphertext: str) -> str:
        raise self._refuse()

    def rotate(self, ciphertext: str) -> str:
        raise self._refuse()


def dispatcher_secrets(settings: Settings) -> SecretBox:
    """The forwarders' secret box: AIFW_SECRET_KEY (a bad one raises SecretKeyError: a setting to fix),
    else the key file, else, when that cannot be read or made, a box that refuses with the reason."""
    if settings.secret_key:
        return secret_box_for(settings)
    try:
        return secret_box_for(settings)
    except SecretKeyError as error:
        log.error("destination secrets cannot be used (%s): destinations that need one will pause", error)
        return KeylessSecretBox(str(error))


def new_holder() -> str:
    """This process's name in ``work_leases``: host, pid and a random part (a pid is reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass(frozen=True)
class DispatcherParts:
    """Which workers a dispatcher runs (``--only``): both by default."""

    alerts: bool = True
    forwarding: bool = True

    @classmethod
    def only(cls, part: Part | None) -> DispatcherParts:
        if part is None:
            return cls()
        return cls(alerts=part == "alerts", forwarding=part == "forwarding")

    def names(self) -> list[str]:
        return [name for name, on in (("alerts", self.alerts), ("forwarding", self.forwarding)) if on]


class Dispatcher:
    """The alert evaluator and the forwarders of one process, supervised, stopped together.

    ``secrets`` decrypts destination secrets: needed only when the forwarders run.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: DispatchSettings,
        *,
        secrets: SecretBox | None,
        holder: str | None = None,
        parts: DispatcherParts | None = None,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.holder = holder or new_holder()
        self.parts = parts or DispatcherParts()
        if self.parts.forwarding and secrets is None:
            raise ValueError("the forwarders need the secret box (db.secrets.secret_box_for)")
        self._secrets = secrets
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: How many times each worker was started again after failing (for the log and tests).
        self.restarts: dict[str, int] = dict.fromkeys(self.parts.names(), 0)

    def _workers(self) -> dict[str, Callable[[], Worker]]:
        workers: dict[str, Callable[[], Worker]] = {}
        if self.parts.alerts:
            workers["alerts"] = self._new_evaluator
        if self.parts.forwarding:
            workers["forwarding"] = self._new_forwarders
        return workers

    # The workers' modules are imported when they start: the ingest server imports this module whether
    # or not it runs the dispatcher, and the forwarders bring the HTTP client and the TLS stack along.

    def _new_evaluator(self) -> Worker:
        from alerts.runner import AlertEvaluator

        return AlertEvaluator(
            self.sessions,
            holder=self.holder,
            poll_seconds=self.settings.poll_seconds,
            lease_seconds=self.settings.lease_seconds,
        )

    def _new_forwarders(self) -> Worker:
        from forwarding.runner import Forwarders

        assert self._secrets is not None
        return Forwarders(
            self.sessions,
            holder=self.holder,
            secrets=self._secrets,
            poll_seconds=self.settings.forward_poll_seconds,
            lease_seconds=self.settings.lease_seconds,
        )

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run every worker until ``stop`` (or :meth:`request_stop`); return once all have stopped."""
        if stop is not None:
            watcher = asyncio.create_task(self._follow(stop), name="dispatch-stop-watcher")
        else:
            watcher = None
        log.info(
            "dispatcher %s running: %s (poll %g ms, forwarders %g ms, lease %g s)",
            self.holder,
            " and ".join(self.parts.names()) or "nothing",
            self.settings.poll_seconds * 1000,
            self.settings.forward_poll_seconds * 1000,
            self.settings.lease_seconds,
        )
        try:
            async with asyncio.TaskGroup() as group:
                for name, make in self._workers().items():
                    group.create_task(self._supervise(name, make), name=f"dispatch-{name}")
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
        log.info("dispatcher %s stopped", self.holder)

    async def _follow(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stop.set()

    def request_stop(self) -> None:
        """Tell every worker to stop (they release their leases); :meth:`run` returns once they have."""
        self._stop.set()

    def start(self) -> asyncio.Task[None]:
        """Run as a task of the running loop (inside the ingest server); stop with :meth:`stop_and_wait`."""
        self._task = asyncio.create_task(self.run(), name="dispatcher")
        return self._task

    async def stop_and_wait(self, grace: float = STOP_TIMEOUT_SECONDS) -> None:
        """Stop a dispatcher started with :meth:`start`: ask, wait ``grace`` seconds, then cancel."""
        self.request_stop()
        task = self._task
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=grace)
        if not done:
            log.warning("the dispatcher did not stop within %g s; cancelling it", grace)
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)

    async def _supervise(self, name: str, make: Callable[[], Worker]) -> None:
        """Run one worker; start it again after a pause if it fails, until stopped."""
        failures = 0
        while not self._stop.is_set():
            try:
                await make().run(self._stop)
            except Exception:
                if self._stop.is_set():
                    log.exception("the %s worker failed while stopping", name)
                    return
                pause = RESTART_PAUSES_SECONDS[min(failures, len(RESTART_PAUSES_SECONDS) - 1)]
                failures += 1
                self.restarts[name] += 1
                log.exception("the %s worker failed; starting it again in %g s", name, pause)
                await _sleep_unless(self._stop, pause)
            else:
                if not self._stop.is_set():
                    # A worker returns only when told to stop; returning early is a bug worth seeing.
                    log.error("the %s worker returned without being stopped; starting it again", name)
                    await _sleep_unless(self._stop, RESTART_PAUSES_SECONDS[0])


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
