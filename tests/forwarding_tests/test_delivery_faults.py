"""Faults around delivery: a destination down raises its alert, an unreadable secret pauses it, a forwarder
process killed with SIGKILL is replaced by another, a cut database connection is waited out."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import new_engine, new_sessionmaker
from db.models import Alert
from db.secrets import SecretBox
from db.settings import Settings
from tests.forwarding_tests.test_delivery import (
    PAGE,
    assert_in_order_with_duplicates_within_one_batch,
    forwarding,
)
from tests.support.forwarding_rows import (
    SECRET_KEY,
    add_destination,
    add_org,
    commit_order,
    events,
    reload,
    store,
)
from tests.support.ingest import TcpProxy
from tests.support.syslog_receiver import SyslogReceiver
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


async def forwarding_alerts(engine: AsyncEngine) -> list[Alert]:
    async with new_sessionmaker(engine)() as session:
        return list((await session.scalars(select(Alert).where(Alert.rule_kind == "forwarding"))).all())


async def test_a_destination_down_is_paused_with_an_alert_resolved_when_it_is_back(
    engine: AsyncEngine,
) -> None:
    await add_org(engine)
    receiver = SyslogReceiver()
    await receiver.start()
    await receiver.stop()  # a port nobody listens on, that the receiver takes again later
    destination = await add_destination(engine, address=receiver.address, risk_levels=("red",), name="Splunk")
    await store(engine, events(5))
    try:
        async with forwarding(engine):

            async def alert_open() -> bool:
                alerts = await forwarding_alerts(engine)
                return len(alerts) == 1 and alerts[0].state == "open"

            await wait_until(alert_open, what="the forwarding alert")
            row = await reload(engine, destination.id)
            assert row.state == "paused"
            assert row.last_error is not None
            assert f"cannot connect to {receiver.address}" in row.last_error
            [alert] = await forwarding_alerts(engine)
            assert (alert.group_key, alert.details["destination_id"]) == ("Splunk", str(destination.id))

            await receiver.start()
            await wait_until(lambda: len(receiver.messages) >= 5, what="the events once the receiver is back")

            async def resolved() -> bool:
                alerts = await forwarding_alerts(engine)
                return [alert.state for alert in alerts] == ["resolved"]

            await wait_until(resolved, what="the forwarding alert to be resolved")
        row = await reload(engine, destination.id)
        assert (row.state, row.last_error) == ("active", None)
    finally:
        await receiver.close()


async def test_a_secret_that_cannot_be_decrypted_pauses_the_destination(engine: AsyncEngine) -> None:
    await add_org(engine)
    lost_key = SecretBox([Fernet.generate_key()])
    destination = await add_destination(
        engine,
        address="http://127.0.0.1:9",
        transport="hec",
        secret="a-token",
        secrets=lost_key,
        risk_levels=("red",),
    )
    await store(engine, events(2))
    async with forwarding(engine):

        async def paused() -> bool:
            return (await reload(engine, destination.id)).state == "paused"

        await wait_until(paused, what="the destination to pause")
    row = await reload(engine, destination.id)
    assert row.last_error == "secret cannot be decrypted with the current key: enter it again"
    assert row.delivered_count == 0


def start_forwarder(subprocess_env: dict[str, str], holder: str) -> subprocess.Popen[str]:
    env = {**subprocess_env, "AIFW_SECRET_KEY": SECRET_KEY, "FORWARD_PAGE_ROWS": str(PAGE)}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.forwarder_process", holder],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


@pytest.mark.slow
async def test_a_forwarder_process_killed_mid_stream_is_replaced_and_nothing_is_lost(
    engine: AsyncEngine, subprocess_env: dict[str, str]
) -> None:
    await add_org(engine)
    receiver = await SyslogReceiver().start()
    processes: list[subprocess.Popen[str]] = []
    try:
        await add_destination(engine, address=receiver.address, risk_levels=("red",))
        await store(engine, events(1500))
        expected = await commit_order(engine, "acme", ["red"])
        first = start_forwarder(subprocess_env, "first")
        processes.append(first)
        await wait_until(lambda: len(receiver.messages) >= 100, what="the first process to deliver some")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        await asyncio.sleep(0.2)  # what the dead process had written reaches the receiver
        delivered_by_first = len(receiver.messages)
        assert delivered_by_first < len(expected), "the first process finished before it was killed"
        processes.append(start_forwarder(subprocess_env, "second"))
        await wait_until(
            lambda: len(set(receiver.ids())) >= len(expected), timeout=60, what="the second process to finish"
        )
        # The batch in flight when killed, and the batch before it (TCP syslog resends it on restart).
        assert_in_order_with_duplicates_within_one_batch(receiver.ids(), expected, batches=2)
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(10)
        await receiver.close()


@pytest.mark.postgres_only
async def test_a_cut_database_connection_is_waited_out(
    engine: AsyncEngine, settings: Settings, backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("the connection cut is of PostgreSQL's TCP connection")
    url = make_url(settings.database_url)
    proxy = await TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
    proxied = new_engine(
        replace(settings, database_url=url.set(port=proxy.port).render_as_string(hide_password=False))
    )
    receiver = await SyslogReceiver().start()
    try:
        await add_org(engine)
        await add_destination(engine, address=receiver.address, risk_levels=("red",))
        async with forwarding(proxied):
            await store(engine, events(20))
            await wait_until(lambda: len(receiver.messages) >= 20, what="events before the cut")
            proxy.cut()
            await store(engine, events(30, start=100))
            await asyncio.sleep(1.0)  # the forwarder meets the cut and keeps retrying
            proxy.restore()
            await store(engine, events(10, start=200))
            await wait_until(lambda: len(set(receiver.ids())) >= 60, what="everything after the cut")
        assert_in_order_with_duplicates_within_one_batch(
            receiver.ids(), await commit_order(engine, "acme", ["red"]), batches=2
        )
    finally:
        await receiver.close()
        await proxied.dispose()
        await proxy.close()
