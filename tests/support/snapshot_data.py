"""The fixed data of the console's snapshot tests: one SQLite file that draws the same screens every run.

Everything is written through the product's own functions (``create_user``, ``create_organization``,
``register_or_touch_device``, ``store_events``, ``apply_hits``, ``acknowledge_alert``,
``run_retention``) while the clock is held at chosen moments before :data:`FIXED`, the instant the
tests then freeze the console at. Every id a screen could show is fixed too: event ids are ``uuid5``
of their index; alert, rule and run ids are never shown; no ingest token is made (its prefix is random).

What the file holds: the administrator :data:`ADMIN` (password :data:`tests.support.database.PASSWORD`)
and a viewer, two organisations (acme keeps logs 90 days, globex 30), six devices, 67 log rows from 30
minutes to 31 days before :data:`FIXED` across every risk level, tool type and a dozen entity types
(three older globex rows were deleted by a finished cleanup run, one more has expired since), a red
burst that opened an alert, an acknowledged alert, and the rollups the database keeps from the rows.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import time_machine
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.alerts import AlertHit, EventSummary, Trigger, acknowledge_alert, apply_hits, list_rules
from db.configs import create_organization
from db.devices import mark_devices_heard, register_or_touch_device
from db.engine import new_engine, new_sessionmaker
from db.events import store_events
from db.models import Alert
from db.retention import run_retention
from db.rights import Actor
from db.settings import Settings
from tests.support.database import TEST_SECRET_KEY, add_user, migrate_url

#: The instant the console is frozen at in every snapshot (a Monday morning, UTC).
FIXED = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
#: The signed-in administrator (password :data:`tests.support.database.PASSWORD`).
ADMIN = "ada"
#: The file name the console is given, relative to the working directory, so the title bar (which
#: names the database) reads the same wherever the test's temporary folder is.
DATABASE_FILE = "console.db"
#: Event ids are uuid5 of their index in this namespace: the same every run, and real-looking.
EVENT_NAMESPACE = uuid.UUID("6f1c1a7e-2d0b-4c55-9a51-3c0de5a1f00d")
ACTOR = Actor.console(ADMIN)


@dataclass(frozen=True)
class SnapshotDevice:
    """An agent of the fixed data, with the metadata its events carry."""

    organization_id: str
    device_id: str
    user_id: str
    device_type: str
    agent_version: str
    metadata: dict[str, str]


DEVICES = (
    SnapshotDevice(
        "acme",
        "acme-lt-0142",
        "eve@acme.example",
        "browser",
        "1.4.2",
        {"os": "macOS 15", "browser": "Chrome 131"},
    ),
    SnapshotDevice(
        "acme",
        "acme-lt-0177",
        "bob@acme.example",
        "desktop",
        "1.4.2",
        {"os": "Windows 11", "app_version": "2.7"},
    ),
    SnapshotDevice(
        "acme", "acme-ws-0031", "carol@acme.example", "cli", "1.3.9", {"os": "Ubuntu 24.04", "shell": "zsh"}
    ),
    SnapshotDevice(
        "acme",
        "acme-lt-0205",
        "dave.oconnor@acme.example",
        "browser",
        "1.4.1",
        {"os": "Windows 11", "browser": "Edge 131"},
    ),
    SnapshotDevice(
        "globex",
        "globex-mb-12",
        "frank@globex.example",
        "browser",
        "1.4.2",
        {"os": "macOS 15", "browser": "Safari 18"},
    ),
    SnapshotDevice(
        "globex",
        "globex-dev-07",
        "grace@globex.example",
        "cli",
        "1.4.0",
        {"os": "Fedora 41", "shell": "fish"},
    ),
)
TOOLS = {
    "browser": (("ChatGPT", "web"), ("Claude", "web"), ("Gemini", "web"), ("Microsoft Copilot", "web")),
    "desktop": (("GitHub Copilot", "desktop"), ("Cursor", "desktop"), ("ChatGPT Desktop", "desktop")),
    "cli": (("Claude Code", "cli"), ("Codex CLI", "cli"), ("Aider", "cli")),
}
#: The risk of event ``i`` is ``RISK_CYCLE[i % 10]``: mostly green, some amber, a little red.
RISK_CYCLE = ("green", "green", "amber", "green", "green", "green", "red", "amber", "green", "green")
AMBER_TYPES = ("EMAIL", "PHONE", "PERSON", "ADDRESS", "IP_ADDRESS", "IBAN", "DATE_OF_BIRTH")
RED_TYPES = ("API_KEY", "PASSWORD", "PRIVATE_KEY", "CREDIT_CARD", "SSN")


def event_id(index: int) -> uuid.UUID:
    """The fixed id of event number ``index``."""
    return uuid.uuid5(EVENT_NAMESPACE, f"event-{index}")


def _age(index: int) -> timedelta:
    """How long before :data:`FIXED` the ``index``-th of the 60 regular events happened."""
    if index < 20:
        return timedelta(minutes=30 + 8 * index)  # the last three hours, every 8 minutes
    if index < 40:
        return timedelta(hours=3 + (index - 20), minutes=17)  # the rest of the day
    if index < 52:
        return timedelta(days=1 + (index - 40) // 2, hours=5 * (index % 4), minutes=41)  # the week
    return timedelta(days=8 + 2 * (index - 52), hours=3)  # the month


def _event(index: int, device: SnapshotDevice, age: timedelta, risk: str, types: list[str]) -> dict[str, Any]:
    tools = TOOLS[device.device_type]
    tool_name, tool_type = tools[(index // len(DEVICES)) % len(tools)]
    return {
        "id": event_id(index),
        "timestamp": FIXED - age,
        "device_id": device.device_id,
        "user_id": device.user_id,
        "organization_id": device.organization_id,
        "tool_name": tool_name,
        "tool_type": tool_type,
        "risk_level": risk,
        "prompt_length": 120 + (index * 137) % 2400,
        "detected_entity_types": types,
        "entity_count": len(types) + (index % 3 if types else 0),
        "was_sanitized": risk == "red" or (risk == "amber" and index % 2 == 0),
        "log_metadata": dict(device.metadata),
    }


def regular_events() -> list[dict[str, Any]]:
    """The 60 everyday events, newest first, spread over the last 25 days."""
    events = []
    for index in range(60):
        risk = RISK_CYCLE[index % len(RISK_CYCLE)]
        if risk == "green":
            types: list[str] = []
        elif risk == "amber":
            types = [AMBER_TYPES[index % 7], *([AMBER_TYPES[(index + 3) % 7]] if index % 3 == 0 else [])]
        else:
            types = [RED_TYPES[index % 5], AMBER_TYPES[index % 7]]
        events.append(_event(index, DEVICES[index % len(DEVICES)], _age(index), risk, types))
    return events


def red_burst() -> list[dict[str, Any]]:
    """Five red events of one user within eight minutes: the "Red burst per user" rule's threshold."""
    eve = DEVICES[0]
    return [
        _event(100 + n, eve, timedelta(minutes=39 - 2 * n), "red", [RED_TYPES[n % 2], "EMAIL"])
        for n in range(5)
    ]


