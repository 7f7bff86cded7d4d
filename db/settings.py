"""Settings read from the environment, validated once, in one place.

Every part (console, ingest server, cron cleanup, migrations, tests) reads its
configuration through :func:`load_settings`. A bad value raises
:class:`SettingsError` whose message is one line naming the variable, so entry
points can print it and exit instead of showing a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn, Protocol
from urllib.parse import urlsplit

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Where the embedded SQLite database lives when DATABASE_URL is unset.
DEFAULT_DATA_DIR = REPO_ROOT / "var"
DEFAULT_SQLITE_FILE = "firewall.db"
MAX_PORT = 65535

SUPPORTED_DRIVERS = {
    "postgresql+asyncpg": "postgresql+asyncpg",
    # The guide's plain form and common aliases mean the same server; we always talk asyncpg.
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "sqlite": "sqlite+aiosqlite",
}


class SettingsError(ValueError):
    """A configuration value is wrong; the message names the variable and is one line."""


class UsageError(SettingsError):
    """A command-line argument is wrong; the message names the option and is one line."""


#: The smallest INGEST_MAX_LINE_BYTES: the largest configuration the console lets an administrator
#: save is budgeted to fit one line of this size (db/configs.py), and the welcome that carries it
#: announces the limit, so a smaller limit could not carry every valid configuration.
MIN_MAX_LINE_BYTES = 64 * 1024


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies(tuple[Network, ...]):
    """The networks whose connections may carry a PROXY protocol header (``INGEST_TRUSTED_PROXIES``)."""

    __slots__ = ()

    def __str__(self) -> str:
        return ",".join(str(network) for network in self)

    def trust(self, host: str) -> bool:
        """True if ``host`` (an address as the socket reports it) lies in one of the networks."""
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d
        return any(address in network for network in self)


@dataclass(frozen=True)
class IngestLimits:
    """Limits of the ingest server, each a named setting with its unit."""

    max_line_bytes: int = MIN_MAX_LINE_BYTES
    max_connections: int = 1000
    hello_timeout_seconds: float = 10.0
    idle_timeout_seconds: float = 300.0
    #: Of ``max_connections``, how many may be still before their hello (TLS handshake included);
    #: past it the oldest of them is closed, so silent connections cannot hold the door shut.
    max_pre_hello_connections: int = 100
    #: A new connection is not shed during this first moment: its hello is on the way.
    pre_hello_grace_seconds: float = 0.5
    #: Longest line before the hello is done: a hello is well under 2 KiB.
    hello_max_line_bytes: int = 8 * 1024
    tls_handshake_timeout_seconds: float = 5.0
    #: Time from a line's first byte to its newline; an agent's line takes milliseconds.
    line_timeout_seconds: float = 10.0
    #: Authenticated connections of one ingest token on this server at once.
    max_connections_per_token: int = 1000
    #: Clients that closed their sending side and wait for their acks, on top of ``max_connections``.
    max_lingering_connections: int = 100
    #: How long a client that closed its sending side is kept waiting for its acks.
    linger_timeout_seconds: float = 30.0
    #: Answers waiting in a connection's send buffer before the server stops reading it.
    max_output_bytes: int = 64 * 1024
    #: How long the output may stay backed up (the client reads nothing) before the connection is closed.
    output_timeout_seconds: float = 30.0
    max_in_flight_per_connection: int = 1000
    queue_max_events: int = 20_000
    batch_max_events: int = 2000
    #: 0 = group commit: each batch takes what queued up during the previous commit.
    batch_max_wait_ms: float = 0.0
    #: Batches in flight at once on PostgreSQL, each in its own transaction (SQLite writes one at a time).
    writers: int = 2
    stats_interval_seconds: float = 60.0
    shutdown_grace_seconds: float = 5.0
    db_retry_max_seconds: float = 5.0
    #: New devices one organisation may register per hour; past it a new device's hello is refused.
    max_new_devices_per_hour: int = 1000
    #: Every connection starts with a PROXY protocol header (v2 or v1) from a trusted load balancer,
    #: which says the agent's real address (ingest/proxy_protocol.py).
    proxy_protocol: bool = False
    #: The load balancers allowed to send that header; required when ``proxy_protocol`` is on.
    trusted_proxies: TrustedProxies | None = None
    #: From the connection to the end of its PROXY header (the balancer writes it at once).
    proxy_header_timeout_seconds: float = 3.0


@dataclass(frozen=True)
class DispatchSettings:
    """The dispatcher's settings: alert evaluation and forwarding (dispatch/)."""

    #: Whether the ingest server runs the dispatcher inside itself (INGEST_DISPATCH); leases keep one
    #: evaluator and one forwarder per destination however many servers run it.
    run_in_ingest_server: bool = True
    #: How often an evaluator that caught up looks for new rows (what it reads is written at once).
    poll_seconds: float = 1.0
    #: How often a forwarder that caught up looks for new rows: a destination gets a batch a second at
    #: most when trickling (Fluent Bit's flush interval), each batch costing the same few statements.
    forward_poll_seconds: float = 1.0
    #: How long a lease lasts unrenewed: another process takes over this long after a holder dies or hangs.
    lease_seconds: float = 10.0
    #: How many days past an organisation's retention the cleanup keeps events a destination has not
    #: received yet (FORWARD_HOLD_DAYS); then it deletes them and records how many went undelivered.
    forward_hold_days: int = 7


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one process."""

    database_url: str
    database_url_is_default: bool = False
    enable_retention_scheduler: bool = False
    retention_cleanup_interval_hours: float = 24.0
    ingest_host: str = "127.0.0.1"
    ingest_port: int = 7878
    ingest: IngestLimits = field(default_factory=IngestLimits)
    bcrypt_rounds: int = 12
    #: PEM certificate chain and private key; both set means the ingest server speaks TLS.
    ingest_tls_cert: str | None = None
    ingest_tls_key: str | None = None
    #: The data folder (AIFW_DATA_DIR): the embedded database lives here, and no export may write here.
    data_dir: Path = DEFAULT_DATA_DIR
    #: Where the console proposes to export logs (AIFW_EXPORT_DIR); None: ~/Downloads if it exists, else ~.
    export_dir: Path | None = None
    dispatch: DispatchSettings = field(default_factory=DispatchSettings)
    #: Fernet keys for destination secrets (AIFW_SECRET_KEY, comma-separated, the first encrypts);
    #: None means the key file in the data folder (db/secrets.py), created on first use.
    secret_key: str | None = field(default=None, repr=False)

    @property
    def url(self) -> URL:
        return make_url(self.database_url)

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @property
    def is_postgresql(self) -> bool:
        return self.url.get_backend_name() == "postgresql"

    def describe_database(self) -> str:
        """Where the database is, for messages, without the password."""
        url = self.url
        if self.is_sqlite:
            return f"SQLite file {url.database}"
        return f"PostgreSQL at {url.host or 'localhost'}:{url.port or 5432}/{url.database}"


def default_sqlite_url(data_dir: Path = DEFAULT_DATA_DIR) -> str:
    return f"sqlite+aiosqlite:///{data_dir / DEFAULT_SQLITE_FILE}"


def sqlite_file(url: URL) -> Path | None:
    """The file of a SQLite URL (the path of a ``file:`` URI with ``uri=true`` too); None for memory."""
    database = url.database or ""
    if database.startswith("file::memory:"):
        return None
    uri = str(url.query.get("uri", "")).lower() in {"1", "true", "yes", "on"}
    if uri and database.startswith("file:"):
        parsed = urlsplit(database)
        in_memory = url.query.get("mode") == "memory" or "mode=memory" in parsed.query
        if parsed.path in ("", ":memory:") or in_memory:
            return None
        return Path(parsed.path).expanduser()
    return Path(database).expanduser() if database not in ("", ":memory:") else None


def normalize_database_url(raw: str, *, variable: str = "DATABASE_URL") -> str:
    """Return the URL with the async driver we use, or raise SettingsError.

    An in-memory SQLite database is refused (every process, even every connection, would get
    its own, and it vanishes on exit), and so is a SQLite file whose folder does not exist: a
    typo must not quietly start a new, empty database somewhere else.
    """
    try:
        url = make_url(raw.strip())
    except ArgumentError:
        raise SettingsError(f"{variable} is not a database URL: {raw!r}") from None
    except ValueError:  # SQLAlchemy's int() of the port; the URL is not echoed, it may hold a password
        raise SettingsError(f"{variable} has a port that is not a number; fix the port in the URL") from None
    port = url.port
    driver = SUPPORTED_DRIVERS.get(url.drivername)
    if driver is None:
        raise SettingsError(
            f"{variable} has unsupported scheme {url.drivername!r}; "
            "use postgresql+asyncpg://user:password@host:port/database or sqlite+aiosqlite:///path"
        )
    if port is not None and not 1 <= port <= MAX_PORT:
        raise SettingsError(
            f"{variable} has port {port}, not one from 1 to {MAX_PORT}; fix the port in the URL"
        )
    url = url.set(drivername=driver)
    if driver.startswith("sqlite"):
        path = sqlite_file(url)
        if path is None:
            raise SettingsError(
                f"{variable} is an in-memory SQLite database, which would vanish when the process ends; "
                "use a file: sqlite+aiosqlite:///path/to/firewall.db"
            )
        if not path.parent.is_dir():
            raise SettingsError(
                f"{variable} points into the folder {path.parent}, which does not exist; "
                "create it first (mkdir -p) or fix the path"
            )
    return url.render_as_string(hide_password=False)


def create_data_dir(data_dir: Path) -> None:
    """Create the data folder of the embedded database; SettingsError in one line if it cannot be."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise SettingsError(
            f"AIFW_DATA_DIR: cannot create the data folder {data_dir} ({reason}); "
            "set AIFW_DATA_DIR to a folder this user can write, or set DATABASE_URL"
        ) from None
    if not data_dir.is_dir():
        raise SettingsError(f"AIFW_DATA_DIR: {data_dir} is not a folder; set AIFW_DATA_DIR to a folder")


