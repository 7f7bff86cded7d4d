"""Scale-out: the PROXY protocol, the load balancer's health probe, and the rehearsal of two servers behind
HAProxy with one killed mid-stream.

The first tests speak for a proxy over raw sockets to a server in this process (both engines). The
rehearsal runs a real HAProxy (``send-proxy-v2``, the documented health probe) in front of two real
``ingest_server.py`` processes on one PostgreSQL database, with a simulated fleet sending through it;
one server gets SIGKILL, the agents reconnect through HAProxy and resend what was not acknowledged.
Without haproxy the rehearsal skips, unless AIFW_REQUIRE_HAPROXY=1 (CI).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.settings import Settings, TrustedProxies
from ingest.proxy_protocol import build_v2
from simulation.fleet import Fleet, FleetOrganization, FleetPlan
from tests.support.database import Organization
from tests.support.haproxy import HEALTH_CHECK_LINES, Haproxy, require_haproxy, running_haproxy
from tests.support.ingest import RawClient, StartServer, hello_message, start_server
from tests.support.programs import free_port
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
HEALTH_LINE = b'{"type":"health"}\n'
HEALTH_ANSWER = {"type": "health", "status": "ok"}
LOOPBACK = TrustedProxies([ipaddress.ip_network("127.0.0.1/32")])
#: An agent's address as the proxy reports it (TEST-NET-1: no real host has it).
AGENT = ("192.0.2.7", 40123)


async def proxied(port: int, source: tuple[str, int] | None = AGENT) -> RawClient:
    """A raw connection that starts as HAProxy's do: the PROXY v2 header of ``source`` (None: LOCAL)."""
    client = await RawClient.open(port)
    await client.write(build_v2(source, ("127.0.0.1", port) if source is not None else None))
    return client


async def proxy_server(server_factory: StartServer, **limits: object) -> int:
    handle = await server_factory(proxy_protocol=True, trusted_proxies=LOOPBACK, **limits)
    return handle.port


