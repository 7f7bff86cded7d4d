"""A plain syslog receiver for tests: RFC 6587 octet-counted frames over TCP, recorded in arrival order.

``stop()`` closes the listening socket and every connection (an outage: connections are refused);
``start()`` listens again on the same port. Messages are kept across restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import re


class SyslogReceiver:
    """Receives octet-counted syslog frames on 127.0.0.1; ``messages`` holds each frame's text."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.messages: list[str] = []
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._arrived = asyncio.Event()

    async def start(self) -> SyslogReceiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and drop every connection: frames in flight are lost, as in a crash."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while True:
                length = await reader.readuntil(b" ")
                frame = await reader.readexactly(int(length[:-1]))
                self.messages.append(frame.decode("utf-8", "replace"))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    def ids(self, pattern: str = r'id="([^"]+)"') -> list[str]:
        """The ids found in the messages (by default the ``id`` structured-data parameter), in order."""
        found = []
        for message in self.messages:
            match = re.search(pattern, message)
            if match is not None:
                found.append(match.group(1))
        return found

    async def close(self) -> None:
        await self.stop()
        with contextlib.suppress(Exception):
            await asyncio.sleep(0)
