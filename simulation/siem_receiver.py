"""The demo's SIEM: a syslog receiver over TCP that writes every message it gets as one line to a file.

Plain Python asyncio, so the demo needs nothing installed. It reads RFC 6587 framing: octet
counting (``LEN SP MSG``, what the forwarders send) and, for a hand-typed test, messages ending
with a newline. Each message becomes one line of the output file (a newline inside a message
is written as ``\\n``), flushed as it arrives, so ``tail -f`` shows what the forwarder delivered.

    python -m simulation.siem_receiver --port 6514 --output var/demo/siem.log

No Textual, no database: it knows nothing of the firewall, like a real receiver. It stops on
SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Final

#: The longest message accepted; a larger length prefix is a broken sender, whose connection is closed.
MAX_MESSAGE_BYTES: Final = 1024 * 1024
#: The longest length prefix: the digits of MAX_MESSAGE_BYTES.
MAX_LENGTH_DIGITS: Final = len(str(MAX_MESSAGE_BYTES))


class FramingError(Exception):
    """The sender does not speak RFC 6587: its connection is closed."""


async def read_message(reader: asyncio.StreamReader) -> bytes | None:
    """The next message of the connection, or None at its end. Raises FramingError on bad framing."""
    first = await reader.read(1)
    if not first:
        return None
    if first == b"<":  # non-transparent framing: the message runs to the newline
        line = await reader.readuntil(b"\n")
        return (first + line).rstrip(b"\r\n")
    if not first.isdigit():
        raise FramingError(f"a frame starts with {first!r}, neither a length nor '<'")
    digits = first
    while True:
        byte = await reader.readexactly(1)
        if byte == b" ":
            break
        if not byte.isdigit() or len(digits) >= MAX_LENGTH_DIGITS:
            raise FramingError("the length of a frame is not a number followed by a space")
        digits += byte
    length = int(digits)
    if length > MAX_MESSAGE_BYTES:
        raise FramingError(f"a frame of {length} bytes is larger than {MAX_MESSAGE_BYTES}")
    return await reader.readexactly(length)


def as_line(message: bytes) -> str:
    """The message as one line of text: invalid UTF-8 replaced, newlines written as ``\\n``."""
    text = message.decode("utf-8", errors="replace")
    return text.replace("\r", "\\r").replace("\n", "\\n") + "\n"


class SiemReceiver:
    """Accepts syslog connections and appends every message to ``output`` as one line."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.messages = 0
        self._file: IO[str] | None = None
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Open the output file, listen; the port listened on (``port`` 0: any free one)."""
        self._file = self._open_output()
        self._server = await asyncio.start_server(self._on_connect, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    def _open_output(self) -> IO[str]:
        # A line per message, written as it comes: a moment's blocking on a local file is what the demo
        # can afford, and keeps the receiver plain.
        self.output.parent.mkdir(parents=True, exist_ok=True)
        return open(self.output, "a", encoding="utf-8")  # closed in close()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            while (message := await read_message(reader)) is not None:
                assert self._file is not None
                self._file.write(as_line(message))
                self._file.flush()
                self.messages += 1
        except FramingError as error:
            print(f"siem receiver: closing {peer}: {error}", file=sys.stderr, flush=True)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # the sender went away mid-frame; it resends after reconnecting
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._file is not None:
            self._file.close()


async def serve(host: str, port: int, output: Path) -> None:
    """Receive until SIGTERM or SIGINT."""
    receiver = SiemReceiver(output)
    bound = await receiver.start(host, port)
    print(f"siem receiver listening on {host}:{bound}, writing to {output}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await receiver.close()
    print(f"siem receiver stopped after {receiver.messages} messages", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulation.siem_receiver",
        description="A syslog receiver (RFC 6587 over TCP) writing each message as one line to a file.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=6514, help="TCP port, 0 for any (default 6514)")
    parser.add_argument("--output", type=Path, required=True, help="the file the messages are appended to")
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.host, args.port, args.output))
    except OSError as error:
        print(f"error: siem receiver: {error.strerror or error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
