"""Connections that never finish saying anything cannot hold the door shut: silent and trickling
clients are shed or timed out, departed clients free their slots, a device has one connection and a
token a capped number. Real sockets against the server running in this event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

from db.settings import Settings
from simulation.events import EventGenerator
from tests.support.database import Organization
from tests.support.ingest import (
    AgentFactory,
    RawClient,
    RawFactory,
    ServerHandle,
    StartServer,
    hello_message,
    start_server,
    write_lock,
)
from tests.support.waiting import wait_until

#: The issue's figure: a real agent is welcomed this fast while a flood holds the server.
ADMISSION_SECONDS = 2.0


#: The flood runs in its own process, as an attacker's would: its own work does not slow the server's loop.
FLOOD_SCRIPT = """
import asyncio, resource, sys

port, count = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * count + 64)), hard))
opened = 0

async def one():
    global opened
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)  # the flood's own pause before it tries again, not a wait of the test
            continue
        opened += 1
        if opened == count:
            print("flooding", flush=True)
        try:
            while True:
                writer.write(b" ")  # one byte every 3 s, never a hello
                try:
                    if await asyncio.wait_for(reader.read(65536), 3.0) == b"":
                        break
                except asyncio.TimeoutError:
                    pass
        except OSError:
            pass
        finally:
            writer.transport.abort()

async def main():
    await asyncio.gather(*(one() for _ in range(count)))

asyncio.run(main())
"""


@contextlib.asynccontextmanager
async def silent_flood(port: int, count: int) -> AsyncIterator[None]:
    """``count`` connections that never say hello, each reopened as soon as the server closes it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FLOOD_SCRIPT, str(port), str(count), stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(60):
            assert await process.stdout.readline() == b"flooding\n"
        yield
        assert process.returncode is None, "the flood kept running"
    finally:
        process.kill()
        await process.wait()


async def test_silent_flood_of_a_thousand_connections_does_not_keep_an_agent_out(
    server: ServerHandle, agent_factory: AgentFactory
) -> None:
    async with silent_flood(server.port, 1000):
        # The flood is running: every slot it can take is taken, and it is being shed.
        await wait_until(lambda: server.stats.connections_shed > 0, timeout=20)
        agent = await agent_factory(server.port, connect=False)
        started = time.perf_counter()
        welcome = await agent.connect(within=10)
        admitted = time.perf_counter() - started
        assert welcome["type"] == "welcome"
        assert admitted < ADMISSION_SECONDS, f"admitted after {admitted:.2f} s"
        assert server.stats.connections_shed > 0
        print(
            f"agent admitted {admitted * 1000:.0f} ms after connecting; {server.stats.connections_shed} shed"
        )


async def open_trickler(port: int, org: Organization, index: int) -> RawClient:
    """A client that says hello, then starts a line it never finishes."""
    client = await RawClient.open(port)
    await client.send(hello_message(org, device_id=f"trickle-{index}"))
    assert (await client.receive())["type"] == "welcome"
    await client.write(b'{"type":"log","id":"')
    return client


async def test_tricklers_holding_every_slot_are_shed_for_an_agent_and_idle_agents_are_kept(
    server_factory: StartServer, agent_factory: AgentFactory, org: Organization
) -> None:
    server = await server_factory(max_connections=12)
    idle_agents = [await agent_factory(server.port, device_id=f"idle-{i}") for i in range(4)]
    tricklers = [await open_trickler(server.port, org, i) for i in range(8)]
    try:
        agent = await agent_factory(server.port, connect=False)
        started = time.perf_counter()
        await agent.connect(within=10)
        assert time.perf_counter() - started < ADMISSION_SECONDS
        shed = await tricklers[0].receive()
        assert shed["code"] == "overloaded", shed
        assert await tricklers[0].closed_by_server()
        for idle in idle_agents:
            assert idle.connected, "an authenticated connection between lines is never shed"
        assert server.stats.connections_shed == 1
    finally:
        for trickler in tricklers:
            await trickler.close()


async def test_line_that_does_not_end_within_the_line_timeout_closes_the_connection(
    server_factory: StartServer, raw_factory: RawFactory
) -> None:
    server = await server_factory(line_timeout_seconds=0.5)
    raw = await raw_factory(server.port)
    await asyncio.sleep(1.0)  # time between lines does not count
    await raw.send({"type": "ping"})
    assert await raw.receive() == {"type": "pong"}
    await raw.write(b'{"type":"ping"')
    error = await raw.receive(within=10)
    assert error["code"] == "line_timeout", error
    assert await raw.closed_by_server()


async def test_hello_line_longer_than_the_hello_limit_is_refused_before_its_end(
    server_factory: StartServer, raw_factory: RawFactory
) -> None:
    server = await server_factory(hello_max_line_bytes=4096)
    raw = await raw_factory(server.port, hello=False)
    await raw.write(b'{"type":"hello","x":"' + b"a" * 6000)
    error = await raw.receive(within=10)
    assert error["code"] == "line_too_long", error
    assert "4096" in error["message"]
    assert await raw.closed_by_server()


