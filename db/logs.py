"""Queries of the log browser: filters, keyset pages, counts, follow mode and streamed export.

Pages are keyed on ``(timestamp, id)``, newest first (or oldest first when
asked), and never use OFFSET nor load more than a page: :func:`page` walks an
index from a :class:`Cursor` in either direction, and :func:`last_page` (the
oldest rows) walks it from its other end. Several risk levels are one index range each, merged in order
(``UNION ALL`` of per-level pages), so no filter needs a sort of the matches.
:func:`count` is exact when that is cheap and says when it is not.
:func:`iter_entries` streams the filtered view in keyset chunks for
:func:`export`, whatever its size.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal

import orjson
from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Select,
    and_,
    any_,
    exists,
    func,
    literal,
    or_,
    select,
    text,
    tuple_,
    type_coerce,
    union,
    union_all,
)
from sqlalchemy.dialects.postgresql import JSONB, distinct_on
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import aliased
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import ClauseElement

from db.audit import record_change
from db.base import as_utc
from db.configs import ORGANIZATION_ID_PATTERN
from db.exports import ExportFile, check_export_path
from db.field_lengths import max_length
from db.identifiers import ENTITY_TYPE_PATTERN
from db.log_json import entry_to_dict
from db.models import AuditEvent, FirewallConfig, LogEntry, LogHourlyCount, LogWeeklyCount
from db.rights import Actor, require_active
from db.settings import Settings
from db.vocabulary import DEFAULT_ORGANIZATION_ID, RISK_LEVELS

PAGE_SIZE = 50
#: Counts up to this many matching rows are exact; beyond, the count is marked approximate.
COUNT_CAP = 10_000
#: PostgreSQL: a capped count slower than this gives way to the planner's estimate.
COUNT_TIMEOUT_MS = 400
EXPORT_CHUNK = 2_000
EXPORT_FORMATS = ("csv", "jsonl")
#: Columns of an exported row, in order (also the keys of :func:`entry_to_dict`).
EXPORT_COLUMNS = (
    "id",
    "timestamp",
    "organization_id",
    "device_id",
    "user_id",
    "tool_name",
    "tool_type",
    "risk_level",
    "prompt_length",
    "entity_count",
    "detected_entity_types",
    "was_sanitized",
    "log_metadata",
    "created_at",
)
_MAX_CHAR = "\U0010ffff"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LogFilter:
    """What the log browser shows; every field empty means every row.

    ``risk_levels`` empty means all levels. ``since`` is inclusive, ``until``
    exclusive. ``search`` matches a user, device or tool exactly (by prefix
    when it ends with ``*``), an organisation, an entity type or an event id.
    """

    risk_levels: frozenset[str] = frozenset()
    tool: str | None = None
    user: str | None = None
    device: str | None = None
    organization: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    entity_type: str | None = None
    sanitized: bool | None = None
    search: str = ""

    def __post_init__(self) -> None:
        unknown = set(self.risk_levels) - set(RISK_LEVELS)
        if unknown:
            raise ValueError(f"unknown risk level(s): {', '.join(sorted(unknown))}")
        object.__setattr__(self, "risk_levels", frozenset(self.risk_levels))
        for name in ("tool", "user", "device", "organization", "entity_type"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value or "").strip() or None)
        object.__setattr__(self, "search", (self.search or "").strip())
        if self.since is not None:
            object.__setattr__(self, "since", as_utc(self.since))
        if self.until is not None:
            object.__setattr__(self, "until", as_utc(self.until))

    @property
    def effective_risk_levels(self) -> tuple[str, ...]:
        """The risk levels that restrict rows: empty when none or all are chosen."""
        if not self.risk_levels or set(self.risk_levels) == set(RISK_LEVELS):
            return ()
        return tuple(level for level in RISK_LEVELS if level in self.risk_levels)

    @property
    def is_empty(self) -> bool:
        return not self.effective_risk_levels and replace(self, risk_levels=frozenset()) == LogFilter()

    def describe(self) -> str:
        """A short human summary, e.g. ``risk=amber,red tool=ChatGPT``; "all rows" when empty."""
        parts: list[str] = []
        if self.effective_risk_levels:
            parts.append("risk=" + ",".join(self.effective_risk_levels))
        for label, value in (
            ("tool", self.tool),
            ("user", self.user),
            ("device", self.device),
            ("org", self.organization),
            ("entity", self.entity_type),
        ):
            if value:
                parts.append(f"{label}={value}")
        if self.sanitized is not None:
            parts.append("sanitised=" + ("yes" if self.sanitized else "no"))
        if self.since is not None:
            parts.append("from " + self.since.strftime("%Y-%m-%d %H:%M"))
        if self.until is not None:
            parts.append("until " + self.until.strftime("%Y-%m-%d %H:%M"))
        if self.search:
            parts.append(f"search={self.search!r}")
        return " ".join(parts) or "all rows"


@dataclass(frozen=True, order=True)
class Cursor:
    """A position in the (timestamp, id) order of the rows: the timestamp and id of one row."""

    timestamp: datetime
    id: uuid.UUID

    @classmethod
    def of(cls, entry: LogEntry) -> Cursor:
        return cls(as_utc(entry.timestamp), entry.id)


@dataclass(frozen=True)
class Page:
    """Up to a page of rows in the order shown, and whether rows exist beyond each end (in time).

    ``newest_first`` is the order of ``rows`` (and of the whole view); ``first`` and ``last``
    are the top and bottom rows as shown, the cursors of the previous and next pages.
    """

    rows: Sequence[LogEntry]
    has_newer: bool
    has_older: bool
    newest_first: bool = True

    @property
    def first(self) -> Cursor | None:
        return Cursor.of(self.rows[0]) if self.rows else None

    @property
    def last(self) -> Cursor | None:
        return Cursor.of(self.rows[-1]) if self.rows else None

    @property
    def has_next(self) -> bool:
        """Rows come after the bottom row in the order shown (older when newest first)."""
        return self.has_older if self.newest_first else self.has_newer

    @property
    def has_previous(self) -> bool:
        """Rows come before the top row in the order shown (newer when newest first)."""
        return self.has_newer if self.newest_first else self.has_older


@dataclass(frozen=True)
class LogCount:
    """How many rows match: ``exact``, a lower bound (``at_least``) or a planner estimate."""

    value: int
    exact: bool = True
    at_least: bool = False

    def label(self) -> str:
        if self.exact:
            return f"{self.value:,}"
        if self.at_least:
            return f"{self.value:,}+"
        return "≈ " + _round_estimate(self.value)


def _round_estimate(value: int) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f} M"
    if value >= 10_000:
        return f"{value / 1_000:.0f} k"
    return f"{value:,}"


# -- building the WHERE clause ------------------------------------------------------------------


def _is_postgresql(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _contains_entity(entity: str, *, postgresql: bool) -> ColumnElement[bool]:
    if postgresql:
        # Containment uses the GIN (jsonb_path_ops) index of migration 0006.
        return type_coerce(LogEntry.detected_entity_types, JSONB).contains([entity])
    values = func.json_each(LogEntry.detected_entity_types).table_valued("value")
    return exists(select(literal(1)).select_from(values).where(values.c.value == entity))


def _starts_with(column_: Any, prefix: str) -> ColumnElement[bool]:
    # The range lets a b-tree index find the rows; LIKE keeps the match exact whatever the collation.
    return and_(column_ >= prefix, column_ < prefix + _MAX_CHAR, column_.startswith(prefix, autoescape=True))


def organizations_with_rows() -> CompoundSelect[tuple[str]]:
    """Every organisation that can have log rows: configured ones, the default one, and every one the
    rollups have counted (the database counts each inserted row, and rollups outlive retention).

    The rollups' part reads the ``risk`` rows of the weekly counts, a few per organisation and week,
    from their index; it finds the rows of an organisation that has no config row.
    """
    return union(
        select(FirewallConfig.organization_id),
        select(LogWeeklyCount.organization_id).where(LogWeeklyCount.dimension == "risk"),
        select(literal(DEFAULT_ORGANIZATION_ID, LogEntry.organization_id.type)),
    )


def _is_event_id(event_id: uuid.UUID, *, organization: str | None, postgresql: bool) -> ColumnElement[bool]:
    """The row(s) with this id, found through the primary key (organization_id, id, timestamp).

    ``id`` alone has no index: each organisation that can have rows is one probe of the key (in each
    partition on PostgreSQL). A filter that names the organisation already holds ``organization_id =``.
    """
    if organization is not None:
        return LogEntry.id == event_id
    organizations = organizations_with_rows()
    if postgresql:
        # ANY(ARRAY(…)) is computed once (an InitPlan) and becomes an index condition of the key in every
        # partition; IN (SELECT …) would be planned as a join the planner may drive from a wide scan.
        listed = any_(func.array(organizations.scalar_subquery()))
        return and_(LogEntry.organization_id == listed, LogEntry.id == event_id)
    return and_(LogEntry.organization_id.in_(organizations), LogEntry.id == event_id)


def is_prefix_search(term: str) -> bool:
    """True for a search term that matches names by prefix (``user12*``)."""
    return term.endswith("*") and len(term) > 1


def search_options(
    term: str, *, postgresql: bool, organization: str | None = None
) -> list[ColumnElement[bool]]:
    """What a search term may match, one condition per indexed way of finding it.

    A term matches a user, device or tool exactly (or by prefix when it ends
    with ``*``), an organisation or entity type exactly, or an event id.
    ``organization`` is the filter's organisation, if any (the id is then looked up in it).
    A term is looked up as an organisation or an entity type only when it has their shape
    (``acme``, ``API_KEY``): on PostgreSQL each condition is a branch planned in every weekly
    partition, and a prefix search (``user12*``) is neither.
    """
    names = (LogEntry.user_id, LogEntry.device_id, LogEntry.tool_name)
    if is_prefix_search(term):
        options = [_starts_with(name, term[:-1]) for name in names]
    else:
        options = [name == term for name in names]
    if ORGANIZATION_ID_PATTERN.match(term):
        options.append(LogEntry.organization_id == term)
    if ENTITY_TYPE_PATTERN.fullmatch(term):
        options.append(_contains_entity(term, postgresql=postgresql))
    try:
        event_id = uuid.UUID(term)
    except ValueError:
        return options
    options.append(_is_event_id(event_id, organization=organization, postgresql=postgresql))
    return options


def conditions(
    filters: LogFilter, *, postgresql: bool, with_risk: bool = True, with_search: bool = True
) -> list[ColumnElement[bool]]:
    """The WHERE terms of a filter (risk levels as ``IN``, search as ``OR``, unless left out)."""
    terms: list[ColumnElement[bool]] = []
    levels = filters.effective_risk_levels
    if with_risk and levels:
        terms.append(
            LogEntry.risk_level == levels[0] if len(levels) == 1 else LogEntry.risk_level.in_(levels)
        )
    if filters.tool:
        terms.append(LogEntry.tool_name == filters.tool)
    if filters.user:
        terms.append(LogEntry.user_id == filters.user)
    if filters.device:
        terms.append(LogEntry.device_id == filters.device)
    if filters.organization:
        terms.append(LogEntry.organization_id == filters.organization)
    if filters.since is not None:
        terms.append(LogEntry.timestamp >= filters.since)
    if filters.until is not None:
        terms.append(LogEntry.timestamp < filters.until)
    if filters.entity_type:
        terms.append(_contains_entity(filters.entity_type, postgresql=postgresql))
    if filters.sanitized is not None:
        terms.append(LogEntry.was_sanitized.is_(filters.sanitized))
    if with_search and filters.search:
        terms.append(
            or_(*search_options(filters.search, postgresql=postgresql, organization=filters.organization))
        )
    return terms


def _keyset(cursor: Cursor | None, *, older: bool) -> list[ColumnElement[bool]]:
    if cursor is None:
        return []
    key = tuple_(LogEntry.timestamp, LogEntry.id)
    bound = tuple_(literal(cursor.timestamp, LogEntry.timestamp.type), literal(cursor.id, LogEntry.id.type))
    return [key < bound if older else key > bound]


def _order(older: bool) -> tuple[Any, Any]:
    if older:
        return LogEntry.timestamp.desc(), LogEntry.id.desc()
    return LogEntry.timestamp.asc(), LogEntry.id.asc()


def page_statement(
    filters: LogFilter,
    *,
    postgresql: bool,
    cursor: Cursor | None = None,
    older: bool = True,
    limit: int = PAGE_SIZE,
) -> Select[LogEntry]:
    """The SELECT of one keyset page: rows past ``cursor`` going older (or newer), in that order.

    Alternatives (several risk levels, the ways a search term can match) become
    a ``UNION`` of one ordered, limited branch each — every branch an index
    range walked in (timestamp, id) order — merged and cut to ``limit``, so no
    filter needs to sort all its matches.
    """
    base = conditions(filters, postgresql=postgresql, with_risk=False, with_search=False)
    base += _keyset(cursor, older=older)
    levels = filters.effective_risk_levels
    risk_options: list[ColumnElement[bool] | None] = [LogEntry.risk_level == level for level in levels] or [
        None
    ]
    search: list[ColumnElement[bool] | None] = [None]
    if filters.search:
        search = [*search_options(filters.search, postgresql=postgresql, organization=filters.organization)]
    branches = [
        [*base, *(term for term in (risk, match) if term is not None)]
        for risk in risk_options
        for match in search
    ]
    if len(branches) == 1:
        return select(LogEntry).where(*branches[0]).order_by(*_order(older)).limit(limit)
    # Each branch reads whole rows: joining back on the key would make the planner, which cannot count on
    # run-time partition pruning, prefer a hash join over a sequential scan of every partition.
    parts = [
        select(select(LogEntry).where(*where).order_by(*_order(older)).limit(limit).subquery())
        for where in branches
    ]
    dedupe = bool(filters.search)  # a row can match a search more than one way
    if dedupe and not postgresql:
        combined = union(*parts)
    else:
        combined = union_all(*parts)
    rows = aliased(LogEntry, combined.subquery("page_rows"))
    ordering = (
        (rows.timestamp.desc(), rows.id.desc(), rows.organization_id)
        if older
        else (rows.timestamp.asc(), rows.id.asc(), rows.organization_id)
    )
    statement = select(rows).order_by(*ordering).limit(limit)
    if dedupe and postgresql:
        # PostgreSQL cannot compare json values for UNION: DISTINCT ON the key instead.
        statement = statement.ext(distinct_on(rows.timestamp, rows.id, rows.organization_id))
    return statement


# -- pages, counts, follow mode ------------------------------------------------------------------


#: The time windows a prefix search walks before it reads without a bound (see :func:`_fetch`).
PREFIX_SEARCH_WINDOWS: Final = (timedelta(days=7), timedelta(days=35))


async def _fetch_rows(
    session: AsyncSession, filters: LogFilter, cursor: Cursor | None, *, older: bool, limit: int
) -> list[LogEntry]:
    statement = page_statement(
        filters, postgresql=_is_postgresql(session), cursor=cursor, older=older, limit=limit
    )
    return list((await session.scalars(statement)).all())


async def _fetch(
    session: AsyncSession, filters: LogFilter, cursor: Cursor | None, *, older: bool, limit: int
) -> list[LogEntry]:
    """Up to ``limit`` matching rows past ``cursor``, going older (or newer), in that order.

    A prefix search cannot walk an index in time order: ``user12*`` matches many users, and each
    branch reads every row of all of them to keep the newest. Without a bound in the walking
    direction it reads them first in a window next to where the page starts (the cursor, or the
    newest or oldest row), widened through :data:`PREFIX_SEARCH_WINDOWS`: a window that holds
    ``limit`` rows holds the page exactly, since every row outside it lies further along.
    """
    bounded = filters.since if older else filters.until
    if not is_prefix_search(filters.search) or bounded is not None:
        return await _fetch_rows(session, filters, cursor, older=older, limit=limit)
    if cursor is not None:
        anchor: datetime | None = cursor.timestamp
    elif older and filters.until is not None:
        anchor = filters.until
    else:
        anchor = await _edge_timestamp(session, newest=older)
    if anchor is None:
        return []
    for width in PREFIX_SEARCH_WINDOWS:
        window = replace(filters, since=anchor - width) if older else replace(filters, until=anchor + width)
        rows = await _fetch_rows(session, window, cursor, older=older, limit=limit)
        if len(rows) >= limit:
            return rows
    return await _fetch_rows(session, filters, cursor, older=older, limit=limit)


async def _edge_timestamp(session: AsyncSession, *, newest: bool) -> datetime | None:
    """The newest (or oldest) timestamp of any row: one probe of the (timestamp, id) index."""
    order = LogEntry.timestamp.desc() if newest else LogEntry.timestamp.asc()
    moment = await session.scalar(select(LogEntry.timestamp).order_by(order).limit(1))
    return None if moment is None else as_utc(moment)


def _page_of(rows: list[LogEntry], *, newest_first: bool, before_exists: bool, after_exists: bool) -> Page:
    """A page of ``rows`` (in the order shown), told whether rows exist above its top and below its end."""
    if newest_first:
        return Page(rows=rows, has_newer=before_exists, has_older=after_exists, newest_first=True)
    return Page(rows=rows, has_newer=after_exists, has_older=before_exists, newest_first=False)


async def page(
    *,
    session: AsyncSession,
    filters: LogFilter,
    after: Cursor | None = None,
    before: Cursor | None = None,
    limit: int = PAGE_SIZE,
    newest_first: bool = True,
) -> Page:
    """One page in the order asked (newest first unless ``newest_first`` is false).

    With no cursor it is the first page of that order (the newest rows, or the oldest);
    ``after`` gives the rows that follow that row in the order, ``before`` those that
    precede it. Going back past the top returns the first page, so "previous" never
    shows a short page above rows the user has already seen. Each order is a keyset
    walk of the same index, one way or the other (docs/index-policy.md).
    """
    if after is not None and before is not None:
        raise ValueError("give after or before, not both")
    if before is None:
        rows = await _fetch(session, filters, after, older=newest_first, limit=limit + 1)
        return _page_of(
            rows[:limit],
            newest_first=newest_first,
            before_exists=after is not None,
            after_exists=len(rows) > limit,
        )
    rows = await _fetch(session, filters, before, older=not newest_first, limit=limit + 1)
    if len(rows) <= limit:
        return await page(session=session, filters=filters, limit=limit, newest_first=newest_first)
    rows = rows[:limit]
    rows.reverse()
    return _page_of(rows, newest_first=newest_first, before_exists=True, after_exists=True)


async def last_page(
    *, session: AsyncSession, filters: LogFilter, limit: int = PAGE_SIZE, newest_first: bool = True
) -> Page:
    """The last page of the order asked: the oldest rows when newest first (``G``), else the newest.

    The index is walked from the other end (``ORDER BY timestamp, id`` ascending for the
    oldest rows, ``LIMIT`` a page) and the rows turned round to be shown in the order asked:
    the same indexes as the first page serve it, and ``page(before=…)`` goes on from there.
    """
    rows = await _fetch(session, filters, None, older=not newest_first, limit=limit + 1)
    shown = rows[:limit]
    shown.reverse()
    return _page_of(shown, newest_first=newest_first, before_exists=len(rows) > limit, after_exists=False)


async def oldest_page(*, session: AsyncSession, filters: LogFilter, limit: int = PAGE_SIZE) -> Page:
    """The oldest rows that match, shown newest first (:func:`last_page` of the newest-first order)."""
    return await last_page(session=session, filters=filters, limit=limit, newest_first=True)


async def rows_after(
    *, session: AsyncSession, filters: LogFilter, cursor: Cursor | None, limit: int = PAGE_SIZE
) -> list[LogEntry]:
    """Follow mode: matching rows newer than ``cursor`` (the newest shown), newest first, at most ``limit``.

    With no cursor (nothing shown yet) it is the first page.
    """
    if cursor is None:
        return list((await page(session=session, filters=filters, limit=limit)).rows)
    rows = await _fetch(session, filters, cursor, older=False, limit=limit)
    rows.reverse()
    return rows


def count_statement(filters: LogFilter, *, postgresql: bool, cap: int) -> Select[int]:
    """``count(*)`` of at most ``cap`` matching rows (a capped count stays cheap on any table)."""
    matches = (
        select(literal(1).label("one"))
        .select_from(LogEntry)
        .where(*conditions(filters, postgresql=postgresql))
        .limit(cap)
    )
    return select(func.count()).select_from(matches.subquery())


class Explain(Executable, ClauseElement):
    """``EXPLAIN (FORMAT JSON[, ANALYZE]) <statement>`` on PostgreSQL, binds processed as usual."""

    inherit_cache = False

    def __init__(self, statement: Select[Any], *, analyze: bool = False) -> None:
        self.statement = statement
        self.analyze = analyze


@compiles(Explain, "postgresql")
def _compile_explain(element: Explain, compiler: Any, **kw: Any) -> str:
    options = "ANALYZE, FORMAT JSON" if element.analyze else "FORMAT JSON"
    return f"EXPLAIN ({options}) " + compiler.process(element.statement, **kw)


async def explain(session: AsyncSession, statement: Select[Any], *, analyze: bool = False) -> dict[str, Any]:
    """PostgreSQL's plan of ``statement`` as a dict (with timings when ``analyze``)."""
    document = (await session.execute(Explain(statement, analyze=analyze))).scalar_one()
    if isinstance(document, str | bytes):
        document = orjson.loads(document)
    return dict(document[0])


