"""Line accounting: blank and whitespace-only lines are keep-alives alike, and error line numbers
count every line received, so an agent can find the line an error is about."""

from __future__ import annotations

from tests.support.database import Organization
from tests.support.ingest import RawClient, RawFactory, ServerHandle, hello_message


async def test_whitespace_only_lines_are_ignored_like_blank_lines(raw: RawClient) -> None:
    await raw.write(b"\n \n\t\n \r\n   \t \n")
    await raw.send({"type": "ping"})
    assert await raw.receive() == {"type": "pong"}


async def test_error_line_numbers_count_blank_and_whitespace_lines(raw: RawClient) -> None:
    # The hello was line 1; then a blank line, a line of spaces, a bad line.
    await raw.write(b"\n   \nnot json\n")
    error = await raw.receive()
    assert (error["code"], error["line"]) == ("invalid_json", 4)


async def test_blank_lines_before_the_hello_are_counted(
    server: ServerHandle, raw_factory: RawFactory, org: Organization
) -> None:
    raw = await raw_factory(server.port, hello=False)
    await raw.write(b"\n \n")
    await raw.send(hello_message(org))
    assert (await raw.receive())["type"] == "welcome"
    await raw.write(b"[]\n")
    error = await raw.receive()
    assert (error["code"], error["line"]) == ("invalid_json", 4)


async def test_too_long_line_counts_as_one_line(server: ServerHandle, raw: RawClient) -> None:
    await raw.write(b"x" * (server.settings.ingest.max_line_bytes + 10) + b"\n" + b"nope\n")
    first, second = await raw.receive(), await raw.receive()
    assert (first["code"], first["line"]) == ("line_too_long", 2)
    assert (second["code"], second["line"]) == ("invalid_json", 3)
