"""Retention beyond logs: alerts, alert changes and dead letters go with each organisation's cutoff, and
events a forwarding destination has not received are held back, up to FORWARD_HOLD_DAYS, then counted."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.destinations import DestinationSpec, create_destination, events_cursor_name
from db.models import Alert, AlertChange, DeadLetter, ForwardDestination, LogEntry, RetentionRun
from db.retention import SUCCEEDED, OrganizationCleanup, retention_preview, run_retention
from db.secrets import SecretBox
from db.streams import Position, save_cursor
from retention.cli import TextReport, stamp
from tests.support.retention import CLI, AddLogs, add_config, days_ago, log_times


async def add_records(
    sessions: async_sessionmaker[AsyncSession], organization_id: str, moment: datetime
) -> None:
    """One alert last updated at ``moment``, one change of it made then, one dead letter created then."""
    alert_id = uuid.uuid4()
    async with sessions() as session, session.begin():
        session.add(
            Alert(
                id=alert_id,
                organization_id=organization_id,
                rule_id=uuid.uuid4(),
                rule_name="Red burst per user",
                rule_kind="threshold",
                severity="high",
                group_key="alice",
                state="resolved",
                first_event_at=moment,
                last_event_at=moment,
                event_count=5,
                event_ids=[],
                details={},
                revision=1,
                opened_at=moment,
                updated_at=moment,
            )
        )
        session.add(
            AlertChange(
                alert_id=alert_id,
                organization_id=organization_id,
                revision=1,
                activity="create",
                snapshot={},
                changed_at=moment,
            )
        )
        session.add(
            DeadLetter(
                destination_id=uuid.uuid4(),
                organization_id=organization_id,
                stream="event",
                item_id=str(uuid.uuid4()),
                payload="{}",
                error="HEC 400: invalid event",
                created_at=moment,
            )
        )


async def record_counts(sessions: async_sessionmaker[AsyncSession], organization_id: str) -> tuple[int, ...]:
    """(alerts, alert changes, dead letters) the organisation has."""
    async with sessions() as session:
        counts = []
        for model in (Alert, AlertChange, DeadLetter):
            query = select(func.count()).select_from(model).where(model.organization_id == organization_id)
            counts.append(int(await session.scalar(query) or 0))
        return tuple(counts)


async def add_red_logs(
    sessions: async_sessionmaker[AsyncSession], organization_id: str, timestamps: list[datetime]
) -> None:
    """One red log of the organisation at each time (the destinations below forward red events only)."""
    rows = [
        {
            "timestamp": moment,
            "device_id": "dev-1",
            "user_id": "alice",
            "tool_name": "ChatGPT",
            "tool_type": "web",
            "risk_level": "red",
            "organization_id": organization_id,
        }
        for moment in timestamps
    ]
    async with sessions() as session, session.begin():
        await session.execute(insert(LogEntry), rows)


async def add_destination(sessions: async_sessionmaker[AsyncSession], organization_id: str) -> uuid.UUID:
    """An enabled syslog destination of the organisation's red events (``add_logs`` writes green ones)."""
    spec = DestinationSpec(
        name="siem",
        transport="syslog_tcp",
        format="json",
        address="127.0.0.1:6514",
        event_risk_levels=frozenset({"red"}),
    )
    async with sessions() as session, session.begin():
        destination = await create_destination(
            session=session,
            organization_id=organization_id,
            spec=spec,
            actor=CLI,
            secrets=SecretBox([Fernet.generate_key()]),
        )
        return destination.id


async def catch_up(sessions: async_sessionmaker[AsyncSession], destination_id: uuid.UUID) -> None:
    """Move the destination's event cursor past every stored event, as its forwarder does once delivered."""
    async with sessions() as session, session.begin():
        last = int(await session.scalar(select(func.max(LogEntry.commit_seq))) or 0)
        await save_cursor(session, name=events_cursor_name(destination_id), position=Position(last + 1))


