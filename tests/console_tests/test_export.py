"""Export of the filtered view: the file holds exactly the filtered rows, in CSV and in JSON Lines; the dialog
asks before replacing a file, refuses the database and the data folder, and every export is audited."""

from __future__ import annotations

import asyncio
import csv
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from textual.pilot import Pilot

from console.dialogs.confirm import ConfirmScreen
from console.dialogs.export import ExportScreen
from console.screens.login import LoginScreen
from console.sections.logs import LogsSection
from db import logs
from db.engine import new_sessionmaker, sqlite_path
from db.logs import LogFilter
from db.models import AuditEvent, User
from db.rights import Actor
from db.settings import Settings
from tests.support.console import (
    add_console_user,
    newest_first,
    open_logs,
    press_and_settle,
    pump_until,
    running,
    settle,
    sign_in,
)
from tests.support.database import make_event, store_logs


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
    await add_console_user(engine, "alice")
    expected = [e for e in events if e["risk_level"] == "red"]
    target = tmp_path / f"red.{fmt}"
    async with running(app_factory()) as pilot:
        await sign_in(pilot, "alice")
        section = await open_logs(pilot)
        section.apply_filters(LogFilter(risk_levels=frozenset({"red"})))
        await settle(pilot)
        await press_and_settle(pilot, "e")
        dialog = pilot.app.screen
        assert isinstance(dialog, ExportScreen)
        dialog.query_one("#export-format").value = fmt
        await settle(pilot)
        dialog.query_one("#export-path").value = str(target)
        dialog.query_one("#export-path").focus()
        await press_and_settle(pilot, "enter")
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
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary file left beside it


async def test_export_streams_in_chunks_with_progress_and_the_same_content(
    engine: AsyncEngine, settings: Settings, tmp_path: Path
) -> None:
    await store_logs(engine, events_for_export())
    seen: list[tuple[int, int]] = []
    common = {"filters": LogFilter(), "fmt": "jsonl", "settings": settings, "actor": Actor.cli()}
    async with new_sessionmaker(engine)() as session:
        whole = await logs.export(session=session, path=tmp_path / "a.jsonl", **common)
        chunked = await logs.export(
            session=session, path=tmp_path / "b.jsonl", chunk=7, progress=lambda *p: seen.append(p), **common
        )
    assert whole == chunked == 45
    assert seen == [(0, 45), (7, 45), (14, 45), (21, 45), (28, 45), (35, 45), (42, 45), (45, 45)]
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


# -- the dialog: where files go, what it refuses, what it asks ---------------------------------------


async def open_export_dialog(pilot: Pilot[Any]) -> tuple[LogsSection, ExportScreen]:
    section = await open_logs(pilot)
    await press_and_settle(pilot, "e")
    dialog = pilot.app.screen
    assert isinstance(dialog, ExportScreen)
    return section, dialog


async def submit(pilot: Pilot[Any], dialog: ExportScreen, path: Path | str) -> None:
    dialog.query_one("#export-path").value = str(path)
    dialog.query_one("#export-path").focus()
    await press_and_settle(pilot, "enter")


def error_of(dialog: ExportScreen) -> str:
    return str(dialog.query_one("#export-error").render())


async def export_audit_rows(engine: AsyncEngine) -> list[AuditEvent]:
    async with new_sessionmaker(engine)() as session:
        statement = select(AuditEvent).where(AuditEvent.action == "logs.export")
        return list((await session.scalars(statement)).all())


async def test_the_proposed_file_is_in_the_export_folder_and_a_bare_name_goes_there(
    engine: AsyncEngine, app_factory, tmp_path: Path
) -> None:
    await store_logs(engine, events_for_export())
    await add_console_user(engine, "alice")
    async with running(app_factory(export_dir=tmp_path)) as pilot:
        await sign_in(pilot, "alice")
        section, dialog = await open_export_dialog(pilot)
        proposed = Path(dialog.query_one("#export-path").value)
        assert proposed.parent == tmp_path
        assert proposed.name.startswith("aifw-logs-")
        assert proposed.suffix == ".csv"
        await submit(pilot, dialog, "bare.csv")
        assert section.last_export == (tmp_path / "bare.csv", 45)


