"""A configuration written around the validators (by SQL) that would not fit one line is refused in
a clear error, never sent as a line longer than the limit the welcome announces."""

from __future__ import annotations

import orjson
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import FirewallConfig
from db.settings import IngestLimits
from tests.support.database import Organization
from tests.support.ingest import ORG, RawFactory, ServerHandle, hello_message

#: 5,000 patterns: the 5.3 MB welcome of the issue.
HUGE_PATTERNS = [
    {"name": f"pattern {index}", "regex": r"EMP-\d{6}" * 100, "entity_type": "EMPLOYEE_ID", "severity": "red"}
    for index in range(5000)
]


async def write_around_the_validators(session: AsyncSession) -> None:
    await session.execute(
        update(FirewallConfig)
        .where(FirewallConfig.organization_id == ORG)
        .values(custom_patterns=HUGE_PATTERNS)
    )
    await session.commit()


async def test_a_hello_meeting_an_oversized_configuration_gets_config_too_large(
    server: ServerHandle, raw_factory: RawFactory, session: AsyncSession, org: Organization
) -> None:
    await write_around_the_validators(session)
    client = await raw_factory(server.port, hello=False)
    await client.send(hello_message(org))
    line = await client.reader.readline()
    assert len(line) <= IngestLimits().max_line_bytes
    error = orjson.loads(line)
    assert error["type"] == "error"
    assert error["code"] == "config_too_large"
    assert "line limit" in error["message"]
    assert await client.closed_by_server()


async def test_a_config_request_meeting_an_oversized_configuration_keeps_the_connection(
    server: ServerHandle, raw_factory: RawFactory, session: AsyncSession
) -> None:
    client = await raw_factory(server.port)  # welcomed with the normal configuration
    await write_around_the_validators(session)
    await client.send({"type": "config"})
    error = await client.receive()
    assert error["code"] == "config_too_large"
    assert "keep the last configuration" in error["message"]
    await client.send({"type": "ping"})
    assert (await client.receive())["type"] == "pong"
