"""Export of the filtered view: the file holds exactly the filtered rows, in CSV and in JSON Lines."""

from __future__ import annotations

import csv
from pathlib import Path

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from console.screens.export import ExportScreen
from db import logs
from db.engine import new_sessionmaker
from db.logs import LogFilter
from tests.console_tests.conftest import (
    add_user,
    make_event,
    newest_first,
    open_logs,
    running,
    settle,
    sign_in,
    store_logs,
)


def events_for_export() -> list[dict]:
    return [
        make_event(
            index,
            risk_level="red" if index % 2 else "green",
            detected_entity_types=["EMAIL", "IBAN"] if index % 2 else [],
            entity_count=2 if index % 2 else 0,
            log_metadata={"os": "linux", "n": index},
        )
        for index in range(45)
    ]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
async def test_export_from_the_logs_screen_writes_exactly_the_filtered_rows(
    engine: AsyncEngine, app_factory, tmp_path: Path, fmt: str
) -> None:
    events = events_for_export()
    await store_logs(engine, events)
    await add_user(engine, "alice")
    expected = [e for e in events if e["risk_level"] == "red"]
    target = tmp_path / f"red.{fmt}"
    async with running(app_factory()) as pilot:
        await sign_in(pilot, "alice")
        section = await open_logs(pilot)
        section.apply_filters(LogFilter(risk_levels=frozenset({"red"})))
        await settle(pilot)
        await pilot.press("e")
        await settle(pilot)
        dialog = pilot.app.screen
        assert isinstance(dialog, ExportScreen)
        dialog.query_one("#export-format").value = fmt
        await settle(pilot)
        dialog.query_one("#export-path").value = str(target)
        dialog.query_one("#export-path").focus()
        await pilot.press("enter")
        await settle(pilot)
        assert section.last_export == (target, len(expected))
    by_id = {str(e["id"]): e for e in expected}
    if fmt == "csv":
        with target.open(newline="", encoding="utf-8") as handle:
            records = list(csv.DictReader(handle))
        assert [r["id"] for r in records] == [str(i) for i in newest_first(expected)]
        for record in records:
            event = by_id[record["id"]]
            assert record["risk_level"] == "red"
            assert record["user_id"] == event["user_id"]
            assert record["detected_entity_types"] == "EMAIL;IBAN"
            assert orjson.loads(record["log_metadata"]) == event["log_metadata"]
    else:
        records = [orjson.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
        assert [r["id"] for r in records] == [str(i) for i in newest_first(expected)]
        for record in records:
            event = by_id[record["id"]]
            assert record["timestamp"] == event["timestamp"].isoformat()
            assert record["detected_entity_types"] == event["detected_entity_types"]
            assert record["log_metadata"] == event["log_metadata"]
            assert record["prompt_length"] == event["prompt_length"]
    assert not list(tmp_path.glob("*.partial"))


async def test_export_streams_in_chunks_with_progress_and_the_same_content(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    await store_logs(engine, events_for_export())
    seen: list[int] = []
    async with new_sessionmaker(engine)() as session:
        whole = await logs.export(
            session=session, filters=LogFilter(), path=tmp_path / "a.jsonl", fmt="jsonl"
        )
        chunked = await logs.export(
            session=session, filters=LogFilter(), path=tmp_path / "b.jsonl", fmt="jsonl", chunk=7,
            progress=seen.append,
        )  # fmt: skip
    assert whole == chunked == 45
    assert seen == [7, 14, 21, 28, 35, 42, 45]
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