async def test_without_an_export_folder_the_home_folder_is_proposed(
    engine: AsyncEngine, app_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    await add_console_user(engine, "alice")
    async with running(app_factory(export_dir=None)) as pilot:
        await sign_in(pilot, "alice")
        _, dialog = await open_export_dialog(pilot)
        assert Path(dialog.query_one("#export-path").value).parent == tmp_path


async def test_the_dialog_asks_before_replacing_and_no_leaves_the_old_file_byte_identical(
    engine: AsyncEngine, app_factory, tmp_path: Path
) -> None:
    await store_logs(engine, events_for_export())
    await add_console_user(engine, "alice")
    target = tmp_path / "logs.csv"
    target.write_bytes(b"last week's export\n")
    target.chmod(0o644)
    async with running(app_factory()) as pilot:
        await sign_in(pilot, "alice")
        section, dialog = await open_export_dialog(pilot)
        await submit(pilot, dialog, target)
        question = pilot.app.screen
        assert isinstance(question, ConfirmScreen)
        assert question.question == f"{target} exists: replace it?"
        await press_and_settle(pilot, "n")
        assert pilot.app.screen is dialog
        assert "left as it is" in error_of(dialog)
        assert target.read_bytes() == b"last week's export\n"
        assert section.last_export is None
        assert await export_audit_rows(engine) == []
        await submit(pilot, dialog, target)
        await press_and_settle(pilot, "y")
        assert section.last_export == (target, 45)
    assert target.read_text(encoding="utf-8").startswith("id,timestamp,")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs.csv"]


async def test_the_dialog_refuses_the_live_database(
    engine: AsyncEngine, app_factory, settings: Settings, backend: str
) -> None:
    if backend != "sqlite":
        pytest.skip("only SQLite keeps the database in a file")
    database = sqlite_path(settings)
    assert database is not None
    await store_logs(engine, events_for_export())
    await add_console_user(engine, "viewer")
    async with running(app_factory()) as pilot:
        await sign_in(pilot, "viewer")
        section, dialog = await open_export_dialog(pilot)
        await submit(pilot, dialog, database)
        assert pilot.app.screen is dialog  # no question: the database is never replaced
        assert "is the database" in error_of(dialog)
        assert section.last_export is None
    assert database.read_bytes()[:16] == b"SQLite format 3\x00"


async def test_the_dialog_refuses_the_data_folder_even_through_a_symlink(
    engine: AsyncEngine, app_factory, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "innocent").symlink_to(data)
    await add_console_user(engine, "alice")
    async with running(app_factory(data_dir=data)) as pilot:
        await sign_in(pilot, "alice")
        _, dialog = await open_export_dialog(pilot)
        await submit(pilot, dialog, tmp_path / "innocent" / "logs.csv")
        assert "inside the data folder" in error_of(dialog)
    assert list(data.iterdir()) == []


async def test_a_viewers_export_shows_n_of_the_real_total_and_is_audited(
    engine: AsyncEngine, app_factory, tmp_path: Path
) -> None:
    await store_logs(engine, events_for_export())
    await add_console_user(engine, "alice")
    target = tmp_path / "red.jsonl"
    async with running(app_factory()) as pilot:
        await sign_in(pilot, "alice")
        section = await open_logs(pilot)
        section.apply_filters(LogFilter(risk_levels=frozenset({"red"})))
        await settle(pilot)
        _, dialog = await open_export_dialog(pilot)
        await submit(pilot, dialog, target)
        assert section.export_progress == (22, 22)
        assert section.last_export == (target, 22)
    [row] = await export_audit_rows(engine)
    assert (row.actor, row.source, row.entity_type) == ("alice", "console", "export")
    assert row.changes["filter"] == "risk=red"
    assert (row.changes["rows"], row.changes["file"], row.changes["status"]) == (22, str(target), "completed")


async def test_a_viewer_deactivated_since_sign_in_cannot_export(
    engine: AsyncEngine, app_factory, tmp_path: Path
) -> None:
    await store_logs(engine, events_for_export())
    await add_console_user(engine, "alice")
    target = tmp_path / "logs.csv"
    async with running(app_factory()) as pilot:
        await sign_in(pilot, "alice")
        _, dialog = await open_export_dialog(pilot)
        async with new_sessionmaker(engine)() as session:
            await session.execute(update(User).where(User.username == "alice").values(is_active=False))
            await session.commit()
        await submit(pilot, dialog, target)
        assert any("deactivated" in n.message for n in pilot.app._notifications)
        assert isinstance(pilot.app.screen, LoginScreen)
    assert not target.exists()
    assert await export_audit_rows(engine) == []


async def test_quitting_during_an_export_discards_the_file_and_audits_it_as_cancelled(
    engine: AsyncEngine, app_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store_logs(engine, events_for_export())
    await add_console_user(engine, "alice")
    first_chunk_read = asyncio.Event()
    read_rows = logs.iter_entries

    async def stuck_after_the_first_chunk(**kwargs: Any) -> AsyncIterator[list[Any]]:
        async for rows in read_rows(**kwargs):
            yield rows
            first_chunk_read.set()
            await asyncio.Event().wait()  # a slow disk or database, as long as it takes

    monkeypatch.setattr(logs, "iter_entries", stuck_after_the_first_chunk)
    target = tmp_path / "logs.csv"
    async with running(app_factory()) as pilot:
        await sign_in(pilot, "alice")
        section, dialog = await open_export_dialog(pilot)
        dialog.query_one("#export-path").value = str(target)
        dialog.query_one("#export-path").focus()
        await pilot.press("enter")
        await asyncio.wait_for(first_chunk_read.wait(), 10)
        assert section.busy_with() == "an export"
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(pilot.app.screen, ConfirmScreen)
        await pilot.press("y")
        await pump_until(pilot, lambda: not pilot.app.is_running)
    assert list(tmp_path.iterdir()) == []
    [row] = await export_audit_rows(engine)
    assert (row.actor, row.changes["status"], row.changes["rows"]) == ("alice", "cancelled", 45)
