"""CSV exports cannot carry formulas: a cell an agent filled with ``=…``, ``+…``, ``-…`` or ``@…`` (or a
tab or carriage return first) is written with a ``'`` before it, so a spreadsheet shows it as text."""

from __future__ import annotations

import csv
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from db import logs
from db.events import store_events
from db.logs import LogFilter
from db.rights import Actor
from db.settings import Settings
from tests.support.database import make_event

FORMULAS = {
    "tool_name": '=HYPERLINK("http://evil.example","x")',
    "user_id": "+cmd|' /C calc'!A0",
    "device_id": "-2+3",
    "organization_id": "org",
}


async def test_csv_export_prefixes_formula_cells_so_spreadsheets_show_text(
    session: AsyncSession, settings: Settings, tmp_path: Path
) -> None:
    await store_events(
        session=session,
        events=[
            make_event(0, **FORMULAS, log_metadata={"note": "=1+1"}),
            make_event(1, user_id="@SUM(A1:A9)"),
        ],
    )
    await session.commit()
    target = tmp_path / "logs.csv"
    written = await logs.export(
        session=session, filters=LogFilter(), path=target, fmt="csv", settings=settings, actor=Actor.cli()
    )
    assert written == 2
    with target.open(newline="", encoding="utf-8") as handle:
        newest, oldest = list(csv.DictReader(handle))
    assert newest["user_id"] == "'@SUM(A1:A9)"
    assert oldest["tool_name"] == "'" + FORMULAS["tool_name"]
    assert oldest["user_id"] == "'" + FORMULAS["user_id"]
    assert oldest["device_id"] == "'-2+3"
    assert oldest["organization_id"] == "org"
    assert oldest["prompt_length"] == "100"  # numbers are not text, and stay as they are
    assert oldest["log_metadata"] == '{"note":"=1+1"}'  # JSON starts with "{": no formula


def test_csv_cells_starting_with_a_tab_or_carriage_return_are_prefixed_too() -> None:
    assert logs._csv_value("\t=1+1") == "'\t=1+1"
    assert logs._csv_value("\r=1+1") == "'\r=1+1"
    assert logs._csv_value(["-x", "y"]) == "'-x;y"
    assert logs._csv_value("plain [/] text") == "plain [/] text"
    assert logs._csv_value(-5) == -5
