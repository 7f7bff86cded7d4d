"""Demo mode, without Textual: a demo database, the ingest server and a simulated fleet, started and stopped.

``python -m console demo`` (console/commands/demo.py, which only reads the
arguments and opens the console) calls, in order: :func:`demo_settings` (which
database; never a configured one unknowingly), :func:`prepare_demo` (``--reset``;
migrate; demo organisations, fresh ingest tokens and the first administrator,
through the same audited ``db/`` functions as the command line's ``org create``,
``ingest-token create|revoke`` and ``create-admin``), :func:`describe_setup`,
then :func:`run_demo` (a SIEM receiver, the ingest server and the simulator as
child processes, around the console or a timed run, stopped on exit whatever
happens).

The ingest server runs the dispatcher (``INGEST_DISPATCH``): the simulator's red
bursts raise the default "Red burst per user" alert within seconds, and each demo
organisation forwards its alerts and red events over syslog (RFC 5424 over TCP,
JSON) to the receiver (simulation/siem_receiver.py), which writes one line per
message to ``<demo dir>/siem.log``.

By default everything lives in ``<data dir>/demo/`` (``AIFW_DATA_DIR`` or
``var/``): its own SQLite database, the processes' logs, the tokens file and the
administrator's password, the receiver's ``siem.log`` and the secret key of
destination secrets. The real embedded database (``<data dir>/firewall.db``)
is never touched. Everything demo is named so: organisations ``demo-…``, tokens
"demo simulator", devices ``sim-demo-…``, destinations "demo SIEM".
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import IO

from db.cli import EXIT_FAILED, EXIT_OK, fail
from db.configs import create_organization, get_config
from db.destinations import DestinationSpec, create_destination, list_destinations, update_destination
from db.engine import migrate, new_engine, new_sessionmaker
from db.errors import error_reason
from db.logs import LogFilter, count
from db.rights import Actor
from db.secrets import secret_box_for
from db.settings import REPO_ROOT, Settings, data_dir_of, load_settings, normalize_database_url
from db.tokens import create_token, list_tokens, revoke_token
from db.users import create_administrator, get_by_username
from db.wording import counted
from simulation.fleet import FleetOrganization

#: The demo organisations and their retention in days (all within the allowed 30..365).
DEMO_ORGANIZATIONS: tuple[tuple[str, int], ...] = (
    ("demo-acme", 90),
    ("demo-globex", 30),
    ("demo-initech", 180),
)
DEMO_PREFIX = "demo-"
DEMO_ADMIN = "admin"
DEMO_ADMIN_EMAIL = "admin@demo.example"
DEMO_TOKEN_NAME = "demo simulator"
DEMO_ACTOR = "demo"
DEMO_DIR_NAME = "demo"
PASSWORD_FILE = "admin-password"
TOKENS_FILE = "tokens"
SERVER_LOG = "ingest.log"
SIMULATOR_LOG = "simulator.log"
RECEIVER_LOG = "siem-receiver.log"
#: What the demo's SIEM received: one line per syslog message.
SIEM_FILE = "siem.log"
#: Each demo organisation's forwarding destination: its alerts and red events, to the receiver.
DEMO_DESTINATION = "demo SIEM"
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0
#: How often a run without the console relays the simulator's progress line.
PROGRESS_SECONDS = 5.0


class DemoError(RuntimeError):
    """The demo cannot start; the message is one line saying what to do."""


@dataclass(frozen=True)
class DemoDatabase:
    """Where the demo writes: its settings, its directory, and whether it is the demo's own database."""

    settings: Settings
    directory: Path
    embedded: bool


def demo_directory(env: Mapping[str, str]) -> Path:
    """``<AIFW_DATA_DIR or var>/demo``: the demo's database, logs, tokens and password."""
    return data_dir_of(env) / DEMO_DIR_NAME


def demo_settings(env: Mapping[str, str], *, database_url: str | None = None) -> DemoDatabase:
    """The demo's database: its own embedded SQLite file, or ``database_url`` when given explicitly.

    A DATABASE_URL in the environment is refused (DemoError): the demo writes
    demo organisations, tokens and an administrator, and must never do so in a
    configured (possibly production) database without being told on the command line.
    """
    directory = demo_directory(env)
    child_env = {key: value for key, value in env.items() if key != "DATABASE_URL"}
    if database_url is not None:
        child_env["DATABASE_URL"] = normalize_database_url(database_url, variable="--database-url")
        return DemoDatabase(load_settings(child_env), directory, embedded=False)
    if (env.get("DATABASE_URL") or "").strip():
        configured = load_settings(env).describe_database()
        raise DemoError(
            f"DATABASE_URL is set ({configured}); the demo never writes into a configured database "
            "unknowingly. Unset DATABASE_URL to use the demo's own embedded database, or pass "
            "--database-url URL to put the demo there on purpose."
        )
    child_env["AIFW_DATA_DIR"] = str(directory)
    return DemoDatabase(load_settings(child_env), directory, embedded=True)


