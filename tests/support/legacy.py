"""A database from before the rules of revision 0008: upgraded to 0007, given rows today's rules refuse
(a bidi override in a tool name, an escape in a device id, a free-form metadata key, a rollup key
beside the overflow key), then upgraded to head. The scrub's input, for its tests and its command's.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from alembic import command
from sqlalchemy import insert

from db.engine import new_engine
from db.models import Device, LogEntry, LogHourlyCount
from db.rollups import OVERFLOW_KEY
from tests.support.database import run_alembic, settings_for

NOW = datetime(2026, 11, 24, 10, tzinfo=UTC)
BAD_ID, CLEAN_ID = uuid.uuid4(), uuid.uuid4()
BAD_TOOL = "Chat\u202eGPT"
BAD_DEVICE = "dev\x1b[31m"


def _log(event_id: uuid.UUID, tool_name: str, metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": event_id,
        "timestamp": NOW,
        "device_id": "dev-1",
        "user_id": "ann",
        "organization_id": "acme",
        "tool_name": tool_name,
        "tool_type": "web",
        "risk_level": "green",
        "prompt_length": 1,
        "detected_entity_types": [],
        "entity_count": 0,
        "was_sanitized": False,
        "log_metadata": metadata,
        "created_at": NOW,
    }


def _rollup(key: str, count: int) -> dict[str, Any]:
    return {
        "bucket_start": NOW,
        "organization_id": "acme",
        "dimension": "tool",
        "key": key,
        "risk_level": "green",
        "event_count": count,
    }


def write_legacy_rows(url: str) -> None:
    """Rows the rules of revision 0007 let through and today's refuse."""

    async def go() -> None:
        engine = new_engine(settings_for(url))
        try:
            async with engine.begin() as connection:
                await connection.execute(
                    insert(LogEntry.__table__),
                    [
                        _log(BAD_ID, BAD_TOOL, {"browser": "Firefox 133", "note": "left a message"}),
                        _log(CLEAN_ID, "Claude", {"os": "macOS 15"}),
                    ],
                )
                await connection.execute(
                    insert(Device.__table__).values(
                        id=uuid.uuid4(),
                        device_id=BAD_DEVICE,
                        user_id="ann",
                        device_type="cli",
                        registered_at=NOW,
                        last_seen=NOW,
                        is_active=False,
                        organization_id="acme",
                    )
                )
                rows = [_rollup(BAD_TOOL, 2), _rollup(OVERFLOW_KEY, 1), _rollup("Claude", 3)]
                await connection.execute(insert(LogHourlyCount.__table__), rows)
        finally:
            await engine.dispose()

    asyncio.run(go())


def make_legacy(url: str) -> None:
    """Bring the empty database at ``url`` to 0007, write rows today's rules refuse, then upgrade it to
    head."""
    run_alembic(url, lambda config, _: command.upgrade(config, "0007"))
    write_legacy_rows(url)
    run_alembic(url, lambda config, _: command.upgrade(config, "head"))
