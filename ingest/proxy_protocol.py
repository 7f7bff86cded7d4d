"""The PROXY protocol (v2 binary, v1 text): who the client is when a load balancer relays its connection.

HAProxy in TCP mode (``send-proxy-v2``) opens its own connection to a server, so the server sees the
balancer's address; the header it writes first says whose connection it relays. With
``INGEST_PROXY_PROTOCOL`` on, a connection from a peer in ``INGEST_TRUSTED_PROXIES`` must start with
one header, before TLS and before the hello (ingest/connection.py). The parsers here are pure
(bytes in, a :class:`ProxyHeader` or a :class:`ProxyHeaderError` out); :func:`read_proxy_header`
reads exactly one header from a stream, bounded in size and time, and not one byte past it.

Specification: https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from db.settings import TrustedProxies
from ingest.protocol import ProtocolError

#: The twelve bytes every v2 header starts with (chosen never to begin a valid text protocol line).
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
#: Signature, version and command, family and transport, payload length.
V2_FIXED_BYTES: Final = 16
#: Largest v2 payload accepted: the addresses (216 bytes at most, for UNIX sockets) and the TLVs a
#: proxy adds (ALPN, authority, unique id, TLS details). A peer announcing more is not a sane proxy.
V2_MAX_PAYLOAD_BYTES: Final = 2048
V1_PREFIX: Final = b"PROXY "
#: The v1 line's longest form, ``PROXY UNKNOWN`` with two IPv6 addresses and ports, CRLF included.
V1_MAX_BYTES: Final = 107
#: The error code of a connection refused for its PROXY header (missing, malformed, or untrusted peer).
PROXY_REFUSED: Final = "proxy_refused"

_V2_LOCAL = 0x0
_V2_PROXY = 0x1
_TCP4 = 0x11
_TCP6 = 0x21
_UNSPEC = 0x00
_ADDRESS_BYTES = {_TCP4: 12, _TCP6: 36}

Address = tuple[str, int]


class ProxyHeaderError(ValueError):
    """The bytes are not one well-formed PROXY header of a TCP connection; the message says why."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """One parsed header: the relayed client's address, or None for the proxy's own connection.

    ``source`` is None for a v2 ``LOCAL`` command (HAProxy's health checks), a v1 ``UNKNOWN`` line
    and a v2 ``PROXY`` of an unspecified family: the connection's own addresses then stand.
    """

    version: int
    source: Address | None = None
    destination: Address | None = None

    @property
    def local(self) -> bool:
        """True when the header names no client: the connection is the proxy's own."""
        return self.source is None


# --- parsing, without I/O --------------------------------------------------------------------------


def v2_payload_length(fixed: bytes) -> int:
    """The length of what follows the first 16 bytes of a v2 header; ProxyHeaderError if they are not one."""
    if len(fixed) != V2_FIXED_BYTES or not fixed.startswith(V2_SIGNATURE):
        raise ProxyHeaderError("not a PROXY protocol v2 signature")
    version, command = fixed[12] >> 4, fixed[12] & 0x0F
    if version != 2:
        raise ProxyHeaderError(f"PROXY protocol version {version} is not 2")
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise ProxyHeaderError(f"PROXY protocol v2 command {command} is neither LOCAL nor PROXY")
    (length,) = struct.unpack_from("!H", fixed, 14)
    if length > V2_MAX_PAYLOAD_BYTES:
        raise ProxyHeaderError(f"PROXY protocol v2 header of {length} bytes, over {V2_MAX_PAYLOAD_BYTES}")
    return int(length)


def parse_v2(header: bytes) -> ProxyHeader:
    """A whole v2 header (16 bytes, then the payload its length announces); TLVs are skipped."""
    length = v2_payload_length(header[:V2_FIXED_BYTES])
    if len(header) != V2_FIXED_BYTES + length:
        raise ProxyHeaderError(f"PROXY protocol v2 header announces {length} bytes, has {len(header) - 16}")
    if header[12] & 0x0F == _V2_LOCAL:
        return ProxyHeader(2)  # the proxy's own connection (a health check): addresses are ignored
    family = header[13]
    if family == _UNSPEC:
        return ProxyHeader(2)  # relayed, from an unknown kind of address: the receiver uses its own
    needed = _ADDRESS_BYTES.get(family)
    if needed is None:
        raise ProxyHeaderError(
            f"PROXY protocol v2 family/transport 0x{family:02x} is not TCP over IPv4 or IPv6"
        )
    if length < needed:
        raise ProxyHeaderError(f"PROXY protocol v2 addresses need {needed} bytes, the header has {length}")
    payload = header[V2_FIXED_BYTES:]
    size = 4 if family == _TCP4 else 16
    source = ipaddress.ip_address(payload[:size])
    destination = ipaddress.ip_address(payload[size : 2 * size])
    source_port, destination_port = struct.unpack_from("!HH", payload, 2 * size)
    return ProxyHeader(2, (str(source), source_port), (str(destination), destination_port))


def parse_v1(line: bytes) -> ProxyHeader:
    """A v1 line, ``PROXY TCP4 <src> <dst> <sport> <dport>\\r\\n`` (or ``PROXY UNKNOWN…``)."""
    if len(line) > V1_MAX_BYTES:
        raise ProxyHeaderError(f"PROXY protocol v1 line longer than {V1_MAX_BYTES} bytes")
    if not line.startswith(V1_PREFIX) or not line.endswith(b"\r\n"):
        raise ProxyHeaderError("not a PROXY protocol v1 line")
    try:
        fields = line[:-2].decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise ProxyHeaderError("PROXY protocol v1 line is not ASCII") from None
    if len(fields) >= 2 and fields[1] == "UNKNOWN":
        return ProxyHeader(1)
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError("PROXY protocol v1 line is not 'PROXY TCP4|TCP6 <src> <dst> <sport> <dport>'")
    wanted = ipaddress.IPv4Address if fields[1] == "TCP4" else ipaddress.IPv6Address
    try:
        source, destination = wanted(fields[2]), wanted(fields[3])
        source_port, destination_port = _port(fields[4]), _port(fields[5])
    except ValueError as error:
        raise ProxyHeaderError(f"PROXY protocol v1 line: {error}") from None
    return ProxyHeader(1, (str(source), source_port), (str(destination), destination_port))


def _port(text: str) -> int:
    # The specification forbids leading zeroes and signs: digits only, 0 to 65535.
    if not text.isdigit() or (len(text) > 1 and text[0] == "0") or int(text) > 65535:
        raise ValueError(f"{text!r} is not a port")
    return int(text)


def build_v2(source: Address | None, destination: Address | None = None) -> bytes:
    """A v2 header relaying ``source`` → ``destination`` (TCP), or a ``LOCAL`` one when ``source`` is None.

    What HAProxy's ``send-proxy-v2`` writes; tests and tools use it to speak for a proxy.
    """
    if source is None:
        return V2_SIGNATURE + bytes([0x20 | _V2_LOCAL, _UNSPEC]) + struct.pack("!H", 0)
    assert destination is not None, "a relayed connection has both ends"
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    if src.version != dst.version:
        raise ValueError("both addresses must be IPv4, or both IPv6")
    family = _TCP4 if src.version == 4 else _TCP6
    payload = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
    return V2_SIGNATURE + bytes([0x20 | _V2_PROXY, family]) + struct.pack("!H", len(payload)) + payload


# --- reading from a stream -------------------------------------------------------------------------


#: Reads exactly ``n`` bytes or raises ``asyncio.IncompleteReadError`` (``StreamReader.readexactly``).
ReadExactly = Callable[[int], Awaitable[bytes]]


async def read_proxy_header(read_exactly: ReadExactly) -> ProxyHeader:
    """Read exactly one header (v2 or v1), at most ``V1_MAX_BYTES`` or 16 + ``V2_MAX_PAYLOAD_BYTES``,
    and not one byte past it; the caller bounds the time (``asyncio.timeout``).

    Raises ProxyHeaderError if the stream starts otherwise, and ``asyncio.IncompleteReadError``
    when it ends first (``partial`` empty: nothing was sent at all).
    """
    start = await read_exactly(len(V1_PREFIX))
    if start == V1_PREFIX:
        line = bytearray(start)
        # Byte by byte: what follows the CRLF is the client's and must stay unread.
        while not line.endswith(b"\r\n"):
            if len(line) >= V1_MAX_BYTES:
                raise ProxyHeaderError(f"PROXY protocol v1 line longer than {V1_MAX_BYTES} bytes")
            line += await read_exactly(1)
        return parse_v1(bytes(line))
    if start != V2_SIGNATURE[: len(start)]:
        raise ProxyHeaderError(f"expected a PROXY protocol header, got {_shown(start)}")
    fixed = start + await read_exactly(V2_FIXED_BYTES - len(start))
    length = v2_payload_length(fixed)
    return parse_v2(fixed + await read_exactly(length))


def socket_reader(sock: socket.socket) -> ReadExactly:
    """``read_exactly`` straight from a non-blocking socket, taking from the kernel only what is asked.

    Why not the connection's StreamReader: its transport reads whatever has arrived, and a TLS
    handshake started afterwards never sees the bytes it read past the header (HAProxy often sends
    its header and the agent's ClientHello in one segment).
    """
    loop = asyncio.get_running_loop()

    async def read_exactly(count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = await loop.sock_recv(sock, count - len(data))
            if not chunk:
                raise asyncio.IncompleteReadError(data, count)
            data += chunk
        return data

    return read_exactly


def _shown(data: bytes) -> str:
    return repr(data.decode("ascii", "backslashreplace"))


# --- what the connection does with it --------------------------------------------------------------


def describe(address: Address) -> str:
    """``host:port``, as the server's log names a peer."""
    return f"{address[0]}:{address[1]}"


def proxy_refused(reason: str) -> ProtocolError:
    """The closing error of a connection without a header from a trusted proxy (``proxy_refused``)."""
    return ProtocolError(PROXY_REFUSED, reason)


def untrusted(peer: str, networks: TrustedProxies | None) -> ProtocolError:
    """A connection from a peer outside ``INGEST_TRUSTED_PROXIES`` while the PROXY protocol is on."""
    return proxy_refused(
        f"this server accepts connections only through its load balancer (INGEST_PROXY_PROTOCOL); "
        f"{peer} is not one of INGEST_TRUSTED_PROXIES ({networks or 'none'})"
    )
