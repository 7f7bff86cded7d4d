"""Destinations as administrators set them: validation, audit without the secret, lag, dead letters, and what
the retention cleanup asks (events a destination has not received yet)."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from db.base import utcnow
from db.destinations import (
    OCSF_GREEN_REFUSED,
    DestinationError,
    DestinationSpec,
    alerts_cursor_name,
    count_undelivered_events_before,
    create_destination,
    delete_destination,
    destination_lag,
    discard_dead_letters,
    events_cursor_name,
    list_dead_letters,
    list_destinations,
    oldest_undelivered_event_at,
    retry_dead_letters,
    set_destination_enabled,
    update_destination,
)
from db.engine import new_sessionmaker
from db.models import AuditEvent, DeadLetter, LogEntry, StreamCursor
from db.rights import Actor, NotAllowed
from db.streams import Position, load_cursor, save_cursor
from tests.support.database import BASE_TIME, add_user
from tests.support.forwarding_rows import (
    SECRETS,
    add_alert_revision,
    add_destination,
    add_org,
    commit_order,
    events,
    reload,
    settled,
    store,
)
from tests.support.waiting import wait_until

HEC_TOKEN = "9f1c2d3e-hec-token-never-shown"
SYSLOG = DestinationSpec(name="siem", transport="syslog_tcp", format="json", address="127.0.0.1:6514")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (replace(SYSLOG, format="ocsf", event_risk_levels=frozenset({"red", "green"})), OCSF_GREEN_REFUSED),
        (
            replace(
                SYSLOG, transport="webhook", format="cef", address="https://hooks.example.com/x", secret="k"
            ),
            "format 'cef' is not offered over webhook; choose json, ocsf",
        ),
        (replace(SYSLOG, options={"sd_id": "aifw 1@32473"}), "option sd_id must be NAME@NUMBER"),
        (replace(SYSLOG, options={"sd_id": "aifw"}), "option sd_id must be NAME@NUMBER"),
        (
            replace(SYSLOG, transport="hec", address="https://splunk.example.com:8088"),
            "hec needs a secret: enter the HEC token",
        ),
        (
            replace(SYSLOG, transport="webhook", address="https://hooks.example.com/x", secret="  "),
            "the secret must not be blank",
        ),
        (replace(SYSLOG, options={"colour": "red"}), "option 'colour' is not known for syslog_tcp"),
        (replace(SYSLOG, options={"facility": 24}), "option facility must be a whole number 0–23"),
        (replace(SYSLOG, address="127.0.0.1"), "address must be host:port"),
        (replace(SYSLOG, address="::1:514"), "address must be host:port"),
        (replace(SYSLOG, address="127.0.0.1:70000"), "port must be 1–65535"),
        (
            replace(SYSLOG, transport="hec", address="http://splunk.example.com:8088", secret="t"),
            "address must use https://",
        ),
        (replace(SYSLOG, name="   "), "name must not be blank"),
        (replace(SYSLOG, name="x" * 101), "name must be at most 100 characters"),
        (
            replace(SYSLOG, forward_alerts=False, event_risk_levels=frozenset()),
            "forward alerts, events of some",
        ),
        (replace(SYSLOG, transport="carrier_pigeon"), "transport must be one of"),
        (replace(SYSLOG, secret="key"), "syslog_tcp takes no secret"),
        (
            replace(SYSLOG, transport="syslog_tls", secret="-----BEGIN PRIVATE KEY-----"),
            "needs its certificate: set option client_cert_file",
        ),
    ],
)
async def test_invalid_destination_is_refused_with_a_clear_message(
    engine: AsyncEngine, spec: DestinationSpec, message: str
) -> None:
    await add_org(engine)
    async with new_sessionmaker(engine)() as session:
        with pytest.raises(DestinationError, match=None) as refused:
            await create_destination(
                session=session, organization_id="acme", spec=spec, actor=Actor.cli(), secrets=SECRETS
            )
    assert message in str(refused.value)


async def test_valid_destinations_of_every_transport_are_accepted(engine: AsyncEngine) -> None:
    await add_org(engine)
    specs = [
        replace(SYSLOG, name="tcp", options={"sd_id": "acme@12345", "facility": 4, "app_name": "aifw"}),
        replace(SYSLOG, name="udp", transport="syslog_udp", address="[::1]:514", format="cef"),
        replace(
            SYSLOG,
            name="tls",
            transport="syslog_tls",
            address="siem.example.com:6514",
            options={
                "ca_file": "/etc/ssl/ca.pem",
                "client_cert_file": "/etc/ssl/me.pem",
                "server_name": "siem",
            },
            secret="-----BEGIN PRIVATE KEY-----",
        ),
        replace(SYSLOG, name="relp", transport="relp", format="ocsf"),
        replace(
            SYSLOG,
            name="splunk",
            transport="hec",
            address="https://splunk.example.com:8088",
            options={"hec_ack": True, "index": "aifw", "sourcetype": "aifw:json"},
            secret=HEC_TOKEN,
        ),
        replace(
            SYSLOG,
            name="hook",
            transport="webhook",
            format="ocsf",
            address="http://127.0.0.1:9/h",
            secret="k",
        ),
    ]
    async with new_sessionmaker(engine)() as session:
        for spec in specs:
            await create_destination(
                session=session, organization_id="acme", spec=spec, actor=Actor.cli(), secrets=SECRETS
            )
        await session.commit()
        names = [row.name for row in await list_destinations(session=session, organization_id="acme")]
    assert names == ["hook", "relp", "splunk", "tcp", "tls", "udp"]


async def test_names_are_unique_per_organisation_whatever_their_case(engine: AsyncEngine) -> None:
    await add_org(engine)
    await add_org(engine, "globex")
    await add_destination(engine, address="127.0.0.1:514", name="Splunk")
    await add_destination(engine, address="127.0.0.1:514", name="splunk", organization_id="globex")
    with pytest.raises(DestinationError, match="already has a destination named 'SPLUNK'"):
        await add_destination(engine, address="127.0.0.1:514", name="SPLUNK")


async def test_the_secret_is_encrypted_and_never_in_audit_rows_or_reprs(engine: AsyncEngine) -> None:
    await add_org(engine)
    row = await add_destination(
        engine, address="https://splunk.example.com:8088", transport="hec", secret=HEC_TOKEN, name="splunk"
    )
    assert row.secret_ciphertext is not None
    assert HEC_TOKEN not in row.secret_ciphertext
    assert SECRETS.decrypt(row.secret_ciphertext) == HEC_TOKEN
    spec = DestinationSpec(
        name="splunk",
        transport="hec",
        format="cef",
        address="https://splunk.example.com:8088",
        secret="a-new-token-also-never-shown",
    )
    assert "a-new-token" not in repr(spec)
    async with new_sessionmaker(engine)() as session:
        updated, changes = await update_destination(
            session=session, destination_id=row.id, spec=spec, actor=Actor.cli(), secrets=SECRETS
        )
        await session.commit()
        audit = (
            await session.scalars(select(AuditEvent).where(AuditEvent.entity_type == "destination"))
        ).all()
    assert changes["secret"] == {"changed": True}
    assert changes["format"] == {"before": "json", "after": "cef"}
    assert "a-new-token" not in repr(updated)
    assert HEC_TOKEN not in repr(row)
    assert sorted(event.action for event in audit) == ["destination.create", "destination.update"]
    for event in audit:
        assert event.changes["secret"] == {"changed": True}
        text = json.dumps(event.changes)
        assert HEC_TOKEN not in text
        assert "a-new-token" not in text
        assert str(updated.secret_ciphertext) not in text
        assert str(row.secret_ciphertext) not in text


async def test_an_update_without_a_secret_keeps_the_stored_one(engine: AsyncEngine) -> None:
    await add_org(engine)
    row = await add_destination(
        engine, address="https://splunk.example.com:8088", transport="hec", secret=HEC_TOKEN, name="splunk"
    )
    spec = DestinationSpec(
        name="Splunk prod", transport="hec", format="json", address="https://splunk.example.com:8088"
    )
    async with new_sessionmaker(engine)() as session:
        updated, changes = await update_destination(
            session=session, destination_id=row.id, spec=spec, actor=Actor.cli(), secrets=SECRETS
        )
        await session.commit()
    assert "secret" not in changes
    assert changes["name"] == {"before": "splunk", "after": "Splunk prod"}
    assert updated.secret_ciphertext is not None
    assert SECRETS.decrypt(updated.secret_ciphertext) == HEC_TOKEN


async def test_a_viewer_cannot_add_a_destination(engine: AsyncEngine) -> None:
    await add_org(engine)
    async with new_sessionmaker(engine)() as session:
        await add_user(session, "viewer")
    async with new_sessionmaker(engine)() as session:
        with pytest.raises(NotAllowed, match="only administrators can add forwarding destinations"):
            await create_destination(
                session=session,
                organization_id="acme",
                spec=SYSLOG,
                actor=Actor.console("viewer"),
                secrets=SECRETS,
            )


async def test_a_new_destination_starts_at_the_end_of_both_streams(engine: AsyncEngine) -> None:
    await add_org(engine)
    await store(engine, events(5))
    await add_alert_revision(engine)
    await wait_until(lambda: settled(engine), what="the stored rows to be visible")
    row = await add_destination(engine, address="127.0.0.1:514", forward_alerts=True)
    async with new_sessionmaker(engine)() as session:
        lag = await destination_lag(session=session, destination=row)
        assert await load_cursor(session, name=events_cursor_name(row.id)) is not None
        assert await load_cursor(session, name=alerts_cursor_name(row.id)) is not None
    assert (lag.events_behind, lag.alerts_behind, lag.oldest_undelivered_at) == (0, 0, None)


async def test_lag_counts_what_the_filter_wants_after_the_cursors(engine: AsyncEngine) -> None:
    await add_org(engine)
    await add_org(engine, "globex")
    row = await add_destination(engine, address="127.0.0.1:514", forward_alerts=True, risk_levels=("red",))
    await store(engine, events(6, risks=("red", "amber", "green")))  # 2 red
    await store(engine, events(4, organization_id="globex", risks=("red",)))
    alert = await add_alert_revision(engine)
    await add_alert_revision(engine, alert=alert, activity="update")
    await add_alert_revision(engine, organization_id="globex")
    async with new_sessionmaker(engine)() as session:
        lag = await destination_lag(session=session, destination=row)
    assert (lag.events_behind, lag.alerts_behind) == (2, 2)
    assert lag.oldest_undelivered_at == BASE_TIME  # make_event(0) is red
    async with new_sessionmaker(engine)() as session:
        ids = await commit_order(engine, "acme", ["red"])
        # Past the first red event (as a forwarder saves it after a batch): one left.
        await save_cursor(
            session, name=events_cursor_name(row.id), position=await _position_of(engine, ids[0])
        )
        await session.commit()
        lag = await destination_lag(session=session, destination=row)
    assert lag.events_behind == 1


async def _position_of(engine: AsyncEngine, event_id: str) -> Position:
    """Where a reader stands right after this event."""
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                select(LogEntry.commit_seq, LogEntry.organization_id, LogEntry.id).where(
                    LogEntry.id == uuid.UUID(event_id)
                )
            )
        ).one()
    return Position(int(row[0] or 0), str(row[1]), str(row[2]))


async def test_retention_sees_the_oldest_event_an_enabled_destination_has_not_received(
    engine: AsyncEngine,
) -> None:
    await add_org(engine)
    await add_org(engine, "globex")
    red_only = await add_destination(engine, address="127.0.0.1:514", risk_levels=("red",), name="red")
    amber = await add_destination(engine, address="127.0.0.1:514", risk_levels=("amber",), name="amber")
    await add_destination(engine, address="127.0.0.1:514", risk_levels=("green",), name="off")
    async with new_sessionmaker(engine)() as session:
        off = (await list_destinations(session=session, organization_id="acme"))[1]
        assert off.name == "off"
        await set_destination_enabled(
            session=session, destination_id=off.id, enabled=False, actor=Actor.cli()
        )
        await session.commit()
    # Times: index 0 green (not wanted by an enabled destination), 1 amber, 2 red, ...
    await store(engine, events(9, risks=("green", "amber", "red")))
    await store(engine, events(3, organization_id="globex", risks=("red",)))
    async with new_sessionmaker(engine)() as session:
        oldest = await oldest_undelivered_event_at(session=session, organization_id="acme")
        before_5 = await count_undelivered_events_before(
            session=session, organization_id="acme", before=BASE_TIME + timedelta(seconds=5)
        )
        everything = await count_undelivered_events_before(
            session=session, organization_id="acme", before=utcnow()
        )
    assert oldest == BASE_TIME + timedelta(seconds=1)
    assert before_5 == 3  # amber 1 and 4, red 2; green 0 and 3 only the disabled destination wants
    assert everything == 6
    # Once the amber destination has passed everything, only red events hold retention back.
    async with new_sessionmaker(engine)() as session:
        amber_cursor = await load_cursor(session, name=events_cursor_name(amber.id))
        red_cursor = await load_cursor(session, name=events_cursor_name(red_only.id))
        assert amber_cursor is not None
        assert red_cursor is not None
        await save_cursor(session, name=events_cursor_name(amber.id), position=Position(2**62))
        await session.commit()
        assert await oldest_undelivered_event_at(
            session=session, organization_id="acme"
        ) == BASE_TIME + timedelta(seconds=2)
        await save_cursor(session, name=events_cursor_name(red_only.id), position=Position(2**62))
        await session.commit()
        assert await oldest_undelivered_event_at(session=session, organization_id="acme") is None
        assert (
            await count_undelivered_events_before(session=session, organization_id="acme", before=utcnow())
            == 0
        )


async def test_each_undelivered_event_counts_once_however_many_destinations_miss_it(
    engine: AsyncEngine,
) -> None:
    await add_org(engine)
    await add_destination(engine, address="127.0.0.1:514", risk_levels=("red",), name="a")
    await add_destination(engine, address="127.0.0.1:514", risk_levels=("red", "amber"), name="b")
    await store(engine, events(4, risks=("red", "amber")))
    async with new_sessionmaker(engine)() as session:
        assert (
            await count_undelivered_events_before(session=session, organization_id="acme", before=utcnow())
            == 4
        )


async def _dead_letter(engine: AsyncEngine, destination_id: uuid.UUID) -> uuid.UUID:
    async with new_sessionmaker(engine)() as session:
        row = DeadLetter(
            destination_id=destination_id,
            organization_id="acme",
            stream="event",
            item_id=str(uuid.uuid4()),
            payload="{}",
            error="HEC 400: invalid event",
        )
        session.add(row)
        await session.commit()
        return row.id


async def test_dead_letters_are_retried_and_discarded_by_administrators_audited(engine: AsyncEngine) -> None:
    await add_org(engine)
    row = await add_destination(
        engine, address="https://splunk.example.com:8088", transport="hec", secret=HEC_TOKEN, name="splunk"
    )
    first, second = await _dead_letter(engine, row.id), await _dead_letter(engine, row.id)
    async with new_sessionmaker(engine)() as session:
        await add_user(session, "viewer")
        with pytest.raises(NotAllowed):
            await retry_dead_letters(session=session, ids=[first], actor=Actor.console("viewer"))
    async with new_sessionmaker(engine)() as session:
        assert await retry_dead_letters(session=session, ids=[first], actor=Actor.cli()) == 1
        assert await discard_dead_letters(session=session, ids=[second], actor=Actor.cli()) == 1
        await session.commit()
        letters = await list_dead_letters(session=session, destination_id=row.id)
        audit = (
            await session.scalars(select(AuditEvent).where(AuditEvent.entity_type == "dead_letter"))
        ).all()
    assert [(letter.id, letter.retry_requested) for letter in letters] == [(first, True)]
    assert sorted((event.action, event.entity_id) for event in audit) == sorted(
        [("dead_letter.retry", str(first)), ("dead_letter.discard", str(second))]
    )


async def test_deleting_a_destination_removes_its_cursors_and_dead_letters(engine: AsyncEngine) -> None:
    await add_org(engine)
    row = await add_destination(engine, address="127.0.0.1:514")
    await _dead_letter(engine, row.id)
    async with new_sessionmaker(engine)() as session:
        await delete_destination(session=session, destination_id=row.id, actor=Actor.cli())
        await session.commit()
        assert await list_destinations(session=session) == []
        assert await list_dead_letters(session=session) == []
        assert (await session.scalars(select(StreamCursor))).all() == []
        actions = (
            await session.scalars(select(AuditEvent.action).where(AuditEvent.entity_type == "destination"))
        ).all()
    assert sorted(actions) == ["destination.create", "destination.delete"]


async def test_disabling_and_enabling_is_audited_and_shown_as_the_state(engine: AsyncEngine) -> None:
    await add_org(engine)
    row = await add_destination(engine, address="127.0.0.1:514")
    async with new_sessionmaker(engine)() as session:
        disabled = await set_destination_enabled(
            session=session, destination_id=row.id, enabled=False, actor=Actor.cli()
        )
        await session.commit()
        assert (disabled.enabled, disabled.state) == (False, "disabled")
        enabled = await set_destination_enabled(
            session=session, destination_id=row.id, enabled=True, actor=Actor.cli()
        )
        await session.commit()
        actions = (
            await session.scalars(select(AuditEvent.action).where(AuditEvent.entity_id == str(row.id)))
        ).all()
    assert (enabled.enabled, enabled.state) == (True, "active")
    assert sorted(actions) == ["destination.create", "destination.disable", "destination.enable"]
    assert (await reload(engine, row.id)).enabled


async def test_taking_up_alerts_later_starts_at_their_end(engine: AsyncEngine) -> None:
    await add_org(engine)
    row = await add_destination(engine, address="127.0.0.1:514", forward_alerts=False, risk_levels=("red",))
    await add_alert_revision(engine)
    await wait_until(lambda: settled(engine), what="the alert revision to be visible")
    spec = DestinationSpec(
        name=row.name, transport=row.transport, format=row.format, address=row.address, forward_alerts=True
    )
    async with new_sessionmaker(engine)() as session:
        updated, changes = await update_destination(
            session=session, destination_id=row.id, spec=spec, actor=Actor.cli(), secrets=SECRETS
        )
        await session.commit()
        lag = await destination_lag(session=session, destination=updated)
    assert changes["forward_alerts"] == {"before": False, "after": True}
    assert lag.alerts_behind == 0
    await add_alert_revision(engine)
    async with new_sessionmaker(engine)() as session:
        assert (await destination_lag(session=session, destination=updated)).alerts_behind == 1
