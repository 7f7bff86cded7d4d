"""Fixtures of the demo tests: organisations with tokens, the ingest server in-process on an
ephemeral port, a TCP proxy that cuts connections mid-stream, and child-process checks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from db.configs import create_organization
from db.models import LogEntry, LogHourlyCount
from db.rights import Actor
from db.settings import Settings
from db.tokens import create_token
from ingest.server import RunningServer, serve
from simulation.fleet import FleetOrganization

ORGANIZATIONS = ("acme", "globex")


@pytest.fixture
async def organizations(session: AsyncSession) -> list[FleetOrganization]:
    """Two organisations, each with a live ingest token."""
    result = []
    for organization_id in ORGANIZATIONS:
        await create_organization(session=session, organization_id=organization_id, actor=Actor.cli())
        _, token = await create_token(
            session=session, actor=Actor.cli(), organization_id=organization_id, name="test"
        )
        result.append(FleetOrganization(organization_id, token))
    await session.commit()
    return result


@pytest.fixture
async def server(settings: Settings, engine: AsyncEngine) -> AsyncIterator[RunningServer]:
    """The ingest server, in this event loop, on an ephemeral port of the test database."""
    settings = replace(
        settings,
        ingest_host="127.0.0.1",
        ingest_port=0,
        ingest=replace(settings.ingest, stats_interval_seconds=0),
    )
    stop = asyncio.Event()
    ready: asyncio.Future[RunningServer] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(settings, shutdown_trigger=stop.wait, ready=ready.set_result))
    done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    yield ready.result()
    stop.set()
    async with asyncio.timeout(20):
        await task


class CuttingProxy:
    """Forwards TCP to a target, aborting each of the first ``cuts`` connections after ``after_bytes``
    bytes from the client: mid-stream, usually mid-line, with acknowledgements still on their way."""

    def __init__(self, target_port: int, *, cuts: int, after_bytes: int) -> None:
        self.target_port = target_port
        self.cuts_left = cuts
        self.after_bytes = after_bytes
        self.cuts_done = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        cut = self.cuts_left > 0
        if cut:
            self.cuts_left -= 1
        downstream = asyncio.create_task(self._pipe(up_reader, writer, limit=None))
        self._tasks.add(downstream)
        try:
            await self._pipe(reader, up_writer, limit=self.after_bytes if cut else None)
        finally:
            for side in (writer, up_writer):
                side.transport.abort()
            downstream.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await downstream
            self._tasks.discard(downstream)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, limit: int | None
    ) -> None:
        forwarded = 0
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(4096):
                if limit is not None and forwarded + len(data) > limit:
                    writer.write(data[: limit - forwarded])
                    self.cuts_done += 1
                    return
                writer.write(data)
                forwarded += len(data)
                await writer.drain()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()


async def stored_ids(engine: AsyncEngine) -> list[str]:
    """Every stored event id, duplicates included."""
    async with engine.connect() as connection:
        return [str(row[0]) for row in await connection.execute(select(LogEntry.id))]


async def rollup_total(engine: AsyncEngine) -> int:
    """Events counted by the hourly rollups (each stored event once in the ``risk`` dimension)."""
    async with engine.connect() as connection:
        total = await connection.scalar(
            select(func.coalesce(func.sum(LogHourlyCount.event_count), 0)).where(
                LogHourlyCount.dimension == "risk"
            )
        )
        return int(total or 0)


@dataclass(frozen=True)
class DemoChildren:
    """What a demo run printed about the processes it started."""

    server_pid: int
    simulator_pid: int
    port: int


def children_printed(output: str) -> DemoChildren:
    server = re.search(r"ingest server pid (\d+) listening on [\d.]+:(\d+)", output)
    simulator = re.search(r"simulator pid (\d+)", output)
    assert server is not None, output
    assert simulator is not None, output
    return DemoChildren(int(server.group(1)), int(simulator.group(1)), int(server.group(2)))


def is_running(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line or environment contains ``text`` (our tmp dir)."""
    needle = text.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        for part in ("cmdline", "environ"):
            with contextlib.suppress(OSError):
                if needle in (entry / part).read_bytes() and is_running(int(entry.name)):
                    found.append(int(entry.name))
                    break
    return found
