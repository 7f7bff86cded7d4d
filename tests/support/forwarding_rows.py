"""Rows and helpers for forwarding tests: organisations, destinations, alert revisions, what was sent.

Everything is written through the product's own functions (create_organization, create_destination,
record_alert_change, store_events), each in its own committed session: on PostgreSQL an idle open
transaction would hold the streams' visible bound back (db/commit_order.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from db.alerts import record_alert_change
from db.base import utcnow
from db.commit_order import visible_bound
from db.configs import create_organization
from db.destinations import DestinationSpec, create_destination, get_destination
from db.engine import new_sessionmaker
from db.events import store_events
from db.models import Alert, AlertChange, ForwardDestination, LogEntry
from db.rights import Actor
from db.secrets import SecretBox
from tests.support.database import make_event

#: The key every forwarding test encrypts and decrypts with (AIFW_SECRET_KEY for child processes).
SECRET_KEY = Fernet.generate_key().decode()
SECRETS = SecretBox([SECRET_KEY.encode()])


async def add_org(engine: AsyncEngine, organization_id: str = "acme") -> str:
    async with new_sessionmaker(engine)() as session:
        await create_organization(session=session, organization_id=organization_id, actor=Actor.cli())
        await session.commit()
    return organization_id


async def add_destination(
    engine: AsyncEngine,
    *,
    address: str,
    organization_id: str = "acme",
    name: str = "siem",
    transport: str = "syslog_tcp",
    fmt: str = "json",
    risk_levels: Iterable[str] = ("red", "amber"),
    forward_alerts: bool = False,
    secret: str | None = None,
    options: dict[str, Any] | None = None,
    secrets: SecretBox = SECRETS,
) -> ForwardDestination:
    spec = DestinationSpec(
        name=name,
        transport=transport,
        format=fmt,
        address=address,
        options=options or {},
        forward_alerts=forward_alerts,
        event_risk_levels=frozenset(risk_levels),
        secret=secret,
    )
    async with new_sessionmaker(engine)() as session:
        row = await create_destination(
            session=session, organization_id=organization_id, spec=spec, actor=Actor.cli(), secrets=secrets
        )
        await session.commit()
    return row


async def reload(engine: AsyncEngine, destination_id: uuid.UUID) -> ForwardDestination:
    async with new_sessionmaker(engine)() as session:
        return await get_destination(session=session, destination_id=destination_id)


def events(
    count: int, *, organization_id: str = "acme", risks: Sequence[str] = ("red",), start: int = 0
) -> list[dict[str, Any]]:
    """``count`` events of the organisation, risks taken in turn."""
    return [
        make_event(start + index, organization_id=organization_id, risk_level=risks[index % len(risks)])
        for index in range(count)
    ]


async def store(engine: AsyncEngine, rows: Sequence[dict[str, Any]]) -> None:
    """Store events in one committed transaction, as one ingest batch."""
    async with new_sessionmaker(engine)() as session:
        await store_events(session=session, events=list(rows))
        await session.commit()


async def commit_order(engine: AsyncEngine, organization_id: str, risks: Iterable[str]) -> list[str]:
    """The ids of the organisation's events of ``risks`` in the order forwarders read them."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(LogEntry.id)
            .where(LogEntry.organization_id == organization_id, LogEntry.risk_level.in_(list(risks)))
            .order_by(LogEntry.commit_seq, LogEntry.organization_id, LogEntry.id)
        )
        return [str(row[0]) for row in rows]


async def add_alert_revision(
    engine: AsyncEngine,
    *,
    organization_id: str = "acme",
    alert: Alert | None = None,
    activity: str = "create",
) -> Alert:
    """A new alert (revision 1, ``create``) or the next revision of ``alert``, with its alert_changes row."""
    async with new_sessionmaker(engine)() as session:
        now = utcnow()
        if alert is None:
            alert = Alert(
                organization_id=organization_id,
                rule_id=uuid.uuid4(),
                rule_name="Red burst",
                rule_kind="threshold",
                severity="high",
                group_key="user1@example.com",
                state="open",
                first_event_at=now - timedelta(minutes=1),
                last_event_at=now,
                event_count=5,
                event_ids=[str(uuid.uuid4())],
                details={},
                revision=1,
                opened_at=now,
                updated_at=now,
            )
            session.add(alert)
        else:
            alert = await session.merge(alert)
            alert.revision += 1
            alert.updated_at = now
            if activity == "close":
                alert.state = "resolved"
        await session.flush()
        await record_alert_change(session=session, alert=alert, activity=activity)  # type: ignore[arg-type]
        await session.commit()
        return alert


async def settled(engine: AsyncEngine) -> bool:
    """Whether every committed row of both streams is below its visible bound (on PostgreSQL a transaction
    anywhere in the cluster, another test run's too, holds the bound back for a moment)."""
    async with new_sessionmaker(engine)() as session:
        for stream, column in (
            ("log_entries", LogEntry.commit_seq),
            ("alert_changes", AlertChange.commit_seq),
        ):
            highest = await session.scalar(select(func.max(column)))
            if highest is not None and await visible_bound(session, stream) <= highest:  # type: ignore[arg-type]
                return False
    return True