def generate_password() -> str:
    """A 16-character password that is easy to type (no look-alike characters)."""
    alphabet = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "-".join("".join(secrets.choice(alphabet) for _ in range(4)) for _ in range(4))


@dataclass
class DemoSetup:
    """What :func:`prepare_database` made: the organisations with fresh tokens, and the administrator."""

    organizations: list[FleetOrganization]
    admin_created: bool
    #: The administrator's password if known (created now, or saved by an earlier run).
    admin_password: str | None
    created_organizations: list[str] = field(default_factory=list)
    #: Each demo organisation's retention in days as stored now (an operator may have changed it since).
    retention_days: dict[str, int] = field(default_factory=dict)


async def _prepare(settings: Settings, admin_password: str) -> DemoSetup:
    # The demo acts as the command line does (database rights), under its own name in the audit trail.
    actor = Actor(name=DEMO_ACTOR, source="cli")
    engine = new_engine(settings)
    try:
        await migrate(engine)
        async with new_sessionmaker(engine)() as session:
            created: list[str] = []
            organizations: list[FleetOrganization] = []
            retention: dict[str, int] = {}
            for organization_id, retention_days in DEMO_ORGANIZATIONS:
                config = await get_config(session=session, organization_id=organization_id)
                if config is None:
                    config = await create_organization(
                        session=session,
                        organization_id=organization_id,
                        actor=actor,
                        log_retention_days=retention_days,
                    )
                    created.append(organization_id)
                retention[organization_id] = config.log_retention_days
                # The clear token of an earlier run is gone: revoke it and make a new one.
                for old in await list_tokens(session=session, organization_id=organization_id):
                    if old.name == DEMO_TOKEN_NAME and old.revoked_at is None:
                        await revoke_token(session=session, token_id=old.id, actor=actor)
                _, token = await create_token(
                    session=session, organization_id=organization_id, name=DEMO_TOKEN_NAME, actor=actor
                )
                organizations.append(FleetOrganization(organization_id, token))
            admin_created = False
            if await get_by_username(session=session, username=DEMO_ADMIN) is None:
                await create_administrator(
                    session=session,
                    username=DEMO_ADMIN,
                    email=DEMO_ADMIN_EMAIL,
                    password=admin_password,
                    full_name="Demo administrator",
                    bcrypt_rounds=settings.bcrypt_rounds,
                    actor=actor,
                )
                admin_created = True
            await session.commit()
    finally:
        await engine.dispose()
    return DemoSetup(
        organizations, admin_created, admin_password if admin_created else None, created, retention
    )


def prepare_database(database: DemoDatabase, *, admin_password: str | None = None) -> DemoSetup:
    """Migrate; create what is missing (organisations, administrator); new tokens; files in the demo dir.

    The tokens go to ``<demo dir>/tokens`` (mode 0600, read by the simulator);
    a new administrator's password to ``<demo dir>/admin-password`` (0600) so a
    later run can show it again. Raises DatabaseError with a one-line message.
    """
    database.directory.mkdir(parents=True, exist_ok=True)
    password = admin_password or generate_password()
    setup = asyncio.run(_prepare(database.settings, password))
    password_file = database.directory / PASSWORD_FILE
    if setup.admin_created:
        write_private(password_file, password + "\n")
    elif password_file.exists():
        setup.admin_password = password_file.read_text(encoding="utf-8").strip() or None
    write_private(
        database.directory / TOKENS_FILE,
        "".join(f"{org.organization_id} {org.token}\n" for org in setup.organizations),
    )
    return setup


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (tokens, passwords)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def remove_demo_database(database: DemoDatabase) -> None:
    """``--reset``: delete the demo's own SQLite database and its files (never an explicit database)."""
    if not database.embedded:
        raise DemoError(
            "--reset only deletes the demo's own embedded database, not one given by --database-url"
        )
    if database.directory.name != DEMO_DIR_NAME:
        raise DemoError(f"refusing to delete {database.directory}: not a demo directory")
    shutil.rmtree(database.directory, ignore_errors=True)


