"""Forwarding section: destinations with state and lag, the destination form (the secret never shown
again, OCSF refusing green), enable/disable, delete, dead letters, and the test message to a real
local receiver (a plain asyncio TCP listener reading octet-counted frames) and to nothing at all."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

from cryptography.fernet import Fernet
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from console.dialogs.confirm import ConfirmScreen
from console.dialogs.dead_letters import DeadLettersScreen
from console.dialogs.destination_form import DestinationFormScreen
from console.sections.cleanup import CleanupSection
from console.sections.forwarding import ForwardingSection
from db.base import utcnow
from db.destinations import OCSF_GREEN_REFUSED, DestinationSpec, create_destination
from db.engine import new_sessionmaker
from db.identifiers import visible
from db.models import DeadLetter, ForwardDestination, RetentionRun
from db.secrets import SecretBox
from tests.console_tests.naughty_strings import NAUGHTY, WITH_CONTROLS
from tests.support.console import (
    add_org,
    audit_rows,
    confirm,
    fill,
    open_section,
    press_and_settle,
    pump_until,
    settle,
    signed_in,
    submit,
)
from tests.support.database import SETUP

KEY = Fernet.generate_key()


def secrets() -> SecretBox:
    return SecretBox([KEY])


def notifications(app) -> list[str]:
    return [notification.message for notification in app._notifications]


async def add_destination(engine: AsyncEngine, name: str = "siem", **spec: object) -> ForwardDestination:
    values: dict[str, object] = {
        "name": name,
        "transport": "syslog_tcp",
        "format": "json",
        "address": "127.0.0.1:6514",
    }
    values.update(spec)
    async with new_sessionmaker(engine)() as session:
        row = await create_destination(
            session=session,
            organization_id="acme",
            spec=DestinationSpec(**values),  # type: ignore[arg-type]
            actor=SETUP,
            secrets=secrets(),
        )
        await session.commit()
        return row


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.asynccontextmanager
async def octet_counted_receiver() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A syslog receiver over TCP (RFC 6587 octet counting): yields its port and the frames it read."""
    frames: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                length = await reader.readuntil(b" ")
                frames.append(await reader.readexactly(int(length[:-1])))
        except (asyncio.IncompleteReadError, ValueError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, frames
    finally:
        server.close()
        await server.wait_closed()


async def test_destinations_are_listed_with_state_and_lag(engine: AsyncEngine, app_factory) -> None:
    await add_org(engine)
    await add_destination(engine, "siem")
    paused = await add_destination(engine, "splunk", transport="syslog_udp", address="127.0.0.1:514")
    async with new_sessionmaker(engine)() as session:
        row = await session.get(ForwardDestination, paused.id)
        assert row is not None
        row.state, row.last_error = "paused", "connection refused"
        await session.commit()
    async with signed_in(app_factory(secret_key=KEY.decode()), engine) as pilot:
        section = await open_section(pilot, ForwardingSection)
        shown = {item.row.name: item for item in section.destinations.values()}
        assert set(shown) == {"siem", "splunk"}
        assert shown["splunk"].row.state == "paused"
        assert shown["siem"].lag.events_behind == 0
        key = str(paused.id)
        assert section.table.cell_value(key, "via") == "syslog_udp/json"
        assert section.table.cell_value(key, "state") == "paused"
        assert section.table.cell_value(key, "error") == "connection refused"
        assert section.table.cell_value(key, "address") == "127.0.0.1:514"
        summary = str(section.query_one("#forwarding-summary").render())
        assert summary.startswith("2 destinations · 1 paused")


async def test_adding_a_destination_stores_the_secret_and_never_shows_it_again(
    engine: AsyncEngine, app_factory
) -> None:
    await add_org(engine)
    async with signed_in(app_factory(secret_key=KEY.decode()), engine) as pilot:
        section = await open_section(pilot, ForwardingSection)
        await press_and_settle(pilot, "n")
        assert isinstance(pilot.app.screen, DestinationFormScreen)
        fill(pilot, transport="hec")
        await settle(pilot)
        form = pilot.app.screen
        assert [value for _, value in form.query_one("#format")._options if value] == ["json", "cef", "ocsf"]
        fill(pilot, name="splunk", address="https://127.0.0.1:8088", secret="hec-token-1234", index="aifw")
        await submit(pilot)
        assert not isinstance(pilot.app.screen, DestinationFormScreen), form.error_of("form")
        await settle(pilot)
        async with new_sessionmaker(engine)() as session:
            row = (await session.scalars(select(ForwardDestination))).one()
        assert row.transport == "hec"
        assert row.options == {"index": "aifw"}
        assert row.secret_ciphertext
        assert "hec-token-1234" not in row.secret_ciphertext
        assert secrets().decrypt(row.secret_ciphertext) == "hec-token-1234"
        assert [a.action for a in await audit_rows(engine)] == ["destination.create"]
        assert "hec-token-1234" not in repr([a.changes for a in await audit_rows(engine)])
        assert str(row.id) in section.destinations
        # Editing shows every field again but the secret, and an empty secret keeps the stored one.
        section.table.select_key(str(row.id))
        await press_and_settle(pilot, "e")
        form = pilot.app.screen
        assert isinstance(form, DestinationFormScreen)
        assert form.query_one("#secret").value == ""
        assert "empty keeps the stored one" in str(form.query_one("#secret-hint").render())
        fill(pilot, sourcetype="aifw:event")
        await submit(pilot)
        assert not isinstance(pilot.app.screen, DestinationFormScreen), form.error_of("form")
        async with new_sessionmaker(engine)() as session:
            edited = await session.get(ForwardDestination, row.id)
        assert edited is not None
        assert edited.options == {"index": "aifw", "sourcetype": "aifw:event"}
        assert secrets().decrypt(edited.secret_ciphertext or "") == "hec-token-1234"


async def test_webhooks_offer_no_cef_and_ocsf_refuses_green_with_the_message(
    engine: AsyncEngine, app_factory
) -> None:
    await add_org(engine)
    async with signed_in(app_factory(secret_key=KEY.decode()), engine) as pilot:
        await open_section(pilot, ForwardingSection)
        await press_and_settle(pilot, "n")
        form = pilot.app.screen
        assert isinstance(form, DestinationFormScreen)
        fill(pilot, transport="webhook")
        await settle(pilot)
        assert [value for _, value in form.query_one("#format")._options if value] == ["json", "ocsf"]
        fill(pilot, transport="syslog_tcp")
        await settle(pilot)
        fill(pilot, name="ocsf", address="127.0.0.1:6514", format="ocsf")
        form.query_one("#risk-green").value = True
        await submit(pilot)
        assert pilot.app.screen is form
        assert form.error_of("risk_levels") == OCSF_GREEN_REFUSED
        async with new_sessionmaker(engine)() as session:
            assert (await session.scalars(select(ForwardDestination))).all() == []


async def test_disabling_asks_first_and_deleting_is_confirmed_and_audited(
    engine: AsyncEngine, app_factory
) -> None:
    await add_org(engine)
    row = await add_destination(engine)
    async with signed_in(app_factory(secret_key=KEY.decode()), engine) as pilot:
        section = await open_section(pilot, ForwardingSection)
        await press_and_settle(pilot, "a")
        assert isinstance(pilot.app.screen, ConfirmScreen)
        await confirm(pilot)
        assert section.destinations[str(row.id)].row.enabled is False
        await pilot.press("a")  # enabling again needs no question
        await settle(pilot)
        assert section.destinations[str(row.id)].row.enabled is True
        await pilot.press("delete")
        await confirm(pilot)
        assert section.destinations == {}
        actions = [a.action for a in await audit_rows(engine)]
        assert actions == ["destination.update", "destination.update", "destination.delete"]


async def test_dead_letters_are_listed_and_retried_or_discarded_when_confirmed(
    engine: AsyncEngine, app_factory
) -> None:
    await add_org(engine)
    row = await add_destination(engine)
    async with new_sessionmaker(engine)() as session:
        for index in range(2):
            session.add(
                DeadLetter(
                    destination_id=row.id,
                    organization_id="acme",
                    stream="event",
                    item_id=f"event-{index}",
                    payload="{}",
                    error=f"HEC 400: invalid event {index}",
                )
            )
        await session.commit()
    async with signed_in(app_factory(secret_key=KEY.decode()), engine) as pilot:
        await open_section(pilot, ForwardingSection)
        await press_and_settle(pilot, "l")
        screen = pilot.app.screen
        assert isinstance(screen, DeadLettersScreen)
        assert len(screen.letters) == 2
        assert "HEC 400" in str(screen.query_one("#dead-letter-error").render())
        await pilot.press("r")
        await confirm(pilot)
        assert sum(letter.retry_requested for letter in screen.letters.values()) == 1
        await pilot.press("X")
        await confirm(pilot, yes=False)
        assert len(screen.letters) == 2
        await pilot.press("X")
        await confirm(pilot)
        assert screen.letters == {}
        async with new_sessionmaker(engine)() as session:
            assert (await session.scalars(select(DeadLetter))).all() == []


async def test_a_test_message_reaches_a_local_receiver(engine: AsyncEngine, app_factory) -> None:
    await add_org(engine)
    async with octet_counted_receiver() as (port, frames):
        await add_destination(engine, address=f"127.0.0.1:{port}")
        async with signed_in(app_factory(secret_key=KEY.decode()), engine) as pilot:
            section = await open_section(pilot, ForwardingSection)
            await pilot.press("t")
            await pump_until(pilot, lambda: section.last_test_result is not None, within=15)
            assert "failed" not in (section.last_test_result or ""), section.last_test_result
            await pump_until(pilot, lambda: bool(frames), within=5)
            assert frames[0].startswith(b"<")  # an RFC 5424 PRI
            assert any("Test message to 'siem'" in message for message in notifications(pilot.app))


async def test_a_test_message_to_nothing_listening_shows_the_error(
    engine: AsyncEngine, app_factory, tmp_path: Path
) -> None:
    await add_org(engine)
    await add_destination(engine, address=f"127.0.0.1:{free_port()}")
    async with signed_in(app_factory(secret_key=KEY.decode()), engine) as pilot:
        section = await open_section(pilot, ForwardingSection)
        await pilot.press("t")
        await pump_until(pilot, lambda: section.last_test_result is not None, within=15)
        assert "Test message to 'siem' failed" in (section.last_test_result or "")
        assert pilot.app.is_running


async def test_a_viewer_sees_no_change_keys(engine: AsyncEngine, app_factory) -> None:
    await add_org(engine)
    await add_destination(engine)
    async with signed_in(app_factory(secret_key=KEY.decode()), engine, "victor", is_admin=False) as pilot:
        section = await open_section(pilot, ForwardingSection)
        section.table.focus()
        await settle(pilot)
        keys = set(pilot.app.screen.active_bindings)
        assert "l" in keys
        assert not {"n", "e", "a", "t", "delete"} & keys
        await press_and_settle(pilot, "delete")
        assert len(section.destinations) == 1


async def test_hostile_names_errors_and_dead_letters_stay_text(engine: AsyncEngine, app_factory) -> None:
    await add_org(engine)
    values = [*NAUGHTY[:10], *WITH_CONTROLS]
    made = [await add_destination(engine, f"d{index}") for index in range(len(values))]
    async with new_sessionmaker(engine)() as session:
        # Written around the validators, as SQL could; receivers' errors are whatever they said.
        for index, (row, value) in enumerate(zip(made, values, strict=True)):
            await session.execute(
                update(ForwardDestination)
                .where(ForwardDestination.id == row.id)
                .values(name=value, last_error=values[-1 - index], state="paused")
            )
            session.add(
                DeadLetter(
                    destination_id=row.id,
                    organization_id="acme",
                    stream="alert",
                    item_id=value[:60],
                    revision=2,
                    payload="{}",
                    error=value,
                )
            )
        await session.commit()
    async with signed_in(app_factory(secret_key=KEY.decode()), engine) as pilot:
        section = await open_section(pilot, ForwardingSection)
        for index, (row, value) in enumerate(zip(made, values, strict=True)):
            assert section.table.cell_value(str(row.id), "name") == visible(value)
            assert section.table.cell_value(str(row.id), "error") == visible(
                " ".join(values[-1 - index].split())
            )
            section.table.select_key(str(row.id))
            await pilot.pause()
            assert visible(value) in str(section.query_one("#forwarding-detail").render())
        for row, value in list(zip(made, values, strict=True))[::5]:
            section.table.select_key(str(row.id))
            await press_and_settle(pilot, "l")
            screen = pilot.app.screen
            assert isinstance(screen, DeadLettersScreen)
            assert visible(value) in str(screen.query_one("#dead-letter-error").render())
            await press_and_settle(pilot, "escape")
        assert pilot.app.is_running


async def test_the_cleanup_history_shows_events_expired_undelivered(engine: AsyncEngine, app_factory) -> None:
    now = utcnow()
    async with new_sessionmaker(engine)() as session:
        for organization_id, undelivered in (("acme", 7), ("globex", 0)):
            session.add(
                RetentionRun(
                    organization_id=organization_id,
                    retention_days=30,
                    cutoff=now - timedelta(days=30),
                    rows_deleted=12,
                    trigger="cli",
                    status="succeeded",
                    undelivered_expired=undelivered,
                    started_at=now,
                )
            )
        await session.commit()
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, CleanupSection)
        history = section.query_one("#cleanup-history")
        cells = {str(row[1]): str(row[6]) for row in (history.get_row(key) for key in history.row_keys)}
        assert cells == {"acme": "7", "globex": "0"}
