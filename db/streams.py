"""Reading the commit-ordered streams (log events, alert changes) from a durable cursor.

A reader (the alert evaluator, each forwarder) keeps a :class:`Position` in
``stream_cursors`` and reads the rows strictly after it, in commit order, and only rows
below the stream's visible bound (db/commit_order.py): committed rows that nothing can
join behind the cursor any more. When a page comes back short, every row below the bound
has been seen and the position moves up to the bound itself, so rows a filter skipped are
not read again.

A reader saves its new position in the same transaction as what it did with the rows
(an alert raised, a delivery recorded): a crash repeats at most the uncommitted page.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    ColumnElement,
    String,
    Text,
    Uuid,
    and_,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.base import ReadOnlyColumnCollection

from db.base import UTCDateTime, utcnow
from db.commit_order import Stream, is_postgresql, visible_bound
from db.engine import insert_for
from db.leases import Lease, fence, fence_cte, fence_parameters, lease_lost
from db.models import AlertChange, LogEntry, StreamCursor

DEFAULT_PAGE_ROWS = 2000

#: The columns of a page or of its computed values, by name.
ColumnCollection = ReadOnlyColumnCollection[str, Any]


@dataclass(frozen=True, order=True)
class Position:
    """Strictly after this: ``(seq, organization_id, item_id)``; empty strings sort before every row."""

    seq: int
    organization_id: str = ""
    item_id: str = ""


@dataclass(frozen=True)
class CursorState:
    """A reader's saved position, and where the batch before it started (to resend after a reconnect)."""

    position: Position
    resend_from: Position


@dataclass(frozen=True)
class Page:
    """Rows after a position, in commit order, and the position after them."""

    rows: Sequence[Any]
    next_position: Position


async def start_cursor(session: AsyncSession, *, name: str, stream: Stream) -> CursorState:
    """The saved cursor ``name``, created at the stream's current end if it does not exist (commit after).

    Starting at the end means history is not read: a new destination receives what is stored from now on.
    """
    state = await load_cursor(session, name=name)
    if state is not None:
        return state
    end = Position(await visible_bound(session, stream))
    await session.execute(
        insert_for(session)(StreamCursor)
        .values(
            name=name,
            seq=end.seq,
            organization_id="",
            item_id="",
            resend_seq=end.seq,
            resend_organization_id="",
            resend_item_id="",
            updated_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["name"])
    )
    state = await load_cursor(session, name=name)
    assert state is not None  # inserted just now, or by a racing reader a moment ago
    return state


async def load_cursor(session: AsyncSession, *, name: str) -> CursorState | None:
    row = await session.get(StreamCursor, name, populate_existing=True)
    if row is None:
        return None
    return CursorState(
        position=Position(row.seq, row.organization_id, row.item_id),
        resend_from=Position(row.resend_seq, row.resend_organization_id, row.resend_item_id),
    )


async def save_cursor(
    session: AsyncSession, *, name: str, position: Position, resend_from: Position | None = None
) -> None:
    """Store the reader's position (and where a resend would start: by default the position itself)."""
    await save_cursors(session, [(name, position, resend_from)])


async def save_cursors(
    session: AsyncSession, cursors: Sequence[tuple[str, Position, Position | None]]
) -> None:
    """:func:`save_cursor` for several cursors (name, position, resend_from) in one statement."""
    now = utcnow()
    rows = [
        {**dict(zip(_CURSOR_FIELDS, _cursor_fields(*cursor), strict=True)), "updated_at": now}
        for cursor in cursors
    ]
    if rows:
        await session.execute(_SAVE_CURSOR[session.get_bind().dialect.name], rows)


def _save_cursor_statement(insert: Callable[[Any], Any]) -> Any:
    """:func:`save_cursor`'s upsert, built once with bind parameters (readers save cursors several times
    a second: SQLAlchemy then neither builds nor keys it again)."""
    columns = [column.key for column in StreamCursor.__table__.columns]
    statement = insert(StreamCursor).values({column: bindparam(column) for column in columns})
    return statement.on_conflict_do_update(
        index_elements=["name"],
        set_={column: statement.excluded[column] for column in columns if column != "name"},
    )


_SAVE_CURSOR = {
    "postgresql": _save_cursor_statement(pg_insert),
    "sqlite": _save_cursor_statement(sqlite_insert),
}


