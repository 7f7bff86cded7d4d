"""Alerts section keys: g/G the newest and oldest page, s on the Updated column flipping the order (and
explaining itself on the others), F filtering by the State, Rule and Org cells, c clearing, on both
engines (the pages are keyset walks of the database either way)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from console.sections import alerts as alerts_module
from console.sections.alerts import DEFAULT_STATES, NOT_A_FILTER, TIME_COLUMN, AlertsSection
from db.base import utcnow
from db.models import Alert
from tests.console_tests.test_alerts_section import add_alert, rule_named
from tests.support.console import add_org, open_section, press_and_settle, settle, signed_in


def notifications(app: Any) -> list[str]:
    return [notification.message for notification in app._notifications]


def ids(alerts: list[Alert]) -> list[str]:
    return [str(alert.id) for alert in alerts]


async def five_alerts(engine: AsyncEngine) -> list[Alert]:
    """Five live alerts, open and acknowledged in turn (the default filter merges one walk per state), the
    first changed last (newest first: made[0] … made[4])."""
    await add_org(engine)
    rule = await rule_named(engine, "Red burst per user")
    now = utcnow()
    return [
        await add_alert(
            engine,
            rule,
            group_key=f"user{i}",
            state="acknowledged" if i % 2 else "open",
            updated_at=now - timedelta(minutes=i),
        )
        for i in range(5)
    ]


async def to_column(pilot: Any, section: AlertsSection, column: str) -> None:
    """Move the table's column cursor to ``column`` with the → key."""
    section.table.focus()
    await pilot.pause()
    while section.table.selected_column != column:
        await pilot.press("right")
    await pilot.pause()


async def test_g_and_G_go_to_the_newest_and_oldest_page(
    engine: AsyncEngine, app_factory, monkeypatch
) -> None:
    monkeypatch.setattr(alerts_module, "ALERT_PAGE_SIZE", 2)
    made = await five_alerts(engine)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, AlertsSection)
        section.table.focus()
        assert section.table.row_keys == ids(made[0:2])
        await press_and_settle(pilot, "G")
        assert section.table.row_keys == ids(made[3:5])  # the oldest two, still newest first
        assert (section.has_next, section.has_previous) == (False, True)
        assert "the last page" in str(section.query_one("#alerts-summary").render())
        await press_and_settle(pilot, "n")
        assert section.table.row_keys == ids(made[3:5])
        assert "This is the last page." in notifications(pilot.app)
        await press_and_settle(pilot, "p")
        assert section.table.row_keys == ids(made[1:3])
        assert "page 2 from the end" in str(section.query_one("#alerts-summary").render())
        await press_and_settle(pilot, "g")
        assert section.table.row_keys == ids(made[0:2])
        assert section.has_previous is False


async def test_s_on_the_time_column_flips_the_order_and_elsewhere_says_why_not(
    engine: AsyncEngine, app_factory, monkeypatch
) -> None:
    monkeypatch.setattr(alerts_module, "ALERT_PAGE_SIZE", 2)
    made = await five_alerts(engine)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, AlertsSection)
        await to_column(pilot, section, "rule")
        await press_and_settle(pilot, "s")
        assert any("sort by time only" in said for said in notifications(pilot.app))
        assert section.table.row_keys == ids(made[0:2])
        await to_column(pilot, section, TIME_COLUMN)
        await press_and_settle(pilot, "s")
        assert section.newest_first is False
        assert section.table.order_shown == (TIME_COLUMN, False)
        assert section.table.row_keys == [str(made[4].id), str(made[3].id)]
        assert "▲" in section.table.columns[TIME_COLUMN].label.plain  # type: ignore[index]
        await press_and_settle(pilot, "n")
        assert section.table.row_keys == [str(made[2].id), str(made[1].id)]
        await pilot.press("g")  # the newest page: now the last one, oldest first
        await settle(pilot)
        assert section.table.row_keys == [str(made[1].id), str(made[0].id)]
        await pilot.press("G")  # the oldest page: the first
        await settle(pilot)
        assert section.table.row_keys == [str(made[4].id), str(made[3].id)]
        await press_and_settle(pilot, "s")
        assert section.newest_first is True
        assert section.table.row_keys == ids(made[0:2])


async def test_F_filters_by_state_rule_and_org_and_explains_the_other_columns(
    engine: AsyncEngine, app_factory
) -> None:
    await add_org(engine)
    await add_org(engine, "globex")
    burst = await rule_named(engine, "Red burst per user")
    silent = await rule_named(engine, "Silent agents")
    other = await rule_named(engine, "Red burst per user", "globex")
    now = utcnow()
    open_burst = await add_alert(engine, burst, group_key="ann", updated_at=now)
    acked_burst = await add_alert(
        engine, burst, group_key="bob", state="acknowledged", updated_at=now - timedelta(minutes=1)
    )
    open_silent = await add_alert(engine, silent, group_key="acme", updated_at=now - timedelta(minutes=2))
    globex = await add_alert(engine, other, group_key="cat", updated_at=now - timedelta(minutes=3))
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, AlertsSection)
        assert len(section.table.row_keys) == 4
        section.table.select_key(str(acked_burst.id))
        await to_column(pilot, section, "state")
        await press_and_settle(pilot, "F")
        assert section.query_one("#alerts-state").value == "acknowledged"
        assert section.table.row_keys == [str(acked_burst.id)]
        await press_and_settle(pilot, "c")
        assert section.query_one("#alerts-state").value == DEFAULT_STATES
        section.table.select_key(str(open_burst.id))
        await to_column(pilot, section, "rule")
        await press_and_settle(pilot, "F")
        assert section.filters.rule_id == burst.id
        assert section.table.row_keys == [str(open_burst.id), str(acked_burst.id)]
        await press_and_settle(pilot, "c")
        section.table.select_key(str(globex.id))
        await to_column(pilot, section, "org")
        await press_and_settle(pilot, "F")
        assert section.filters.organization_id == "globex"
        assert section.table.row_keys == [str(globex.id)]
        await press_and_settle(pilot, "c")
        assert set(section.table.row_keys) == {
            str(a.id) for a in (open_burst, acked_burst, open_silent, globex)
        }
        await to_column(pilot, section, "group")
        await press_and_settle(pilot, "F")
        assert NOT_A_FILTER in notifications(pilot.app)
        assert len(section.table.row_keys) == 4


async def test_the_detail_reads_as_labelled_lines_with_utc_and_local_times(
    engine: AsyncEngine, app_factory
) -> None:
    await add_org(engine)
    rule = await rule_named(engine, "Red burst per user")
    alert = await add_alert(engine, rule, group_key="eve", severity="critical", event_ids=["e-1", "e-2"])
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, AlertsSection)
        section.table.select_key(str(alert.id))
        await pilot.pause()
        lines = str(section.query_one("#alert-detail-text").render()).splitlines()
        by_label = {line[:13].strip(): line[13:] for line in lines if line[:13].strip()}
        assert by_label["Severity"] == "critical"
        assert by_label["Group"] == "eve"
        assert by_label["Events"] == "5 events"
        assert " UTC (" in by_label["First event"]
        assert by_label["First event"].endswith(" local)")
        assert by_label["Event ids"].startswith("the first 2")
        assert [line.strip() for line in lines[-2:]] == ["e-1", "e-2"]
        # The severity keeps its colour beside the word.
        assert section.table.get_row(str(alert.id))[0].plain == "crit"