async def runs_of(sessions: async_sessionmaker[AsyncSession], organization_id: str) -> list[RetentionRun]:
    async with sessions() as session:
        query = select(RetentionRun).where(RetentionRun.organization_id == organization_id)
        return list((await session.scalars(query)).all())


async def test_alerts_changes_and_dead_letters_past_each_organisations_cutoff_are_deleted(
    sessions: async_sessionmaker[AsyncSession], now: datetime
) -> None:
    await add_config(sessions, "acme", 30)
    await add_config(sessions, "globex", 90)
    for organization_id in ("acme", "globex"):
        await add_records(sessions, organization_id, days_ago(now, 30, seconds=-1))
        await add_records(sessions, organization_id, days_ago(now, 30))
        await add_records(sessions, organization_id, days_ago(now, 29))

    summary = await run_retention(sessions=sessions, actor=CLI, now=now)

    # acme: the one just before its 30-day cutoff goes; the one exactly at it stays (as for logs).
    assert await record_counts(sessions, "acme") == (2, 2, 2)
    assert await record_counts(sessions, "globex") == (3, 3, 3)
    acme = next(result for result in summary.results if result.organization_id == "acme")
    assert (acme.alerts_deleted, acme.alert_changes_deleted, acme.dead_letters_deleted) == (1, 1, 1)


async def test_a_dry_run_counts_the_expired_alerts_and_deletes_nothing(
    sessions: async_sessionmaker[AsyncSession], now: datetime
) -> None:
    await add_config(sessions, "acme", 30)
    await add_records(sessions, "acme", days_ago(now, 40))
    await add_records(sessions, "acme", days_ago(now, 45))

    summary = await run_retention(sessions=sessions, actor=CLI, now=now, dry_run=True)

    (result,) = summary.results
    assert (result.alerts_deleted, result.alert_changes_deleted, result.dead_letters_deleted) == (2, 2, 2)
    assert await record_counts(sessions, "acme") == (2, 2, 2)


async def test_alerts_are_deleted_in_batches_until_none_is_left(
    sessions: async_sessionmaker[AsyncSession], now: datetime
) -> None:
    await add_config(sessions, "acme", 30)
    for day in range(31, 36):
        await add_records(sessions, "acme", days_ago(now, day))

    summary = await run_retention(sessions=sessions, actor=CLI, now=now, batch_size=2)

    assert await record_counts(sessions, "acme") == (0, 0, 0)
    assert summary.results[0].alerts_deleted == 5


async def test_events_a_destination_has_not_received_are_kept_within_the_hold(
    sessions: async_sessionmaker[AsyncSession], add_logs: AddLogs, now: datetime
) -> None:
    await add_config(sessions, "acme", 30)
    await add_destination(sessions, "acme")
    await add_logs("acme", [days_ago(now, 45)])  # green: not wanted by the destination
    undelivered = days_ago(now, 33)
    await add_red_logs(sessions, "acme", [undelivered, days_ago(now, 10)])

    summary = await run_retention(sessions=sessions, actor=CLI, now=now, forward_hold_days=7)

    (result,) = summary.results
    assert await log_times(sessions, "acme") == [undelivered, days_ago(now, 10)]
    assert (result.rows, result.undelivered_expired, result.log_cutoff) == (1, 0, undelivered)
    assert result.held
    (run,) = await runs_of(sessions, "acme")
    assert (run.rows_deleted, run.undelivered_expired) == (1, 0)


async def test_past_the_hold_undelivered_events_are_deleted_and_counted(
    sessions: async_sessionmaker[AsyncSession], now: datetime
) -> None:
    await add_config(sessions, "acme", 30)
    await add_destination(sessions, "acme")
    await add_red_logs(
        sessions, "acme", [days_ago(now, 40), days_ago(now, 38), days_ago(now, 34), days_ago(now, 10)]
    )

    summary = await run_retention(sessions=sessions, actor=CLI, now=now, forward_hold_days=5)

    # Held back to 30 + 5 days: the two events older than that go, counted as never delivered.
    (result,) = summary.results
    assert await log_times(sessions, "acme") == [days_ago(now, 34), days_ago(now, 10)]
    assert (result.rows, result.undelivered_expired, result.log_cutoff) == (2, 2, days_ago(now, 35))
    (run,) = await runs_of(sessions, "acme")
    assert (run.rows_deleted, run.undelivered_expired) == (2, 2)