async def fence_and_save_cursors(
    session: AsyncSession, lease: Lease, cursors: Sequence[tuple[str, Position, Position | None]]
) -> None:
    """:func:`db.leases.fence`, then :func:`save_cursors`: the start of a lease holder's write transaction
    whose cursors are known before its other writes. On PostgreSQL one statement, one round trip less
    for a loop that writes every second (the alert evaluator)."""
    if not is_postgresql(session):
        await fence(session, lease)
        await save_cursors(session, cursors)
        return
    fenced, _ = (
        await session.execute(
            _FENCED_CURSORS, {**fence_parameters(lease, postgresql=True), **cursor_arrays(cursors)}
        )
    ).one()
    if not fenced:
        raise lease_lost(lease)


#: A cursor row's fields as :func:`_cursor_fields` gives them; ``updated_at`` follows them.
_CURSOR_FIELDS = (
    "name",
    "seq",
    "organization_id",
    "item_id",
    "resend_seq",
    "resend_organization_id",
    "resend_item_id",
)
_CURSOR_ARRAY_TYPES = (String, BigInteger, String, String, BigInteger, String, String)


def _cursor_fields(name: str, position: Position, resend_from: Position | None) -> tuple[Any, ...]:
    """A cursor's values in the order of ``_CURSOR_FIELDS`` (a resend starts at the position by default)."""
    resend = resend_from or position
    return (
        name,
        position.seq,
        position.organization_id,
        position.item_id,
        resend.seq,
        resend.organization_id,
        resend.item_id,
    )


def cursor_arrays(cursors: Sequence[tuple[str, Position, Position | None]]) -> dict[str, Any]:
    """The parameters of :func:`fenced_cursors_upsert`: one array per field, one element per cursor."""
    rows = [_cursor_fields(*cursor) for cursor in cursors]
    arrays: dict[str, Any] = {
        f"cursor_{field}s": [row[index] for row in rows] for index, field in enumerate(_CURSOR_FIELDS)
    }
    return {**arrays, "cursors_saved_at": utcnow()}


def fenced_cursors_upsert(fenced: ColumnElement[bool]) -> Any:
    """PostgreSQL: :func:`save_cursors` as a common table expression over :func:`cursor_arrays`' parameters,
    writing only where ``fenced`` holds (:func:`db.leases.fence_cte` has its row)."""
    arrays: list[Any] = [
        bindparam(f"cursor_{field}s", type_=ARRAY(kind))
        for field, kind in zip(_CURSOR_FIELDS, _CURSOR_ARRAY_TYPES, strict=True)
    ]
    cursors = func.unnest(*arrays).table_valued(*_CURSOR_FIELDS).render_derived(name="cursor")
    columns = [*_CURSOR_FIELDS, "updated_at"]
    upsert = pg_insert(StreamCursor).from_select(
        columns, select(*cursors.c, bindparam("cursors_saved_at", type_=UTCDateTime)).where(fenced)
    )
    return (
        upsert.on_conflict_do_update(
            index_elements=["name"],
            set_={column: upsert.excluded[column] for column in columns if column != "name"},
        )
        .returning(StreamCursor.name)
        .cte("saved_cursors")
    )


def _fenced_cursors_statement() -> Any:
    fence = fence_cte()
    fenced = exists(select(fence.c.epoch))
    saved = fenced_cursors_upsert(fenced)
    # SQLAlchemy renders only the CTEs a statement names: the count names the upsert.
    return select(fenced, select(func.count()).select_from(saved).scalar_subquery())


_FENCED_CURSORS = _fenced_cursors_statement()


async def delete_cursors(session: AsyncSession, *, names: Collection[str]) -> None:
    """Forget cursors (a deleted destination's)."""
    if names:
        await session.execute(delete(StreamCursor).where(StreamCursor.name.in_(list(names))))


def after_event_condition(position: Position) -> Any:
    """The SQL condition "this log entry comes after ``position`` in commit order"."""
    return _after(
        literal(position.seq, BigInteger),
        literal(position.organization_id, String),
        literal(not position.item_id, Boolean),
        literal(uuid.UUID(position.item_id) if position.item_id else None, Uuid),
    )


def _after_bound_position() -> Any:
    """:func:`after_event_condition` with the position as bind parameters (``after_seq``,
    ``after_org``, ``no_item``, ``after_item``: :func:`_page_parameters`), one statement for every
    position, so that it is compiled and planned once."""
    return _after(
        bindparam("after_seq", type_=BigInteger),
        bindparam("after_org", type_=String),
        bindparam("no_item", type_=Boolean),
        bindparam("after_item", type_=Uuid),
    )


