"""Cleanup section: the dry-run count equals what the real run deletes, a run stopped between
batches leaves exact records and no row it should keep, the scheduler line, and the audit rows."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from console.dialogs.confirm import ConfirmScreen
from console.screens.login import LoginScreen
from console.screens.shell import ShellScreen
from console.sections.cleanup import CleanupSection
from db.base import utcnow
from db.configs import create_organization
from db.engine import new_sessionmaker
from db.models import LogEntry, RetentionRun
from tests.support.console import (
    audit_rows,
    confirm,
    open_section,
    press_and_settle,
    pump_until,
    running,
    settle,
    signed_in,
)
from tests.support.database import SETUP, make_event, store_logs
from tests.support.waiting import wait_until

EXPIRED = 40
KEPT = 7


async def seed(engine: AsyncEngine) -> None:
    """acme keeps 30 days: EXPIRED rows older than that, KEPT rows newer; globex keeps 90 days, all young.

    globex's rows lie among acme's expired ones, at both ends of their span: every week (partition) that
    holds acme's expired rows also holds a row to keep, so on PostgreSQL the run deletes them in batches
    whatever the weekday, never by dropping a week whole."""
    async with new_sessionmaker(engine)() as session:
        await create_organization(session=session, organization_id="acme", actor=SETUP, log_retention_days=30)
        await create_organization(session=session, organization_id="globex", actor=SETUP)
        await session.commit()
    now = utcnow()
    old = [
        make_event(i, organization_id="acme", timestamp=now - timedelta(days=31, minutes=i))
        for i in range(EXPIRED)
    ]
    young = [
        make_event(i, organization_id="acme", timestamp=now - timedelta(days=29, minutes=i))
        for i in range(KEPT)
    ]
    other = [
        make_event(
            i, organization_id="globex", timestamp=now - timedelta(days=31, minutes=i * (EXPIRED - 1) / 4)
        )
        for i in range(5)
    ]
    await store_logs(engine, old + young + other)


async def counts(engine: AsyncEngine) -> dict[str, int]:
    async with new_sessionmaker(engine)() as session:
        rows = await session.execute(
            select(LogEntry.organization_id, func.count()).group_by(LogEntry.organization_id)
        )
        return {org: int(n) for org, n in rows.all()}


async def test_dry_run_count_equals_what_the_real_run_deletes(engine: AsyncEngine, app_factory) -> None:
    await seed(engine)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, CleanupSection)
        assert section.previews["acme"].rows_to_delete == EXPIRED
        assert section.previews["globex"].rows_to_delete == 0
        assert await counts(engine) == {"acme": EXPIRED + KEPT, "globex": 5}
        table = section.query_one("#cleanup-preview")
        table.move_cursor(row=table.get_row_index("acme"))
        section.action_clean_selected()
        await confirm(pilot)
        assert section.last_summary is not None
        assert section.last_summary.total_rows == EXPIRED
        assert section.previews["acme"].rows_to_delete == 0
        assert section.runs[0].status == "succeeded"
        assert section.runs[0].trigger == "console"
    assert await counts(engine) == {"acme": KEPT, "globex": 5}
    [audit] = await audit_rows(engine, "retention.run")
    assert audit.entity_id == "acme"
    assert audit.changes["rows_deleted"] == {"after": EXPIRED}
    assert audit.changes["status"] == {"after": "succeeded"}


async def test_cancel_between_batches_leaves_exact_records_and_every_row_to_keep(
    engine: AsyncEngine, app_factory
) -> None:
    await seed(engine)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, CleanupSection)
        section.batch_size = 10
        batches = []
        original = section.on_progress

        def stop_after_first_batch(organization_id: str, rows: int) -> None:
            original(organization_id, rows)
            batches.append(rows)
            if len(batches) == 1:
                section.action_cancel_cleanup()  # what x (or the Stop button) does

        section.on_progress = stop_after_first_batch  # type: ignore[method-assign]
        section.action_run_cleanup()
        await confirm(pilot)
        assert section.last_summary is not None
        assert section.last_summary.status == "cancelled"
        assert not section.running
        assert section.busy_with() is None
    assert batches == [10]
    assert await counts(engine) == {"acme": EXPIRED + KEPT - 10, "globex": 5}
    async with new_sessionmaker(engine)() as session:
        runs = {run.organization_id: run for run in (await session.scalars(select(RetentionRun))).all()}
    assert runs["acme"].status == "cancelled"
    assert runs["acme"].rows_deleted == 10
    assert runs["acme"].finished_at is not None
    assert all(run.status != "running" for run in runs.values())
    audits = {row.entity_id: row.changes for row in await audit_rows(engine, "retention.run")}
    assert audits["acme"]["rows_deleted"] == {"after": 10}
    assert audits["acme"]["status"] == {"after": "cancelled"}


async def test_the_run_is_confirmed_first_and_refused_to_viewers(engine: AsyncEngine, app_factory) -> None:
    await seed(engine)
    async with signed_in(app_factory(), engine, "victor", is_admin=False) as pilot:
        section = await open_section(pilot, CleanupSection)
        await press_and_settle(pilot, "A")
        assert pilot.app.screen.__class__.__name__ == "ShellScreen"
    async with signed_in(app_factory(), engine, "alice") as pilot:
        section = await open_section(pilot, CleanupSection)
        section.action_run_cleanup()
        await confirm(pilot, yes=False)
    assert await counts(engine) == {"acme": EXPIRED + KEPT, "globex": 5}
    assert await audit_rows(engine, "retention.run") == []


async def test_scheduler_line_shows_whether_it_is_on_and_its_interval(
    engine: AsyncEngine, app_factory
) -> None:
    async with signed_in(app_factory(enable_retention_scheduler=False), engine) as pilot:
        section = await open_section(pilot, CleanupSection)
        assert "Scheduler off" in str(section.query_one("#cleanup-scheduler").render())
    started = utcnow().replace(microsecond=0) - timedelta(hours=1)
    async with new_sessionmaker(engine)() as session:
        session.add(
            RetentionRun(
                organization_id="acme",
                retention_days=30,
                cutoff=started,
                rows_deleted=0,
                dry_run=False,
                trigger="scheduler",
                status="succeeded",
                started_at=started,
                finished_at=started,
            )
        )
        await session.commit()
    app = app_factory(enable_retention_scheduler=True, retention_cleanup_interval_hours=6.0)
    async with signed_in(app, engine, "bob") as pilot:
        section = await open_section(pilot, CleanupSection)
        line = str(section.query_one("#cleanup-scheduler").render())
        assert "Scheduler on: every 6 h" in line
        assert f"next check {pilot.app.retention_scheduler.next_run_time:%Y-%m-%d %H:%M} UTC" in line
        assert f"last scheduled run {started:%Y-%m-%d %H:%M} UTC" in line


async def test_the_console_runs_the_scheduled_cleanup_while_open_when_enabled(
    engine: AsyncEngine, app_factory
) -> None:
    async with running(
        app_factory(enable_retention_scheduler=True, retention_cleanup_interval_hours=6.0)
    ) as pilot:
        scheduler = pilot.app.retention_scheduler
        assert scheduler is not None
        assert scheduler.interval_hours == 6.0
        assert scheduler.next_run_time is not None
    assert scheduler.next_run_time is None  # stopped with the app
    async with running(app_factory(enable_retention_scheduler=False)) as pilot:
        assert pilot.app.retention_scheduler is None


async def start_a_cleanup_that_holds_after_its_first_batch(pilot, section: CleanupSection) -> asyncio.Event:
    """Start "clean all" (confirmed) in 5-row batches; it stays between its first two batches until
    stopped."""
    section.batch_size = 5
    inside = asyncio.Event()
    original = section.on_progress

    async def hold_until_stopped(organization_id: str, rows: int) -> None:
        original(organization_id, rows)
        inside.set()
        if section.cancel_event is not None:
            await section.cancel_event.wait()

    section.on_progress = hold_until_stopped  # type: ignore[method-assign]
    section.action_run_cleanup()
    await settle(pilot)  # the count at a pinned now, then the confirmation
    await pilot.press("y")
    await asyncio.wait_for(inside.wait(), 10)
    assert section.busy_with() == "a retention cleanup"
    return inside


async def assert_records_are_exact_and_final(engine: AsyncEngine) -> None:
    """The run records and audit rows say exactly what went: acme's first batch, nothing of globex's."""
    gone = EXPIRED + KEPT - (await counts(engine))["acme"]
    assert gone == 5
    async with new_sessionmaker(engine)() as session:
        runs = {run.organization_id: run for run in (await session.scalars(select(RetentionRun))).all()}
    assert {org: (run.status, run.rows_deleted) for org, run in runs.items()} == {
        "acme": ("cancelled", gone),
        "globex": ("cancelled", 0),
    }
    assert all(run.finished_at is not None for run in runs.values())
    audits = {row.entity_id: row.changes for row in await audit_rows(engine, "retention.run")}
    assert audits["acme"]["rows_deleted"] == {"after": gone}
    assert audits["acme"]["status"] == {"after": "cancelled"}
    assert audits["acme"]["run_id"] == {"after": str(runs["acme"].id)}
    assert audits["globex"]["status"] == {"after": "cancelled"}


async def test_quitting_during_a_cleanup_asks_then_leaves_exact_final_records(
    engine: AsyncEngine, app_factory
) -> None:
    await seed(engine)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, CleanupSection)
        await start_a_cleanup_that_holds_after_its_first_batch(pilot, section)
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(pilot.app.screen, ConfirmScreen)
        assert pilot.app.screen.question == "Quit and stop a retention cleanup?"
        await pilot.press("y")
        await pump_until(pilot, lambda: not pilot.app.is_running)
        assert not pilot.app.is_running
    await assert_records_are_exact_and_final(engine)


async def test_signing_out_during_a_cleanup_asks_then_leaves_exact_final_records(
    engine: AsyncEngine, app_factory
) -> None:
    await seed(engine)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, CleanupSection)
        await start_a_cleanup_that_holds_after_its_first_batch(pilot, section)
        pilot.app.action_sign_out()  # what the palette's "Sign out" does
        await pilot.pause()
        assert isinstance(pilot.app.screen, ConfirmScreen)
        assert pilot.app.screen.question == "Sign out and stop a retention cleanup?"
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(pilot.app.screen, ShellScreen)
        assert section.running  # "no" changes nothing
        pilot.app.action_sign_out()
        await pilot.pause()
        await press_and_settle(pilot, "y")
        assert isinstance(pilot.app.screen, LoginScreen)
        assert pilot.app.context is None
        await assert_records_are_exact_and_final(engine)


async def test_the_run_deletes_the_number_the_confirmation_asked_about(
    engine: AsyncEngine, app_factory
) -> None:
    await seed(engine)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, CleanupSection)
        # Three logs one to three seconds inside the 30-day line: they cross it while the question is shown.
        crossing = [
            make_event(
                100 + i, organization_id="acme", timestamp=utcnow() - timedelta(days=30, seconds=-1 - i)
            )
            for i in range(3)
        ]
        await store_logs(engine, crossing)
        table = section.query_one("#cleanup-preview")
        table.move_cursor(row=table.get_row_index("acme"))
        section.action_clean_selected()
        await settle(pilot)
        assert pilot.app.screen.question.startswith(
            f"Delete the {EXPIRED:,} logs of 'acme' older than 30 days"
        )
        last_crossing = max(event["timestamp"] for event in crossing)
        await wait_until(lambda: utcnow() - timedelta(days=30) > last_crossing, timeout=5)
        await press_and_settle(pilot, "y")
        assert section.last_summary is not None
        assert section.last_summary.total_rows == EXPIRED
    assert (await counts(engine))["acme"] == KEPT + 3