async def _count_events(settings: Settings) -> int:
    engine = new_engine(settings)
    try:
        async with new_sessionmaker(engine)() as session:
            return (await count(session=session, filters=LogFilter(), cap=100_000_000)).value
    finally:
        await engine.dispose()


def count_events(settings: Settings) -> int:
    """How many log entries the demo database holds."""
    return asyncio.run(_count_events(settings))


# -- child processes ------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    """True if the port can be bound (nothing listens on it any more)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, get SIGTERM if the demo dies (even by SIGKILL)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class ChildProcess:
    """A child started in its own session, output to a log file, stopped with SIGTERM then SIGKILL."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes]

    @classmethod
    def start(
        cls, name: str, command: Sequence[str], *, log_path: Path, env: Mapping[str, str]
    ) -> ChildProcess:
        log = open(log_path, "ab")  # closed in stop()
        process = subprocess.Popen(
            list(command),
            cwd=REPO_ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Own session: Ctrl+C in the terminal reaches only the demo, which stops children in order.
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        return cls(name, process, log_path, log)

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; return the exit code."""
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(5)
        finally:
            self._log.close()
        return self.process.returncode

    def tail(self, lines: int = 5) -> list[str]:
        """The last lines of its log, for error messages and the summary."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if line.strip()][-lines:]


async def _point_destinations_at(settings: Settings, address: str) -> None:
    actor = Actor(name=DEMO_ACTOR, source="cli")
    secrets = secret_box_for(settings)
    engine = new_engine(settings)
    try:
        async with new_sessionmaker(engine)() as session:
            for organization_id, _days in DEMO_ORGANIZATIONS:
                spec = DestinationSpec(
                    name=DEMO_DESTINATION,
                    transport="syslog_tcp",
                    format="json",
                    address=address,
                    forward_alerts=True,
                    event_risk_levels=frozenset({"red"}),
                )
                existing = [
                    destination
                    for destination in await list_destinations(
                        session=session, organization_id=organization_id
                    )
                    if destination.name == DEMO_DESTINATION
                ]
                if not existing:
                    await create_destination(
                        session=session,
                        organization_id=organization_id,
                        spec=spec,
                        actor=actor,
                        secrets=secrets,
                    )
                elif existing[0].address != address or not existing[0].enabled:
                    await update_destination(
                        session=session,
                        destination_id=existing[0].id,
                        spec=spec,
                        actor=actor,
                        secrets=secrets,
                    )
            await session.commit()
    finally:
        await engine.dispose()


def point_destinations_at(settings: Settings, address: str) -> None:
    """Give each demo organisation its "demo SIEM" destination (alerts and red events, syslog over TCP,
    JSON) at ``address``, the receiver of this run; audited as the demo. Raises DemoError (one line)."""
    try:
        asyncio.run(_point_destinations_at(settings, address))
    except Exception as error:  # the database, the secret key or the destination's checks
        raise DemoError(
            f"cannot point the demo's SIEM destinations at {address}: {error_reason(error)}"
        ) from None


def wait_for_port(
    child: ChildProcess, host: str, port: int, *, timeout: float = START_TIMEOUT_SECONDS
) -> None:
    """Wait until ``child`` accepts connections on the port; DemoError if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.running():
            last = " | ".join(child.tail(3)) or "no output"
            raise DemoError(f"the {child.name} exited with code {child.process.returncode}: {last}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise DemoError(
        f"the {child.name} did not listen on {host}:{port} within {timeout:g}s (see {child.log_path})"
    )


@dataclass(frozen=True)
class TrafficPlan:
    """What the demo's simulator does."""

    devices: int = 30
    rate: float = 4.0
    backfill_days: int = 21
    backfill_per_day: int = 1200
    #: A red burst from one user this many seconds into live traffic, then every ``red_burst_every``.
    red_burst_after: float = 5.0
    red_burst_every: float = 180.0


