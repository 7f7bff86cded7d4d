"""The index policy of log_entries (docs/index-policy.md) holds on PostgreSQL: exactly its indexes, on the
parent and every partition, and each named query in db/ planned on the index the policy names.

The plans are read with ``enable_seqscan`` off on a small analysed table, so that the planner shows
which index it can use for a query rather than what is cheapest on a few hundred rows; a query that
no index serves still plans a (disabled) sequential scan, and the test fails.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from sqlalchemy import Table, event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from db import logs, retention, streams
from db.base import utcnow
from db.devices import device_activity
from db.events import store_events
from db.models import LogEntry
from db.partition_layout import PARENT
from db.streams import Position
from tests.support.database import add_organization, make_event, store_logs

POLICY = Path(__file__).resolve().parents[2] / "docs" / "index-policy.md"
ROWS = 3000


def policy_indexes() -> dict[str, str]:
    """Index name -> its row of the policy's first table ("The indexes")."""
    section = POLICY.read_text().split("## The indexes", 1)[1].split("\n## ", 1)[0]
    found = {}
    for line in section.splitlines():
        match = re.match(r"\|\s*`([a-z_]+)`\s*\|", line)
        if match:
            found[match.group(1)] = line
    return found


@pytest.fixture
async def pg_engine(engine: AsyncEngine, backend: str) -> AsyncEngine:
    if backend != "postgresql":
        pytest.skip("partitions and plans are PostgreSQL's")
    return engine


@pytest.fixture
async def filled(pg_engine: AsyncEngine) -> list[dict[str, Any]]:
    """A few hundred rows over two weeks (two partitions), analysed; each filtered value is rare, as
    one user, tool, device or small organisation is among many."""
    now = utcnow()
    events = [
        make_event(
            index,
            timestamp=now - timedelta(minutes=6 * index),
            organization_id="acme" if index % 50 == 0 else "default",
            risk_level="red" if index % 30 == 0 else ("green", "amber")[index % 2],
            detected_entity_types=["PRIVATE_KEY"] if index % 500 == 0 else [],
            entity_count=1 if index % 500 == 0 else 0,
            tool_name=f"tool-{index % 113}",
            user_id=f"user{index % 997}@example.com",
            device_id=f"dev-{index % 389}",
        )
        for index in range(ROWS)
    ]
    async with AsyncSession(pg_engine) as session:
        await add_organization(session, "acme")
    await store_logs(pg_engine, events)
    async with pg_engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text(f"ANALYZE {PARENT}"))
    return events


async def _partition_index_parents(session: AsyncSession) -> dict[str, str]:
    """Each index name on log_entries or a partition -> the name of the parent's index it belongs to."""
    rows = await session.execute(
        text(
            "SELECT child.relname, parent.relname FROM pg_inherits i"
            " JOIN pg_class child ON child.oid = i.inhrelid JOIN pg_class parent ON parent.oid = i.inhparent"
            " WHERE parent.relkind = 'I'"
        )
    )
    names = {child: parent for child, parent in rows.all()}
    for name in await _parent_indexes(session):
        names[name] = name
    return names


async def _parent_indexes(session: AsyncSession) -> set[str]:
    rows = await session.scalars(text("SELECT indexname FROM pg_indexes WHERE tablename = :t"), {"t": PARENT})
    return set(rows.all())


