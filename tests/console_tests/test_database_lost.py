"""The database going away mid-session: a banner (no crash, no traceback), then retry brings it back.

PostgreSQL: the console talks through a TCP proxy in the test, which is cut
and restored (the shared cluster keeps running). SQLite: the file is moved
away, a directory takes its place, and the app's pooled connections are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from console.screens.shell import ShellScreen
from db.settings import Settings
from tests.support.console import add_console_user, open_logs, press_and_settle, running, settle, sign_in
from tests.support.database import make_event, store_logs


class CuttableProxy:
    """A TCP forwarder to the database that can be cut (every connection dropped) and restored."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.server: asyncio.Server | None = None
        self.links: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.links.update({writer, upstream_writer})

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pump(reader, upstream_writer), pump(upstream_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for link in list(self.links):
            link.transport.abort()
        self.links.clear()
        await self.server.wait_closed()

    async def restore(self) -> None:
        await self.start()


@contextlib.asynccontextmanager
async def outage_switch(settings: Settings) -> AsyncIterator[tuple[Settings, object]]:
    if settings.is_postgresql:
        url = make_url(settings.database_url)
        proxy = CuttableProxy(url.host or "127.0.0.1", url.port or 5432)
        await proxy.start()
        proxied = replace(
            settings, database_url=url.set(port=proxy.port).render_as_string(hide_password=False)
        )
        yield proxied, proxy
        with contextlib.suppress(Exception):
            await proxy.cut()
    else:
        yield settings, Path(make_url(settings.database_url).database or "")


async def cut(switch: object, app) -> None:
    if isinstance(switch, CuttableProxy):
        await switch.cut()
        return
    path = Path(switch)  # type: ignore[arg-type]
    os.replace(path, path.with_name(path.name + ".away"))
    path.mkdir()
    await app.engine.dispose()  # close the pooled file handles, as a restarted server would


async def restore(switch: object) -> None:
    if isinstance(switch, CuttableProxy):
        await switch.restore()
        return
    path = Path(switch)  # type: ignore[arg-type]
    path.rmdir()
    os.replace(path.with_name(path.name + ".away"), path)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_losing_the_database_shows_a_banner_and_retry_recovers(
    engine: AsyncEngine, settings: Settings
) -> None:
    from console.app import FirewallConsole

    await add_console_user(engine, "alice")
    await store_logs(engine, [make_event(index) for index in range(10)])
    async with outage_switch(settings) as (app_settings, switch):
        app = FirewallConsole(app_settings)
        async with running(app) as pilot:
            await sign_in(pilot, "alice")
            section = await open_logs(pilot)
            assert len(section.page_state.rows) == 10
            shell = pilot.app.screen
            assert isinstance(shell, ShellScreen)

            await cut(switch, pilot.app)
            await pilot.press("g")  # any read now fails
            await settle(pilot)
            assert pilot.app.is_running
            assert pilot.app.screen is shell
            assert shell.database_banner_shown
            assert pilot.app.database_down
            assert "Database unavailable" in str(shell.query_one("#db-banner").render())

            await restore(switch)
            await press_and_settle(pilot, "ctrl+r")
            assert not shell.database_banner_shown
            assert not pilot.app.database_down
            assert len(section.page_state.rows) == 10
