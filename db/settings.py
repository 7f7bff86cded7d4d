"""Settings read from the environment, validated once, in one place.

Every part (console, ingest server, cron cleanup, migrations, tests) reads its
configuration through :func:`load_settings`. A bad value raises
:class:`SettingsError` whose message is one line naming the variable, so entry
points can print it and exit instead of showing a traceback.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn
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
    stats_interval_seconds: float = 60.0
    shutdown_grace_seconds: float = 5.0
    db_retry_max_seconds: float = 5.0
    #: Distinct keys (tools, users, entity types) per organisation, rollup bucket and dimension; the
    #: events of further keys are counted under the overflow key, shown as "(other)" (db/rollups.py).
    rollup_max_keys_per_bucket: int = 10_000
    #: New devices one organisation may register per hour; past it a new device's hello is refused.
    max_new_devices_per_hour: int = 1000


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
    #: Where the console proposes to export logs (AIFW_EXPORT_DIR); None means the user's home folder.
    export_dir: Path | None = None

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


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be true or false; got {raw!r}")


def _number(
    env: Mapping[str, str],
    name: str,
    default: float,
    *,
    minimum: float,
    maximum: float | None = None,
    integer: bool = False,
    exclusive_minimum: bool = False,
) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise SettingsError(f"{name} must be {kind}; got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise SettingsError(f"{name} must be a finite number; got {raw!r}")
    too_small = value <= minimum if exclusive_minimum else value < minimum
    if too_small or (maximum is not None and value > maximum):
        low = f"greater than {minimum:g}" if exclusive_minimum else f"at least {minimum:g}"
        high = f" and at most {maximum:g}" if maximum is not None else ""
        raise SettingsError(f"{name} must be {low}{high}; got {raw!r}")
    return value


def _whole(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    """A whole-number setting of at least ``minimum``."""
    return int(_number(env, name, default, minimum=minimum, integer=True))


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    """A TCP port setting: 0 (any free port) to 65535."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return port_number(raw)
    except argparse.ArgumentTypeError as error:
        raise SettingsError(f"{name} {error}") from None


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    """A setting that must be greater than zero (a timeout, an interval)."""
    return _number(env, name, default, minimum=0, exclusive_minimum=True)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise SettingsError naming the first bad variable."""
    env = os.environ if env is None else env
    data_dir = Path(env.get("AIFW_DATA_DIR") or DEFAULT_DATA_DIR).expanduser()
    raw_url = env.get("DATABASE_URL", "").strip()
    if raw_url:
        database_url, is_default = normalize_database_url(raw_url), False
    else:
        create_data_dir(data_dir)
        database_url, is_default = normalize_database_url(default_sqlite_url(data_dir)), True

    defaults = IngestLimits()
    limits = IngestLimits(
        max_line_bytes=_whole(
            env, "INGEST_MAX_LINE_BYTES", defaults.max_line_bytes, minimum=MIN_MAX_LINE_BYTES
        ),
        max_connections=_whole(env, "INGEST_MAX_CONNECTIONS", defaults.max_connections, minimum=1),
        hello_timeout_seconds=_positive(env, "INGEST_HELLO_TIMEOUT_SECONDS", defaults.hello_timeout_seconds),
        idle_timeout_seconds=_positive(env, "INGEST_IDLE_TIMEOUT_SECONDS", defaults.idle_timeout_seconds),
        max_pre_hello_connections=_whole(
            env, "INGEST_MAX_PRE_HELLO_CONNECTIONS", defaults.max_pre_hello_connections, minimum=1
        ),
        pre_hello_grace_seconds=_number(
            env, "INGEST_PRE_HELLO_GRACE_SECONDS", defaults.pre_hello_grace_seconds, minimum=0
        ),
        hello_max_line_bytes=_whole(
            env, "INGEST_HELLO_MAX_LINE_BYTES", defaults.hello_max_line_bytes, minimum=1024
        ),
        tls_handshake_timeout_seconds=_positive(
            env, "INGEST_TLS_HANDSHAKE_TIMEOUT_SECONDS", defaults.tls_handshake_timeout_seconds
        ),
        line_timeout_seconds=_positive(env, "INGEST_LINE_TIMEOUT_SECONDS", defaults.line_timeout_seconds),
        max_connections_per_token=_whole(
            env, "INGEST_MAX_CONNECTIONS_PER_TOKEN", defaults.max_connections_per_token, minimum=1
        ),
        max_lingering_connections=_whole(
            env, "INGEST_MAX_LINGERING_CONNECTIONS", defaults.max_lingering_connections, minimum=0
        ),
        linger_timeout_seconds=_number(
            env, "INGEST_LINGER_TIMEOUT_SECONDS", defaults.linger_timeout_seconds, minimum=0
        ),
        max_output_bytes=_whole(env, "INGEST_MAX_OUTPUT_BYTES", defaults.max_output_bytes, minimum=4096),
        output_timeout_seconds=_positive(
            env, "INGEST_OUTPUT_TIMEOUT_SECONDS", defaults.output_timeout_seconds
        ),
        max_in_flight_per_connection=_whole(
            env, "INGEST_MAX_IN_FLIGHT", defaults.max_in_flight_per_connection, minimum=1
        ),
        queue_max_events=_whole(env, "INGEST_QUEUE_MAX_EVENTS", defaults.queue_max_events, minimum=1),
        batch_max_events=_whole(env, "INGEST_BATCH_MAX_EVENTS", defaults.batch_max_events, minimum=1),
        batch_max_wait_ms=_number(env, "INGEST_BATCH_MAX_WAIT_MS", defaults.batch_max_wait_ms, minimum=0),
        stats_interval_seconds=_number(
            env, "INGEST_STATS_INTERVAL_SECONDS", defaults.stats_interval_seconds, minimum=0
        ),
        shutdown_grace_seconds=_number(
            env, "INGEST_SHUTDOWN_GRACE_SECONDS", defaults.shutdown_grace_seconds, minimum=0, maximum=300
        ),
        db_retry_max_seconds=_positive(env, "INGEST_DB_RETRY_MAX_SECONDS", defaults.db_retry_max_seconds),
        rollup_max_keys_per_bucket=_whole(
            env, "ROLLUP_MAX_KEYS_PER_BUCKET", defaults.rollup_max_keys_per_bucket, minimum=1
        ),
        max_new_devices_per_hour=_whole(
            env, "INGEST_MAX_NEW_DEVICES_PER_HOUR", defaults.max_new_devices_per_hour, minimum=1
        ),
    )
    tls_cert = (env.get("INGEST_TLS_CERT") or "").strip() or None
    tls_key = (env.get("INGEST_TLS_KEY") or "").strip() or None
    if (tls_cert is None) != (tls_key is None):
        missing = "INGEST_TLS_KEY" if tls_key is None else "INGEST_TLS_CERT"
        raise SettingsError(f"{missing} must be set too: TLS needs both INGEST_TLS_CERT and INGEST_TLS_KEY")
    raw_export_dir = (env.get("AIFW_EXPORT_DIR") or "").strip()
    export_dir = Path(raw_export_dir).expanduser() if raw_export_dir else None
    if export_dir is not None and not export_dir.is_absolute():
        # A relative folder would follow the current directory: exports would land in the repository.
        raise SettingsError(
            f"AIFW_EXPORT_DIR must be an absolute folder (or start with ~); got {raw_export_dir!r}"
        )
    return Settings(
        database_url=database_url,
        database_url_is_default=is_default,
        enable_retention_scheduler=_bool(env, "ENABLE_RETENTION_SCHEDULER", False),
        retention_cleanup_interval_hours=_number(
            env, "RETENTION_CLEANUP_INTERVAL_HOURS", 24.0, minimum=0, exclusive_minimum=True
        ),
        ingest_host=(env.get("INGEST_HOST") or "127.0.0.1").strip(),
        ingest_port=_port(env, "INGEST_PORT", 7878),
        ingest=limits,
        bcrypt_rounds=int(_number(env, "AIFW_BCRYPT_ROUNDS", 12, minimum=4, maximum=16, integer=True)),
        ingest_tls_cert=tls_cert,
        ingest_tls_key=tls_key,
        data_dir=data_dir,
        export_dir=export_dir,
    )
