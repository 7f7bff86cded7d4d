"""The line reader without a socket: lines cut from chunks as a socket would deliver them."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from ingest.framing import TOO_LONG, Line, LineReader, is_blank


class Chunks:
    """A read function that hands out the given chunks, then end of stream (b"")."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks = list(chunks)
        self.reads = 0

    async def __call__(self) -> bytes:
        self.reads += 1
        return self.chunks.pop(0) if self.chunks else b""


async def read_all(reader: LineReader) -> list[Line]:
    lines: list[Line] = []
    while (line := await reader.next_line()) is not None:
        lines.append(line)
    return lines


async def lines_of(chunks: Iterable[bytes], max_line_bytes: int = 100) -> list[Line]:
    return await read_all(LineReader(Chunks(chunks), max_line_bytes))


async def test_lines_in_one_chunk_come_out_one_by_one_without_their_newline() -> None:
    assert await lines_of([b'{"a":1}\n{"b":2}\n']) == [b'{"a":1}', b'{"b":2}']


async def test_a_line_split_across_reads_is_joined() -> None:
    assert await lines_of([b'{"ty', b'pe":"pi', b'ng"}\n']) == [b'{"type":"ping"}']


async def test_each_byte_in_its_own_read_still_makes_the_lines() -> None:
    data = b"one\r\ntwo\n\nthree\n"
    assert await lines_of([bytes([byte]) for byte in data]) == [b"one", b"two", b"", b"three"]


async def test_crlf_is_stripped_but_a_carriage_return_inside_a_line_is_kept() -> None:
    assert await lines_of([b"a\r\nb\rc\n\r\n"]) == [b"a", b"b\rc", b""]


async def test_blank_lines_are_lines_and_is_blank_tells_them_apart() -> None:
    lines = await lines_of([b"\n \t\nx\n"])
    assert lines == [b"", b" \t", b"x"]
    assert [is_blank(line) for line in lines if isinstance(line, bytes)] == [True, True, False]


async def test_a_partial_last_line_at_end_of_stream_is_dropped() -> None:
    assert await lines_of([b"whole\n", b"half"]) == [b"whole"]


async def test_a_line_over_the_limit_is_reported_once_and_the_next_line_is_read() -> None:
    assert await lines_of([b"x" * 11 + b"\nok\n"], max_line_bytes=10) == [TOO_LONG, b"ok"]


async def test_a_line_of_exactly_the_limit_is_accepted_even_with_crlf_split_from_its_newline() -> None:
    assert await lines_of([b"x" * 10 + b"\r", b"\n"], max_line_bytes=10) == [b"x" * 10]


async def test_a_long_line_is_discarded_while_it_arrives_and_never_held_whole() -> None:
    chunks = [b"y" * 64 for _ in range(100)] + [b"\nafter\n"]
    reader = LineReader(Chunks(chunks), 100)
    assert await read_all(reader) == [TOO_LONG, b"after"]
    # The buffer never held more than the limit plus one chunk, though the line was 6,400 bytes.
    assert reader.high_water_bytes <= 100 + 1 + 64


async def test_a_too_long_line_without_an_end_is_reported_before_its_end_arrives() -> None:
    source = Chunks([b"z" * 500])
    reader = LineReader(source, 100)
    assert await reader.next_line() is TOO_LONG
    assert source.reads == 1


async def test_unfinished_since_records_when_the_wait_for_the_rest_began() -> None:
    seen: list[float | None] = []
    now = [5.0]
    chunks = Chunks([b"par", b"tial\n"])

    async def read() -> bytes:
        seen.append(reader.unfinished_since)
        now[0] += 1.0
        return await chunks()

    reader = LineReader(read, 100, clock=lambda: now[0])
    assert await reader.next_line() == b"partial"
    # First read: between lines (None); second read: waiting since the first chunk (t=6).
    assert seen == [None, 6.0]


async def test_the_limit_may_grow_between_lines() -> None:
    reader = LineReader(Chunks([b"a" * 20 + b"\n" + b"b" * 20 + b"\n"]), 10)
    assert await reader.next_line() is TOO_LONG
    reader.max_line_bytes = 50
    assert await reader.next_line() == b"b" * 20


@pytest.mark.parametrize("line", [b"", b" ", b"\t \t", b"\x0b"])
def test_whitespace_only_lines_are_blank(line: bytes) -> None:
    assert is_blank(line)
