"""The scrub: rows stored under older rules survive migration 0008, are reported by a dry run and repaired by
--apply."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from db.base import utcnow
from db.engine import new_engine, new_sessionmaker
from db.models import AuditEvent, Device, LogEntry, LogHourlyCount, OverviewKeySums
from db.rights import Actor
from db.rollups import OVERFLOW_KEY, hour_of
from db.scrub import ScrubReport, repaired_identifier, scrub
from tests.support.database import settings_for
from tests.support.legacy import BAD_ID, BAD_TOOL


async def _in_session(url: str, work: Any) -> Any:
    engine = new_engine(settings_for(url))
    try:
        async with new_sessionmaker(engine)() as session:
            return await work(session)
    finally:
        await engine.dispose()


def run(url: str, work: Any) -> Any:
    return asyncio.run(_in_session(url, work))


async def _tool_keys(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(
        select(LogHourlyCount.key, LogHourlyCount.event_count).where(LogHourlyCount.dimension == "tool")
    )
    return {key: count for key, count in rows.all()}


def test_upgrade_keeps_rows_that_break_the_new_rules(legacy_url: str) -> None:
    async def work(session: AsyncSession) -> tuple[int, dict[str, int]]:
        return int(await session.scalar(select(func.count()).select_from(LogEntry)) or 0), await _tool_keys(
            session
        )

    assert run(legacy_url, work) == (2, {BAD_TOOL: 2, OVERFLOW_KEY: 1, "Claude": 3})


def test_dry_run_reports_what_the_rules_refuse_and_changes_nothing(legacy_url: str) -> None:
    async def work(session: AsyncSession) -> tuple[ScrubReport, dict[str, int], int]:
        report = await scrub(session=session, actor=Actor.cli())
        audits = int(await session.scalar(select(func.count()).select_from(AuditEvent)) or 0)
        return report, await _tool_keys(session), audits

    report, keys, audits = run(legacy_url, work)
    assert not report.applied
    assert (report.metadata_rows, report.metadata_entries) == (1, 1)
    assert report.identifiers == {"log_entries.tool_name": 1, "devices.device_id": 1}
    assert (report.rollup_keys, report.rollup_rows, report.rollup_events) == (1, 1, 2)
    assert keys == {BAD_TOOL: 2, OVERFLOW_KEY: 1, "Claude": 3}
    assert audits == 0


def test_apply_repairs_the_rows_keeps_the_totals_and_is_audited(legacy_url: str) -> None:
    async def work(session: AsyncSession) -> tuple[ScrubReport, Any, Any, dict[str, int], list[AuditEvent]]:
        # The overview's stored sums name the bad tool too: the scrub must drop them with the key.
        session.add(
            OverviewKeySums(
                closed_before=hour_of(utcnow()),
                window_hours=24,
                dimension="tool",
                risk_level="",
                sums=f'{{"{BAD_TOOL}": 2}}',
            )
        )
        await session.commit()
        report = await scrub(session=session, apply=True, actor=Actor(name="tester", source="cli"))
        bad = await session.scalar(select(LogEntry).where(LogEntry.id == BAD_ID))
        device = await session.scalar(select(Device))
        audits = list((await session.scalars(select(AuditEvent))).all())
        assert await session.scalar(select(func.count()).select_from(OverviewKeySums)) == 0
        return report, bad, device, await _tool_keys(session), audits

    report, bad, device, keys, audits = run(legacy_url, work)
    assert bad.tool_name == "Chat\\u202eGPT"
    assert bad.log_metadata == {"browser": "Firefox 133"}
    assert device.device_id == "dev\\x1b[31m"
    assert device.is_active is False
    assert keys == {OVERFLOW_KEY: 3, "Claude": 3}
    assert [(a.action, a.actor) for a in audits] == [("scrub.apply", "tester")]
    assert audits[0].changes["scrub"]["after"]["rollup_events"] == 2
    if legacy_url.startswith("postgresql"):
        assert not report.not_validated
        assert "ck_log_entries_tool_name_identifier" in report.validated
    again = run(legacy_url, lambda session: scrub(session=session, actor=Actor.cli()))
    assert again.found == 0


def test_apply_leaves_the_constraints_valid_on_postgresql(legacy_url: str) -> None:
    if not legacy_url.startswith("postgresql"):
        pytest.skip("SQLite has no NOT VALID constraints")
    run(legacy_url, lambda session: scrub(session=session, actor=Actor.cli(), apply=True))

    async def invalid(session: AsyncSession) -> list[str]:
        result = await session.execute(text("SELECT conname FROM pg_constraint WHERE NOT convalidated"))
        return list(result.scalars().all())

    assert run(legacy_url, invalid) == []


def test_repaired_identifier_spells_refused_characters_and_keeps_joiners_between_letters() -> None:
    assert repaired_identifier("a\x1bb", max_chars=10) == "a\\x1bb"
    assert (
        repaired_identifier("ann\u200cbob\u200c", max_chars=20, joiners_between_letters=True)
        == "ann\u200cbob\\u200c"
    )
    assert repaired_identifier("\u200b", max_chars=5) == "\\u200"
