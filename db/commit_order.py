"""Commit order: how a reader takes committed rows of a stream in order and never skips one.

A reader (the alert evaluator, each forwarder) keeps a cursor ``(seq, organization_id,
item_id)`` and asks for rows after it. That is only safe if no row can later appear
*behind* the cursor, which an ordinary sequence does not promise: transaction A takes
value 9, B takes 10 and commits first, a reader passes 10, then A commits 9 behind it.

- **PostgreSQL**: ``commit_seq`` defaults to the writing transaction's id
  (``pg_current_xact_id()``, 64 bits, never wraps). :func:`visible_bound` takes a snapshot
  and returns the oldest transaction still running *in this database* (or, with none, the
  next id to be given out): every row with a ``commit_seq`` below it belongs to a transaction
  that has ended, committed or not, so it can no longer appear or change. A reader takes rows
  up to the bound and waits for the rest. Transactions of *other* databases on the server
  are told apart through ``pg_stat_activity`` (a backend stays in its database) and do not
  hold the bound back; one that cannot be placed (a role without ``pg_read_all_stats`` sees
  other roles' sessions without their transaction ids, a prepared transaction has no
  session) counts as ours: the bound is then only later, never wrong. The price: a long
  transaction in this database holds the bound back (and with it alert and forwarding
  latency) until it ends.
- **SQLite**: one writer at a time. A writing transaction bumps its stream's row in
  ``commit_counters`` (which takes the write lock) and stamps its rows with the new value,
  so values commit in order; the bound is the committed counter plus one. A trigger
  stamps rows inserted by hand (migration 0013).
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy import BigInteger, ColumnElement, literal_column, select, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import CommitCounter

#: The commit-ordered streams: their tables carry ``commit_seq``.
Stream = Literal["log_entries", "alert_changes"]

#: The oldest running transaction not known to be another database's, else the next id to be given.
#: ``backend_xid`` is the 32-bit form of a 64-bit id: the running ones are recent, so the low 32 bits
#: tell them apart.
_POSTGRESQL_BOUND_SQL = """
    SELECT coalesce(
        (SELECT min(running::text::bigint)
         FROM pg_snapshot_xip(snapshot) AS running
         WHERE running::text::bigint % 4294967296 NOT IN (
             SELECT backend_xid::text::bigint FROM pg_stat_activity
             WHERE backend_xid IS NOT NULL AND datname IS DISTINCT FROM current_database()
         )),
        pg_snapshot_xmax(snapshot)::text::bigint
    )
    FROM pg_current_snapshot() AS snapshot
    """
_POSTGRESQL_BOUND = text(_POSTGRESQL_BOUND_SQL)


def postgresql_bound_column() -> ColumnElement[int]:
    """PostgreSQL's :func:`visible_bound` as a column another SELECT can carry (one round trip less for a
    reader that reads something else first, as a forwarder reads its destination)."""
    return literal_column(f"({_POSTGRESQL_BOUND_SQL.strip()})", BigInteger)


def is_postgresql(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


async def next_commit_seq(session: AsyncSession, stream: Stream) -> int | None:
    """The ``commit_seq`` to stamp this transaction's rows of ``stream`` with; None where a default does it.

    On SQLite this takes the write lock until the transaction ends: call it right before the writes.
    """
    if is_postgresql(session):
        return None
    # An upsert: the counter row may be missing (a table emptied by hand, a test's clean slate).
    statement = (
        sqlite_insert(CommitCounter)
        .values(name=stream, value=1)
        .on_conflict_do_update(index_elements=["name"], set_={"value": CommitCounter.value + 1})
        .returning(CommitCounter.value)
    )
    return int((await session.execute(statement)).scalar_one())


async def visible_bound(session: AsyncSession, stream: Stream) -> int:
    """Rows of ``stream`` with ``commit_seq`` below this are committed, and no other will ever join them."""
    if is_postgresql(session):
        return int((await session.execute(_POSTGRESQL_BOUND)).scalar_one())
    # The counter row may be missing (a table emptied by hand, a test's clean slate): nothing written yet.
    value = (
        await session.execute(select(CommitCounter.value).where(CommitCounter.name == stream))
    ).scalar_one_or_none()
    return int(value or 0) + 1
