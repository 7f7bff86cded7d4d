"""Fixtures of the console tests: log rows stored as ingest stores them, users, and the app under Pilot."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine
from textual.pilot import Pilot

from console.app import FirewallConsole
from console.screens.logs import LogsSection
from console.screens.shell import ShellScreen
from db.base import utcnow
from db.engine import new_sessionmaker
from db.events import store_events
from db.models import AuditEvent, User
from db.rights import Actor
from db.settings import Settings
from db.users import create_user

PASSWORD = "s3cret-password"
#: Who sets up a test's rows; ``admin_fixtures.audit_rows`` leaves out the audit rows it wrote.
SETUP = Actor(name="test-setup", source="cli")
BASE_TIME = utcnow().replace(microsecond=0) - timedelta(hours=2)


def make_event(index: int = 0, **overrides: Any) -> dict[str, Any]:
    """One event as the ingest server stores it; ``index`` spreads times a second apart, newest last."""
    event: dict[str, Any] = {
        "id": uuid.uuid4(),
        "timestamp": BASE_TIME + timedelta(seconds=index),
        "device_id": f"dev-{index % 3}",
        "user_id": f"user{index % 4}@example.com",
        "organization_id": "default",
        "tool_name": "ChatGPT",
        "tool_type": "web",
        "risk_level": "green",
        "prompt_length": 100 + index,
        "detected_entity_types": [],
        "entity_count": 0,
        "was_sanitized": False,
        "log_metadata": {"os": "linux"},
    }
    event.update(overrides)
    return event


async def store_logs(engine: AsyncEngine, events: Sequence[dict[str, Any]]) -> None:
    """Insert log rows and their hourly counts in one transaction, as ingest does."""
    async with new_sessionmaker(engine)() as session:
        await store_events(session=session, events=list(events))
        await session.commit()


async def add_user(
    engine: AsyncEngine, username: str, *, is_admin: bool = False, active: bool = True
) -> User:
    async with new_sessionmaker(engine)() as session:
        user = await create_user(
            session=session,
            actor=SETUP,
            username=username,
            email=f"{username}@example.com",
            password=PASSWORD,
            is_admin=is_admin,
            bcrypt_rounds=4,
        )
        user.is_active = active
        # The user existed before the test: its creation is no change the test made.
        await session.execute(delete(AuditEvent).where(AuditEvent.actor == SETUP.name))
        await session.commit()
        return user


@pytest.fixture
def app_factory(settings: Settings) -> Callable[..., FirewallConsole]:
    def build(**overrides: Any) -> FirewallConsole:
        return FirewallConsole(replace(settings, **overrides) if overrides else settings)

    return build


async def settle(pilot: Pilot[Any]) -> None:
    """Let every worker finish and the screen catch up."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def sign_in(pilot: Pilot[Any], username: str, password: str = PASSWORD) -> None:
    await settle(pilot)
    screen = pilot.app.screen
    screen.query_one("#username").value = username
    screen.query_one("#password").value = password
    screen.query_one("#password").focus()
    await pilot.press("enter")
    await settle(pilot)


async def open_logs(pilot: Pilot[Any]) -> LogsSection:
    await pilot.press("2")
    await settle(pilot)
    assert isinstance(pilot.app.screen, ShellScreen)
    return pilot.app.screen.query_one(LogsSection)


def shown_ids(section: LogsSection) -> list[uuid.UUID]:
    return [entry.id for entry in section.page_state.rows]


def table_keys(section: LogsSection) -> list[str]:
    return list(section.query_one("#log-table").row_keys)


def newest_first(events: Sequence[dict[str, Any]]) -> list[uuid.UUID]:
    return [e["id"] for e in sorted(events, key=lambda e: (e["timestamp"], e["id"]), reverse=True)]


async def wait_until(pilot: Pilot[Any], condition: Callable[[], bool], within: float = 5.0) -> None:
    """Pump the app until ``condition`` holds (for timers such as follow mode); fail after ``within`` s."""
    async with asyncio.timeout(within):
        while not condition():
            await pilot.pause(0.02)


@contextlib.asynccontextmanager
async def running(app: FirewallConsole, size: tuple[int, int] = (120, 36)) -> AsyncIterator[Pilot[Any]]:
    app.animation_level = "none"  # no tab underline animation to wait for
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        yield pilot


__all__ = ["BASE_TIME", "datetime"]