def port_number(raw: str) -> int:
    """An argparse type: a TCP port from 0 (any free port) to 65535, with a one-line error."""
    try:
        value = int(raw.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to {MAX_PORT}; got {raw!r}") from None
    if not 0 <= value <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to {MAX_PORT}; got {raw!r}")
    return value


class OneLineArgumentParser(argparse.ArgumentParser):
    """An argument parser whose errors are :class:`UsageError` (one line), not a usage block and an exit.

    Every entry point catches it with its other settings errors and prints one line with exit code 2;
    its subcommands' parsers are of this class too (argparse makes them of the parent's class).
    """

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{' '.join(message.split())} (see {self.prog} --help)")


# --- the table of settings ---------------------------------------------------------------------------
# Every setting is one row below: its environment variable, the attribute it sets, how its text is
# read (with its bounds), its help and, for the ingest server, its option. load_settings, the
# server's options and the README's configuration table (checked by a test) all come from it.


class Parse(Protocol):
    """Reads a setting's text; raises ValueError whose message completes "<NAME> ..."."""

    def __call__(self, raw: str) -> object: ...


@dataclass(frozen=True)
class Number:
    """A number within bounds: ``minimum`` (exclusive when ``exclusive_minimum``) to ``maximum``."""

    minimum: float
    maximum: float | None = None
    integer: bool = False
    exclusive_minimum: bool = False

    def __call__(self, raw: str) -> float:
        try:
            value = int(raw) if self.integer else float(raw)
        except ValueError:
            kind = "a whole number" if self.integer else "a number"
            raise ValueError(f"must be {kind}; got {raw!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"must be a finite number; got {raw!r}")
        too_small = value <= self.minimum if self.exclusive_minimum else value < self.minimum
        if too_small or (self.maximum is not None and value > self.maximum):
            raise ValueError(f"must be {self.bounds}; got {raw!r}")
        return value

    @property
    def bounds(self) -> str:
        low = f"greater than {self.minimum:g}" if self.exclusive_minimum else f"at least {self.minimum:g}"
        return low + (f" and at most {self.maximum:g}" if self.maximum is not None else "")


def _whole(minimum: int, maximum: int | None = None) -> Number:
    return Number(minimum, maximum, integer=True)


@dataclass(frozen=True)
class Milliseconds(Number):
    """A number of milliseconds within bounds, kept in seconds (DISPATCH_POLL_MS → ``poll_seconds``)."""

    def __call__(self, raw: str) -> float:
        return super().__call__(raw) / 1000


def _milliseconds(minimum: float, maximum: float) -> Milliseconds:
    return Milliseconds(minimum, maximum)


#: A timeout or an interval: any number greater than zero.
_POSITIVE = Number(0, exclusive_minimum=True)
_NOT_NEGATIVE = Number(0)


def _boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"must be true or false; got {raw!r}")


def _port(raw: str) -> int:
    try:
        return port_number(raw)
    except argparse.ArgumentTypeError as error:
        raise ValueError(str(error)) from None


def _text(raw: str) -> str:
    return raw.strip()


def _trusted_proxies(raw: str) -> TrustedProxies:
    """``10.0.0.0/8, 192.0.2.7, ::1`` as networks (a bare address is a /32 or /128).

    A network with host bits set (``10.0.0.1/8``) is refused: such a typo would trust more than meant.
    """
    networks: list[Network] = []
    for part in raw.split(","):
        text = part.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=True))
        except ValueError as error:
            raise ValueError(
                f"must be addresses or networks (CIDR) separated by commas; {text!r}: {error}"
            ) from None
    if not networks:
        raise ValueError(f"must name at least one address or network; got {raw!r}")
    return TrustedProxies(networks)