async def test_new_hello_of_a_device_replaces_its_older_connection(
    server: ServerHandle, raw_factory: RawFactory
) -> None:
    older = await raw_factory(server.port, device_id="laptop-1")
    newer = await raw_factory(server.port, device_id="laptop-1")
    error = await older.receive()
    assert error["code"] == "replaced", error
    assert await older.closed_by_server()
    await newer.send({"type": "ping"})
    assert await newer.receive() == {"type": "pong"}


async def test_connections_of_one_token_are_capped(
    server_factory: StartServer, raw_factory: RawFactory, org: Organization
) -> None:
    server = await server_factory(max_connections_per_token=2)
    first = await raw_factory(server.port, device_id="d1")
    await raw_factory(server.port, device_id="d2")
    third = await raw_factory(server.port, hello=False)
    await third.send(hello_message(org, device_id="d3"))
    error = await third.receive()
    assert error["code"] == "overloaded", error
    assert "INGEST_MAX_CONNECTIONS_PER_TOKEN" in error["message"]
    assert await third.closed_by_server()
    await first.send({"type": "ping"})
    assert await first.receive() == {"type": "pong"}


def reset(client: RawClient) -> None:
    """Close with a TCP reset, as a crashed client or a middlebox does."""
    sock = client.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.writer.transport.abort()


async def test_clients_that_send_and_leave_while_the_writer_is_stuck_free_their_slots(
    server_factory: StartServer, raw_factory: RawFactory, generator: EventGenerator
) -> None:
    server = await server_factory(max_connections=40, max_lingering_connections=4)
    clients = [await raw_factory(server.port, device_id=f"leaver-{i}") for i in range(40)]
    async with write_lock(server.settings):
        for index, client in enumerate(clients):
            await client.send(generator.event())
            if index % 2:
                reset(client)
            else:
                client.writer.close()  # a full close: FIN, and a reset once the server writes
        await wait_until(lambda: server.stats.events_received == 40, timeout=20)
        # Reset ones are gone at once; closed ones wait for their acks from the lingering budget.
        await wait_until(lambda: server.stats.connections <= 4, timeout=10)
        # A newcomer gets a slot (its hello would need the locked database on SQLite: a ping shows it).
        newcomer = await raw_factory(server.port, hello=False)
        await newcomer.send({"type": "ping"})
        assert (await newcomer.receive())["code"] == "hello_required"


async def test_half_closed_client_waits_for_its_acks_for_a_bounded_time(
    server_factory: StartServer, raw_factory: RawFactory, generator: EventGenerator
) -> None:
    server = await server_factory(linger_timeout_seconds=3.0)
    patient, abandoned = await raw_factory(server.port), await raw_factory(server.port, device_id="dev-2")
    event = generator.event()
    async with write_lock(server.settings):
        await patient.send(event)
        patient.writer.write_eof()  # socat's way: send, close the sending side, wait for the answers
        await wait_until(lambda: server.stats.events_received == 1, timeout=10)
    assert await patient.receive(within=20) == {"type": "ack", "ids": [event["id"]]}
    async with write_lock(server.settings):
        await abandoned.send(generator.event())
        abandoned.writer.write_eof()
        started = time.perf_counter()
        assert await abandoned.closed_by_server(within=15)
        assert time.perf_counter() - started < 10
        await wait_until(lambda: server.stats.connections == 0, timeout=10)


async def test_pending_tls_handshakes_use_the_pre_hello_budget_and_time_out(
    settings: Settings, tls_files: tuple[Path, Path], agent_factory: AgentFactory
) -> None:
    cert, key = tls_files
    server = await start_server(
        replace(settings, ingest_tls_cert=str(cert), ingest_tls_key=str(key)),
        max_pre_hello_connections=5,
        pre_hello_grace_seconds=0.5,
        tls_handshake_timeout_seconds=3.0,
    )
    silent: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    closed_at: list[float] = []

    async def closed(reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await reader.read()  # until the server closes it
        closed_at.append(time.perf_counter())

    try:
        for _ in range(20):  # plain TCP, no ClientHello: each one a handshake that never finishes
            silent.append(await asyncio.open_connection("127.0.0.1", server.port))
        started = time.perf_counter()
        waiting = [asyncio.create_task(closed(reader)) for reader, _ in silent]
        await asyncio.wait_for(asyncio.gather(*waiting), 10)
        closed_at.sort()
        # 15 over the budget of 5 are closed once their grace (0.5 s) is over, the last 5 by the
        # handshake timeout (3 s; asyncio's own default is 60 s).
        assert closed_at[14] - started < 2.0, f"shed only after {closed_at[14] - started:.2f} s"
        assert 2.0 < closed_at[-1] - started < 8
        agent = await agent_factory(server.port, ssl_context=ssl.create_default_context(cafile=str(cert)))
        assert agent.connected
    finally:
        for _, writer in silent:
            writer.transport.abort()
        await server.stop()
