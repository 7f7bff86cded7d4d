"""Syslog over TCP, TLS and UDP, and RELP, into a real rsyslogd that writes what it parsed to disk."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from forwarding.transport import DestinationDown, RetryLater, TransportConfig
from forwarding.transports import open_transport
from forwarding.transports.syslog import UDP_MAX_BYTES
from tests.forwarding_tests import make_alert, make_event, message_of
from tests.support.programs import free_port
from tests.support.rsyslog import Rsyslog, make_ca, running_rsyslog

OPTIONS = {"hostname": "fw-test", "timeout_seconds": 5}


@pytest.fixture
async def rsyslog(tmp_path: Path) -> AsyncIterator[Rsyslog]:
    async with running_rsyslog(tmp_path) as server:
        yield server


def sd_param(structured_data: str, name: str) -> str:
    match = re.search(rf' {name}="((?:[^"\\\]]|\\.)*)"', structured_data)
    assert match is not None, structured_data
    return re.sub(r'\\(["\\\]])', r"\1", match.group(1))


async def test_tcp_delivers_octet_counted_rfc5424_in_order(rsyslog: Rsyslog) -> None:
    transport = open_transport(TransportConfig("syslog_tcp", f"127.0.0.1:{rsyslog.tcp_port}", OPTIONS))
    events = [make_event(number, risk_level="red") for number in range(50)]
    try:
        refused = await transport.send([message_of(event, "cef") for event in events])
        await transport.send([message_of(make_alert(2), "json")])
    finally:
        await transport.close()
    assert refused == []
    received = await rsyslog.wait_for(51)
    assert [sd_param(row["structured_data"], "id") for row in received[:50]] == [event.id for event in events]
    first = received[0]
    assert (first["input"], first["hostname"], first["app_name"], first["msgid"]) == (
        "tcp",
        "fw-test",
        "aifw",
        "event",
    )
    assert first["pri"] == str(16 * 8 + 3)
    assert first["msg"] == message_of(events[0], "cef").body
    assert received[50]["msgid"] == "alert"
    assert sd_param(received[50]["structured_data"], "revision") == "2"
    assert transport.acknowledged is False


async def test_tcp_escapes_structured_data_the_receiver_parses(rsyslog: Rsyslog) -> None:
    hostile = 'org "quoted" \\ and ] bracket'
    transport = open_transport(TransportConfig("syslog_tcp", f"127.0.0.1:{rsyslog.tcp_port}", OPTIONS))
    try:
        await transport.send([message_of(make_event(organization_id=hostile))])
    finally:
        await transport.close()
    (row,) = await rsyslog.wait_for(1)
    # rsyslog found the message after the structured data: the escapes kept the SD element closed.
    assert row["msg"].startswith('{"type":"event"')
    assert sd_param(row["structured_data"], "org") == hostile


async def test_refused_connection_is_destination_down() -> None:
    transport = open_transport(TransportConfig("syslog_tcp", f"127.0.0.1:{free_port()}", OPTIONS))
    with pytest.raises(DestinationDown, match="cannot connect"):
        await transport.send([message_of(make_event())])


async def test_unknown_host_is_destination_down() -> None:
    transport = open_transport(TransportConfig("syslog_tcp", "no-such-host.invalid:514", OPTIONS))
    with pytest.raises(DestinationDown, match="no-such-host.invalid"):
        await transport.send([message_of(make_event())])


async def test_receiver_restart_is_retry_later_then_delivers_again(rsyslog: Rsyslog) -> None:
    transport = open_transport(TransportConfig("syslog_tcp", f"127.0.0.1:{rsyslog.tcp_port}", OPTIONS))
    try:
        await transport.send([message_of(make_event(1))])
        await rsyslog.wait_for(1)
        await rsyslog.stop()
        await rsyslog.start()
        with pytest.raises(RetryLater) as caught:
            await transport.send([message_of(make_event(2))])
        assert caught.value.retry_after == 0
        await transport.send([message_of(make_event(2))])
    finally:
        await transport.close()
    received = await rsyslog.wait_for(2)
    assert [sd_param(row["structured_data"], "id") for row in received] == ["evt-000001", "evt-000002"]


async def test_tls_verifies_the_server_and_delivers(rsyslog: Rsyslog) -> None:
    options = {**OPTIONS, "ca_file": str(rsyslog.pki.ca_cert)}
    transport = open_transport(TransportConfig("syslog_tls", f"127.0.0.1:{rsyslog.tls_port}", options))
    try:
        await transport.send([message_of(make_event(number)) for number in range(5)])
    finally:
        await transport.close()
    received = await rsyslog.wait_for(5)
    assert {row["input"] for row in received} == {"tls"}
    assert [sd_param(row["structured_data"], "id") for row in received] == [
        make_event(n).id for n in range(5)
    ]


async def test_tls_with_another_ca_is_destination_down(rsyslog: Rsyslog, tmp_path: Path) -> None:
    other_ca, _, _ = make_ca(tmp_path, "another CA")
    options = {**OPTIONS, "ca_file": str(other_ca)}
    transport = open_transport(TransportConfig("syslog_tls", f"127.0.0.1:{rsyslog.tls_port}", options))
    with pytest.raises(DestinationDown, match="TLS"):
        await transport.send([message_of(make_event())])


async def test_tls_checks_the_server_name(rsyslog: Rsyslog) -> None:
    options = {**OPTIONS, "ca_file": str(rsyslog.pki.ca_cert), "server_name": "siem.example.com"}
    transport = open_transport(TransportConfig("syslog_tls", f"127.0.0.1:{rsyslog.tls_port}", options))
    with pytest.raises(DestinationDown, match="TLS"):
        await transport.send([message_of(make_event())])


async def test_tls_client_certificate_with_the_key_as_secret(rsyslog: Rsyslog) -> None:
    pki = rsyslog.pki
    options = {**OPTIONS, "ca_file": str(pki.ca_cert), "client_cert_file": str(pki.client_cert)}
    config = TransportConfig(
        "syslog_tls", f"127.0.0.1:{rsyslog.tls_client_auth_port}", options, secret=pki.client_key.read_text()
    )
    transport = open_transport(config)
    try:
        await transport.send([message_of(make_alert())])
    finally:
        await transport.close()
    (row,) = await rsyslog.wait_for(1)
    assert row["input"] == "tls_client_auth"


async def test_bad_client_key_is_destination_down_without_the_secret(rsyslog: Rsyslog) -> None:
    pki = rsyslog.pki
    secret = "-----BEGIN PRIVATE KEY-----\nnot-a-key-but-secret-text\n-----END PRIVATE KEY-----\n"
    options = {**OPTIONS, "ca_file": str(pki.ca_cert), "client_cert_file": str(pki.client_cert)}
    transport = open_transport(
        TransportConfig("syslog_tls", f"127.0.0.1:{rsyslog.tls_client_auth_port}", options, secret=secret)
    )
    with pytest.raises(DestinationDown) as caught:
        await transport.send([message_of(make_event())])
    assert "not-a-key-but-secret-text" not in str(caught.value)


async def test_udp_sends_one_datagram_per_message(rsyslog: Rsyslog) -> None:
    transport = open_transport(TransportConfig("syslog_udp", f"127.0.0.1:{rsyslog.udp_port}", OPTIONS))
    try:
        refused = await transport.send([message_of(make_event(number)) for number in range(3)])
    finally:
        await transport.close()
    assert refused == []
    received = await rsyslog.wait_for(3)
    assert sorted(sd_param(row["structured_data"], "id") for row in received) == [
        make_event(n).id for n in range(3)
    ]
    assert {row["input"] for row in received} == {"udp"}


async def test_udp_refuses_a_message_too_large_for_a_datagram(rsyslog: Rsyslog) -> None:
    large = make_event(1, log_metadata={"note": "x" * UDP_MAX_BYTES})
    transport = open_transport(TransportConfig("syslog_udp", f"127.0.0.1:{rsyslog.udp_port}", OPTIONS))
    try:
        refused = await transport.send([message_of(large), message_of(make_event(2))])
    finally:
        await transport.close()
    assert [(message.item.key, "UDP limit" in reason) for message, reason in refused] == [(large.id, True)]
    (row,) = await rsyslog.wait_for(1)
    assert sd_param(row["structured_data"], "id") == "evt-000002"


def test_bad_address_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="host:port"):
        open_transport(TransportConfig("syslog_tcp", "localhost", OPTIONS))
    with pytest.raises(ValueError, match="brackets"):
        open_transport(TransportConfig("syslog_tcp", "::1:514", OPTIONS))
    with pytest.raises(ValueError, match="unknown transport"):
        open_transport(TransportConfig("carrier_pigeon", "a:1", OPTIONS))
