"""Exports cannot destroy anything: never the database nor the data folder, never an existing file
unless confirmed, files for their owner only, nothing under the chosen name until complete, and every
export audited."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from db import logs
from db.engine import new_sessionmaker, sqlite_path
from db.exports import ExportFile, ExportFileExists, ExportPathError, check_export_path
from db.logs import LogFilter
from db.models import AuditEvent, User
from db.rights import Actor, NotAllowed
from db.settings import Settings, SettingsError, load_settings
from tests.support.database import make_event, store_logs

ROWS = 45
RED_ROWS = 22  # the odd indexes of range(45)


@pytest.fixture
def settings_here(settings: Settings, tmp_path: Path) -> Settings:
    """The test database's settings with a data folder of this test's own."""
    data = tmp_path / "data"
    data.mkdir()
    return replace(settings, data_dir=data)


@pytest.fixture
async def stored(engine: AsyncEngine) -> None:
    await store_logs(engine, [make_event(i, risk_level="red" if i % 2 else "green") for i in range(ROWS)])


@pytest.fixture
def loose_umask() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


async def add_viewer(engine: AsyncEngine, username: str, *, active: bool = True) -> None:
    async with new_sessionmaker(engine)() as session:
        session.add(
            User(username=username, email=f"{username}@example.com", hashed_password="x", is_active=active)
        )
        await session.commit()


async def run_export(engine: AsyncEngine, settings: Settings, path: Path, **options: Any) -> int:
    options.setdefault("actor", Actor.cli())
    options.setdefault("filters", LogFilter())
    options.setdefault("fmt", "csv")
    async with new_sessionmaker(engine)() as session:
        return await logs.export(session=session, path=path, settings=settings, **options)


async def export_audit_rows(engine: AsyncEngine) -> list[AuditEvent]:
    async with new_sessionmaker(engine)() as session:
        statement = select(AuditEvent).where(AuditEvent.action == "logs.export")
        return list((await session.scalars(statement)).all())


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- where an export may write ---------------------------------------------------------------------


async def test_export_to_the_live_sqlite_database_is_refused_and_the_database_still_works(
    engine: AsyncEngine, settings: Settings, stored: None, backend: str
) -> None:
    if backend != "sqlite":
        pytest.skip("only SQLite keeps the database in a file")
    database = sqlite_path(settings)
    assert database is not None
    before = database.read_bytes()[:16]
    with pytest.raises(ExportPathError, match="is the database"):
        await run_export(engine, settings, database, replace=True)
    assert database.read_bytes()[:16] == before == b"SQLite format 3\x00"
    async with engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM log_entries")) == ROWS


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm", "-journal", ".retention.lock"])
def test_the_database_file_and_its_siblings_are_refused(
    settings: Settings, tmp_path: Path, suffix: str
) -> None:
    database = tmp_path / "db" / "firewall.db"
    database.parent.mkdir()
    sqlite = replace(settings, database_url=f"sqlite+aiosqlite:///{database}")
    for replace_it in (False, True):
        with pytest.raises(ExportPathError, match="is the database"):
            check_export_path(Path(f"{database}{suffix}"), sqlite, replace=replace_it)


def test_a_symlink_to_the_database_is_the_database(settings: Settings, tmp_path: Path) -> None:
    database = tmp_path / "db" / "firewall.db"
    database.parent.mkdir()
    database.write_bytes(b"SQLite format 3\x00")
    innocent = tmp_path / "report.csv"
    innocent.symlink_to(database)
    sqlite = replace(settings, database_url=f"sqlite+aiosqlite:///{database}")
    with pytest.raises(ExportPathError, match="is the database"):
        check_export_path(innocent, sqlite, replace=True)


@pytest.mark.parametrize("how", ["directly", "through a symlink", "through .."])
def test_a_path_inside_the_data_folder_is_refused(settings_here: Settings, tmp_path: Path, how: str) -> None:
    data = settings_here.data_dir
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(data)
    path = {
        "directly": data / "logs.csv",
        "through a symlink": tmp_path / "link" / "logs.csv",
        "through ..": tmp_path / "elsewhere" / ".." / "data" / "logs.csv",
    }[how]
    with pytest.raises(ExportPathError, match="inside the data folder"):
        check_export_path(path, settings_here, replace=True)


async def test_export_into_the_data_folder_writes_nothing_there(
    engine: AsyncEngine, settings_here: Settings, stored: None, tmp_path: Path
) -> None:
    (tmp_path / "link").symlink_to(settings_here.data_dir)
    with pytest.raises(ExportPathError, match="inside the data folder"):
        await run_export(engine, settings_here, tmp_path / "link" / "logs.csv")
    assert list(settings_here.data_dir.iterdir()) == []
    assert await export_audit_rows(engine) == []


def test_a_folder_or_a_missing_folder_is_refused(settings_here: Settings, tmp_path: Path) -> None:
    with pytest.raises(ExportPathError, match="is a folder"):
        check_export_path(tmp_path, settings_here, replace=False)
    with pytest.raises(ExportPathError, match="no such folder"):
        check_export_path(tmp_path / "missing" / "x.csv", settings_here, replace=False)


# -- existing files --------------------------------------------------------------------------------


async def test_an_existing_file_is_not_replaced_unless_confirmed(
    engine: AsyncEngine, settings_here: Settings, stored: None, tmp_path: Path
) -> None:
    target = tmp_path / "logs.csv"
    target.write_bytes(b"keep me\n")
    with pytest.raises(ExportFileExists):
        check_export_path(target, settings_here, replace=False)
    with pytest.raises(ExportFileExists):
        await run_export(engine, settings_here, target)
    assert target.read_bytes() == b"keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "logs.csv"]


async def test_a_confirmed_replacement_writes_a_new_0600_file_whatever_the_old_mode(
    engine: AsyncEngine, settings_here: Settings, stored: None, tmp_path: Path
) -> None:
    target = tmp_path / "logs.csv"
    target.write_bytes(b"old\n")
    target.chmod(0o666)
    assert await run_export(engine, settings_here, target, replace=True) == ROWS
    assert target.read_text().startswith("id,timestamp,")
    assert mode_of(target) == 0o600
    [row] = await export_audit_rows(engine)
    assert row.changes["replaced"] is True


async def test_an_export_is_readable_by_its_owner_only_even_with_umask_000(
    engine: AsyncEngine, settings_here: Settings, stored: None, tmp_path: Path, loose_umask: None
) -> None:
    target = tmp_path / "logs.jsonl"
    await run_export(engine, settings_here, target, fmt="jsonl")
    assert mode_of(target) == 0o600


def test_a_file_that_appears_during_the_export_is_not_replaced(tmp_path: Path) -> None:
    target = tmp_path / "logs.csv"
    export = ExportFile(target, replace=False)
    export.write("id\n")
    export.sync()
    target.write_bytes(b"someone else's\n")  # after the check, before the rename
    with pytest.raises(ExportFileExists):
        export.commit()
    assert target.read_bytes() == b"someone else's\n"
    assert [p.name for p in tmp_path.iterdir()] == ["logs.csv"]


# -- rights and the audit trail ---------------------------------------------------------------------


async def test_a_viewers_export_is_audited_with_actor_filter_rows_and_file(
    engine: AsyncEngine, settings_here: Settings, stored: None, tmp_path: Path
) -> None:
    await add_viewer(engine, "vera")
    target = tmp_path / "red.csv"
    red = LogFilter(risk_levels=frozenset({"red"}))
    written = await run_export(engine, settings_here, target, actor=Actor.console("vera"), filters=red)
    assert written == RED_ROWS
    [row] = await export_audit_rows(engine)
    assert (row.actor, row.source, row.entity_type) == ("vera", "console", "export")
    assert row.entity_id == str(target.resolve())
    assert row.changes == {
        "status": "completed",
        "file": str(target.resolve()),
        "format": "csv",
        "filter": "risk=red",
        "rows": RED_ROWS,
        "total": RED_ROWS,
        "replaced": False,
    }


async def test_a_deactivated_viewer_cannot_export(
    engine: AsyncEngine, settings_here: Settings, stored: None, tmp_path: Path
) -> None:
    await add_viewer(engine, "gone", active=False)
    with pytest.raises(NotAllowed, match="deactivated") as refused:
        await run_export(engine, settings_here, tmp_path / "logs.csv", actor=Actor.console("gone"))
    assert refused.value.signed_out
    assert list(tmp_path.iterdir()) == [settings_here.data_dir]
    assert await export_audit_rows(engine) == []


# -- progress and interruptions ----------------------------------------------------------------------


async def test_progress_counts_against_the_exact_number_of_rows(
    engine: AsyncEngine, settings_here: Settings, stored: None, tmp_path: Path
) -> None:
    seen: list[tuple[int, int]] = []
    red = LogFilter(risk_levels=frozenset({"red"}))
    written = await run_export(
        engine, settings_here, tmp_path / "red.csv", filters=red, chunk=5, progress=lambda *p: seen.append(p)
    )
    assert written == RED_ROWS
    assert seen[0] == (0, RED_ROWS)
    assert seen[-1] == (RED_ROWS, RED_ROWS)
    assert {total for _, total in seen} == {RED_ROWS}


async def test_rows_arriving_during_an_export_are_neither_written_nor_counted(
    engine: AsyncEngine,
    settings_here: Settings,
    stored: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[int, int]] = []
    read_rows = logs.iter_entries

    async def newer_rows_land_after_the_count(**kwargs: Any) -> AsyncIterator[list[Any]]:
        await store_logs(engine, [make_event(ROWS + 10), make_event(ROWS + 11)])
        async for rows in read_rows(**kwargs):
            yield rows

    monkeypatch.setattr(logs, "iter_entries", newer_rows_land_after_the_count)
    written = await run_export(
        engine, settings_here, tmp_path / "all.csv", chunk=10, progress=lambda *p: seen.append(p)
    )
    assert written == ROWS
    assert seen[0] == (0, ROWS)
    assert seen[-1] == (ROWS, ROWS)
    async with engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM log_entries")) == ROWS + 2


class Interrupted(Exception):
    pass


async def test_a_failure_midway_leaves_no_file_and_is_audited_with_the_rows_so_far(
    engine: AsyncEngine, settings_here: Settings, stored: None, tmp_path: Path
) -> None:
    def fail_after_two_chunks(written: int, total: int) -> None:
        if written >= 20:
            raise Interrupted

    target = tmp_path / "logs.csv"
    with pytest.raises(Interrupted):
        await run_export(engine, settings_here, target, chunk=10, progress=fail_after_two_chunks)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no file, no temporary file
    [row] = await export_audit_rows(engine)
    assert (row.changes["status"], row.changes["rows"], row.changes["total"]) == ("failed", 20, ROWS)


async def test_a_cancelled_replacement_leaves_the_old_file_byte_identical(
    engine: AsyncEngine, settings_here: Settings, stored: None, tmp_path: Path
) -> None:
    target = tmp_path / "logs.csv"
    target.write_bytes(b"the old export\n")
    first_chunk = asyncio.Event()

    def progress(written: int, total: int) -> None:
        if written:
            first_chunk.set()

    async def slow_export() -> int:
        return await run_export(engine, settings_here, target, replace=True, chunk=1, progress=progress)

    task = asyncio.create_task(slow_export())
    await first_chunk.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert target.read_bytes() == b"the old export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "logs.csv"]
    [row] = await export_audit_rows(engine)
    assert row.changes["status"] == "cancelled"
    assert 1 <= row.changes["rows"] < ROWS


# -- settings ----------------------------------------------------------------------------------------


def test_the_export_folder_setting_must_be_absolute(tmp_path: Path) -> None:
    assert load_settings({"AIFW_EXPORT_DIR": str(tmp_path)}).export_dir == tmp_path
    assert load_settings({}).export_dir is None
    with pytest.raises(SettingsError, match="AIFW_EXPORT_DIR"):
        load_settings({"AIFW_EXPORT_DIR": "exports"})


def test_the_data_folder_is_known_even_with_a_database_url(tmp_path: Path) -> None:
    env = {"AIFW_DATA_DIR": str(tmp_path), "DATABASE_URL": "postgresql://u@h/d"}
    assert load_settings(env).data_dir == tmp_path