def _folder(raw: str) -> Path:
    return Path(raw.strip()).expanduser()


def data_dir_of(env: Mapping[str, str]) -> Path:
    """The data folder ``AIFW_DATA_DIR`` names (unset or blank: ``var/`` in the repository); nothing is
    checked or created, so a process can find it (for its log, the demo's folder) before its settings."""
    raw = env.get("AIFW_DATA_DIR") or ""
    return _folder(raw) if raw.strip() else DEFAULT_DATA_DIR


def _absolute_folder(raw: str) -> Path:
    folder = _folder(raw)
    if not folder.is_absolute():
        # A relative folder would follow the current directory: exports would land in the repository.
        raise ValueError(f"must be an absolute folder (or start with ~); got {raw!r}")
    return folder


@dataclass(frozen=True)
class Setting:
    """One setting: the variable that sets it, where its value goes, how it is read, what it means."""

    env: str
    #: A field of :class:`Settings`, or ``ingest.<field>`` of :class:`IngestLimits`.
    attribute: str
    parse: Parse
    help: str
    #: The ingest server's option for it (``aifw-ingest --help``); None if it has none.
    flag: str | None = None
    #: The dispatcher's option for it (``aifw-dispatch --help``); None if it has none.
    dispatch_flag: str | None = None
    #: A secret (AIFW_SECRET_KEY): its value is never shown, not even in ``--help``.
    secret: bool = False

    @property
    def default(self) -> object:
        owner, name = self.attribute.split(".") if "." in self.attribute else ("", self.attribute)
        fields = {f.name: f for f in dataclasses.fields(_GROUPS.get(owner, Settings))}
        spec = fields[name]
        if spec.default_factory is not dataclasses.MISSING:
            return spec.default_factory()
        return spec.default

    def in_variable_unit(self, value: object) -> object:
        """``value`` as the variable writes it: milliseconds for a setting kept in seconds."""
        if isinstance(self.parse, Milliseconds) and isinstance(value, int | float):
            return round(value * 1000, 6)
        return value

    def read(self, raw: str) -> object:
        """The value of ``raw``, or SettingsError naming the variable."""
        try:
            return self.parse(raw)
        except SettingsError:
            raise
        except ValueError as error:
            raise SettingsError(f"{self.env} {error}") from None

    def option_type(self, raw: str) -> object:
        """The argparse ``type`` of the option: the same reading, its error in argparse's form."""
        try:
            return self.parse(raw)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None