@dataclass
class DemoProcesses:
    """The ingest server and the simulator of one demo run; a context manager that always stops them."""

    database: DemoDatabase
    traffic: TrafficPlan
    host: str = "127.0.0.1"
    port: int = 0
    server: ChildProcess | None = None
    simulator: ChildProcess | None = None
    receiver: ChildProcess | None = None
    receiver_port: int = 0
    say: Callable[[str], None] = print

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DATABASE_URL"] = self.database.settings.database_url
        # The demo's folder: the secret key the demo encrypted destination secrets with is found there.
        env["AIFW_DATA_DIR"] = str(self.database.settings.data_dir)
        env["INGEST_DISPATCH"] = "true"
        env["PYTHONUNBUFFERED"] = "1"
        return env

    @property
    def siem_file(self) -> Path:
        return self.database.directory / SIEM_FILE

    def start(self) -> None:
        """Start the SIEM receiver and point the demo destinations at it, then the server on a free port;
        once it listens, the simulator."""
        directory = self.database.directory
        self.receiver_port = self.receiver_port or free_port(self.host)
        self.receiver = ChildProcess.start(
            "SIEM receiver",
            [
                sys.executable,
                "-m",
                "simulation.siem_receiver",
                "--host",
                self.host,
                "--port",
                str(self.receiver_port),
                "--output",
                str(self.siem_file),
            ],
            log_path=directory / RECEIVER_LOG,
            env=self.child_env(),
        )
        wait_for_port(self.receiver, self.host, self.receiver_port)
        point_destinations_at(self.database.settings, f"{self.host}:{self.receiver_port}")
        self.say(
            f"demo: SIEM receiver pid {self.receiver.pid} on {self.host}:{self.receiver_port}, "
            f"writing to {self.siem_file}"
        )
        self.port = self.port or free_port(self.host)
        self.server = ChildProcess.start(
            "ingest server",
            [
                sys.executable,
                "ingest_server.py",
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--stats-interval",
                "10",
            ],
            log_path=directory / SERVER_LOG,
            env=self.child_env(),
        )
        self.say(f"demo: ingest server pid {self.server.pid} listening on {self.host}:{self.port}")
        wait_for_port(self.server, self.host, self.port)
        traffic = self.traffic
        self.simulator = ChildProcess.start(
            "simulator",
            [
                sys.executable,
                "-m",
                "console",
                "simulate",
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--tokens-file",
                str(directory / TOKENS_FILE),
                "--devices",
                str(traffic.devices),
                "--rate",
                str(traffic.rate),
                "--backfill-days",
                str(traffic.backfill_days),
                "--backfill-per-day",
                str(traffic.backfill_per_day),
                "--red-burst-after",
                str(traffic.red_burst_after),
                "--red-burst-every",
                str(traffic.red_burst_every),
            ],
            log_path=directory / SIMULATOR_LOG,
            env=self.child_env(),
        )
        self.say(
            f"demo: simulator pid {self.simulator.pid} ({counted(traffic.devices, 'device')}, "
            f"{traffic.rate:g} events/s)"
        )

    def check(self) -> None:
        """DemoError if a child died on its own (shown instead of a silently empty console)."""
        for child in (self.receiver, self.server, self.simulator):
            if child is not None and not child.running():
                last = " | ".join(child.tail(3)) or "no output"
                raise DemoError(f"the {child.name} stopped (exit code {child.process.returncode}): {last}")

    def stop(self) -> None:
        """Stop the simulator (it drains), then the server (it flushes); say what happened."""
        if self.simulator is not None:
            code = self.simulator.stop()
            done = [line.removeprefix("simulate: ") for line in self.simulator.tail(3) if "done:" in line]
            self.say(f"demo: simulator stopped (exit code {code}){', ' + done[-1] if done else ''}")
        if self.server is not None:
            code = self.server.stop(
                self.database.settings.ingest.shutdown_grace_seconds + STOP_TIMEOUT_SECONDS
            )
            free = port_is_free(self.host, self.port)
            self.say(
                f"demo: ingest server stopped (exit code {code}); port {self.port} "
                + ("is free again" if free else "is STILL BOUND")
            )
        if self.receiver is not None:
            # Last: the server's dispatcher forwards until it stops.
            code = self.receiver.stop()
            self.say(f"demo: SIEM receiver stopped (exit code {code}); it wrote {self.siem_file}")

    def __enter__(self) -> DemoProcesses:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- one demo run ---------------------------------------------------------------------------------


def prepare_demo(
    database: DemoDatabase,
    traffic: TrafficPlan,
    *,
    reset: bool = False,
    admin_password: str | None = None,
    say: Callable[[str], None] = print,
) -> tuple[DemoSetup, TrafficPlan]:
    """``reset`` the demo's own database, prepare it, and return what was made and the traffic to send.

    History is sent only into an empty database: with events from an earlier run
    the returned plan has no backfill. Raises DemoError, PasswordError or
    DatabaseError, each with a one-line message.
    """
    if reset:
        remove_demo_database(database)
        say(f"demo: deleted the demo database in {database.directory}")
    say(f"demo: preparing {database.settings.describe_database()} (migrations, organisations, tokens, admin)")
    setup = prepare_database(database, admin_password=admin_password)
    stored = count_events(database.settings)
    if stored and traffic.backfill_days:
        traffic = replace(traffic, backfill_days=0)
        say(
            f"demo: keeping the {counted(stored, 'event')} of earlier runs "
            "(no new history; --reset starts afresh)"
        )
    return setup, traffic