def password_event() -> dict[str, Any]:
    """A red event with a password in it: the "Red entity types" rule's match (globex)."""
    return _event(110, DEVICES[4], timedelta(minutes=52), "red", ["PASSWORD", "PERSON"])


def expired_events() -> list[dict[str, Any]]:
    """Globex rows older than its 30 days: three the cleanup run deleted, one that expired since."""
    grace = DEVICES[5]
    old = [_event(120 + n, grace, timedelta(days=45, hours=n), "green", []) for n in range(3)]
    return [*old, _event(123, grace, timedelta(days=30, hours=1), "amber", ["IP_ADDRESS"])]


def snapshot_settings(database_url: str, data_dir: Path) -> Settings:
    """Settings of the console under test: the dataclass defaults (never the environment's), cheap bcrypt."""
    return Settings(
        database_url=database_url,
        bcrypt_rounds=4,
        secret_key=TEST_SECRET_KEY,
        data_dir=data_dir,
        export_dir=data_dir,
    )


async def _store(
    sessions: async_sessionmaker[AsyncSession], clock: time_machine.Traveller, events: list[dict[str, Any]]
) -> None:
    """Store each event two seconds after it happened (its ``created_at``), oldest first."""
    for event in sorted(events, key=lambda e: e["timestamp"]):
        clock.move_to(event["timestamp"] + timedelta(seconds=2))
        async with sessions() as session:
            await store_events(session=session, events=[event])
            await session.commit()