def _after(after_seq: Any, after_org: Any, no_item: Any, after_item: Any) -> Any:
    """Rows after ``(after_seq, after_org, after_item)`` in commit order, the position given as SQL values.

    No item id: every row of that organisation at that seq comes after (and organisations are never
    empty, so with no organisation either every row at that seq does).
    """
    seq, org, item = LogEntry.commit_seq, LogEntry.organization_id, LogEntry.id
    same_org = and_(org == after_org, or_(no_item, item > after_item))
    later = or_(seq > after_seq, and_(seq == after_seq, or_(org > after_org, same_org)))
    return and_(seq >= after_seq, later)  # the first: the index condition


_EVENT_KEY = (LogEntry.commit_seq, LogEntry.organization_id, LogEntry.id)


async def read_events(
    session: AsyncSession,
    *,
    after: Position,
    limit: int = DEFAULT_PAGE_ROWS,
    organization_id: str | None = None,
    risk_levels: Collection[str] | None = None,
    columns: Sequence[Any] | None = None,
    where: ColumnElement[bool] | None = None,
    bound: int | None = None,
) -> Page:
    """Committed log entries after ``after``, in commit order: rows of every column, or of ``columns``.

    One page of :class:`EventPages` (a reader that reads often keeps one of those instead).
    """
    pages = EventPages(
        limit=limit, organization_id=organization_id, risk_levels=risk_levels, columns=columns, where=where
    )
    return await pages.read(session, after=after, bound=bound)


def _page_filters(
    organization_id: str | None, risk_levels: Collection[str] | None, where: ColumnElement[bool] | None
) -> list[ColumnElement[bool]]:
    """Committed rows below the visible bound (parameter ``bound``), after the position (parameters
    ``after_seq``, ``after_org``, ``after_item``), kept by the filters."""
    filters = [
        LogEntry.commit_seq.is_not(None),
        LogEntry.commit_seq < bindparam("bound", type_=BigInteger),
        _after_bound_position(),
    ]
    if organization_id is not None:
        filters.append(LogEntry.organization_id == organization_id)
    if risk_levels is not None:
        filters.append(LogEntry.risk_level.in_(sorted(risk_levels)))
    if where is not None:
        filters.append(where)
    return filters


def _page_parameters(after: Position, bound: int) -> dict[str, Any]:
    return {
        "after_seq": after.seq,
        "after_org": after.organization_id,
        "after_item": uuid.UUID(after.item_id) if after.item_id else None,
        "no_item": not after.item_id,
        "bound": bound,
    }


class EventPages:
    """Pages of committed log entries in commit order, for one set of columns and filters.

    Rows are plain result rows (attribute access by column name), not ORM objects: a reader takes
    thousands a second, and building an identity-mapped object per row would cost most of its time.
    ``organization_id``, ``risk_levels`` and ``where`` filter what is returned; the position still
    passes the rows they skip. Selected ``columns`` always end with ``commit_seq``,
    ``organization_id`` and ``id``. The statement is built once, with the position and the visible
    bound as parameters, so a reader polling a few times a second (the alert evaluator) pays for
    building and compiling it once.
    """

    def __init__(
        self,
        *,
        limit: int = DEFAULT_PAGE_ROWS,
        organization_id: str | None = None,
        risk_levels: Collection[str] | None = None,
        columns: Sequence[Any] | None = None,
        where: ColumnElement[bool] | None = None,
    ) -> None:
        self.limit = limit
        self._whole_rows = columns is None
        selected: Sequence[Any] = [LogEntry.__table__] if columns is None else [*columns, *_EVENT_KEY]
        self._statement = (
            select(*selected)
            .where(*_page_filters(organization_id, risk_levels, where))
            .order_by(*_EVENT_KEY)
            .limit(limit)
        )

    async def read(self, session: AsyncSession, *, after: Position, bound: int | None = None) -> Page:
        """The events after ``after`` (at most ``limit``), and the position after them (``bound``: as for
        :meth:`EventLines.read`)."""
        if bound is None:
            bound = await visible_bound(session, "log_entries")
        rows = (await session.execute(self._statement, _page_parameters(after, bound))).all()
        if len(rows) < self.limit:
            return Page(rows, max(after, Position(bound)))
        last = rows[-1]
        seq, organization, item = (
            (last.commit_seq, last.organization_id, last.id) if self._whole_rows else tuple(last)[-3:]
        )
        return Page(rows, Position(int(seq), str(organization), str(item)))


@dataclass(frozen=True)
class LineTemplate:
    """How PostgreSQL writes one line per row of a page: first ``values`` (labelled) over the row's
    columns (named as ``log_entries``'), then ``line`` over those values and the row's key
    (``commit_seq``, ``organization_id``, ``id``), so that a value the line uses twice is computed once."""

    values: Callable[[ColumnCollection], Sequence[ColumnElement[Any]]]
    line: Callable[[ColumnCollection], ColumnElement[str]]


