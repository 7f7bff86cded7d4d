"""The fleet's red burst raises the default "Red burst per user" alert within seconds, through the real
ingest server running its dispatcher; the demo's SIEM receiver writes each syslog frame as one line."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import new_sessionmaker
from db.models import Alert
from simulation.fleet import Fleet, FleetOrganization, FleetPlan
from simulation.siem_receiver import SiemReceiver
from tests.support.ingest import ServerHandle
from tests.support.waiting import wait_until

RED_BURST_RULE = "Red burst per user"


async def burst_alerts(engine: AsyncEngine) -> list[Alert]:
    async with new_sessionmaker(engine)() as session:
        return list((await session.scalars(select(Alert).where(Alert.rule_name == RED_BURST_RULE))).all())


async def test_a_red_burst_raises_the_red_burst_alert_for_its_user(
    organizations: list[FleetOrganization], server: ServerHandle, engine: AsyncEngine
) -> None:
    # The organisations (and their default rules) exist before the server starts: as in the demo.
    assert server.running.dispatcher is not None
    # Hardly any traffic besides the burst: at this rate no user reaches five red events on their own.
    plan = FleetPlan(devices=2, rate=0.2, red_burst_after=0.2, red_burst_every=0, seed=5)
    fleet = Fleet("127.0.0.1", server.port, organizations, plan)
    running = asyncio.create_task(fleet.run())
    try:
        await wait_until(lambda: fleet.stats().red_bursts == 1, timeout=30, what="the burst is sent")

        async def raised() -> bool:
            return bool(await burst_alerts(engine))

        # Generous: on PostgreSQL a transaction left open by a test of another worker holds the bound back.
        await wait_until(raised, timeout=60, what="the red burst alert is raised")
    finally:
        fleet.stop()
        stats = await running
    (alert,) = await burst_alerts(engine)
    burster = fleet.devices[0].identity
    assert (alert.organization_id, alert.group_key) == (burster.organization_id, burster.user_id)
    assert alert.event_count >= plan.red_burst_events - 1
    assert stats.red_bursts == 1


async def test_the_receiver_writes_each_frame_as_one_line(tmp_path: Path) -> None:
    output = tmp_path / "siem.log"
    receiver = SiemReceiver(output)
    port = await receiver.start("127.0.0.1", 0)
    try:
        frames = [b"<14>1 first message", b"<14>1 two\nlines", '<14>1 caf\u00e9 ]"\\'.encode()]
        payload = b"".join(b"%d %s" % (len(frame), frame) for frame in frames) + b"<14>1 typed by hand\n"
        await asyncio.to_thread(_send, port, payload)
        await wait_until(lambda: receiver.messages == 4, what="four messages are received")
    finally:
        await receiver.close()
    assert output.read_text(encoding="utf-8").splitlines() == [
        "<14>1 first message",
        "<14>1 two\\nlines",
        '<14>1 caf\u00e9 ]"\\',
        "<14>1 typed by hand",
    ]


async def test_the_receiver_closes_a_connection_that_is_not_syslog(tmp_path: Path) -> None:
    output = tmp_path / "siem.log"
    receiver = SiemReceiver(output)
    port = await receiver.start("127.0.0.1", 0)
    try:
        closed = await asyncio.to_thread(_send, port, b"GET / HTTP/1.1\r\n\r\n", wait_for_close=True)
        assert closed
        await asyncio.to_thread(_send, port, b"9 <14>1 ok!")
        await wait_until(lambda: receiver.messages == 1, what="the next sender is still served")
    finally:
        await receiver.close()
    assert output.read_text(encoding="utf-8") == "<14>1 ok!\n"


def _send(port: int, payload: bytes, *, wait_for_close: bool = False) -> bool:
    """Send ``payload``; with ``wait_for_close``, whether the receiver then closed the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(payload)
        if not wait_for_close:
            return False
        return connection.recv(1) == b""
