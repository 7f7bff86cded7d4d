"""The identifier rules as CHECK constraints: rows written by SQL cannot hold what the ingest server
refuses."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from db.identifiers import FORBIDDEN_RANGES
from db.models import Device, LogEntry, LogHourlyCount

NOW = datetime(2026, 11, 24, 10, tzinfo=UTC)
#: Both ends of every forbidden range, so a range added to db/identifiers.py without a new
#: migration fails here; NUL apart (PostgreSQL text cannot hold it: the driver refuses it first).
FORBIDDEN_SAMPLES = sorted({chr(code) for start, end in FORBIDDEN_RANGES for code in (start, end)} - {"\x00"})


def log_row(**overrides: Any) -> dict[str, Any]:
    row = {
        "id": uuid.uuid4(),
        "timestamp": NOW,
        "device_id": "dev-1",
        "user_id": "ann",
        "organization_id": "acme",
        "tool_name": "ChatGPT",
        "tool_type": "web",
        "risk_level": "green",
        "prompt_length": 1,
        "detected_entity_types": [],
        "entity_count": 0,
        "was_sanitized": False,
        "log_metadata": {},
        "created_at": NOW,
    }
    row.update(overrides)
    return row


def device_row(**overrides: Any) -> dict[str, Any]:
    row = {
        "id": uuid.uuid4(),
        "device_id": "dev-1",
        "user_id": "ann",
        "device_type": "cli",
        "registered_at": NOW,
        "last_seen": NOW,
        "is_active": True,
        "organization_id": "acme",
    }
    row.update(overrides)
    return row


def rollup_row(**overrides: Any) -> dict[str, Any]:
    row = {
        "bucket_start": NOW,
        "organization_id": "acme",
        "dimension": "tool",
        "key": "ChatGPT",
        "risk_level": "green",
        "event_count": 1,
    }
    row.update(overrides)
    return row


async def write(engine: AsyncEngine, model: Any, row: dict[str, Any]) -> None:
    async with engine.begin() as connection:
        await connection.execute(insert(model.__table__).values(**row))


@pytest.mark.parametrize("character", FORBIDDEN_SAMPLES, ids=lambda c: f"U+{ord(c):04X}")
async def test_sql_insert_of_a_tool_name_with_a_forbidden_character_is_refused(
    engine: AsyncEngine, character: str
) -> None:
    with pytest.raises(IntegrityError):
        await write(engine, LogEntry, log_row(tool_name=f"Chat{character}GPT"))


@pytest.mark.parametrize(
    ("model", "row"),
    [
        (LogEntry, log_row(user_id="ann\x1b[31m")),
        (LogEntry, log_row(device_id="dev\u202e1")),
        (LogEntry, log_row(organization_id="ac\u200bme")),
        (LogEntry, log_row(user_id="\u200dann")),
        (Device, device_row(device_id="dev\x9b1")),
        (Device, device_row(user_id="ann\ufeff")),
        (Device, device_row(organization_id="acme\u2066")),
        (LogHourlyCount, rollup_row(key="Chat\u202eGPT")),
        (LogHourlyCount, rollup_row(dimension="entity", key="EMAIL\u200c")),
        (LogHourlyCount, rollup_row(organization_id="acme\x07")),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else "",
)
async def test_sql_insert_of_an_identifier_with_a_forbidden_character_is_refused(
    engine: AsyncEngine, model: Any, row: dict[str, Any]
) -> None:
    with pytest.raises(IntegrityError):
        await write(engine, model, row)


async def test_sql_insert_with_nul_is_refused(engine: AsyncEngine) -> None:
    # SQLite stores NUL in text, so its CHECK reads the bytes; PostgreSQL text cannot hold NUL at all.
    with pytest.raises(DBAPIError):
        await write(engine, LogEntry, log_row(tool_name="Chat\x00GPT"))


@pytest.mark.parametrize(
    ("model", "row"),
    [
        (LogEntry, log_row(tool_name="x" * 101)),
        (LogEntry, log_row(tool_name="")),
        (Device, device_row(device_id="d" * 129)),
        (LogHourlyCount, rollup_row(key="k" * 256)),
    ],
    ids=["tool_name_101", "tool_name_empty", "device_id_129", "rollup_key_256"],
)
async def test_sql_insert_past_an_identifiers_length_bound_is_refused_on_both_engines(
    engine: AsyncEngine, model: Any, row: dict[str, Any]
) -> None:
    # SQLite does not enforce VARCHAR lengths: the CHECK does (on PostgreSQL VARCHAR refuses it first).
    with pytest.raises(DBAPIError):
        await write(engine, model, row)


async def test_clean_identifiers_and_joiners_between_letters_in_user_ids_are_accepted(
    engine: AsyncEngine,
) -> None:
    # Rollup rows first: the log row's own counting then adds to them rather than taking their keys.
    await write(engine, LogHourlyCount, rollup_row(dimension="user", key="می\u200cخواهم"))
    await write(engine, LogHourlyCount, rollup_row(dimension="risk", key=""))
    await write(engine, LogEntry, log_row(user_id="می\u200cخواهم", tool_name="日本語 tool [beta]"))
    await write(engine, Device, device_row(user_id="ann\u200dbob"))