async def test_a_proxied_agent_is_logged_under_its_real_address(
    server_factory: StartServer, org: Organization, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aifw.ingest")
    port = await proxy_server(server_factory)
    client = await proxied(port)
    try:
        await client.send(hello_message(org))
        assert (await client.receive())["type"] == "welcome"
        await client.write(b"nope\n")
        assert (await client.receive())["code"] == "invalid_json"
    finally:
        await client.close()
    assert any("invalid_json from 192.0.2.7:40123 on line 2" in r.getMessage() for r in caplog.records)


async def test_a_connection_without_the_header_is_refused_and_counted(
    server_factory: StartServer, org: Organization
) -> None:
    handle = await server_factory(proxy_protocol=True, trusted_proxies=LOOPBACK)
    client = await RawClient.open(handle.port)
    try:
        await client.send(hello_message(org))
        refusal = await client.receive()
        assert refusal["code"] == "proxy_refused"
        assert "expected a PROXY protocol header" in refusal["message"]
        assert await client.closed_by_server()
    finally:
        await client.close()
    assert handle.stats.errors["proxy_refused"] == 1


async def test_a_header_from_a_peer_outside_the_trusted_proxies_is_refused(
    server_factory: StartServer, org: Organization
) -> None:
    elsewhere = TrustedProxies([ipaddress.ip_network("10.0.0.0/8")])
    handle = await server_factory(proxy_protocol=True, trusted_proxies=elsewhere)
    client = await proxied(handle.port)
    try:
        refusal = await client.receive()
        assert refusal["code"] == "proxy_refused"
        assert "is not one of INGEST_TRUSTED_PROXIES (10.0.0.0/8)" in refusal["message"]
        assert await client.closed_by_server()
    finally:
        await client.close()
    assert handle.stats.errors["proxy_refused"] == 1


async def test_a_header_that_never_comes_is_refused_after_its_timeout(server_factory: StartServer) -> None:
    handle = await server_factory(
        proxy_protocol=True, trusted_proxies=LOOPBACK, proxy_header_timeout_seconds=0.2
    )
    client = await RawClient.open(handle.port)
    try:
        await client.write(b"\r\n\r\n")  # the first bytes of a v2 signature, then nothing
        started = time.monotonic()
        refusal = await client.receive(within=5)
        assert refusal["code"] == "proxy_refused"
        assert "within 0.2 seconds" in refusal["message"]
        assert time.monotonic() - started < 2
    finally:
        await client.close()


async def test_the_health_probe_is_answered_and_counts_as_no_error(
    server_factory: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aifw.ingest")
    handle = await server_factory(proxy_protocol=True, trusted_proxies=LOOPBACK)
    for _ in range(3):
        check = await proxied(handle.port, None)  # HAProxy's check: a LOCAL header, then the probe
        try:
            await check.write(HEALTH_LINE)
            assert await check.receive() == HEALTH_ANSWER
            assert await check.closed_by_server()
        finally:
            await check.close()
    bare = await proxied(handle.port, None)  # a check that connects and closes (plain "check")
    await bare.close()
    await wait_until(lambda: handle.stats.connections == 0, what="the checks' connections to close")
    assert handle.stats.connections_total == 4
    assert not handle.stats.errors
    # Nothing logged about them: the only line of the server so far is its start.
    assert [r.getMessage() for r in caplog.records if "listening" not in r.getMessage()] == []


async def test_the_health_probe_needs_no_proxy(server_factory: StartServer) -> None:
    handle = await server_factory()
    check = await RawClient.open(handle.port)
    try:
        await check.write(HEALTH_LINE)
        assert await check.receive() == HEALTH_ANSWER
        assert await check.closed_by_server()
    finally:
        await check.close()
    assert not handle.stats.errors


class MemoryTlsClient:
    """A TLS client over a raw connection through memory buffers, so that the test decides what goes in
    one write: HAProxy often sends its header and the agent's ClientHello in one segment."""

    def __init__(self, client: RawClient, cafile: Path) -> None:
        self.client = client
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        context = ssl.create_default_context(cafile=str(cafile))
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="127.0.0.1")
        self.received = b""

    def client_hello(self) -> bytes:
        with contextlib.suppress(ssl.SSLWantReadError):
            self.tls.do_handshake()
        return self.outgoing.read()

    async def _feed(self) -> None:
        async with asyncio.timeout(10):
            data = await self.client.reader.read(1 << 16)
        assert data, "the server closed the connection"
        self.incoming.write(data)

    async def finish_handshake(self) -> None:
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self.client.write(self.outgoing.read())
                await self._feed()
        await self.client.write(self.outgoing.read())

    async def send(self, line: bytes) -> None:
        self.tls.write(line)
        await self.client.write(self.outgoing.read())

    async def receive(self) -> dict[str, object]:
        while b"\n" not in self.received:
            with contextlib.suppress(ssl.SSLWantReadError):
                self.received += self.tls.read(1 << 16)
                continue
            await self._feed()
        line, self.received = self.received.split(b"\n", 1)
        return dict(orjson.loads(line))


async def test_the_header_comes_before_tls_even_in_one_segment_with_the_client_hello(
    settings: Settings,
    org: Organization,
    tls_files: tuple[Path, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="aifw.ingest")
    cert, key = tls_files
    tls = replace(settings, ingest_tls_cert=str(cert), ingest_tls_key=str(key))
    handle = await start_server(tls, proxy_protocol=True, trusted_proxies=LOOPBACK)
    raw = await RawClient.open(handle.port)
    try:
        agent = MemoryTlsClient(raw, cert)
        await raw.write(build_v2(AGENT, ("127.0.0.1", handle.port)) + agent.client_hello())
        await agent.finish_handshake()
        await agent.send(orjson.dumps(hello_message(org)) + b"\n")
        assert (await agent.receive())["type"] == "welcome"
        await agent.send(b"nope\n")
        assert (await agent.receive())["code"] == "invalid_json"
    finally:
        await raw.close()
        await handle.stop()
    assert any("invalid_json from 192.0.2.7:40123" in r.getMessage() for r in caplog.records)


# --- the rehearsal ---------------------------------------------------------------------------------


@dataclass
class IngestProcess:
    """One ``ingest_server.py`` process on its own port, logging to a file."""

    name: str
    port: int
    log_file: Path
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def listening(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited ({self.process.returncode}): {self.log()}")
        return "ingest server listening" in self.log()


def start_ingest_process(name: str, env: dict[str, str], directory: Path) -> IngestProcess:
    port = free_port()
    log_file = directory / f"{name}.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "ingest_server.py",
                "--port",
                str(port),
                "--proxy-protocol",
                "true",
                "--trusted-proxies",
                "127.0.0.1",
                "--stats-interval",
                "0.5",
            ],
            cwd=ROOT,
            env={**env, "INGEST_DISPATCH": "false"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return IngestProcess(name, port, log_file, process)


@pytest.fixture
def ingest_processes(
    backend: str, subprocess_env: dict[str, str], tmp_path: Path
) -> Iterator[list[IngestProcess]]:
    """Two ingest servers on the test's PostgreSQL database (the test skips first on SQLite, or
    without haproxy)."""
    if backend != "postgresql":
        pytest.skip("the rehearsal is of several servers on one PostgreSQL database")
    require_haproxy()
    processes = [start_ingest_process(name, subprocess_env, tmp_path) for name in ("ingest1", "ingest2")]
    yield processes
    for ingest in processes:
        if ingest.process.poll() is None:
            ingest.process.terminate()
            try:
                ingest.process.wait(15)
            except subprocess.TimeoutExpired:
                ingest.process.kill()


@dataclass
class Recovery:
    """What the fleet saw around the kill."""

    devices_dropped: int
    #: Events sent and not yet acknowledged, fleet-wide, at the moment of the kill (resent if dropped).
    unacked_at_kill: int
    #: From the SIGKILL to the first acknowledgement on a new connection, for the slowest dropped device.
    seconds_to_all_acked_again: float
    haproxy_saw_down_after: float | None


@pytest.mark.slow
@pytest.mark.postgres_only
async def test_two_servers_behind_haproxy_survive_a_sigkill_and_store_each_acked_event_once(
    engine: AsyncEngine,
    org: Organization,
    ingest_processes: list[IngestProcess],
    tmp_path: Path,
) -> None:
    for ingest in ingest_processes:
        await wait_until(ingest.listening, timeout=30, what=f"{ingest.name} to listen")
    backends = [(ingest.name, ingest.port) for ingest in ingest_processes]
    async with running_haproxy(tmp_path / "haproxy", backends) as haproxy:
        plan = FleetPlan(
            devices=8, rate=400.0, seed=14, keep_ids=True, config_poll_seconds=3600, drain_seconds=20
        )
        fleet = Fleet("127.0.0.1", haproxy.port, [FleetOrganization(org.organization_id, org.token)], plan)
        running = asyncio.create_task(fleet.run())
        await wait_until(lambda: fleet.stats().acked >= 1500, timeout=60, what="1500 events acknowledged")
        spread = {ingest.name: acknowledged_in_log(ingest.log()) for ingest in ingest_processes}
        victim, survivor = ingest_processes
        recovery = await kill_and_watch(fleet, victim, haproxy)
        await wait_until(
            lambda: fleet.stats().acked >= fleet.stats().generated - 50, timeout=30, what="catch-up"
        )
        bad_line_port = await send_a_bad_line_through(haproxy.port, org)
        await asyncio.sleep(1.0)  # live traffic after the recovery
        fleet.stop()
        stats = await asyncio.wait_for(running, 60)
        states = await haproxy.states()

    acked = set().union(*(device.client.acked for device in fleet.devices if device.client is not None))
    stored = await stored_counts(engine, org.organization_id)
    duplicates = {event_id: count for event_id, count in stored.items() if count > 1}
    print(
        f"\nscale-out rehearsal: generated {stats.generated}, acknowledged {len(acked)}, "
        f"stored {len(stored)} "
        f"(duplicates {len(duplicates)}), reconnects {stats.reconnects}, devices dropped by the kill "
        f"{recovery.devices_dropped} (unacknowledged at the kill {recovery.unacked_at_kill}), "
        "all dropped devices acknowledged again "
        f"{recovery.seconds_to_all_acked_again:.2f} s after SIGKILL, HAProxy marked it DOWN after "
        f"{recovery.haproxy_saw_down_after} s; acknowledged per server before the kill {spread}"
    )
    assert all(count > 0 for count in spread.values()), f"round robin should feed both servers: {spread}"
    assert recovery.devices_dropped >= 1
    assert not duplicates
    assert acked <= set(stored), f"{len(acked - set(stored))} acknowledged events are not stored"
    assert set(stored) <= fleet.generated_ids
    assert stats.unacked == 0
    assert stats.rejected == 0
    assert len(acked) == stats.generated
    assert states[victim.name].startswith("DOWN")
    survivor_log = survivor.log() + victim.log()
    # The servers logged the agent's own address (127.0.0.1 and its source port), not HAProxy's.
    assert f"invalid_json from 127.0.0.1:{bad_line_port} on line 2" in survivor_log
    # HAProxy's checks, every 500 ms on both servers all along, are no errors and no warnings.
    assert last_errors_in_log(survivor.log()) in ("invalid_json:1", "none")
    assert "WARNING" not in survivor.log()
    assert "proxy_refused" not in survivor_log
    assert "hello_timeout" not in survivor_log


async def kill_and_watch(fleet: Fleet, victim: IngestProcess, haproxy: Haproxy) -> Recovery:
    """SIGKILL ``victim`` mid-stream; wait until every device it dropped has an acknowledgement again."""
    before = {id(device): device.connects for device in fleet.devices}
    acked_before = {id(device): len(device.client.acked) if device.client else 0 for device in fleet.devices}
    unacked = sum(len(device.client.unacked) for device in fleet.devices if device.client is not None)
    killed_at = time.monotonic()
    os.kill(victim.process.pid, signal.SIGKILL)
    down_after: float | None = None
    recovered: dict[int, float] = {}
    deadline = killed_at + 30
    while time.monotonic() < deadline:
        now = time.monotonic()
        if down_after is None and (await haproxy.states()).get(victim.name, "").startswith("DOWN"):
            down_after = round(now - killed_at, 2)
        for device in fleet.devices:
            key = id(device)
            reconnected = device.connects > before[key]
            if reconnected and key not in recovered and device.client is not None:
                if device.client.connected and len(device.client.acked) > acked_before[key]:
                    recovered[key] = now - killed_at
        dropped = [d for d in fleet.devices if d.connects > before[id(d)]]
        if dropped and len(recovered) == len(dropped) and down_after is not None and now - killed_at > 2:
            break
        await asyncio.sleep(0.01)
    victim.process.wait(5)
    dropped_count = sum(1 for d in fleet.devices if d.connects > before[id(d)])
    assert len(recovered) == dropped_count, "some dropped devices never had an acknowledgement again"
    return Recovery(dropped_count, unacked, max(recovered.values(), default=0.0), down_after)


async def send_a_bad_line_through(port: int, org: Organization) -> int:
    """One agent through HAProxy sends a line that is not JSON; returns its own source port."""
    client = await RawClient.open(port)
    try:
        source_port = int(client.writer.get_extra_info("sockname")[1])
        await client.send(hello_message(org, device_id="dev-bad-line"))
        assert (await client.receive())["type"] == "welcome"
        await client.write(b"nope\n")
        assert (await client.receive())["code"] == "invalid_json"
    finally:
        await client.close()
    return source_port


def acknowledged_in_log(log: str) -> int:
    found = re.findall(r"acknowledged=(\d+)", log)
    return int(found[-1]) if found else 0


def last_errors_in_log(log: str) -> str:
    found = re.findall(r" errors=(\S+)", log)
    return found[-1] if found else "none"


async def stored_counts(engine: AsyncEngine, organization_id: str) -> dict[str, int]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT id::text, count(*) FROM log_entries WHERE organization_id = :org GROUP BY id"),
            {"org": organization_id},
        )
        return {str(event_id): int(count) for event_id, count in rows}


def test_the_deploy_page_gives_the_rehearsed_health_check() -> None:
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    for line in HEALTH_CHECK_LINES:
        assert line in deploy, line
    assert "send-proxy-v2" in deploy
    assert "INGEST_TRUSTED_PROXIES" in deploy
