"""A simulated agent fleet: devices of every type, for several users and organisations, over real TCP.

Each simulated device is one :class:`~ingest.client.AgentClient` on its own
connection: it says hello, optionally backfills history (events with past
timestamps, inside its organisation's retention window, sent through the same
ingest path as live events), then sends live events at its share of the fleet's
rate. Like a well-behaved agent it keeps every event until the server
acknowledges it, and after a dropped connection it reconnects with backoff and
resends what was not acknowledged (the server stores each id once).

With ``red_burst_after`` set, one device (the fleet's first) sends a burst of red events that
soon after live traffic starts, then again every ``red_burst_every`` seconds: enough, quickly
enough, to raise the default "Red burst per user" alert (5 red events of one user in 10 minutes)
while someone watches, as the demo does.

No Textual, no database: ``python -m console simulate`` (console/commands/simulate.py
parses its arguments, then calls :func:`run_until_signalled`) and the demo drive it,
and the tests run it against a real server. Events carry metadata only, never any
prompt content.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import ssl
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from db.base import utcnow
from db.vocabulary import DEFAULT_MONITORED_TOOLS, DEVICE_TYPES
from ingest.client import AgentClient, AgentIdentity, AgentRefused
from simulation.events import RISK_WEIGHTS, TOOL_TYPE_OF_DEVICE, EventGenerator

#: Refusals a retry cannot cure: the device gives up (the others go on).
PERMANENT_REFUSALS = frozenset(
    {"unauthorized", "invalid_hello", "hello_required", "device_disabled", "device_conflict"}
)
#: Tools the event generator knows; others come from an organisation's configuration.
KNOWN_TOOLS = frozenset(name for name, _ in DEFAULT_MONITORED_TOOLS)
#: Share of live events about a tool added in the console (when the organisation has added some).
ADDED_TOOL_SHARE = 0.15
RECONNECT_FIRST_SECONDS = 0.2
RECONNECT_MAX_SECONDS = 5.0
#: Seconds between the events of a red burst: a burst of six takes under two seconds.
RED_BURST_SPACING_SECONDS = 0.25
#: One user in this many (the second of each organisation first) is careless: more amber and red events.
CARELESS_EVERY = 5
CARELESS_RISK_WEIGHTS = {"green": 55, "amber": 30, "red": 15}
#: Relative activity per hour of the day (UTC) and per weekday (Monday first) for backfilled history.
HOUR_WEIGHTS = (1, 1, 1, 1, 1, 2, 4, 8, 14, 18, 18, 16, 12, 15, 18, 17, 14, 10, 6, 4, 3, 2, 2, 1)
WEEKDAY_WEIGHTS = (1.0, 1.05, 1.1, 1.0, 0.85, 0.2, 0.15)
FIRST_NAMES = (
    "alice",
    "bob",
    "carmen",
    "deepak",
    "elena",
    "farid",
    "grace",
    "hiro",
    "ines",
    "jonas",
    "kofi",
    "lena",
    "marco",
    "nadia",
    "oscar",
    "priya",
    "quentin",
    "rosa",
    "sven",
    "tariq",
)
LAST_NAMES = (
    "martin",
    "nguyen",
    "garcia",
    "schmidt",
    "rossi",
    "kowalski",
    "okafor",
    "tanaka",
    "larsen",
    "dubois",
    "silva",
    "haddad",
)


class FleetError(RuntimeError):
    """The fleet cannot run at all (server unreachable, every token refused); one line."""


@dataclass(frozen=True)
class FleetOrganization:
    """An organisation the fleet sends as, with a live ingest token of it."""

    organization_id: str
    token: str


def read_tokens_file(path: Path) -> list[FleetOrganization]:
    """``ORG TOKEN`` per line (blank lines and ``#`` comments skipped); ValueError says which line is bad.

    A file keeps the tokens out of the process list (the demo writes one, mode 0600).
    """
    organizations = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}:{number}: expected 'ORG TOKEN'")
        organizations.append(FleetOrganization(parts[0], parts[1]))
    return organizations


@dataclass(frozen=True)
class FleetPlan:
    """How many devices, how fast, for how long, and how much history."""

    devices: int = 24
    #: Live events per second for the whole fleet.
    rate: float = 5.0
    #: Seconds of live traffic after each device's backfill; None runs until :meth:`Fleet.stop`.
    duration: float | None = None
    #: Days of history to backfill (capped by each organisation's retention), 0 for none.
    backfill_days: int = 0
    #: Backfilled events per (weekday) day for the whole fleet.
    backfill_per_day: int = 600
    seed: int | None = None
    #: After the last event, how long to wait for outstanding acknowledgements.
    drain_seconds: float = 10.0
    #: How long the first connection may take before the fleet gives up.
    connect_timeout: float = 10.0
    #: How often each device asks for its organisation's configuration (monitored tools).
    config_poll_seconds: float = 30.0
    #: Keep every generated event id (tests compare them with the database).
    keep_ids: bool = False
    #: Seconds after the start of live traffic of the first red burst; None for no bursts.
    red_burst_after: float | None = None
    #: Seconds between red bursts (0: only the first).
    red_burst_every: float = 300.0
    #: Red events per burst, sent by one device (one user) a moment apart.
    red_burst_events: int = 6


def user_name(index: int) -> str:
    """A plausible user name, different for every index: ``alice.martin``, ``bob.nguyen``,
    ``carmen.garcia`` …"""
    first = FIRST_NAMES[index % len(FIRST_NAMES)]
    last = LAST_NAMES[(index + index // len(FIRST_NAMES)) % len(LAST_NAMES)]
    # (first, last) repeats every 80 indexes (20 first names, 12 last names, shifted by one per round).
    suffix = index // 80
    return f"{first}.{last}{suffix or ''}"


def email_domain(organization_id: str) -> str:
    """``demo-acme`` → ``acme.example``: where the users of an organisation have their mail."""
    return f"{organization_id.removeprefix('demo-')}.example"


@dataclass
class SimulatedDevice:
    """One device of the fleet: who it is, its connection, what it still has to send."""

    identity: AgentIdentity
    generator: EventGenerator
    backfill: list[datetime]
    live_rate: float
    pace: random.Random = field(default_factory=random.Random)
    client: AgentClient | None = None
    connects: int = 0
    generated: int = 0
    backfill_sent: int = 0
    refused: AgentRefused | None = None
    #: Red events of a burst still to send; the device's own loop sends them, a moment apart.
    burst_left: int = 0
    #: Set to wake the device's loop early (a burst is due, or the fleet stops).
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    bursts_sent: int = 0

    @property
    def reconnects(self) -> int:
        return max(0, self.connects - 1)


@dataclass(frozen=True)
class FleetStats:
    """A snapshot of the fleet's counters."""

    devices: int
    connected: int
    generated: int
    acked: int
    rejected: int
    unacked: int
    reconnects: int
    backfill_total: int
    backfill_sent: int
    refused: dict[str, int] = field(default_factory=dict)
    #: Red bursts sent in full (FleetPlan.red_burst_after).
    red_bursts: int = 0

    def line(self) -> str:
        refused = ", ".join(f"{code}:{count}" for code, count in sorted(self.refused.items()))
        return (
            f"devices {self.connected}/{self.devices} connected · generated {self.generated} · "
            f"acknowledged {self.acked} · waiting {self.unacked} · rejected {self.rejected} · "
            f"reconnects {self.reconnects} · backfill {self.backfill_sent}/{self.backfill_total}"
            + (f" · red bursts {self.red_bursts}" if self.red_bursts else "")
            + (f" · refused {refused}" if refused else "")
        )


def backfill_times(plan: FleetPlan, rnd: random.Random, now: datetime) -> list[datetime]:
    """Timestamps of the history: busy working hours, quiet weekends, a little growth towards today."""
    times: list[datetime] = []
    if plan.backfill_days <= 0 or plan.backfill_per_day <= 0:
        return times
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    hours = list(range(24))
    for days_ago in range(plan.backfill_days, -1, -1):
        day = today - timedelta(days=days_ago)
        growth = 1.0 - 0.3 * days_ago / max(plan.backfill_days, 1)
        count = int(plan.backfill_per_day * WEEKDAY_WEIGHTS[day.weekday()] * growth * rnd.uniform(0.85, 1.15))
        for hour in rnd.choices(hours, HOUR_WEIGHTS, k=count):
            moment = day + timedelta(hours=hour, seconds=rnd.uniform(0, 3600))
            # Today: only what already happened, and not the last minutes (live traffic covers those).
            if moment < now - timedelta(minutes=5):
                times.append(moment)
    return times


def build_devices(
    organizations: Sequence[FleetOrganization], plan: FleetPlan, *, now: datetime | None = None
) -> list[SimulatedDevice]:
    """The fleet's devices: spread over the organisations, one or two devices of different types per user."""
    if not organizations:
        raise FleetError("no organisation to send as: give --organization ORG --token TOKEN")
    if plan.devices < 1:
        raise FleetError("--devices must be at least 1")
    rnd = random.Random(plan.seed)
    history = backfill_times(plan, rnd, now or utcnow())
    per_device: list[list[datetime]] = [[] for _ in range(plan.devices)]
    for moment in history:
        per_device[rnd.randrange(plan.devices)].append(moment)
    devices = []
    for index in range(plan.devices):
        organization = organizations[index % len(organizations)]
        number = index // len(organizations)
        # Users have two devices, then one, then two …: (0, 0), (1), (2, 2), (3), …
        user_index = number * 2 // 3
        device_type = DEVICE_TYPES[number % len(DEVICE_TYPES)]
        careless = user_index % CARELESS_EVERY == 1
        identity = AgentIdentity(
            organization_id=organization.organization_id,
            token=organization.token,
            device_id=f"sim-{organization.organization_id}-{device_type}-{number:03d}",
            # Different people in each organisation: names shifted by organisation.
            user_id=f"{user_name(user_index + 23 * (index % len(organizations)))}@"
            f"{email_domain(organization.organization_id)}",
            device_type=device_type,
        )
        generator = EventGenerator(
            seed=None if plan.seed is None else plan.seed * 100_003 + index,
            risk_weights=CARELESS_RISK_WEIGHTS if careless else RISK_WEIGHTS,
        )
        devices.append(
            SimulatedDevice(
                identity=identity,
                generator=generator,
                backfill=sorted(per_device[index]),
                live_rate=plan.rate / plan.devices,
                pace=random.Random(None if plan.seed is None else plan.seed * 7 + index),
            )
        )
    return devices


def live_event(device: SimulatedDevice, *, risk_level: str | None = None) -> dict[str, Any] | None:
    """The device's next live event, for a tool its organisation monitors (None if it monitors none).

    Tools switched off in the console are not reported; tools added there are, now and then.
    ``risk_level`` forces the risk (the events of a red burst).
    """
    config = device.client.config if device.client is not None else None
    tools = (config or {}).get("monitored_tools")
    device_type = device.identity.device_type
    if not isinstance(tools, list):
        return device.generator.event(device_type=device_type, risk_level=risk_level)
    tool_type = TOOL_TYPE_OF_DEVICE.get(device_type, "web")
    enabled = {
        str(tool.get("name"))
        for tool in tools
        if isinstance(tool, dict) and tool.get("enabled", True) and tool.get("tool_type") == tool_type
    }
    added = sorted(enabled - KNOWN_TOOLS)
    for _ in range(20):
        event = device.generator.event(device_type=device_type, risk_level=risk_level)
        if added and device.pace.random() < ADDED_TOOL_SHARE:
            event["tool_name"] = device.pace.choice(added)
        if event["tool_name"] in enabled:
            return event
    return None


class Fleet:
    """Runs simulated devices against an ingest server until the plan's duration ends or :meth:`stop`.

    ``stop()`` ends generation and waits (``drain_seconds``) for acknowledgements;
    ``stop(now=True)`` gives up at once. ``generated_ids`` holds every event id
    when ``plan.keep_ids`` is set.
    """

    def __init__(
        self,
        host: str,
        port: int,
        organizations: Sequence[FleetOrganization],
        plan: FleetPlan,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.plan = plan
        self.ssl_context = ssl_context
        self.devices = build_devices(organizations, plan)
        self.generated_ids: set[str] = set()
        self._stopping = asyncio.Event()
        self._abort = asyncio.Event()

    def stop(self, *, now: bool = False) -> None:
        """Stop generating events; with ``now``, also stop waiting for acknowledgements."""
        self._stopping.set()
        if now:
            self._abort.set()
        for device in self.devices:
            device.wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stats(self) -> FleetStats:
        clients = [device.client for device in self.devices if device.client is not None]
        refused = Counter(device.refused.code for device in self.devices if device.refused is not None)
        return FleetStats(
            devices=len(self.devices),
            connected=sum(1 for client in clients if client.connected),
            generated=sum(device.generated for device in self.devices),
            acked=sum(len(client.acked) for client in clients),
            rejected=sum(len(client.rejected) for client in clients),
            unacked=sum(len(client.unacked) for client in clients),
            reconnects=sum(device.reconnects for device in self.devices),
            backfill_total=sum(len(device.backfill) for device in self.devices),
            backfill_sent=sum(device.backfill_sent for device in self.devices),
            refused=dict(refused),
            red_bursts=sum(device.bursts_sent for device in self.devices),
        )

    async def run(
        self, *, progress: Callable[[FleetStats], None] | None = None, every: float = 5.0
    ) -> FleetStats:
        """Connect every device, send until done, drain; return the final counters.

        Raises FleetError if the first device of an organisation cannot connect
        within ``connect_timeout`` or its token is refused.
        """
        # One device of each organisation first, so a wrong token is one clear error, not a silent gap.
        seen: set[str] = set()
        for device in self.devices:
            if device.identity.organization_id not in seen:
                seen.add(device.identity.organization_id)
                await self._first_contact(device)
        reporter = asyncio.create_task(self._report(progress, every)) if progress is not None else None
        tasks = [asyncio.create_task(self._run_device(device)) for device in self.devices]
        bursts = asyncio.create_task(self._red_bursts()) if self.plan.red_burst_after is not None else None
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks if bursts is None else [*tasks, bursts]:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if bursts is not None:
                await asyncio.gather(bursts, return_exceptions=True)
            if reporter is not None:
                reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter
            for device in self.devices:
                if device.client is not None:
                    await device.client.close()
        return self.stats()

    async def _red_bursts(self) -> None:
        """Give the first device a red burst to send after ``red_burst_after`` seconds, then every
        ``red_burst_every`` seconds, until the fleet stops."""
        plan = self.plan
        device = self.devices[0]
        delay = plan.red_burst_after or 0.0
        while not self.stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self.stopping:
                return
            device.burst_left = plan.red_burst_events
            device.wake.set()
            if plan.red_burst_every <= 0:
                return
            delay = plan.red_burst_every

    async def _report(self, progress: Callable[[FleetStats], None], every: float) -> None:
        while True:
            await asyncio.sleep(every)
            progress(self.stats())

    async def _first_contact(self, device: SimulatedDevice) -> None:
        """The first connection: a clear error if the server is not there or refuses the token."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.plan.connect_timeout
        last_error: BaseException | None = None
        while loop.time() < deadline and not self._abort.is_set():
            try:
                await self._connect(device)
                return
            except AgentRefused as refused:
                if refused.code in PERMANENT_REFUSALS:
                    raise FleetError(
                        f"the ingest server refused organisation {device.identity.organization_id!r}: "
                        f"{refused.code}: {refused.message}"
                    ) from None
                last_error = refused
            except (OSError, TimeoutError, ConnectionError) as error:
                last_error = error
            await asyncio.sleep(RECONNECT_FIRST_SECONDS)
        if isinstance(last_error, ConnectionRefusedError):
            reason = "connection refused"
        elif isinstance(last_error, AgentRefused):
            reason = f"{last_error.code}: {last_error.message}"
        else:
            reason = getattr(last_error, "strerror", None) or str(last_error or "") or "timed out"

        raise FleetError(
            f"cannot connect to the ingest server at {self.host}:{self.port} ({reason}); is it running?"
        )

    async def _connect(self, device: SimulatedDevice) -> None:
        if device.client is None:
            device.client = AgentClient(self.host, self.port, device.identity, ssl_context=self.ssl_context)
            await device.client.connect()
        else:
            await device.client.reconnect()
        device.connects += 1

    async def _reconnect(self, device: SimulatedDevice, *, deadline: float | None = None) -> bool:
        """Connect (again) with backoff until it works; False if the device must give up, stop now,
        or ``deadline`` (loop time) passes."""
        loop = asyncio.get_running_loop()
        delay = RECONNECT_FIRST_SECONDS
        while not self._abort.is_set() and (deadline is None or loop.time() < deadline):
            try:
                await self._connect(device)
                return True
            except AgentRefused as refused:
                if refused.code in PERMANENT_REFUSALS:
                    device.refused = refused
                    return False
            except (OSError, TimeoutError, ConnectionError):
                pass
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._abort.wait(), delay)
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)
        return False

    async def _run_device(self, device: SimulatedDevice) -> None:
        if (device.client is None or not device.client.connected) and not await self._reconnect(device):
            return
        assert device.client is not None
        config = device.client.config or {}
        retention_days = int(config.get("log_retention_days") or 0)
        if retention_days > 0:
            oldest = utcnow() - timedelta(days=retention_days - 1)
            device.backfill = [moment for moment in device.backfill if moment >= oldest]
        for moment in device.backfill:
            if self.stopping:
                break
            event = device.generator.event(device_type=device.identity.device_type, timestamp=moment)
            if not await self._send(device, event):
                return
            device.backfill_sent += 1
        loop = asyncio.get_running_loop()
        end = None if self.plan.duration is None else loop.time() + self.plan.duration
        next_poll = loop.time() + self.plan.config_poll_seconds
        while not self.stopping:
            if device.burst_left:
                delay = RED_BURST_SPACING_SECONDS
            else:
                delay = device.pace.expovariate(device.live_rate) if device.live_rate > 0 else 3600.0
            if end is not None:
                delay = min(delay, end - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(device.wake.wait(), max(delay, 0))
            device.wake.clear()
            if self.stopping or (end is not None and loop.time() >= end):
                break
            if loop.time() >= next_poll:
                next_poll = loop.time() + self.plan.config_poll_seconds
                await self._poll_config(device)
            bursting = device.burst_left > 0
            live = live_event(device, risk_level="red" if bursting else None)
            if bursting:
                device.burst_left -= 1
                device.bursts_sent += device.burst_left == 0
            if live is not None and not await self._send(device, live):
                return
        await self._drain(device)

    async def _poll_config(self, device: SimulatedDevice) -> None:
        """Ask for the organisation's configuration, as agents do, so console changes take effect."""
        client = device.client
        if client is None or not client.connected:
            return
        try:
            reply = await client.request({"type": "config"}, within=5.0)
            # Error lines about earlier events queue up as replies too: skip them.
            for _ in range(50):
                if reply.get("type") == "config":
                    break
                reply = await client.next_reply(within=5.0)
        except (ConnectionError, OSError, TimeoutError, AssertionError):
            return
        if reply.get("type") == "config" and isinstance(reply.get("config"), dict):
            client.config = reply["config"]

    async def _send(self, device: SimulatedDevice, event: dict[str, object]) -> bool:
        """Hand one event to the connection (kept until acknowledged); False if the device gave up."""
        client = device.client
        assert client is not None
        device.generated += 1
        if self.plan.keep_ids:
            self.generated_ids.add(str(event["id"]))
        try:
            await client.send(event)
        except (ConnectionError, OSError):
            pass  # the event is kept in client.unacked and resent after reconnecting
        if not client.connected:
            return await self._reconnect(device)
        return True

    async def _drain(self, device: SimulatedDevice) -> None:
        """Wait for outstanding acknowledgements, reconnecting if needed, for at most ``drain_seconds``."""
        client = device.client
        assert client is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.plan.drain_seconds
        while client.unacked and not self._abort.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                await client.wait_acked(within=remaining)
            except TimeoutError:
                return
            except ConnectionError:
                if not await self._reconnect(device, deadline=deadline):
                    return


async def run_until_signalled(
    fleet: Fleet,
    *,
    progress: Callable[[FleetStats], None] | None = None,
    every: float = 5.0,
    draining: Callable[[], None] | None = None,
) -> FleetStats:
    """Run ``fleet`` until its plan ends; the first SIGTERM/SIGINT drains, the second stops at once.

    ``draining`` is called at the first signal (to say that acknowledgements are awaited).
    Where signal handlers cannot be installed (not the main thread) the fleet just runs.
    """
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if fleet.stopping:
            fleet.stop(now=True)
        else:
            if draining is not None:
                draining()
            fleet.stop()

    installed = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, on_signal)
            installed.append(signum)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        return await fleet.run(progress=progress, every=every)
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
