"""Fixtures of the retention tests: a pinned clock, a sessionmaker, log rows at chosen times, a real delete
failure (the helpers themselves are in tests/support/retention.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import datetime

import pytest
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db.base import utcnow
from db.engine import new_sessionmaker
from db.models import LogEntry
from db.partitions import maintain_partitions
from tests.support.retention import AddLogs

#: The organisation whose deletes the ``refuse_deletes`` fixture makes fail for real.
BROKEN_ORGANIZATION = "broken"


@pytest.fixture
def now() -> datetime:
    """The pinned clock of a run: a fixed instant, so boundaries are exact to the microsecond."""
    return utcnow().replace(microsecond=0)


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return new_sessionmaker(engine)


@pytest.fixture
def add_logs(sessions: async_sessionmaker[AsyncSession]) -> AddLogs:
    """Insert one log of the organisation at each given time."""

    async def add(organization_id: str, timestamps: Iterable[datetime]) -> None:
        rows = [
            {
                "timestamp": moment,
                "device_id": "dev-1",
                "user_id": "alice",
                "tool_name": "ChatGPT",
                "tool_type": "web",
                "risk_level": "green",
                "organization_id": organization_id,
            }
            for moment in timestamps
        ]
        async with sessions() as session, session.begin():
            await session.execute(insert(LogEntry), rows)

    return add


@pytest.fixture(autouse=True)
async def partitions_kept(engine: AsyncEngine) -> None:
    """The weeks a run before this test dropped (retention by partition) exist again, as the server's
    maintainer would have them: the tests share one database."""
    await maintain_partitions(engine)


@pytest.fixture
async def refuse_deletes(engine: AsyncEngine, backend: str) -> AsyncIterator[str]:
    """A database trigger that makes deleting the ``broken`` organisation's logs fail, then removes it.

    On PostgreSQL an event trigger also refuses ``DETACH PARTITION``: a run over all organisations
    would otherwise drop a week holding only expired rows without a DELETE.
    """
    async with engine.begin() as connection:
        if backend == "postgresql":
            await connection.execute(
                text(
                    "CREATE OR REPLACE FUNCTION refuse_detach() RETURNS event_trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN IF current_query() ILIKE '%DETACH PARTITION%' THEN "
                    "RAISE EXCEPTION 'detaches refused'; END IF; END $$"
                )
            )
            await connection.execute(
                text(
                    "CREATE EVENT TRIGGER refuse_broken_detach ON ddl_command_start "
                    "WHEN TAG IN ('ALTER TABLE') EXECUTE FUNCTION refuse_detach()"
                )
            )
            await connection.execute(
                text(
                    "CREATE OR REPLACE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'deletes refused for %', OLD.organization_id; END $$"
                )
            )
            await connection.execute(
                text(
                    "CREATE TRIGGER refuse_broken_delete BEFORE DELETE ON log_entries FOR EACH ROW "
                    f"WHEN (OLD.organization_id = '{BROKEN_ORGANIZATION}') EXECUTE FUNCTION refuse_delete()"
                )
            )
        else:
            await connection.execute(
                text(
                    "CREATE TRIGGER refuse_broken_delete BEFORE DELETE ON log_entries "
                    f"WHEN OLD.organization_id = '{BROKEN_ORGANIZATION}' "
                    f"BEGIN SELECT RAISE(ABORT, 'deletes refused for {BROKEN_ORGANIZATION}'); END"
                )
            )
    try:
        yield BROKEN_ORGANIZATION
    finally:
        async with engine.begin() as connection:
            if backend == "postgresql":
                await connection.execute(text("DROP TRIGGER IF EXISTS refuse_broken_delete ON log_entries"))
                await connection.execute(text("DROP FUNCTION IF EXISTS refuse_delete()"))
                await connection.execute(text("DROP EVENT TRIGGER IF EXISTS refuse_broken_detach"))
                await connection.execute(text("DROP FUNCTION IF EXISTS refuse_detach()"))
            else:
                await connection.execute(text("DROP TRIGGER IF EXISTS refuse_broken_delete"))
