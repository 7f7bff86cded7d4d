"""Graceful stop: stop accepting, finish and acknowledge what was read, close, exit 0 within seconds."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from db.settings import Settings
from ingest.client import AgentClient, AgentIdentity
from simulation.events import EventGenerator
from tests.support.database import Organization, stored_ids
from tests.support.ingest import AgentFactory, ServerHandle, start_server
from tests.support.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER = REPO_ROOT / "ingest_server.py"


async def pump(agent: AgentClient, generator: EventGenerator) -> None:
    """Send events until the server closes the connection."""
    with contextlib.suppress(ConnectionError, OSError):
        while agent.connected:
            await agent.send(generator.event())


async def test_stop_acknowledges_what_was_read_and_says_shutting_down(
    server: ServerHandle, agent_factory: AgentFactory, generator: EventGenerator, engine: AsyncEngine
) -> None:
    agent = await agent_factory(server.port)
    sender = asyncio.create_task(pump(agent, generator))
    await wait_until(lambda: len(agent.acked) >= 200, timeout=10)
    await server.stop(within=10)
    await asyncio.wait_for(sender, 10)
    ids = await stored_ids(engine)
    assert agent.acked <= set(ids)
    assert len(ids) == len(set(ids))
    assert agent.closed_by_server is not None
    assert agent.closed_by_server.get("code") == "shutting_down"


async def read_port(stream: asyncio.StreamReader) -> int:
    async with asyncio.timeout(30):
        while line := await stream.readline():
            found = re.search(rb"listening on [^ ]+:(\d+)", line)
            if found:
                return int(found.group(1))
    raise AssertionError("the server did not say where it listens")


async def test_sigterm_under_load_exits_zero_with_every_acknowledged_event_stored(
    subprocess_env: dict[str, str], org: Organization, engine: AsyncEngine
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SERVER),
        "--port",
        "0",
        "--stats-interval",
        "0",
        env=subprocess_env,
        cwd=REPO_ROOT,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        port = await read_port(process.stderr)
        generator = EventGenerator(seed=99)
        agents = [
            AgentClient("127.0.0.1", port, generator.identity(org.organization_id, org.token, index))
            for index in range(4)
        ]
        for agent in agents:
            await agent.connect()
        senders = [asyncio.create_task(pump(agent, generator)) for agent in agents]
        await wait_until(lambda: sum(len(agent.acked) for agent in agents) >= 400, timeout=30)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 15)
        elapsed = time.monotonic() - started
        await asyncio.wait_for(asyncio.gather(*senders), 10)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert code == 0
    assert elapsed < 6
    ids = await stored_ids(engine)
    acked = set().union(*(agent.acked for agent in agents))
    assert acked <= set(ids), f"{len(acked - set(ids))} acknowledged events are missing"
    assert len(ids) == len(set(ids))
    for agent in agents:
        await agent.close()


def test_help_lists_every_option() -> None:
    result = subprocess.run(
        [sys.executable, str(SERVER), "--help"], capture_output=True, text=True, cwd=REPO_ROOT, check=True
    )
    for option in (
        "--host",
        "--port",
        "--tls-cert",
        "--tls-key",
        "--max-line-bytes",
        "--max-connections",
        "--hello-timeout",
        "--idle-timeout",
        "--max-in-flight",
        "--queue-max-events",
        "--batch-max-events",
        "--batch-max-wait-ms",
        "--stats-interval",
        "--shutdown-grace",
        "--db-retry-max",
        "INGEST_PORT",
        "INGEST_TLS_CERT",
    ):
        assert option in result.stdout


def test_bad_setting_is_one_line_and_exit_code_2(subprocess_env: dict[str, str]) -> None:
    env = {**subprocess_env, "INGEST_PORT": "seventy"}
    result = subprocess.run(
        [sys.executable, str(SERVER)], capture_output=True, text=True, cwd=REPO_ROOT, env=env
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: INGEST_PORT must be a port number from 0 to 65535; got 'seventy'"
    ]


def test_identity_of_a_simulated_agent_is_plausible() -> None:
    identity = EventGenerator(seed=1).identity("acme", "t", 3)
    assert isinstance(identity, AgentIdentity)
    assert identity.device_id == "sim-acme-0003"


async def test_retention_scheduler_runs_inside_the_server_when_enabled(
    settings: Settings, engine: AsyncEngine
) -> None:
    server = await start_server(replace(settings, enable_retention_scheduler=True))
    scheduler = server.running.retention_scheduler
    assert scheduler is not None
    assert scheduler.next_run_time is not None
    await server.stop()
    assert scheduler.next_run_time is None


async def test_no_retention_scheduler_unless_enabled(server: ServerHandle) -> None:
    assert server.running.retention_scheduler is None
