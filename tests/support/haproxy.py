"""A real HAProxy for the scale-out rehearsal: its own configuration, a free port, a stats socket, per test.

``async with running_haproxy(directory, backends) as haproxy`` writes ``haproxy.cfg`` (a TCP
frontend on a free port, ``balance roundrobin`` to the backends with ``send-proxy-v2`` and the
health probe of docs/deploy.md), starts ``haproxy -db -f haproxy.cfg`` and waits until every backend
is UP; ``haproxy.states()`` reads each server's state from the stats socket.

Without haproxy the test skips (the run's summary says how to install it), unless
AIFW_REQUIRE_HAPROXY=1 (CI), where it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import signal
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.programs import free_port, require_program
from tests.support.waiting import wait_until

#: The text the run's summary looks for in skip reasons (tests/conftest.py).
SKIP_REASON = "HAProxy tests skipped: haproxy is not installed"
INSTALL_HINT = "HAProxy tests skipped: install haproxy (apt-get install haproxy; .ci/run does)"

#: The backend's health check, exactly as docs/deploy.md gives it (a test holds the two together):
#: the server answers {"type":"health"} from memory and closes, and counts it as no error.
HEALTH_CHECK_LINES = (
    "option tcp-check",
    'tcp-check send "{\\"type\\":\\"health\\"}\\n"',
    'tcp-check expect string "\\"status\\":\\"ok\\""',
)


def require_haproxy() -> str:
    """The haproxy path; skip the test without it (fail when AIFW_REQUIRE_HAPROXY=1)."""
    return require_program("haproxy", required_variable="AIFW_REQUIRE_HAPROXY", skip_reason=SKIP_REASON)


def haproxy_config(
    *, port: int, backends: Sequence[tuple[str, int]], stats_socket: Path, check_interval_ms: int = 500
) -> str:
    """The configuration: TCP frontend on ``port``, round robin with PROXY v2 to ``backends``
    (name, port on 127.0.0.1), each health-checked with the probe every ``check_interval_ms``."""
    checks = "\n    ".join(HEALTH_CHECK_LINES)
    servers = "\n    ".join(
        f"server {name} 127.0.0.1:{backend_port} send-proxy-v2 check inter {check_interval_ms}ms "
        "fall 2 rise 1"
        for name, backend_port in backends
    )
    return f"""global
    stats socket {stats_socket} mode 600 level admin

defaults
    mode tcp
    timeout connect 2s
    timeout client 330s
    timeout server 330s
    timeout check 2s
    # A connection refused by a dead server before its check says so goes to another one.
    retries 3
    option redispatch 1

frontend ingest
    bind 127.0.0.1:{port}
    default_backend ingest_servers

backend ingest_servers
    balance roundrobin
    {checks}
    {servers}
"""


@dataclass
class Haproxy:
    """A running haproxy of one test: its frontend port, its folder, its process."""

    directory: Path
    backends: Sequence[tuple[str, int]]
    port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None

    @property
    def config_file(self) -> Path:
        return self.directory / "haproxy.cfg"

    @property
    def stats_socket(self) -> Path:
        return self.directory / "haproxy.sock"

    @property
    def log_file(self) -> Path:
        return self.directory / "haproxy.log"

    async def start(self) -> None:
        """Start haproxy in the foreground (``-db``) and wait until its frontend accepts connections."""
        binary = require_haproxy()
        self.config_file.write_text(
            haproxy_config(port=self.port, backends=self.backends, stats_socket=self.stats_socket)
        )
        check = await asyncio.create_subprocess_exec(
            binary,
            "-c",
            "-f",
            str(self.config_file),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await check.communicate()
        assert check.returncode == 0, f"haproxy refused its configuration: {output.decode(errors='replace')}"
        log = self.log_file.open("ab")
        try:
            self.process = await asyncio.create_subprocess_exec(
                binary,
                "-db",
                "-f",
                str(self.config_file),
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        finally:
            log.close()
        await wait_until(self._accepts, timeout=20, what=f"haproxy listening on {self.port}")

    def _accepts(self) -> bool:
        if self.process is not None and self.process.returncode is not None:
            raise AssertionError(f"haproxy exited ({self.process.returncode}): {self.log_text()}")
        with socket.socket() as probe:
            probe.settimeout(0.5)
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    async def states(self) -> dict[str, str]:
        """Each backend server's state as HAProxy sees it: ``UP``, ``DOWN``, ``UP 1/2`` …"""
        reader, writer = await asyncio.open_unix_connection(str(self.stats_socket))
        try:
            writer.write(b"show stat\n")
            await writer.drain()
            text = (await reader.read()).decode()
        finally:
            writer.close()
        rows = csv.DictReader(io.StringIO(text.removeprefix("# ")))
        return {
            row["svname"]: row["status"]
            for row in rows
            if row.get("pxname") == "ingest_servers" and row["svname"] not in ("BACKEND", "FRONTEND")
        }

    async def wait_for_state(self, name: str, state: str, *, timeout: float = 20.0) -> None:
        """Wait until HAProxy reports backend server ``name`` in ``state`` (``UP``, ``DOWN``)."""

        async def reached() -> bool:
            return (await self.states()).get(name, "").split(" ")[0] == state

        await wait_until(reached, timeout=timeout, what=f"haproxy to see {name} {state}")

    async def stop(self) -> None:
        """Stop haproxy (SIGTERM, then SIGKILL after 10 s)."""
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


@contextlib.asynccontextmanager
async def running_haproxy(directory: Path, backends: Sequence[tuple[str, int]]) -> AsyncIterator[Haproxy]:
    """A started haproxy in front of ``backends`` with every backend UP, stopped when the block ends."""
    directory.mkdir(parents=True, exist_ok=True)
    haproxy = Haproxy(directory, backends)
    try:
        await haproxy.start()
        for name, _ in backends:
            await haproxy.wait_for_state(name, "UP")
        yield haproxy
    finally:
        await haproxy.stop()
