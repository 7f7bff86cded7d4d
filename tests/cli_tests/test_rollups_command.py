"""`python -m console rollups rebuild|cap`, as real processes."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.base import utcnow
from db.models import AuditEvent, LogHourlyCount
from db.rollups import DEFAULT_MAX_KEYS, key_cap
from tests.db_tests.rollup_rows import ROLLUPS, expected_counts, insert_rows, log_row, stored_counts
from tests.support.cli import console_command


async def test_rebuild_prints_a_line_per_bucket_and_puts_drifted_counts_right(
    subprocess_env: dict[str, str], session: AsyncSession
) -> None:
    now = utcnow()
    rows = [log_row(now - timedelta(days=1, hours=n), organization_id="acme") for n in range(3)]
    await insert_rows(session, rows)
    await session.execute(update(LogHourlyCount).values(event_count=LogHourlyCount.event_count + 5))
    await session.commit()

    done = console_command(
        {**subprocess_env, "USER": "carol"}, "rollups", "rebuild", "--organization", "acme"
    )

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("acme: day ") and "rebuilt" in line for line in lines)
    assert any(line.startswith("acme: week of ") for line in lines)
    assert "rollups rebuilt" in lines[-1]
    for table in ROLLUPS:
        assert await stored_counts(session, table) == expected_counts(rows, table), table.__tablename__
    audit = (await session.scalars(select(AuditEvent))).all()
    assert [(a.action, a.actor, a.source, a.entity_id) for a in audit] == [
        ("rollups.rebuild", "carol", "cli", "acme")
    ]


async def test_cap_shows_sets_and_refuses_a_cap_below_one(
    subprocess_env: dict[str, str], session: AsyncSession
) -> None:
    env = {**subprocess_env, "USER": "carol"}
    shown = console_command(env, "rollups", "cap")
    assert shown.returncode == 0, shown.stderr
    assert f"{DEFAULT_MAX_KEYS:,}" in shown.stdout

    changed = console_command(env, "rollups", "cap", "500")
    assert changed.returncode == 0, changed.stderr
    assert await key_cap(session=session) == 500
    audit = (await session.scalars(select(AuditEvent))).all()
    assert [(a.action, a.actor, a.source) for a in audit] == [("rollups.cap", "carol", "cli")]

    refused = console_command(env, "rollups", "cap", "0")
    assert refused.returncode == 2
    assert "at least 1" in refused.stderr
    session.expire_all()
    assert await key_cap(session=session) == 500


async def test_rebuild_of_one_event_speaks_in_the_singular(
    subprocess_env: dict[str, str], session: AsyncSession
) -> None:
    await insert_rows(session, [log_row(utcnow() - timedelta(days=1), organization_id="acme")])
    await session.commit()

    done = console_command(subprocess_env, "rollups", "rebuild", "--organization", "acme")

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(" rebuilt, ")[1] for line in lines[:2]] == ["1 event (1/2)", "1 event (2/2)"]
    summary = r"acme: 1 day and 1 week rebuilt from .+ UTC \(90 days retention\), 1 event"
    assert re.fullmatch(summary, lines[2])