#: The groups of settings an attribute may name as ``<group>.<field>``: the attributes of Settings.
_GROUPS: dict[str, type] = {"ingest": IngestLimits, "dispatch": DispatchSettings}


#: Every setting, in the order of the README's configuration table.
SETTINGS: tuple[Setting, ...] = (
    # DATABASE_URL and AIFW_DATA_DIR are read first and together (load_settings): the default URL
    # is a file in the data folder, which is created only when the URL is not set.
    Setting(
        "DATABASE_URL",
        "database_url",
        normalize_database_url,
        "the database; unset: the embedded SQLite file",
    ),
    Setting(
        "AIFW_DATA_DIR",
        "data_dir",
        _folder,
        "the embedded database's folder",
    ),
    Setting("AIFW_EXPORT_DIR", "export_dir", _absolute_folder, "where the console proposes to save exports"),
    Setting(
        "ENABLE_RETENTION_SCHEDULER",
        "enable_retention_scheduler",
        _boolean,
        "run the retention cleanup in-process",
    ),
    Setting(
        "RETENTION_CLEANUP_INTERVAL_HOURS",
        "retention_cleanup_interval_hours",
        _POSITIVE,
        "hours between scheduled cleanups",
    ),
    Setting("INGEST_HOST", "ingest_host", _text, "address to listen on", "--host"),
    Setting("INGEST_PORT", "ingest_port", _port, "TCP port, 0 for any free port", "--port"),
    Setting(
        "INGEST_MAX_LINE_BYTES",
        "ingest.max_line_bytes",
        _whole(MIN_MAX_LINE_BYTES),
        "longest line accepted",
        "--max-line-bytes",
    ),
    Setting(
        "INGEST_MAX_CONNECTIONS",
        "ingest.max_connections",
        _whole(1),
        "connections at once; more get 'overloaded'",
        "--max-connections",
    ),
    Setting(
        "INGEST_HELLO_TIMEOUT_SECONDS",
        "ingest.hello_timeout_seconds",
        _POSITIVE,
        "seconds a new connection has to say hello",
        "--hello-timeout",
    ),
    Setting(
        "INGEST_IDLE_TIMEOUT_SECONDS",
        "ingest.idle_timeout_seconds",
        _POSITIVE,
        "seconds without a complete line before closing",
        "--idle-timeout",
    ),
    Setting(
        "INGEST_MAX_PRE_HELLO_CONNECTIONS",
        "ingest.max_pre_hello_connections",
        _whole(1),
        "of the connections, how many may be before their hello; past it the oldest is closed",
        "--max-pre-hello",
    ),
    Setting(
        "INGEST_PRE_HELLO_GRACE_SECONDS",
        "ingest.pre_hello_grace_seconds",
        _NOT_NEGATIVE,
        "seconds a new connection is never shed, its hello being on the way",
        "--pre-hello-grace",
    ),
    Setting(
        "INGEST_HELLO_MAX_LINE_BYTES",
        "ingest.hello_max_line_bytes",
        _whole(1024),
        "longest line before the hello",
        "--hello-max-line-bytes",
    ),
    Setting(
        "INGEST_TLS_HANDSHAKE_TIMEOUT_SECONDS",
        "ingest.tls_handshake_timeout_seconds",
        _POSITIVE,
        "seconds a TLS handshake may take",
        "--tls-handshake-timeout",
    ),
    Setting(
        "INGEST_LINE_TIMEOUT_SECONDS",
        "ingest.line_timeout_seconds",
        _POSITIVE,
        "seconds from a line's first byte to its newline before closing",
        "--line-timeout",
    ),
    Setting(
        "INGEST_MAX_CONNECTIONS_PER_TOKEN",
        "ingest.max_connections_per_token",
        _whole(1),
        "authenticated connections of one ingest token at once",
        "--max-connections-per-token",
    ),
    Setting(
        "INGEST_MAX_LINGERING_CONNECTIONS",
        "ingest.max_lingering_connections",
        _whole(0),
        "half-closed clients waiting for their acks, besides --max-connections",
        "--max-lingering",
    ),
    Setting(
        "INGEST_LINGER_TIMEOUT_SECONDS",
        "ingest.linger_timeout_seconds",
        _NOT_NEGATIVE,
        "seconds a half-closed client waits for its acks",
        "--linger-timeout",
    ),
    Setting(
        "INGEST_MAX_OUTPUT_BYTES",
        "ingest.max_output_bytes",
        _whole(4096),
        "unread answers per connection before it is no longer read",
        "--max-output-bytes",
    ),
    Setting(
        "INGEST_OUTPUT_TIMEOUT_SECONDS",
        "ingest.output_timeout_seconds",
        _POSITIVE,
        "seconds a client may leave its answers unread before it is closed",
        "--output-timeout",
    ),
    Setting(
        "INGEST_MAX_IN_FLIGHT",
        "ingest.max_in_flight_per_connection",
        _whole(1),
        "unacknowledged events per connection before it is no longer read",
        "--max-in-flight",
    ),
    Setting(
        "INGEST_QUEUE_MAX_EVENTS",
        "ingest.queue_max_events",
        _whole(1),
        "events waiting for the writer before all reading pauses",
        "--queue-max-events",
    ),
    Setting(
        "INGEST_BATCH_MAX_EVENTS",
        "ingest.batch_max_events",
        _whole(1),
        "events per database transaction at most",
        "--batch-max-events",
    ),
    Setting(
        "INGEST_BATCH_MAX_WAIT_MS",
        "ingest.batch_max_wait_ms",
        _NOT_NEGATIVE,
        "under load, milliseconds the writer waits to fill a batch",
        "--batch-max-wait-ms",
    ),
    Setting(
        "INGEST_WRITERS",
        "ingest.writers",
        _whole(1),
        "batches in flight at once on PostgreSQL (SQLite: always 1)",
        "--writers",
    ),
    Setting(
        "INGEST_TLS_CERT",
        "ingest_tls_cert",
        _text,
        "PEM certificate chain; with the key, enables TLS",
        "--tls-cert",
    ),
    Setting("INGEST_TLS_KEY", "ingest_tls_key", _text, "PEM private key", "--tls-key"),
    Setting(
        "INGEST_SHUTDOWN_GRACE_SECONDS",
        "ingest.shutdown_grace_seconds",
        Number(0, 300),
        "seconds to finish and acknowledge on SIGTERM",
        "--shutdown-grace",
    ),
    Setting(
        "INGEST_DB_RETRY_MAX_SECONDS",
        "ingest.db_retry_max_seconds",
        _POSITIVE,
        "longest pause between database retries, seconds",
        "--db-retry-max",
    ),
    Setting(
        "INGEST_STATS_INTERVAL_SECONDS",
        "ingest.stats_interval_seconds",
        _NOT_NEGATIVE,
        "seconds between stats lines on stderr, 0 for none",
        "--stats-interval",
    ),
    Setting(
        "INGEST_MAX_NEW_DEVICES_PER_HOUR",
        "ingest.max_new_devices_per_hour",
        _whole(1),
        "new devices one organisation may register per hour",
        "--max-new-devices-per-hour",
    ),
    Setting(
        "INGEST_PROXY_PROTOCOL",
        "ingest.proxy_protocol",
        _boolean,
        "expect a PROXY protocol header (v2 or v1) first on every connection, from a trusted proxy",
        "--proxy-protocol",
    ),
    Setting(
        "INGEST_TRUSTED_PROXIES",
        "ingest.trusted_proxies",
        _trusted_proxies,
        "addresses or networks (CIDR), comma-separated, of the load balancers allowed to send it",
        "--trusted-proxies",
    ),
    Setting(
        "INGEST_PROXY_HEADER_TIMEOUT_SECONDS",
        "ingest.proxy_header_timeout_seconds",
        _POSITIVE,
        "seconds a connection has to send its PROXY protocol header",
        "--proxy-header-timeout",
    ),
    Setting("AIFW_BCRYPT_ROUNDS", "bcrypt_rounds", _whole(4, 16), "bcrypt cost of new password hashes"),
    Setting(
        "INGEST_DISPATCH",
        "dispatch.run_in_ingest_server",
        _boolean,
        "run the dispatcher (alert evaluation and forwarding) inside the ingest server",
    ),
    Setting(
        "DISPATCH_POLL_MS",
        "dispatch.poll_seconds",
        _milliseconds(1, 10_000),
        "milliseconds an idle alert evaluator waits before looking for new rows",
        dispatch_flag="--poll-ms",
    ),
    Setting(
        "FORWARD_POLL_MS",
        "dispatch.forward_poll_seconds",
        _milliseconds(1, 60_000),
        "milliseconds a forwarder that caught up waits before looking for new rows",
        dispatch_flag="--forward-poll-ms",
    ),
    Setting(
        "DISPATCH_LEASE_SECONDS",
        "dispatch.lease_seconds",
        Number(2, 300),
        "seconds a lease lasts unrenewed: another process takes over this long after a holder dies",
        dispatch_flag="--lease-seconds",
    ),
    Setting(
        "FORWARD_HOLD_DAYS",
        "dispatch.forward_hold_days",
        _whole(0, 365),
        "days past its retention the cleanup keeps an event a destination has not received",
    ),
    Setting(
        "AIFW_SECRET_KEY",
        "secret_key",
        _text,
        "Fernet keys of destination secrets, comma-separated, the first encrypts; unset: the key file",
        secret=True,
    ),
)


