"""Syslog transports: RFC 5424 over TCP with octet-counting framing (RFC 6587), over TLS (RFC 5425),
and over UDP (RFC 5426, no delivery promise).

Over TCP and TLS, "delivered" means written to a connection the receiver had not closed: nothing
comes back. So when the receiver has closed the connection since the last batch, ``send`` says
RetryLater (retry_after 0) instead of writing, and the delivery loop starts again from its resend
position: the batch that may have been lost with the old connection is sent again.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Sequence

from forwarding.transport import DestinationDown, Message, RetryLater, TransportConfig
from forwarding.transports.streams import (
    Envelope,
    close_stream,
    open_stream,
    parse_address,
    timeout_of,
    tls_context,
)

#: Largest datagram sent over UDP: RFC 5426 asks receivers for 480 (IPv4) and recommends 2048; a
#: larger one is often cut by the receiver or dropped in fragments, so it is refused here instead.
UDP_MAX_BYTES = 2048


def octet_counted(frame: bytes) -> bytes:
    """RFC 6587 octet counting: ``<length> <message>``."""
    return b"%d %s" % (len(frame), frame)


class SyslogStreamTransport:
    """RFC 5424 over TCP (``tls=False``) or TLS, octet-counted, one connection kept open."""

    acknowledged = False

    def __init__(self, config: TransportConfig, *, tls: bool) -> None:
        self._host, self._port = parse_address(config.address)
        self.envelope = Envelope.from_options(config.options)
        self._timeout = timeout_of(config)
        self._config = config
        self._tls = tls
        self._context: ssl.SSLContext | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def _where(self) -> str:
        return f"{self._host}:{self._port}"

    async def _connect(self) -> asyncio.StreamWriter:
        if self._tls and self._context is None:
            self._context = tls_context(self._config)
        server_name = self._config.options.get("server_name") if self._tls else None
        self._reader, self._writer = await open_stream(
            self._host,
            self._port,
            within=self._timeout,
            context=self._context,
            server_name=str(server_name) if server_name else None,
        )
        return self._writer

    def _peer_closed(self) -> bool:
        if self._writer is None:
            return False
        return self._writer.is_closing() or (self._reader is not None and self._reader.at_eof())

    async def send(self, messages: Sequence[Message]) -> list[tuple[Message, str]]:
        """Write the batch as octet-counted frames and wait until the socket took it."""
        await self.send_frames(b"".join(octet_counted(self.envelope.wrap(message)) for message in messages))
        return []

    async def send_frames(self, data: bytes) -> None:
        """Write octet-counted RFC 5424 frames made elsewhere (PostgreSQL: forwarding/formats/syslog_sql.py)
        and wait until the socket took them; the outcomes are :meth:`send`'s."""
        if self._peer_closed():
            await self.close()
            raise RetryLater(f"{self._where} closed the connection: sending the batch again", retry_after=0)
        writer = self._writer or await self._connect()
        try:
            writer.write(data)
            async with asyncio.timeout(self._timeout):
                await writer.drain()
        except TimeoutError:
            await self.close()
            raise RetryLater(f"{self._where} did not take the batch within {self._timeout:g} s") from None
        except ssl.SSLError as error:
            await self.close()
            raise DestinationDown(f"TLS with {self._where} failed: {error.reason or error}") from None
        except OSError as error:
            await self.close()
            raise RetryLater(f"connection to {self._where} lost: {error.strerror or error}") from None

    async def close(self) -> None:
        """Close the connection; the next send connects again."""
        writer, self._writer, self._reader = self._writer, None, None
        await close_stream(writer)


class _DatagramSender(asyncio.DatagramProtocol):
    """Nothing comes back over syslog UDP; an ICMP "port unreachable" is ignored, as UDP promises nothing."""

    def error_received(self, exc: Exception) -> None:
        pass


class SyslogUdpTransport:
    """RFC 5424 over UDP, one datagram per message: sent, never acknowledged."""

    acknowledged = False

    def __init__(self, config: TransportConfig) -> None:
        self._host, self._port = parse_address(config.address)
        self._envelope = Envelope.from_options(config.options)
        self._transport: asyncio.DatagramTransport | None = None

    async def _connect(self) -> asyncio.DatagramTransport:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                _DatagramSender, remote_addr=(self._host, self._port)
            )
        except socket.gaierror as error:
            raise DestinationDown(f"cannot resolve {self._host}: {error.strerror}") from None
        except OSError as error:
            where = f"{self._host}:{self._port}"
            raise DestinationDown(f"cannot send to {where}: {error.strerror or error}") from None
        self._transport = transport
        return transport

    async def send(self, messages: Sequence[Message]) -> list[tuple[Message, str]]:
        """Send one datagram per message; messages over UDP_MAX_BYTES are returned as refused."""
        transport = self._transport or await self._connect()
        refused: list[tuple[Message, str]] = []
        for message in messages:
            datagram = self._envelope.wrap(message)
            if len(datagram) > UDP_MAX_BYTES:
                refused.append(
                    (
                        message,
                        f"message of {len(datagram)} bytes is over the {UDP_MAX_BYTES}-byte UDP limit: "
                        "use syslog over TCP, TLS or RELP for it",
                    )
                )
                continue
            transport.sendto(datagram)
        return refused

    async def close(self) -> None:
        """Close the socket."""
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