async def _estimate(session: AsyncSession, filters: LogFilter) -> int:
    plan = await explain(session, select(LogEntry.id).where(*conditions(filters, postgresql=True)))
    return int(plan["Plan"]["Plan Rows"])


async def count(
    *, session: AsyncSession, filters: LogFilter, cap: int = COUNT_CAP, timeout_ms: int | None = None
) -> LogCount:
    """How many rows match: exact up to ``cap``; beyond, PostgreSQL's estimate or "cap+".

    On PostgreSQL a capped count slower than ``timeout_ms`` is cancelled and the
    planner's estimate is returned instead, so counting never holds up the screen.
    It ends the session's transaction (a count only reads). ``timeout_ms`` defaults to
    :data:`COUNT_TIMEOUT_MS`, read at each call.
    """
    timeout_ms = COUNT_TIMEOUT_MS if timeout_ms is None else timeout_ms
    postgresql = _is_postgresql(session)
    statement = count_statement(filters, postgresql=postgresql, cap=cap + 1)
    if not postgresql:
        exact = int(await session.scalar(statement) or 0)
        return LogCount(exact) if exact <= cap else LogCount(cap, exact=False, at_least=True)
    counted: int | None = None
    try:
        await session.execute(text(f"SET LOCAL statement_timeout = {int(timeout_ms)}"))
        counted = int(await session.scalar(statement) or 0)
    except DBAPIError as error:
        if "statement timeout" not in str(error.orig) and "canceling statement" not in str(error.orig):
            raise
    finally:
        await session.rollback()  # ends the transaction, and with it the timeout
    if counted is not None and counted <= cap:
        return LogCount(counted)
    try:
        estimate = await _estimate(session, filters)
    finally:
        await session.rollback()
    return LogCount(max(estimate, cap + 1), exact=False)