def _with_values(settings: Settings, values: Mapping[str, Any]) -> Settings:
    """``settings`` with the attributes named in ``values`` (``<group>.<field>`` within a group) replaced."""
    top: dict[str, Any] = {name: v for name, v in values.items() if "." not in name}
    for group in _GROUPS:
        inner = {name.split(".", 1)[1]: v for name, v in values.items() if name.startswith(f"{group}.")}
        if inner:
            top[group] = replace(getattr(settings, group), **inner)
    return replace(settings, **top)


def _check_tls_pair(settings: Settings) -> Settings:
    if (settings.ingest_tls_cert is None) != (settings.ingest_tls_key is None):
        missing = (
            "INGEST_TLS_KEY (--tls-key)"
            if settings.ingest_tls_key is None
            else "INGEST_TLS_CERT (--tls-cert)"
        )
        raise SettingsError(f"{missing} must be set too: TLS needs both a certificate and a key")
    return settings


def _check_proxy_protocol(settings: Settings) -> Settings:
    if settings.ingest.proxy_protocol and settings.ingest.trusted_proxies is None:
        raise SettingsError(
            "INGEST_PROXY_PROTOCOL (--proxy-protocol) needs INGEST_TRUSTED_PROXIES (--trusted-proxies): "
            "the addresses of the load balancers allowed to say who the client is"
        )
    return settings


