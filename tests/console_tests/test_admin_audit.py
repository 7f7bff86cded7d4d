"""Audit section: changes from the console and the CLI listed newest first, filtered, with the
before/after of each field and never a secret."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from console.sections.audit import AuditDetailScreen, AuditSection
from db.audit import AuditFilter, describe_changes, list_changes, record_change
from db.engine import new_sessionmaker
from db.rights import Actor, ActorSource
from tests.support.console import open_section, press_and_settle, settle, signed_in


async def record(engine: AsyncEngine, *, actor: str, source: ActorSource, **row) -> None:
    async with new_sessionmaker(engine)() as session:
        await record_change(session=session, actor=Actor(actor, source), **row)
        await session.commit()


async def test_audit_lists_changes_newest_first_and_filters_them(engine: AsyncEngine, app_factory) -> None:
    await record(
        engine,
        actor="ops",
        source="cli",
        action="organization.create",
        entity_type="organization",
        entity_id="acme",
        changes={"log_retention_days": {"after": 90}},
    )
    await record(
        engine,
        actor="alice",
        source="console",
        action="user.reset_password",
        entity_type="user",
        entity_id="bob",
        changes={"password": "brand-new-secret"},
    )
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, AuditSection)
        assert [row.action for row in section.page.rows] == ["user.reset_password", "organization.create"]
        section.query_one("#audit-entity").value = "organization"
        await settle(pilot)
        assert [row.entity_id for row in section.page.rows] == ["acme"]
        section.query_one("#audit-entity").value = "any"
        section.query_one("#audit-source").value = "console"
        await settle(pilot)
        [row] = section.page.rows
        assert row.changes == {"password": {"changed": True}}
        detail = str(section.query_one("#audit-detail").render())
        assert "password: changed" in detail
        assert "brand-new-secret" not in detail


async def test_audit_pages_walk_back_through_every_change_once(session) -> None:
    for index in range(5):
        await record_change(
            session=session,
            actor=Actor("ops", "cli"),
            action="config.update",
            entity_type="config",
            entity_id=f"org-{index}",
        )
    await session.commit()
    seen: list[str] = []
    past = None
    while True:
        page = await list_changes(session=session, filters=AuditFilter(), past=past, limit=2)
        seen += [row.entity_id for row in page.rows]
        if not page.has_more:
            break
        past = (page.rows[-1].occurred_at, page.rows[-1].id)
    assert sorted(seen) == [f"org-{i}" for i in range(5)]
    assert len(seen) == 5


def test_described_changes_show_before_and_after_and_hide_secrets() -> None:
    lines = describe_changes(
        {
            "is_admin": {"before": True, "after": False},
            "password": {"changed": True},
            "email": {"after": "a@example.com"},
            "user_id": {"before": "u1"},
        }
    )
    assert lines == [
        "email = 'a@example.com'",
        "is_admin: True → False",
        "password: changed",
        "user_id was 'u1'",
    ]


async def record_five(engine: AsyncEngine) -> None:
    for index in range(5):
        await record(
            engine,
            actor="ops",
            source="cli",
            action="config.update",
            entity_type="config",
            entity_id=f"org-{index}",
        )


async def test_oldest_first_pages_walk_forward_through_every_change_once(session) -> None:
    for index in range(5):
        await record_change(
            session=session,
            actor=Actor("ops", "cli"),
            action="config.update",
            entity_type="config",
            entity_id=f"org-{index}",
        )
    await session.commit()
    seen: list[str] = []
    past = None
    while True:
        page = await list_changes(
            session=session, filters=AuditFilter(), past=past, oldest_first=True, limit=2
        )
        seen += [row.entity_id for row in page.rows]
        if not page.has_more:
            break
        past = (page.rows[-1].occurred_at, page.rows[-1].id)
    assert seen == [f"org-{i}" for i in range(5)]


async def test_big_g_shows_the_oldest_changes_and_g_the_newest(engine: AsyncEngine, app_factory) -> None:
    await record_five(engine)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, AuditSection)
        table = section.query_one("#audit-table")
        table.focus()
        newest = [row.entity_id for row in section.page.rows]
        assert newest[0] == "org-4"
        await press_and_settle(pilot, "G")
        assert [row.entity_id for row in section.page.rows][0] == "org-0"
        assert table.order_shown == ("When (UTC)", False)
        await press_and_settle(pilot, "g")
        assert [row.entity_id for row in section.page.rows] == newest
        assert table.order_shown == ("When (UTC)", True)


async def test_s_on_the_time_column_flips_the_order_and_elsewhere_says_why_not(
    engine: AsyncEngine, app_factory
) -> None:
    await record_five(engine)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, AuditSection)
        table = section.query_one("#audit-table")
        table.focus()
        before = [row.entity_id for row in section.page.rows]
        await pilot.press("s")  # the column cursor starts on the time
        await settle(pilot)
        assert [row.entity_id for row in section.page.rows] == list(reversed(before))
        await press_and_settle(pilot, "right", "s")
        assert [row.entity_id for row in section.page.rows] == list(reversed(before))
        assert any("no index" in n.message for n in pilot.app._notifications)
        await press_and_settle(pilot, "left", "s")
        assert [row.entity_id for row in section.page.rows] == before


async def test_enter_shows_an_audit_change_in_full(engine: AsyncEngine, app_factory) -> None:
    await record(
        engine,
        actor="ops",
        source="cli",
        action="organization.create",
        entity_type="organization",
        entity_id="acme",
        changes={"log_retention_days": {"after": 90}},
    )
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, AuditSection)
        section.query_one("#audit-table").focus()
        await press_and_settle(pilot, "enter")
        detail = pilot.app.screen
        assert isinstance(detail, AuditDetailScreen)
        assert "log_retention_days = 90" in str(detail.query_one("#audit-detail-text").render())
        await press_and_settle(pilot, "escape")
        assert pilot.app.screen is not detail
