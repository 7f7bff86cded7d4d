"""Frames PostgreSQL builds (the fast path of syslog TCP and TLS in JSON) against the ones Python builds."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import new_sessionmaker
from db.streams import EventLines, Position, read_events
from forwarding.delivery import format_message, product_version
from forwarding.formats.syslog_sql import event_message_sql
from forwarding.reading import event_item
from forwarding.transports.streams import Envelope
from tests.support.database import make_event
from tests.support.forwarding_rows import add_org, store

ENVELOPE = Envelope(hostname="siem relay é", app_name="aifw-test", facility=23, sd_id="test@32473")
WHEN = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)

#: Values PostgreSQL writes in its own jsonb spelling (a backslash, a string ending in ", "): the same JSON.
JSONB_SPELLING: list[dict[str, Any]] = [
    {"path": "C:\\temp", "quote": 'say "hi"'},
    {"list": "a, ", "next": 1},
    {"nested": {"a": [1, 2]}, "small": 1e-7},
]
#: Values written exactly as orjson writes them.
EXACT: list[dict[str, Any]] = [
    {},
    {"os": "linux"},
    {"os": "Ubuntu 24.04", "browser": "Edge 131", "client_version": "1.2.3"},
    {"flag": True, "none": None, "count": 12, "ratio": 1.5, "text": "a, b: c"},
]


def awkward_events() -> list[dict[str, Any]]:
    people = ['quote"d\\back@example.com', "zoë@例え.jp", "plain@example.com"]
    devices = ['dev]"1', "dev-ü", "laptop 7"]
    tools = ['Chat"GPT\\', "Claude", "Copilot ]"]
    entity_types: list[list[str]] = [[], ["API_KEY"], ["API_KEY", "EMAIL", "PRIVATE_KEY"]]
    rows = []
    for index, metadata in enumerate([*EXACT, *JSONB_SPELLING] * 3):
        rows.append(
            make_event(
                index,
                organization_id="acme",
                timestamp=WHEN + timedelta(seconds=index, microseconds=0 if index % 2 else 123400 + index),
                user_id=people[index % 3],
                device_id=devices[index % 3],
                tool_name=tools[index % 3],
                tool_type=("web", "desktop", "cli")[index % 3],
                risk_level=("green", "amber", "red")[index % 3],
                detected_entity_types=entity_types[index % 3],
                entity_count=index % 3,
                was_sanitized=bool(index % 2),
                log_metadata=metadata,
            )
        )
    return rows


def python_message(row: Any) -> bytes:
    return ENVELOPE.wrap(format_message(event_item(row), "json", version=product_version()))


def split_message(message: bytes) -> tuple[bytes, Any]:
    """The header and structured data, and the parsed JSON body."""
    header, body = message.split(b"] {", 1)
    return header, json.loads(b"{" + body)


async def test_postgresql_builds_the_frames_python_builds(engine: AsyncEngine, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite has no fast path: the forwarder builds every frame itself")
    await add_org(engine)
    await store(engine, awkward_events())
    template = event_message_sql(
        hostname=ENVELOPE.hostname,
        app_name=ENVELOPE.app_name,
        facility=ENVELOPE.facility,
        sd_id=ENVELOPE.sd_id,
    )
    async with new_sessionmaker(engine)() as session:
        rows = (await read_events(session, after=Position(0), limit=1000)).rows
        lines = (await EventLines(template, limit=1000).read(session, after=Position(0))).rows
    assert len(lines) == len(rows) == 3 * (len(EXACT) + len(JSONB_SPELLING))
    exact = 0
    for row, line in zip(rows, lines, strict=True):
        expected = python_message(row)
        if row.log_metadata in JSONB_SPELLING:
            assert split_message(line) == split_message(expected)
        else:
            assert line == expected
            exact += 1
    assert exact == 3 * len(EXACT)


async def test_pages_of_lines_move_as_pages_of_events_do(engine: AsyncEngine, backend: str) -> None:
    """Same rows, same positions: a full page ends at its last row, a short one at the visible bound
    (three transactions, two organisations, so pages end inside a transaction and between them)."""
    if backend != "postgresql":
        pytest.skip("SQLite has no fast path: the forwarder builds every frame itself")
    await add_org(engine)
    await add_org(engine, "globex")
    for batch in range(3):  # three transactions: pages cross commit_seq values
        await store(
            engine,
            [
                make_event(index, id=uuid.uuid4(), organization_id=("acme", "globex")[index % 2])
                for index in range(batch * 7, batch * 7 + 7)
            ],
        )
    template = event_message_sql(hostname="h", app_name="a", facility=16, sd_id="aifw@32473")
    for organization_id, risk_levels in ((None, None), ("acme", ["green"]), ("globex", ["red"])):
        after_lines = after_events = Position(0)
        async with new_sessionmaker(engine)() as session:
            reader = EventLines(template, limit=4, organization_id=organization_id, risk_levels=risk_levels)
            while True:
                lines = await reader.read(session, after=after_lines)
                events = await read_events(
                    session,
                    after=after_events,
                    limit=4,
                    organization_id=organization_id,
                    risk_levels=risk_levels,
                )
                assert [line.split(b' id="', 1)[1][:36].decode() for line in lines.rows] == [
                    str(row.id) for row in events.rows
                ]
                after_lines, after_events = lines.next_position, events.next_position
                if len(events.rows) < 4:
                    # Both at the visible bound, read a moment apart (other transactions move it).
                    assert (after_lines.organization_id, after_lines.item_id) == ("", "")
                    assert after_lines.seq > max((row.commit_seq for row in events.rows), default=0)
                    break
                assert after_lines == after_events
