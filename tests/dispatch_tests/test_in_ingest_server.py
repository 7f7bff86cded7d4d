"""The dispatcher inside the ingest server (INGEST_DISPATCH): on, the server's own dispatcher holds the
evaluator's and the forwarders' leases and gives them up when the server stops; off, nobody takes any."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncEngine

from db.destinations import lease_name
from db.settings import Settings
from tests.dispatch_tests.lease_rows import EVALUATOR, expired, is_held, leases
from tests.support.ingest import start_server
from tests.support.waiting import wait_until


async def test_with_ingest_dispatch_on_the_server_runs_the_dispatcher_and_stops_it(
    dispatch_settings: Settings, engine: AsyncEngine, destination_id: uuid.UUID
) -> None:
    server = await start_server(dispatch_settings)
    dispatcher = server.running.dispatcher
    forwarder = lease_name(destination_id)
    try:
        assert dispatcher is not None

        async def both_held() -> bool:
            rows = await leases(engine)
            return is_held(rows.get(EVALUATOR), holding=dispatcher.holder) and is_held(
                rows.get(forwarder), holding=dispatcher.holder
            )

        await wait_until(both_held, timeout=30, what="the server's dispatcher holds both leases")
    finally:
        await server.stop(within=30)
    rows = await leases(engine)
    assert rows[EVALUATOR].holder == dispatcher.holder
    assert expired(rows[EVALUATOR])
    assert rows[forwarder].holder == dispatcher.holder
    assert expired(rows[forwarder])


async def test_with_ingest_dispatch_off_the_server_takes_no_lease(
    dispatch_settings: Settings, engine: AsyncEngine, destination_id: uuid.UUID
) -> None:
    settings = replace(
        dispatch_settings, dispatch=replace(dispatch_settings.dispatch, run_in_ingest_server=False)
    )
    server = await start_server(settings)
    try:
        assert server.running.dispatcher is None
        # Given the time a running dispatcher takes to hold both leases (well under a second with these
        # settings, see the test above), none appearing in two seconds means none is running.
        await asyncio.sleep(2.0)
        assert await leases(engine) == {}
    finally:
        await server.stop(within=30)