def _checked(settings: Settings) -> Settings:
    """The checks of settings that go together (TLS files, the PROXY protocol and its proxies)."""
    return _check_proxy_protocol(_check_tls_pair(settings))


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting of the table; raise SettingsError naming the first bad variable."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = env.get(setting.env)
        if raw is not None and raw.strip() != "":
            values[setting.attribute] = setting.read(raw)
    data_dir = data_dir_of(env)
    if "database_url" not in values:
        create_data_dir(data_dir)
        values["database_url"] = normalize_database_url(default_sqlite_url(data_dir))
        values["database_url_is_default"] = True
    return _checked(_with_values(Settings(database_url=""), values))


def _flag_of(setting: Setting, program: str) -> str | None:
    return setting.dispatch_flag if program == "dispatch" else setting.flag


def add_server_options(
    parser: argparse.ArgumentParser, settings: Settings, *, program: str = "ingest"
) -> None:
    """Add the option of every setting that has one for ``program`` (``ingest`` or ``dispatch``).

    An option that is not given leaves its setting as the environment made it (as hypercorn's
    command line does): the defaults are ``SUPPRESS``, and the help shows the value in effect.
    """
    for setting in SETTINGS:
        flag = _flag_of(setting, program)
        if flag is None:
            continue
        current = setting.in_variable_unit(value_of(settings, setting.attribute))
        shown = "set" if setting.secret and current is not None else current
        parser.add_argument(
            flag,
            dest=setting.attribute,
            type=setting.option_type,
            default=argparse.SUPPRESS,
            metavar=_metavar(setting, flag),
            help=f"{setting.help} ({setting.env}; now {shown if shown is not None else 'unset'})",
        )


def _metavar(setting: Setting, flag: str) -> str:
    if isinstance(setting.parse, Number):
        return "N"
    if setting.parse is _boolean:
        return "BOOL"
    return flag.rsplit("-", 1)[-1].upper()


def settings_with_options(
    settings: Settings, args: argparse.Namespace, *, program: str = "ingest"
) -> Settings:
    """``settings`` with the options of ``program`` that were given on the command line applied."""
    given = {
        s.attribute: getattr(args, s.attribute)
        for s in SETTINGS
        if _flag_of(s, program) and hasattr(args, s.attribute)
    }
    return _checked(_with_values(settings, given))


def value_of(settings: Settings, attribute: str) -> object:
    """The value of a setting's ``attribute`` (``<group>.<field>`` within a group) in ``settings``."""
    if "." in attribute:
        group, name = attribute.split(".", 1)
        return getattr(getattr(settings, group), name)
    return getattr(settings, attribute)
