"""Clients that never read, bad input at line rate, a stuck writer at shutdown, too few file
descriptors: the server's memory, log and goodbyes stay bounded. Servers run as child processes
where their memory, open-file limit or whole log is what is measured."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from db.settings import Settings
from ingest.stats import RepeatedLog
from simulation.events import EventGenerator
from tests.support.database import Organization
from tests.support.ingest import RawClient, RawFactory, StartServer, hello_message, write_lock
from tests.support.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER = REPO_ROOT / "ingest_server.py"


@dataclass
class ChildServer:
    """``ingest_server.py`` in a child process; its stderr collected line by line."""

    process: asyncio.subprocess.Process
    port: int = 0
    log: list[str] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    def status(self, key: str) -> int:
        """A figure of /proc/PID/status in kB (VmRSS, VmHWM)."""
        text = Path(f"/proc/{self.process.pid}/status").read_text()
        found = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
        assert found, key
        return int(found.group(1))


@contextlib.asynccontextmanager
async def child_server(env: dict[str, str], *args: str, preexec_fn: Any = None) -> AsyncIterator[ChildServer]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SERVER),
        "--port",
        "0",
        "--stats-interval",
        "0",
        *args,
        env=env,
        cwd=REPO_ROOT,
        stderr=subprocess.PIPE,
        preexec_fn=preexec_fn,
    )
    assert process.stderr is not None
    child = ChildServer(process)
    listening = asyncio.get_running_loop().create_future()

    async def collect() -> None:
        assert process.stderr is not None
        while line := await process.stderr.readline():
            text = line.decode(errors="replace").rstrip("\n")
            child.log.append(text)
            found = re.search(r"listening on [^ ]+:(\d+)", text)
            if found and not listening.done():
                listening.set_result(int(found.group(1)))
        if not listening.done():
            listening.set_exception(AssertionError("the server stopped:\n" + "\n".join(child.log)))

    child._reader = asyncio.create_task(collect())
    try:
        child.port = await asyncio.wait_for(listening, 30)
        yield child
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        await asyncio.wait_for(child._reader, 10)


async def open_non_reading_client(port: int, org: Organization, device_id: str) -> RawClient:
    """A client whose receive buffer is tiny and never read: answers pile up on the server's side."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)  # what the server does not read waits here
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 16)
    client = RawClient(reader, writer)
    await client.send(hello_message(org, device_id=device_id))
    assert (await client.receive())["type"] == "welcome"
    return client


async def send_until_stalled(client: RawClient, chunk: bytes, total: int, stall: float) -> int:
    """Send up to ``total`` bytes in chunks; stop when the server has read nothing for ``stall`` s."""
    sent = 0
    with contextlib.suppress(TimeoutError, ConnectionError, OSError):
        while sent < total:
            client.writer.write(chunk)
            await asyncio.wait_for(client.writer.drain(), stall)
            sent += len(chunk)
    return sent


async def test_two_hundred_clients_that_never_read_grow_the_server_by_less_than_100_mb(
    subprocess_env: dict[str, str], org: Organization
) -> None:
    # A second hello per line: 17 bytes in, a ~95-byte error out; two megabytes each are ~11 MB of answers.
    chunk = b'{"type":"hello"}\n' * 4096
    async with child_server(subprocess_env) as server:  # the output timeout (30 s) is not reached
        before = server.status("VmRSS")
        clients = [await open_non_reading_client(server.port, org, f"mute-{i}") for i in range(200)]
        try:
            sent = await asyncio.gather(
                *(send_until_stalled(client, chunk, 2 << 20, stall=3.0) for client in clients)
            )
            # Not a wait for a condition: the server goes on answering what it has read, and the peak
            # (VmHWM) must include that second.
            await asyncio.sleep(1.0)
            growth_mb = (server.status("VmHWM") - before) / 1024
            print(f"server memory grew by {growth_mb:.0f} MB; clients sent {sum(sent) / 2**20:.0f} MiB")
            assert growth_mb < 100, f"the server grew by {growth_mb:.0f} MB"
        finally:
            for client in clients:
                client.writer.transport.abort()


async def test_client_that_never_reads_its_answers_is_closed_after_the_output_timeout(
    server_factory: StartServer, org: Organization
) -> None:
    server = await server_factory(output_timeout_seconds=1.0)
    client = await open_non_reading_client(server.port, org, "mute")
    try:
        # Enough pongs to fill the kernel's buffers (a few MB) and then the server's own.
        await send_until_stalled(client, b'{"type":"ping"}\n' * 4096, 16 << 20, stall=3.0)
        await wait_until(lambda: server.stats.connections == 0, timeout=15)
    finally:
        client.writer.transport.abort()


