"""Framing: a byte stream cut into lines of bounded length, never holding a longer one in memory."""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable
from typing import Final, Literal

#: Bytes asked of the socket at once; a connection's buffer stays below a line plus one of these.
READ_CHUNK_BYTES: Final = 64 * 1024


class TooLong(enum.Enum):
    """The marker :meth:`LineReader.next_line` returns for a line over the limit (it is not bytes)."""

    TOO_LONG = "too_long"


#: Returned once for a line over the limit; the rest of that line is discarded up to its newline.
TOO_LONG: Final = TooLong.TOO_LONG

#: What :meth:`LineReader.next_line` gives: a line, the too-long marker, or None at end of stream.
Line = bytes | Literal[TooLong.TOO_LONG] | None


def is_blank(line: bytes) -> bool:
    """True for an empty or whitespace-only line: agents send them as keep-alives."""
    return not line or line.isspace()


class LineReader:
    """Splits a byte stream into lines of at most ``max_line_bytes``, never holding a longer one.

    ``next_line()`` returns the line without its ``\\n`` (and ``\\r``), ``TOO_LONG``
    once for a line over the limit (then discards the rest of it up to its
    newline), or ``None`` at end of stream (a partial last line is dropped).
    Lines are cut one at a time from the buffer, so memory per connection stays
    below ``max_line_bytes`` plus one read chunk. ``unfinished_since`` is when the
    reader started waiting for the rest of a line (``None`` between lines): the
    server times lines out, and sheds the connection whose line is oldest.
    """

    def __init__(
        self,
        read_chunk: Callable[[], Awaitable[bytes]],
        max_line_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read_chunk = read_chunk
        #: May change between lines (a connection's limit grows once it has said hello).
        self.max_line_bytes = max_line_bytes
        self._clock = clock
        self._buffer = bytearray()
        self._start = 0
        self._discarding = False
        self.high_water_bytes = 0
        self.unfinished_since: float | None = None

    async def next_line(self) -> Line:
        """The next line, ``TOO_LONG`` for one over the limit, or None at end of stream."""
        while True:
            line = self._take()
            if line is not None:
                self.unfinished_since = None
                return line
            if self.unfinished_since is None and (self._discarding or self._buffer):
                self.unfinished_since = self._clock()
            data = await self._read_chunk()
            if not data:
                return None
            self._buffer += data
            self.high_water_bytes = max(self.high_water_bytes, len(self._buffer))

    def _take(self) -> Line:
        """The next complete line in the buffer, or None (the buffer then holds only a partial line)."""
        buffer = self._buffer
        if self._discarding:
            newline = buffer.find(b"\n", self._start)
            if newline < 0:
                buffer.clear()
                self._start = 0
                return None
            self._discarding = False
            self._start = newline + 1
        start = self._start
        newline = buffer.find(b"\n", start)
        if newline >= 0:
            end = newline - 1 if newline > start and buffer[newline - 1] == 13 else newline
            self._start = newline + 1
            return TOO_LONG if end - start > self.max_line_bytes else bytes(buffer[start:end])
        del buffer[:start]
        self._start = 0
        # +1: a line of exactly the limit may wait here for the "\n" after its "\r".
        if len(buffer) > self.max_line_bytes + 1:
            buffer.clear()
            self._discarding = True
            return TOO_LONG
        return None
