"""RELP (rsyslog's Reliable Event Logging Protocol, as librelp speaks it): RFC 5424 messages, each
acknowledged by the receiver.

Frames are ``TXNR SP COMMAND SP DATALEN [SP DATA] LF``. A session opens with
``1 open … relp_version=0 / relp_software=… / commands=syslog`` and must get ``rsp 200``; each
message goes as ``<txnr> syslog <len> <message>`` and counts as delivered only once its
``<txnr> rsp <len> 200 OK`` arrives. Up to WINDOW messages are outstanding at a time. A non-200
answer, a ``serverclose`` or a lost connection makes the batch RetryLater: nothing of it counts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from forwarding.transport import DestinationDown, Message, RetryLater, TransportConfig
from forwarding.transports.streams import Envelope, close_stream, open_stream, parse_address, timeout_of

#: Messages sent and not yet acknowledged, at most (librelp's default window is 128 too).
WINDOW = 128
#: librelp's transaction numbers go up to 999,999,999 and then start again at 1.
MAX_TXNR = 999_999_999
#: A response we read is small ("200 OK" plus, for open, the offers); a larger one is a fault.
MAX_RESPONSE_BYTES = 64 * 1024
OPEN_OFFERS = b"relp_version=0\nrelp_software=aifw\ncommands=syslog"


class RelpError(Exception):
    """The receiver broke the protocol or closed the session."""


def relp_frame(txnr: int, command: bytes, data: bytes = b"") -> bytes:
    """One RELP frame; no data means no space after the length."""
    if data:
        return b"%d %s %d %s\n" % (txnr, command, len(data), data)
    return b"%d %s 0\n" % (txnr, command)


async def _read_token(reader: asyncio.StreamReader, limit: int = 32) -> bytes:
    token = await reader.readuntil(b" ")
    if len(token) > limit:
        raise RelpError("malformed frame from the receiver")
    return token[:-1]


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes, bytes]:
    """One frame from the receiver: (txnr, command, data)."""
    try:
        txnr_text = await _read_token(reader, 12)
        command = await _read_token(reader, 40)
        length_text = b""
        while True:
            char = await reader.readexactly(1)
            if not char.isdigit():
                break
            length_text += char
        if not txnr_text.isdigit() or not length_text or len(length_text) > 9:
            raise RelpError("malformed frame from the receiver")
        length = int(length_text)
        if length > MAX_RESPONSE_BYTES:
            raise RelpError(f"frame of {length} bytes from the receiver is too large")
        data = b""
        if length:
            if char != b" ":
                raise RelpError("malformed frame from the receiver")
            data = await reader.readexactly(length)
            char = await reader.readexactly(1)
        if char != b"\n":
            raise RelpError("malformed frame from the receiver (no trailer)")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        raise RelpError("the receiver closed the connection") from None
    return int(txnr_text), command, data


def _status(data: bytes) -> tuple[int, str]:
    head = data.split(b"\n", 1)[0].decode("utf-8", "replace")
    code = head[:3]
    return (int(code) if code.isdigit() else 0), head


class RelpTransport:
    """RFC 5424 messages over RELP: delivered means acknowledged by the receiver."""

    acknowledged = True

    def __init__(self, config: TransportConfig) -> None:
        self._host, self._port = parse_address(config.address)
        self._envelope = Envelope.from_options(config.options)
        self._timeout = timeout_of(config)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._txnr = 0

    @property
    def _where(self) -> str:
        return f"{self._host}:{self._port}"

    def _next_txnr(self) -> int:
        self._txnr = 1 if self._txnr >= MAX_TXNR else self._txnr + 1
        return self._txnr

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await open_stream(self._host, self._port, within=self._timeout)
        self._txnr = 0
        txnr = self._next_txnr()
        try:
            writer.write(relp_frame(txnr, b"open", OPEN_OFFERS))
            async with asyncio.timeout(self._timeout):
                await writer.drain()
                answer_txnr, command, data = await read_frame(reader)
        except (TimeoutError, RelpError, OSError) as error:
            await close_stream(writer)
            reason = "timed out" if isinstance(error, TimeoutError) else str(error)
            raise RetryLater(f"opening a RELP session with {self._where} failed: {reason}") from None
        code, text = _status(data)
        if command != b"rsp" or answer_txnr != txnr or code != 200:
            await close_stream(writer)
            raise DestinationDown(f"{self._where} refused the RELP session: {text or command.decode()}")
        self._reader, self._writer = reader, writer
        return reader, writer

    async def send(self, messages: Sequence[Message]) -> list[tuple[Message, str]]:
        """Send each message and wait for its ``rsp 200``, at most WINDOW outstanding at once."""
        if self._reader is not None and (
            self._reader.at_eof() or self._writer is None or self._writer.is_closing()
        ):
            # The receiver ended an idle session: nothing was outstanding, so a new one loses nothing.
            await self.close(polite=False)
        if self._reader is None or self._writer is None:
            reader, writer = await self._open()
        else:
            reader, writer = self._reader, self._writer
        outstanding: set[int] = set()
        try:
            async with asyncio.timeout(self._timeout + 0.01 * len(messages)):
                for message in messages:
                    while len(outstanding) >= WINDOW:
                        await self._take_response(reader, outstanding)
                    txnr = self._next_txnr()
                    writer.write(relp_frame(txnr, b"syslog", self._envelope.wrap(message)))
                    outstanding.add(txnr)
                    if len(outstanding) % 32 == 0:
                        await writer.drain()
                await writer.drain()
                while outstanding:
                    await self._take_response(reader, outstanding)
        except TimeoutError:
            await self.close(polite=False)
            raise RetryLater(f"{self._where} did not acknowledge the batch within the timeout") from None
        except RelpError as error:
            await self.close(polite=False)
            raise RetryLater(f"RELP session with {self._where} ended: {error}") from None
        except OSError as error:
            await self.close(polite=False)
            raise RetryLater(f"connection to {self._where} lost: {error.strerror or error}") from None
        return []

    async def _take_response(self, reader: asyncio.StreamReader, outstanding: set[int]) -> None:
        txnr, command, data = await read_frame(reader)
        if command == b"serverclose":
            raise RelpError("the receiver closed the session (serverclose)")
        if command != b"rsp" or txnr not in outstanding:
            raise RelpError(f"unexpected {command.decode('ascii', 'replace')!r} for transaction {txnr}")
        code, text = _status(data)
        if code != 200:
            raise RelpError(f"message refused for now: {text}")
        outstanding.discard(txnr)

    async def close(self, *, polite: bool = True) -> None:
        """End the session (with a ``close`` command when the connection is still good)."""
        reader, writer = self._reader, self._writer
        self._reader = self._writer = None
        if writer is None:
            return
        if polite and reader is not None and not writer.is_closing():
            try:
                writer.write(relp_frame(self._next_txnr(), b"close"))
                async with asyncio.timeout(2):
                    await writer.drain()
                    await read_frame(reader)
            except (TimeoutError, RelpError, OSError):
                pass
        await close_stream(writer)