def low_file_limit(soft: int, hard: int) -> Any:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


def open_file_limit(pid: int) -> int:
    text = Path(f"/proc/{pid}/limits").read_text()
    found = re.search(r"^Max open files\s+(\d+)", text, re.MULTILINE)
    assert found
    return int(found.group(1))


async def test_server_raises_its_open_file_limit_to_serve_its_connection_maximum(
    subprocess_env: dict[str, str],
) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2000:
        pytest.skip(f"the hard open-file limit ({hard}) is too low to test raising the soft one")
    async with child_server(
        subprocess_env, "--max-connections", "1500", preexec_fn=low_file_limit(256, hard)
    ) as server:
        assert open_file_limit(server.process.pid) >= 1500
        assert any("raised the open-file limit from 256" in line for line in server.log), server.log


async def test_server_says_when_its_open_file_limit_is_below_its_connection_maximum(
    subprocess_env: dict[str, str],
) -> None:
    async with child_server(
        subprocess_env, "--max-connections", "1500", preexec_fn=low_file_limit(256, 256)
    ) as server:
        assert any("cannot serve its connection maximum" in line for line in server.log), server.log


async def test_sigterm_while_the_writer_is_stuck_says_shutting_down_without_tracebacks(
    subprocess_env: dict[str, str], settings: Settings, org: Organization, generator: EventGenerator
) -> None:
    # A stats line every 0.1 s tells when the child has read and queued the events.
    async with child_server(subprocess_env, "--shutdown-grace", "2", "--stats-interval", "0.1") as server:
        clients = []
        for index in range(3):
            client = await RawClient.open(server.port)
            await client.send(hello_message(org, device_id=f"dev-{index}"))
            assert (await client.receive())["type"] == "welcome"
            clients.append(client)
        async with write_lock(settings):
            for client in clients:
                await client.write(b"".join(orjson.dumps(generator.event()) + b"\n" for _ in range(20)))
            # Read and queued (the stats line says so); the writer waits for the lock.
            await wait_until(
                lambda: any("received=60 " in line for line in server.log),
                what="a stats line with 60 events received",
            )
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            for client in clients:
                goodbye = await client.receive(within=10)
                assert goodbye["code"] == "shutting_down", goodbye
            code = await asyncio.wait_for(server.process.wait(), 15)
            elapsed = time.monotonic() - started
    log = "\n".join(server.log)
    assert code == 0, log
    # The grace period, then at most SQLite's busy timeout (10 s) for the statement waiting on the lock.
    assert elapsed < 2 + 10 + 5, f"stopped after {elapsed:.1f} s"
    assert "Traceback" not in log, log
    assert " ERROR " not in log, log


async def test_repeated_bad_lines_are_counted_and_logged_a_few_times(
    server_factory: StartServer, raw_factory: RawFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aifw.ingest")
    server = await server_factory()
    raw = await raw_factory(server.port)
    await raw.write(b"not json\n" * 500)
    await raw.send({"type": "ping"})
    while (await raw.receive())["type"] != "pong":
        pass
    assert server.stats.errors["invalid_json"] == 500
    about_it = [record for record in caplog.records if "invalid_json" in record.getMessage()]
    assert 1 <= len(about_it) <= 5, [record.getMessage() for record in about_it]
    assert not any(record.exc_info for record in caplog.records)


async def test_validator_fault_is_one_log_line_without_traceback(
    raw: RawClient,
    generator: EventGenerator,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from ingest import protocol

    def broken(message: dict[str, Any], **_: Any) -> dict[str, Any]:
        raise RuntimeError("bug")

    caplog.set_level(logging.INFO, logger="aifw.ingest")
    monkeypatch.setattr(protocol, "validate_log", broken)
    for _ in range(50):
        await raw.send(generator.event())
    for _ in range(50):
        assert (await raw.receive())["code"] == "internal_error"
    faults = [record for record in caplog.records if "unexpected error validating" in record.getMessage()]
    assert 1 <= len(faults) <= 5
    assert not any(record.exc_info for record in caplog.records)


def test_repeated_log_says_how_many_lines_it_left_out() -> None:
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("aifw.test.repeated")
    logger.addHandler(Collect())
    logger.setLevel(logging.INFO)
    now = [0.0]
    repeated = RepeatedLog(logger, per_minute=3, clock=lambda: now[0])
    for index in range(100):
        repeated.info("invalid_json", "bad line %d", index)
    assert records == ["bad line 0", "bad line 1", "bad line 2"]
    now[0] = 61.0
    repeated.info("invalid_json", "bad line %d", 100)
    assert records[-1] == "bad line 100 (and 97 more like it not logged)"