# -- export --------------------------------------------------------------------------------------


async def iter_entries(
    *, session: AsyncSession, filters: LogFilter, chunk: int = EXPORT_CHUNK, after: Cursor | None = None
) -> AsyncIterator[list[LogEntry]]:
    """The filtered view, newest first, in keyset chunks: memory stays one chunk, whatever the size.

    Rows arriving after the first chunk (newer than it) are not included, so an
    export is the view as it was when it started. With ``after``, only rows older than it.
    """
    cursor: Cursor | None = after
    while True:
        rows = await _fetch(session, filters, cursor, older=True, limit=chunk)
        if not rows:
            return
        yield rows
        session.expunge_all()  # keep the identity map at one chunk
        if len(rows) < chunk:
            return
        cursor = Cursor.of(rows[-1])


ExportFormat = Literal["csv", "jsonl"]


#: A spreadsheet reads a cell starting with one of these as a formula (``=HYPERLINK(…)``, ``@SUM(…)``, DDE).
CSV_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_text(text: str) -> str:
    """``text`` as a CSV cell a spreadsheet shows as text: a formula-looking start gets a ``'`` before it."""
    return "'" + text if text.startswith(CSV_FORMULA_STARTS) else text


def _csv_value(value: Any) -> Any:
    # Tool names, user ids and metadata come from agents: a cell must never become a formula.
    if isinstance(value, list):
        return _csv_text(";".join(str(item) for item in value))
    if isinstance(value, dict):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _csv_text(value)
    return "" if value is None else value


