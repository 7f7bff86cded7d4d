"""The PROXY protocol parser and reader without a socket: v2 (TCP4, TCP6, LOCAL), v1, bounds, bad input."""

from __future__ import annotations

import asyncio
import socket

import pytest

from db.settings import SettingsError, load_settings
from ingest.proxy_protocol import (
    V1_MAX_BYTES,
    V2_MAX_PAYLOAD_BYTES,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    build_v2,
    parse_v1,
    parse_v2,
    read_proxy_header,
    socket_reader,
)

#: What HAProxy 2.6 wrote for a relayed connection 127.0.0.1:58276 → 127.0.0.1:37675 (captured).
HAPROXY_TCP4 = V2_SIGNATURE + b"!\x11\x00\x0c\x7f\x00\x00\x01\x7f\x00\x00\x01\xe3\xa4\x93+"
#: And for its health check, followed by the probe's line (captured): a LOCAL header, no addresses.
HAPROXY_CHECK = V2_SIGNATURE + b" \x00\x00\x00" + b'{"type":"health"}\n'


def stream(data: bytes, *, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


def test_haproxys_tcp4_header_gives_the_clients_address() -> None:
    assert parse_v2(HAPROXY_TCP4) == ProxyHeader(2, ("127.0.0.1", 58276), ("127.0.0.1", 37675))


def test_a_tcp6_header_gives_the_clients_address() -> None:
    header = build_v2(("2001:db8::7", 50000), ("2001:db8::1", 7878))
    assert header[13] == 0x21
    assert len(header) == 16 + 36
    assert parse_v2(header) == ProxyHeader(2, ("2001:db8::7", 50000), ("2001:db8::1", 7878))


def test_a_local_header_is_the_proxys_own_connection() -> None:
    header = parse_v2(HAPROXY_CHECK[:16])
    assert header.local
    assert header.source is None


def test_tlvs_after_the_addresses_are_skipped() -> None:
    tcp4 = build_v2(("192.0.2.7", 4242), ("10.0.0.1", 7878))
    tlv = bytes([0x01, 0x00, 0x02]) + b"h2"  # PP2_TYPE_ALPN
    with_tlv = tcp4[:14] + (12 + len(tlv)).to_bytes(2, "big") + tcp4[16:] + tlv
    assert parse_v2(with_tlv).source == ("192.0.2.7", 4242)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12), "version 1 is not 2"),
        (V2_SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12), "command 2"),
        (V2_SIGNATURE + b"\x21\x12\x00\x0c" + bytes(12), "is not TCP"),  # UDP over IPv4
        (V2_SIGNATURE + b"\x21\x31\x00\xd8" + bytes(216), "is not TCP"),  # UNIX stream
        (V2_SIGNATURE + b"\x21\x21\x00\x0c" + bytes(12), "need 36 bytes"),
        (V2_SIGNATURE + b"\x21\x11\x00\x0c" + bytes(11), "announces 12 bytes, has 11"),
        (b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c" + bytes(12), "signature"),
    ],
)
def test_a_malformed_v2_header_is_refused_saying_why(header: bytes, message: str) -> None:
    with pytest.raises(ProxyHeaderError, match=message):
        parse_v2(header)