async def test_a_hold_of_zero_days_deletes_at_the_cutoff_and_counts_what_went_undelivered(
    sessions: async_sessionmaker[AsyncSession], now: datetime
) -> None:
    await add_config(sessions, "acme", 30)
    await add_destination(sessions, "acme")
    await add_red_logs(sessions, "acme", [days_ago(now, 31), days_ago(now, 29)])

    summary = await run_retention(sessions=sessions, actor=CLI, now=now, forward_hold_days=0)

    assert await log_times(sessions, "acme") == [days_ago(now, 29)]
    assert summary.results[0].undelivered_expired == 1


async def test_once_the_destination_has_caught_up_the_retention_applies_again(
    sessions: async_sessionmaker[AsyncSession], now: datetime
) -> None:
    await add_config(sessions, "acme", 30)
    destination_id = await add_destination(sessions, "acme")
    await add_red_logs(sessions, "acme", [days_ago(now, 33), days_ago(now, 10)])
    await catch_up(sessions, destination_id)

    summary = await run_retention(sessions=sessions, actor=CLI, now=now, forward_hold_days=7)

    assert await log_times(sessions, "acme") == [days_ago(now, 10)]
    assert (summary.results[0].undelivered_expired, summary.results[0].held) == (0, False)


async def test_a_disabled_destination_holds_nothing_back(
    sessions: async_sessionmaker[AsyncSession], now: datetime
) -> None:
    await add_config(sessions, "acme", 30)
    destination_id = await add_destination(sessions, "acme")
    await add_red_logs(sessions, "acme", [days_ago(now, 33)])
    async with sessions() as session, session.begin():
        await session.execute(
            update(ForwardDestination).where(ForwardDestination.id == destination_id).values(enabled=False)
        )

    await run_retention(sessions=sessions, actor=CLI, now=now, forward_hold_days=7)

    assert await log_times(sessions, "acme") == []


async def test_the_preview_applies_the_hold_and_says_what_would_go_undelivered(
    sessions: async_sessionmaker[AsyncSession], now: datetime
) -> None:
    await add_config(sessions, "acme", 30)
    await add_destination(sessions, "acme")
    await add_red_logs(sessions, "acme", [days_ago(now, 40), days_ago(now, 33)])

    async with sessions() as session:
        (preview,) = await retention_preview(session, now=now, forward_hold_days=5)

    assert (preview.rows_to_delete, preview.undelivered_to_expire, preview.log_cutoff) == (
        1,
        1,
        days_ago(now, 35),
    )


def test_the_command_lines_line_says_what_was_held_expired_undelivered_and_deleted_besides_logs(
    capsys: pytest.CaptureFixture[str], now: datetime
) -> None:
    result = OrganizationCleanup(
        organization_id="acme",
        retention_days=30,
        cutoff=days_ago(now, 30),
        rows=12,
        status=SUCCEEDED,
        error=None,
        dry_run=False,
        started_at=now,
        finished_at=now,
        run_id=None,
        log_cutoff=days_ago(now, 37),
        undelivered_expired=4,
        alerts_deleted=2,
        dead_letters_deleted=1,
    )
    TextReport(dry_run=False, interactive=False).result(result)
    line = capsys.readouterr().out
    assert f"(logs held back to {stamp(days_ago(now, 37))} for forwarding)" in line
    assert "deleted 12 rows; 4 of them never received by a forwarding destination" in line
    assert line.rstrip().endswith("; 2 alerts, 1 dead letter")