def _encode_rows(rows: Sequence[LogEntry], fmt: ExportFormat) -> str:
    buffer = io.StringIO()
    if fmt == "csv":
        writer = csv.writer(buffer)
        for entry in rows:
            record = entry_to_dict(entry)
            writer.writerow([_csv_value(record[name]) for name in EXPORT_COLUMNS])
    else:
        for entry in rows:
            buffer.write(orjson.dumps(entry_to_dict(entry)).decode())
            buffer.write("\n")
    return buffer.getvalue()


def _header(fmt: ExportFormat) -> str:
    if fmt != "csv":
        return ""
    buffer = io.StringIO()
    csv.writer(buffer).writerow(EXPORT_COLUMNS)
    return buffer.getvalue()


async def _newest_match(session: AsyncSession, filters: LogFilter) -> Cursor | None:
    rows = await _fetch(session, filters, None, older=True, limit=1)
    return Cursor.of(rows[0]) if rows else None


def _just_above(cursor: Cursor) -> Cursor:
    # The keyset is strict ("older than"): the next id up makes the newest row itself the first one read.
    # UUIDs compare as their 128-bit number on both engines (PostgreSQL uuid, SQLite's 32 hex digits).
    return Cursor(cursor.timestamp, uuid.UUID(int=min(cursor.id.int + 1, (1 << 128) - 1)))