def test_v1_lines_give_the_clients_address() -> None:
    assert parse_v1(b"PROXY TCP4 192.0.2.7 10.0.0.1 4242 7878\r\n").source == ("192.0.2.7", 4242)
    assert parse_v1(b"PROXY TCP6 2001:db8::7 2001:db8::1 4242 7878\r\n").source == ("2001:db8::7", 4242)
    assert parse_v1(b"PROXY UNKNOWN\r\n").local


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 192.0.2.7 10.0.0.1 4242\r\n",
        b"PROXY TCP4 2001:db8::7 10.0.0.1 4242 7878\r\n",
        b"PROXY TCP4 192.0.2.7 10.0.0.1 04242 7878\r\n",
        b"PROXY TCP4 192.0.2.7 10.0.0.1 65536 7878\r\n",
        b"PROXY UDP4 192.0.2.7 10.0.0.1 4242 7878\r\n",
        b"PROXY TCP4 192.0.2.7 10.0.0.1 4242 7878\n",
        "PROXY TCP4 192.0.2.7 10.0.0.1 4242 787\u0668\r\n".encode(),
    ],
)
def test_a_malformed_v1_line_is_refused(line: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse_v1(line)


async def test_the_reader_takes_the_header_and_not_one_byte_more() -> None:
    reader = stream(HAPROXY_CHECK)
    assert (await read_proxy_header(reader.readexactly)).local
    assert await reader.read() == b'{"type":"health"}\n'
    reader = stream(b"PROXY TCP4 192.0.2.7 10.0.0.1 4242 7878\r\n" + b'{"type":"hello"}\n')
    assert (await read_proxy_header(reader.readexactly)).source == ("192.0.2.7", 4242)
    assert await reader.read() == b'{"type":"hello"}\n'


async def test_a_client_speaking_json_first_is_told_a_header_was_expected() -> None:
    with pytest.raises(ProxyHeaderError, match="expected a PROXY protocol header, got '{\"type'"):
        await read_proxy_header(stream(b'{"type":"hello"}\n').readexactly)


async def test_the_reader_reads_no_more_than_its_bound() -> None:
    endless_v1 = stream(b"PROXY TCP4 " + b"1" * 10_000, eof=False)
    with pytest.raises(ProxyHeaderError, match=f"longer than {V1_MAX_BYTES}"):
        await read_proxy_header(endless_v1.readexactly)
    endless_v1.feed_eof()
    assert len(await endless_v1.read()) == 11 + 10_000 - V1_MAX_BYTES  # the rest is left unread
    huge_v2 = stream(V2_SIGNATURE + b"\x21\x11" + (V2_MAX_PAYLOAD_BYTES + 1).to_bytes(2, "big"), eof=False)
    with pytest.raises(ProxyHeaderError, match=f"over {V2_MAX_PAYLOAD_BYTES}"):
        await read_proxy_header(huge_v2.readexactly)


async def test_a_stream_ending_early_says_whether_anything_was_sent() -> None:
    with pytest.raises(asyncio.IncompleteReadError) as nothing:
        await read_proxy_header(stream(b"").readexactly)
    assert nothing.value.partial == b""
    with pytest.raises(asyncio.IncompleteReadError) as part:
        await read_proxy_header(stream(HAPROXY_TCP4[:20]).readexactly)
    assert part.value.partial != b""


async def test_a_silent_peer_is_ended_by_the_callers_timeout() -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await read_proxy_header(stream(V2_SIGNATURE[:8], eof=False).readexactly)


def test_trusted_proxies_are_networks_and_addresses() -> None:
    proxies = load_settings(
        {"DATABASE_URL": "postgresql://h/d", "INGEST_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7,::1"}
    ).ingest.trusted_proxies
    assert proxies is not None
    assert str(proxies) == "10.0.0.0/8,192.0.2.7/32,::1/128"
    assert proxies.trust("10.20.30.40")
    assert proxies.trust("::ffff:10.1.1.1")
    assert proxies.trust("::1")
    assert not proxies.trust("192.0.2.8")
    assert not proxies.trust("11.0.0.1")
    assert not proxies.trust("nonsense")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"INGEST_PROXY_PROTOCOL": "on"}, "INGEST_PROXY_PROTOCOL .* needs INGEST_TRUSTED_PROXIES"),
        ({"INGEST_TRUSTED_PROXIES": "10.0.0.1/8"}, "INGEST_TRUSTED_PROXIES .* has host bits set"),
        ({"INGEST_TRUSTED_PROXIES": "10.0.0.0/8,haproxy"}, "INGEST_TRUSTED_PROXIES .*'haproxy'"),
        ({"INGEST_TRUSTED_PROXIES": ","}, "INGEST_TRUSTED_PROXIES must name at least one"),
    ],
)
def test_proxy_settings_that_cannot_work_are_one_line_naming_them(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings({"DATABASE_URL": "postgresql://h/d", **env})


async def test_the_socket_reader_leaves_what_follows_the_header_in_the_socket() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setblocking(False)
        theirs.sendall(HAPROXY_TCP4 + b"\x16\x03\x01 the agent's first bytes")  # one segment, as HAProxy
        assert (await read_proxy_header(socket_reader(ours))).source == ("127.0.0.1", 58276)
        assert ours.recv(100) == b"\x16\x03\x01 the agent's first bytes"
        theirs.close()
        with pytest.raises(asyncio.IncompleteReadError):
            await read_proxy_header(socket_reader(ours))