def _plan_indexes(plan: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(index names a plan reads or arbitrates on, partitions of log_entries it scans sequentially)."""
    indexes = set(plan.get("Conflict Arbiter Indexes", []))
    if "Index Name" in plan:
        indexes.add(plan["Index Name"])
    relation = str(plan.get("Relation Name", ""))
    scans = {relation} if plan.get("Node Type") == "Seq Scan" and relation.startswith(PARENT) else set()
    for child in plan.get("Plans", []):
        more, seq = _plan_indexes(child)
        indexes |= more
        scans |= seq
    return indexes, scans


async def planned_indexes(
    session: AsyncSession, run: Callable[[AsyncSession], Awaitable[Any]], *, marker: str
) -> set[str]:
    """Run a named query of db/ as it is, capture its statements on log_entries containing ``marker``, and
    return the parent indexes PostgreSQL plans them on (no sequential scan of a partition allowed)."""
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if marker in statement and "log_entries" in statement and not statement.startswith("EXPLAIN"):
            captured.append((statement, parameters))

    parents = await _partition_index_parents(session)
    await session.execute(text("SET LOCAL enable_seqscan = off"))
    sync_engine = session.get_bind()
    event.listen(sync_engine, "before_cursor_execute", capture)
    try:
        await run(session)
    finally:
        event.remove(sync_engine, "before_cursor_execute", capture)
    assert captured, f"no statement with {marker!r} was run"
    used: set[str] = set()
    connection = await session.connection()
    for statement, parameters in captured:
        result = await connection.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters)
        document = result.scalar_one()
        plan = orjson.loads(document) if isinstance(document, str | bytes) else document
        indexes, seq_scans = _plan_indexes(plan[0]["Plan"])
        assert not seq_scans, f"sequential scan of {sorted(seq_scans)} in {statement}"
        used |= {parents.get(name, name) for name in indexes}
    await session.rollback()
    return used


# --- the set of indexes ------------------------------------------------------------------------------


async def test_log_entries_has_exactly_the_indexes_of_the_policy(pg_engine: AsyncEngine) -> None:
    async with AsyncSession(pg_engine) as session:
        assert await _parent_indexes(session) == set(policy_indexes())


async def test_every_partition_has_each_index_of_the_policy_and_no_other(pg_engine: AsyncEngine) -> None:
    async with AsyncSession(pg_engine) as session:
        partitions = (
            await session.scalars(
                text(
                    "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = CAST(:t AS regclass)"
                ),
                {"t": PARENT},
            )
        ).all()
        parents = await _partition_index_parents(session)
        assert len(partitions) > 50  # a year back and two weeks ahead
        for partition in partitions:
            own = (
                await session.scalars(
                    text("SELECT indexname FROM pg_indexes WHERE tablename = :t"), {"t": partition.strip('"')}
                )
            ).all()
            assert sorted(parents.get(name, "(not attached) " + name) for name in own) == sorted(
                policy_indexes()
            ), partition


def test_the_model_declares_the_policy() -> None:
    table = cast(Table, LogEntry.__table__)
    declared = {index.name for index in table.indexes} | {"pk_log_entries"}
    assert declared == set(policy_indexes())


# --- each named query on its index ---------------------------------------------------------------------


PAGE_CASES = {
    "no filter": (logs.LogFilter(), "ix_log_entries_timestamp_id"),
    "a time range": (logs.LogFilter(since=utcnow() - timedelta(days=3)), "ix_log_entries_timestamp_id"),
    "risk red": (logs.LogFilter(risk_levels=frozenset({"red"})), "ix_log_entries_risk_timestamp_id"),
    "risk amber and red": (
        logs.LogFilter(risk_levels=frozenset({"amber", "red"})),
        "ix_log_entries_risk_timestamp_id",
    ),
    "user": (logs.LogFilter(user="user1@example.com"), "idx_user_timestamp"),
    "tool": (logs.LogFilter(tool="tool-3"), "idx_tool_timestamp"),
    "device": (logs.LogFilter(device="dev-1"), "ix_log_entries_device_timestamp"),
    "organisation": (logs.LogFilter(organization="acme"), "idx_org_timestamp"),
    "entity type": (logs.LogFilter(entity_type="PRIVATE_KEY"), "ix_log_entries_entity_types"),
    "search a user prefix": (logs.LogFilter(search="user99*"), "idx_user_timestamp"),
}


@pytest.mark.parametrize("case", PAGE_CASES)
async def test_each_console_page_walks_the_index_of_its_filter(
    pg_engine: AsyncEngine, filled: list[dict[str, Any]], case: str
) -> None:
    filters, index = PAGE_CASES[case]
    async with AsyncSession(pg_engine) as session:
        used = await planned_indexes(
            session, lambda s: logs.page(session=s, filters=filters), marker="SELECT"
        )
    assert index in used
    assert index in policy_indexes()


async def test_a_deep_page_walks_the_same_index(pg_engine: AsyncEngine, filled: list[dict[str, Any]]) -> None:
    async with AsyncSession(pg_engine) as session:
        first = await logs.page(session=session, filters=logs.LogFilter(), limit=100)
        assert first.last is not None
        used = await planned_indexes(
            session,
            lambda s: logs.page(session=s, filters=logs.LogFilter(), after=first.last),
            marker="SELECT",
        )
    assert "ix_log_entries_timestamp_id" in used


@pytest.mark.parametrize("organization", [None, "acme"])
async def test_search_by_event_id_probes_the_primary_key(
    pg_engine: AsyncEngine, filled: list[dict[str, Any]], organization: str | None
) -> None:
    wanted = next(event for event in filled if event["organization_id"] == "acme")
    filters = logs.LogFilter(search=str(wanted["id"]), organization=organization)
    async with AsyncSession(pg_engine) as session:
        page = await logs.page(session=session, filters=filters)
        assert [row.id for row in page.rows] == [wanted["id"]]
        used = await planned_indexes(
            session, lambda s: logs.page(session=s, filters=filters), marker="SELECT"
        )
    assert "pk_log_entries" in used


async def test_search_by_id_finds_rows_of_an_organisation_without_a_config(engine: AsyncEngine) -> None:
    # Both engines. The rollups (kept by the database for every inserted row) know the organisation; no
    # config row does.
    event = make_event(0, organization_id="no-config-org")
    await store_logs(engine, [make_event(1), event])
    async with AsyncSession(engine) as session:
        page = await logs.page(session=session, filters=logs.LogFilter(search=str(event["id"])))
        found = [row.id for row in page.rows]
        counted = await logs.count(session=session, filters=logs.LogFilter(search=str(event["id"])))
    assert found == [event["id"]]
    assert counted.value == 1
    assert counted.exact


async def test_retention_batches_walk_the_organisation_index(
    pg_engine: AsyncEngine, filled: list[dict[str, Any]]
) -> None:
    cutoff = utcnow() - timedelta(days=2)
    async with AsyncSession(pg_engine) as session:
        bounds = await planned_indexes(
            session,
            lambda s: retention.batch_bounds(session=s, organization_id="acme", cutoff=cutoff, limit=20),
            marker="SELECT",
        )
        deletes = await planned_indexes(
            session,
            lambda s: retention.delete_expired_batch(
                session=s, organization_id="acme", cutoff=cutoff, lower=None, upper=cutoff
            ),
            marker="DELETE",
        )
    assert bounds == {"idx_org_timestamp"}
    assert deletes == {"idx_org_timestamp"}


async def test_stream_readers_follow_the_commit_order_index(
    pg_engine: AsyncEngine, filled: list[dict[str, Any]]
) -> None:
    async with AsyncSession(pg_engine) as session:
        used = await planned_indexes(
            session, lambda s: streams.read_events(s, after=Position(0), limit=50), marker="commit_seq"
        )
    assert "ix_log_entries_commit_seq" in used


async def test_a_resent_event_meets_the_primary_key(
    pg_engine: AsyncEngine, filled: list[dict[str, Any]]
) -> None:
    resent = dict(filled[0])
    async with AsyncSession(pg_engine) as session:
        # A batch holding an event already stored goes through INSERT … ON CONFLICT (not COPY).
        used = await planned_indexes(
            session, lambda s: store_events(session=s, events=[resent]), marker="ON CONFLICT"
        )
    assert used == {"pk_log_entries"}


async def test_device_activity_reads_the_device_index(
    pg_engine: AsyncEngine, filled: list[dict[str, Any]]
) -> None:
    async with AsyncSession(pg_engine) as session:
        used = await planned_indexes(
            session, lambda s: device_activity(session=s, device_id="dev-1"), marker="device_id"
        )
    assert "ix_log_entries_device_timestamp" in used


async def test_dropping_a_policy_index_is_seen(pg_engine: AsyncEngine, filled: list[dict[str, Any]]) -> None:
    # The plan checks can fail: without the user index the user filter plans another index or a scan.
    async with AsyncSession(pg_engine) as session:
        await session.execute(text("DROP INDEX idx_user_timestamp"))
        used = await _used_without_asserting(session, logs.LogFilter(user="user1@example.com"))
        await session.rollback()
    assert "idx_user_timestamp" not in used


async def _used_without_asserting(session: AsyncSession, filters: logs.LogFilter) -> set[str]:
    await session.execute(text("SET LOCAL enable_seqscan = off"))
    plan = await logs.explain(session, logs.page_statement(filters, postgresql=True))
    return _plan_indexes(plan["Plan"])[0]


def test_a_term_is_a_search_branch_only_where_it_could_be_found() -> None:
    # user, device and tool; an organisation id can look like this, an entity type cannot
    assert len(logs.search_options("not-a-uuid", postgresql=True)) == 4
    assert len(logs.search_options(str(uuid.uuid4()), postgresql=True)) == 5  # and the event id
    assert len(logs.search_options("API_KEY", postgresql=True)) == 5  # both shapes at once
    # a prefix, an e-mail address: neither an organisation id nor an entity type
    assert len(logs.search_options("user12*", postgresql=True)) == 3
    assert len(logs.search_options("ada@example.com", postgresql=True)) == 3