async def _exact_count(session: AsyncSession, filters: LogFilter, upper: Cursor) -> int:
    statement = (
        select(func.count())
        .select_from(LogEntry)
        .where(*conditions(filters, postgresql=_is_postgresql(session)), *_keyset(upper, older=True))
    )
    return int(await session.scalar(statement) or 0)


async def _begin_snapshot(session: AsyncSession) -> None:
    # PostgreSQL: one REPEATABLE READ transaction for the count and every chunk, so the count is the
    # number of rows written (nothing inserted late or deleted by retention in between). SQLite reads
    # each statement as of its start; the count is then capped at the newest row the export reads.
    if _is_postgresql(session):
        await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def _audit_entity_id(path: Path) -> str:
    """The file's path as the audit row's entity id: its end (the file name) when the column is too short."""
    text_, room = str(path), max_length(AuditEvent.entity_id)
    return text_ if len(text_) <= room else "…" + text_[-(room - 1) :]


@dataclass(frozen=True)
class _ExportRecord:
    actor: Actor
    filters: LogFilter
    target: Path
    fmt: ExportFormat
    rows: int
    total: int
    replaced: bool
    status: str = "completed"


async def _record_export(session: AsyncSession, record: _ExportRecord) -> None:
    await session.rollback()  # the export's read snapshot, or whatever an error left open
    await record_change(
        session=session,
        actor=record.actor,
        action="logs.export",
        entity_type="export",
        entity_id=_audit_entity_id(record.target),
        changes={
            "status": record.status,
            "file": str(record.target),
            "format": record.fmt,
            "filter": record.filters.describe(),
            "rows": record.rows,
            "total": record.total,
            "replaced": record.replaced,
        },
    )
    await session.commit()