def describe_setup(database: DemoDatabase, setup: DemoSetup, traffic: TrafficPlan) -> list[str]:
    """The block printed before the console opens: what is running and how to sign in."""
    directory = database.directory
    if setup.admin_password:
        saved = f"   (saved in {directory / PASSWORD_FILE})"
        credentials = f"{DEMO_ADMIN} / {setup.admin_password}{saved}"
    else:
        credentials = f"{DEMO_ADMIN} (password chosen on an earlier run; --reset starts afresh)"
    where = (
        " (the demo's own; your real data is not touched)"
        if database.embedded
        else " (given by --database-url)"
    )
    organizations = ", ".join(
        f"{name} ({counted(days, 'day')})" for name, days in setup.retention_days.items()
    )
    return [
        "",
        "  AI Usage Firewall: DEMO (simulated agents and data, not for production)",
        f"  database  {database.settings.describe_database()}{where}",
        f"  sign in   {credentials}",
        f"  orgs      {organizations}",
        f"  traffic   {counted(traffic.devices, 'simulated device')}, {traffic.rate:g} events/s live, "
        + (
            f"{counted(traffic.backfill_days, 'day')} of history arriving now"
            if traffic.backfill_days
            else "no new history"
        ),
        f"  alerts    a red burst from one user {traffic.red_burst_after:g} s into live traffic, then every "
        f"{traffic.red_burst_every:g} s: the Alerts section shows it",
        f"  SIEM      alerts and red events forwarded over syslog to {directory / SIEM_FILE}",
        f"  logs      {directory / SERVER_LOG}, {directory / SIMULATOR_LOG}, {directory / RECEIVER_LOG}",
        "",
    ]


def run_without_console(processes: DemoProcesses, duration: float, *, say: Callable[[str], None]) -> None:
    """Wait ``duration`` seconds (0: until interrupted), relaying the simulator's progress."""
    deadline = time.monotonic() + duration if duration > 0 else None
    next_progress = time.monotonic() + PROGRESS_SECONDS
    while deadline is None or time.monotonic() < deadline:
        processes.check()
        time.sleep(0.2)
        if time.monotonic() >= next_progress and processes.simulator is not None:
            next_progress += PROGRESS_SECONDS
            lines = [line for line in processes.simulator.tail(2) if line.startswith("simulate:")]
            if lines:
                say(f"demo: {lines[-1].removeprefix('simulate: ')}")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_demo(
    database: DemoDatabase,
    traffic: TrafficPlan,
    *,
    foreground: Callable[[DemoProcesses], int] | None = None,
    duration: float = 0.0,
    say: Callable[[str], None] = print,
) -> int:
    """Start the server and the simulator, run ``foreground`` (or wait ``duration``), stop both.

    ``foreground`` is the console, given by the front end (this package imports no Textual):
    it gets the running processes and returns the exit code. Ctrl+C, SIGTERM and SIGHUP stop
    the demo in order; a child that dies on its own is one error line (exit code 1). Ends
    with how many events the demo database holds.
    """
    previous = {signum: signal.signal(signum, _raise_interrupt) for signum in (signal.SIGTERM, signal.SIGHUP)}
    code = EXIT_OK
    processes = DemoProcesses(database, traffic, say=say)
    try:
        with processes:
            try:
                if foreground is not None:
                    code = foreground(processes)
                else:
                    say(
                        f"demo: running without the console for {duration:g}s"
                        if duration > 0
                        else "demo: running"
                    )
                    run_without_console(processes, duration, say=say)
            except KeyboardInterrupt:
                say("\ndemo: interrupted, stopping")
    except KeyboardInterrupt:
        say("demo: interrupted again while stopping")
    except DemoError as error:
        code = fail(str(error), code=EXIT_FAILED)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    try:
        stored = count_events(database.settings)
    except Exception as error:  # the summary must not hide the exit code
        say(f"demo: cannot count the stored events: {' '.join(str(error).split())[:200]}")
    else:
        say(
            f"demo: the demo database holds {counted(stored, 'log event')}; "
            "`python -m console demo` opens it again"
        )
    return code