class EventLines:
    """Pages of lines PostgreSQL computes from events, for one template and one filter.

    As :func:`read_events`, but each row is the template's line as UTF-8 bytes. PostgreSQL only. A
    reader that relays what the database computed (a forwarder sending frames built in SQL) spends
    under a microsecond a row: one ``bytea`` per row, and the page's last key only on a full page's
    last row. The statement is built once, with the position and the visible bound as parameters:
    SQLAlchemy compiles it once, and PostgreSQL plans it once (a prepared statement's generic plan).
    """

    def __init__(
        self,
        template: LineTemplate,
        *,
        limit: int = DEFAULT_PAGE_ROWS,
        organization_id: str | None = None,
        risk_levels: Collection[str] | None = None,
    ) -> None:
        self.limit = limit
        filters = _page_filters(organization_id, risk_levels, None)
        # Three steps, each a subquery the planner keeps whole: the page's rows (sorted and cut on
        # their own columns, however the planner reads them), the template's values computed once per
        # row of the page (OFFSET 0 keeps PostgreSQL from copying a value's expression into each of its
        # uses), then the lines.
        key = list(_EVENT_KEY)
        page = (
            select(LogEntry.__table__, func.row_number().over(order_by=key).label("page_row"))
            .where(*filters)
            .order_by(*key)
            .limit(limit)
            .subquery("page")
        )
        values = (
            select(*template.values(page.c), *key_of(page.c), page.c.page_row)
            .order_by(*key_of(page.c))
            .offset(0)
            .subquery("page_values")
        )
        last_key = (
            cast(values.c.commit_seq, Text) + " " + cast(values.c.id, Text) + " " + values.c.organization_id
        )
        # SQL does not promise that a projection keeps a subquery's order: say it (PostgreSQL then
        # sorts only within rows of equal commit_seq, which the page's own order already holds).
        self._statement = select(
            func.convert_to(template.line(values.c), "UTF8"), case((values.c.page_row == limit, last_key))
        ).order_by(*key_of(values.c))

    def statement(self, *, after: Position, bound: int) -> Any:
        """The page's statement with its parameters bound (for a benchmark's ``EXPLAIN``)."""
        return self._statement.params(_page_parameters(after, bound))

    async def read(self, session: AsyncSession, *, after: Position, bound: int | None = None) -> Page:
        """The lines of the events after ``after``, in commit order, and the position after them.

        ``bound``: a :func:`visible_bound` of ``log_entries`` taken before this read (on PostgreSQL one
        serves every stream, so a reader of several takes it once: db.deliveries.start_round)."""
        if bound is None:
            bound = await visible_bound(session, "log_entries")
        rows = (await session.execute(self._statement, _page_parameters(after, bound))).all()
        lines = [line for line, _ in rows]
        if len(rows) < self.limit:
            return Page(lines, max(after, Position(bound)))
        seq, item_id, organization = str(rows[-1][1]).split(" ", 2)
        return Page(lines, Position(int(seq), organization, item_id))


def key_of(columns: ColumnCollection) -> list[ColumnElement[Any]]:
    """The commit-order key among ``columns`` (named as ``log_entries``')."""
    return [columns[column.key] for column in _EVENT_KEY]


async def read_alert_changes(
    session: AsyncSession,
    *,
    after: Position,
    limit: int = DEFAULT_PAGE_ROWS,
    organization_id: str | None = None,
    bound: int | None = None,
) -> Page:
    """Committed ``alert_changes`` rows after ``after``, in commit order (``item_id`` holds the row's id).

    Rows are plain result rows (attribute access by column name), as for :class:`EventPages`.
    ``bound``: as for :meth:`EventLines.read`."""
    if bound is None:
        bound = await visible_bound(session, "alert_changes")
    seq = AlertChange.commit_seq
    after_id = int(after.item_id) if after.item_id else 0
    statement = (
        select(AlertChange.__table__)
        .where(
            seq.is_not(None),
            seq < bound,
            seq >= after.seq,
            or_(seq > after.seq, AlertChange.id > after_id),
        )
        .order_by(seq, AlertChange.id)
        .limit(limit)
    )
    if organization_id is not None:
        statement = statement.where(AlertChange.organization_id == organization_id)
    rows = (await session.execute(statement)).all()
    if len(rows) >= limit:
        last = rows[-1]
        return Page(rows, Position(int(last.commit_seq or 0), "", str(last.id)))
    return Page(rows, max(after, Position(bound)))
