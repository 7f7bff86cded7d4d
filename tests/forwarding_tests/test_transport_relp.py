"""RELP into a real rsyslogd (imrelp): every message acknowledged, sessions reopened after a restart."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from forwarding.transport import DestinationDown, RetryLater, TransportConfig
from forwarding.transports import open_transport
from forwarding.transports.relp import WINDOW, read_frame, relp_frame
from tests.forwarding_tests import make_alert, make_event, message_of
from tests.support.programs import free_port
from tests.support.rsyslog import Rsyslog, running_rsyslog

OPTIONS = {"hostname": "fw-test", "timeout_seconds": 5}


@pytest.fixture
async def rsyslog(tmp_path: Path) -> AsyncIterator[Rsyslog]:
    async with running_rsyslog(tmp_path) as server:
        yield server


def event_id(row: dict[str, str]) -> str:
    match = re.search(r' id="([^"]*)"', row["structured_data"])
    assert match is not None
    return match.group(1)


async def test_relp_delivers_more_than_a_window_in_order(rsyslog: Rsyslog) -> None:
    transport = open_transport(TransportConfig("relp", f"127.0.0.1:{rsyslog.relp_port}", OPTIONS))
    events = [make_event(number) for number in range(WINDOW * 2 + 7)]
    try:
        assert await transport.send([message_of(event, "cef") for event in events]) == []
        assert await transport.send([message_of(make_alert(), "ocsf")]) == []
    finally:
        await transport.close()
    assert transport.acknowledged is True
    received = await rsyslog.wait_for(len(events) + 1)
    assert [event_id(row) for row in received[: len(events)]] == [event.id for event in events]
    assert {row["input"] for row in received} == {"relp"}
    assert received[-1]["msgid"] == "alert"


async def test_relp_after_a_restart_opens_a_new_session(rsyslog: Rsyslog) -> None:
    transport = open_transport(TransportConfig("relp", f"127.0.0.1:{rsyslog.relp_port}", OPTIONS))
    try:
        await transport.send([message_of(make_event(1))])
        await rsyslog.stop()
        # The session ended (rsyslog said serverclose): retry; then nothing listens: destination down.
        with pytest.raises(RetryLater, match="serverclose"):
            await transport.send([message_of(make_event(2))])
        with pytest.raises(DestinationDown):
            await transport.send([message_of(make_event(2))])
        await rsyslog.start()
        await transport.send([message_of(make_event(2))])
    finally:
        await transport.close()
    received = await rsyslog.wait_for(2)
    assert [event_id(row) for row in received] == ["evt-000001", "evt-000002"]


async def test_relp_refused_connection_is_destination_down() -> None:
    transport = open_transport(TransportConfig("relp", f"127.0.0.1:{free_port()}", OPTIONS))
    with pytest.raises(DestinationDown, match="cannot connect"):
        await transport.send([message_of(make_event())])


async def _fake_relp_server(answer: bytes) -> tuple[asyncio.Server, int]:
    """A RELP peer that accepts the session and answers each syslog frame with ``answer`` data."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                txnr, command, _ = await read_frame(reader)
                if command == b"open":
                    writer.write(relp_frame(txnr, b"rsp", b"200 OK\nrelp_version=0\ncommands=syslog"))
                elif command == b"syslog":
                    writer.write(
                        relp_frame(txnr, b"rsp", answer) if answer else relp_frame(0, b"serverclose")
                    )
                await writer.drain()
        except Exception:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("answer", [b"500 queue full", b""], ids=["non-200", "serverclose"])
async def test_relp_refusal_or_serverclose_is_retry_later(answer: bytes) -> None:
    server, port = await _fake_relp_server(answer)
    transport = open_transport(TransportConfig("relp", f"127.0.0.1:{port}", OPTIONS))
    try:
        with pytest.raises(RetryLater):
            await transport.send([message_of(make_event())])
    finally:
        await transport.close()
        server.close()