def _summary(events: list[dict[str, Any]]) -> EventSummary:
    return EventSummary.of((event["timestamp"], str(event["id"])) for event in events)


async def _raise_alert(
    sessions: async_sessionmaker[AsyncSession],
    clock: time_machine.Traveller,
    *,
    organization_id: str,
    rule_name: str,
    events: list[dict[str, Any]],
) -> Alert:
    """Open the alert the rule raises on ``events``, as the evaluator would a few seconds after the last."""
    last = max(event["timestamp"] for event in events)
    clock.move_to(last + timedelta(seconds=3))
    async with sessions() as session:
        rules = {rule.id: rule for rule in await list_rules(session=session, organization_id=organization_id)}
        rule = next(rule for rule in rules.values() if rule.name == rule_name)
        group_key = events[0]["user_id"]
        hit = AlertHit(
            rule_id=rule.id,
            group_key=group_key,
            matches=_summary(events),
            first_trigger=Trigger(at=last, window=_summary(events)),
        )
        [alert] = await apply_hits(session=session, hits=[hit], rules=rules)
        await session.commit()
        return alert


async def _fill(sessions: async_sessionmaker[AsyncSession], clock: time_machine.Traveller) -> None:
    start = FIXED - timedelta(days=60)
    clock.move_to(start)
    async with sessions() as session:
        await add_user(session, ADMIN, full_name="Ada Lovelace", is_admin=True)
        await add_user(session, "victor", full_name="Victor Viewer")
    for organization_id, days in (("acme", 90), ("globex", 30)):
        clock.move_to(start + timedelta(minutes=5))
        async with sessions() as session:
            await create_organization(
                session=session, organization_id=organization_id, actor=ACTOR, log_retention_days=days
            )
            await session.commit()
    for number, device in enumerate(DEVICES):
        clock.move_to(start + timedelta(hours=1 + number))
        async with sessions() as session:
            await register_or_touch_device(
                session=session,
                organization_id=device.organization_id,
                device_id=device.device_id,
                user_id=device.user_id,
                device_type=device.device_type,
                agent_version=device.agent_version,
            )
            await session.commit()
    burst, password = red_burst(), password_event()
    events = [*regular_events(), *burst, password, *expired_events()]
    await _store(sessions, clock, events)
    async with sessions() as session:
        for device in DEVICES:
            last = max(e["timestamp"] for e in events if e["device_id"] == device.device_id)
            await mark_devices_heard(session=session, device_ids=[device.device_id], now=last)
        await session.commit()

    await _raise_alert(sessions, clock, organization_id="acme", rule_name="Red burst per user", events=burst)
    seen = await _raise_alert(
        sessions, clock, organization_id="globex", rule_name="Red entity types", events=[password]
    )
    clock.move_to(FIXED - timedelta(minutes=15))
    async with sessions() as session:
        await acknowledge_alert(session=session, alert_id=seen.id, actor=ACTOR)
        await session.commit()

    clock.move_to(FIXED - timedelta(hours=2))
    await run_retention(sessions=sessions, actor=ACTOR, now=FIXED - timedelta(hours=2))


async def _build(url: str) -> None:
    await migrate_url(url)
    engine = new_engine(snapshot_settings(url, Path()))
    try:
        with time_machine.travel(FIXED, tick=False) as clock:
            await _fill(new_sessionmaker(engine), clock)
    finally:
        await engine.dispose()


def build_snapshot_database(path: Path) -> None:
    """Create, migrate and fill the SQLite file at ``path`` (which must not exist yet)."""
    asyncio.run(_build(f"sqlite+aiosqlite:///{path}"))