async def export(
    *,
    session: AsyncSession,
    filters: LogFilter,
    path: Path,
    fmt: ExportFormat,
    settings: Settings,
    actor: Actor,
    replace: bool = False,
    progress: Callable[[int, int], None] | None = None,
    chunk: int = EXPORT_CHUNK,
) -> int:
    """Write the filtered view to ``path`` as CSV or JSON Lines, streamed; return the rows written.

    ``actor`` must be active (:class:`~db.rights.NotAllowed` otherwise) and ``path`` must pass
    :func:`db.exports.check_export_path` (never the database or the data folder; an existing
    file only with ``replace``). The file is created 0600 beside its name and renamed onto it
    when complete, so it appears whole or not at all. The rows are counted exactly first;
    ``progress`` gets ``(written, total)`` then, and after every chunk. Every export past
    those two checks leaves an audit row (``logs.export``): who, the filter, the file and
    format, the rows written and whether it completed, was cancelled or failed. The session's
    transactions are ended (committed or rolled back) along the way.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
    await require_active(session=session, actor=actor, what="export logs")
    await session.commit()  # on SQLite the check holds the write lock: never keep it while exporting
    target = check_export_path(path, settings, replace=replace)
    replaced = replace and target.exists()
    written, total, file = 0, 0, None
    try:
        await _begin_snapshot(session)
        newest = await _newest_match(session, filters)
        upper = _just_above(newest) if newest is not None else None
        total = await _exact_count(session, filters, upper) if upper is not None else 0
        file = await asyncio.to_thread(ExportFile, target, replace=replace)
        if progress is not None:
            progress(0, total)
        await asyncio.to_thread(file.write, _header(fmt))
        if upper is not None:
            async for rows in iter_entries(session=session, filters=filters, chunk=chunk, after=upper):
                await asyncio.to_thread(file.write, _encode_rows(rows, fmt))
                written += len(rows)
                # SQLite may see a late row (an old timestamp arriving now): never show "46 of 45".
                total = max(total, written)
                if progress is not None:
                    progress(written, total)
        await asyncio.to_thread(file.sync)
        # Recorded before the file takes its name: no export file exists without its audit row.
        await _record_export(session, _ExportRecord(actor, filters, target, fmt, written, total, replaced))
        file.commit()
    except BaseException as error:
        if file is not None:
            file.discard()  # synchronous: it must happen even while being cancelled
        status = "cancelled" if isinstance(error, asyncio.CancelledError) else "failed"
        record = _ExportRecord(actor, filters, target, fmt, written, total, replaced, status=status)
        try:
            await _record_export(session, record)
        except Exception:
            log.exception("could not record the %s export of %s in the audit trail", status, target)
        raise
    return written


# -- choices for the filter form -----------------------------------------------------------------


async def known_values(
    *, session: AsyncSession, dimension: str, since: datetime, limit: int = 200
) -> list[str]:
    """Keys seen in the hourly counts since ``since`` (tools, entity types…), for suggestions."""
    statement = (
        select(LogHourlyCount.key)
        .where(LogHourlyCount.dimension == dimension, LogHourlyCount.bucket_start >= since)
        .group_by(LogHourlyCount.key)
        .order_by(func.sum(LogHourlyCount.event_count).desc())
        .limit(limit)
    )
    return [key for key in (await session.scalars(statement)).all() if key]


__all__ = [
    "COUNT_CAP",
    "EXPORT_COLUMNS",
    "EXPORT_FORMATS",
    "PAGE_SIZE",
    "Cursor",
    "ExportFormat",
    "LogCount",
    "LogFilter",
    "Page",
    "count",
    "entry_to_dict",
    "explain",
    "export",
    "iter_entries",
    "known_values",
    "last_page",
    "oldest_page",
    "page",
    "page_statement",
    "rows_after",
]
