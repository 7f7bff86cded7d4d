"""The Textual application shell: engine lifecycle, screens, bindings, worker errors."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from textual import work
from textual.app import App, ComposeResult
from textual.widgets import Footer, Header, Static

from console.commands.common import EXIT_FAILED, EXIT_OK, fail
from db.engine import DatabaseError, check_database, new_engine, new_sessionmaker
from db.models import LogEntry
from db.settings import Settings


class FirewallConsole(App[None]):
    """The operators' console."""

    TITLE = "AI Usage Firewall"
    BINDINGS = [("q", "quit", "Quit")]

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.engine: AsyncEngine | None = None
        self.sessions: async_sessionmaker[AsyncSession] | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Connecting…", id="status")
        yield Footer()

    async def on_mount(self) -> None:
        self.sub_title = self.settings.describe_database()
        self.engine = new_engine(self.settings)
        self.sessions = new_sessionmaker(self.engine)
        self.load_status()

    async def on_unmount(self) -> None:
        if self.engine is not None:
            await self.engine.dispose()

    @work(exclusive=True, group="status")
    async def load_status(self) -> None:
        assert self.engine is not None
        assert self.sessions is not None
        status = self.query_one("#status", Static)
        try:
            await check_database(self.engine, self.settings)
            async with self.sessions() as session:
                count = await session.scalar(select(func.count()).select_from(LogEntry))
        except DatabaseError as error:
            status.update(f"[b red]{error}[/]")
            return
        status.update(f"Connected to {self.settings.describe_database()}: {count} log entries.")


def run_console(settings: Settings) -> int:
    """Check the database, then run the app; a database problem is one line, exit 1."""

    async def preflight() -> None:
        engine = new_engine(settings)
        try:
            await check_database(engine, settings)
        finally:
            await engine.dispose()

    try:
        asyncio.run(preflight())
    except DatabaseError as error:
        return fail(str(error), code=EXIT_FAILED)
    FirewallConsole(settings).run()
    return EXIT_OK
