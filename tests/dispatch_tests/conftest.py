"""Fixtures of the dispatcher tests: a secret key (so no key file is made in the repository), the lease rows,
and a destination whose receiver is a real TCP listener of the test."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import AsyncEngine

from db.destinations import DestinationSpec, create_destination
from db.engine import new_sessionmaker
from db.rights import Actor
from db.secrets import SecretBox
from db.settings import DispatchSettings, Settings
from tests.support.database import add_organization

#: Quick polls, and leases long enough that one not given up is still held when a test looks.
FAST = DispatchSettings(
    run_in_ingest_server=True,
    poll_seconds=0.05,
    forward_poll_seconds=0.05,
    lease_seconds=30.0,
    forward_hold_days=7,
)


@pytest.fixture
def secret_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture
def dispatch_settings(settings: Settings, secret_key: str) -> Settings:
    """The test database's settings with fast leases and a secret key of this test."""
    return replace(settings, dispatch=FAST, secret_key=secret_key)


@pytest.fixture
async def receiver() -> AsyncIterator[int]:
    """A TCP listener that reads and drops whatever it is sent; its port."""

    async def drain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass
        writer.close()

    server = await asyncio.start_server(drain, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()


@pytest.fixture
async def destination_id(engine: AsyncEngine, secret_key: str, receiver: int) -> uuid.UUID:
    """Organisation ``acme`` with a syslog destination sending to ``receiver``."""
    sessions = new_sessionmaker(engine)
    async with sessions() as session:
        await add_organization(session, "acme")
    spec = DestinationSpec(
        name="siem", transport="syslog_tcp", format="json", address=f"127.0.0.1:{receiver}"
    )
    async with sessions() as session, session.begin():
        destination = await create_destination(
            session=session,
            organization_id="acme",
            spec=spec,
            actor=Actor.cli(),
            secrets=SecretBox([secret_key.encode()]),
        )
        return destination.id
