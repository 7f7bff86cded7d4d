"""The server's counters: a resend is acknowledged again but not stored again, and the stats line says
both."""

from __future__ import annotations

from ingest.client import AgentClient
from simulation.events import EventGenerator
from tests.support.ingest import ServerHandle


async def test_server_counts_a_resend_as_acknowledged_not_as_stored(
    server: ServerHandle, agent: AgentClient, generator: EventGenerator
) -> None:
    message = generator.event()
    for _ in range(2):
        await agent.send(message)
        await agent.wait_acked(within=10)
    assert (server.stats.events_acknowledged, server.stats.events_stored) == (2, 1)
    line = server.stats.line(queued=0, events_per_second=0.0)
    assert "acknowledged=2" in line
    assert "stored=1" in line
