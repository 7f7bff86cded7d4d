"""Fixtures of the demo tests: organisations with tokens and the ingest server in-process on an
ephemeral port (the helpers themselves are in tests/support/)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from db.settings import Settings
from simulation.fleet import FleetOrganization
from tests.support.database import add_organization
from tests.support.ingest import ServerHandle, start_server

ORGANIZATIONS = ("acme", "globex")


@pytest.fixture
async def organizations(session: AsyncSession) -> list[FleetOrganization]:
    """Two organisations, each with a live ingest token."""
    result = []
    for organization_id in ORGANIZATIONS:
        organization = await add_organization(session, organization_id)
        result.append(FleetOrganization(organization.organization_id, organization.token))
    return result


@pytest.fixture
async def server(settings: Settings, engine: AsyncEngine) -> AsyncIterator[ServerHandle]:
    """The ingest server, in this event loop, on an ephemeral port of the test database."""
    handle = await start_server(settings)
    yield handle
    await handle.stop(within=20)
