"""One canonical timestamp text on SQLite: log_entries.timestamp is always ``YYYY-MM-DD HH:MM:SS.ffffff`` UTC

SQLite has no timestamp type: it stores text and compares it as text. SQLAlchemy
writes ``2026-09-02 06:30:00.000000`` (UTC, six fraction digits), but a row
written by hand-made SQL as ``2026-09-02 06:30:00`` or ``2026-09-02T02:29:59-04:00``
is another valid spelling that sorts in the wrong place: the retention cleanup
deleted the first (shorter text, so "earlier") although it sits exactly at the
cutoff, and kept the second (``T`` sorts after a space) although it is expired.

On SQLite this revision rewrites every other spelling of ``log_entries.timestamp``
in the canonical UTC form (a value without an offset is UTC, as SQLAlchemy reads
it), refusing with one line if some value is not a timestamp at all, then adds
``ck_log_entries_timestamp_canonical``, which refuses any other text: exactly the
canonical shape, and a real date and time (SQLite's ``datetime()`` normalises it to
the same text, so ``2026-02-30`` or ``24:00:00`` are refused). PostgreSQL stores ``timestamptz`` and
needs neither: there the revision does nothing.

The CHECK's SQL is written out here, as it was when this revision was made;
``db/models.py`` declares the same constraint (a test compares the two).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CONSTRAINT = "timestamp_canonical"  # ck_log_entries_timestamp_canonical through the naming convention
_DIGIT = "[0-9]"
CANONICAL_PATTERN = (
    f"{_DIGIT * 4}-{_DIGIT * 2}-{_DIGIT * 2} {_DIGIT * 2}:{_DIGIT * 2}:{_DIGIT * 2}.{_DIGIT * 6}"
)
CANONICAL_SQL = (
    f"typeof(timestamp) = 'text' AND timestamp GLOB '{CANONICAL_PATTERN}' "
    "AND datetime(substr(timestamp, 1, 19), '+0 seconds') IS substr(timestamp, 1, 19)"
)
#: Rows rewritten per round trip.
CHUNK = 5_000


def canonical(value: object) -> str | None:
    """The canonical UTC text of an ISO 8601 timestamp (no offset: UTC), or None if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    # isoformat pads the year to four digits, which strftime('%Y') does not do on every platform.
    return moment.isoformat(sep=" ", timespec="microseconds")


def _normalise(connection: sa.Connection) -> None:
    """Rewrite every non-canonical timestamp, or raise (changing nothing) if one is not a timestamp."""
    after, bad, example = -1, 0, ""
    while True:
        rows = connection.exec_driver_sql(
            f"SELECT rowid, timestamp FROM log_entries WHERE rowid > ? AND NOT ({CANONICAL_SQL}) "
            f"ORDER BY rowid LIMIT {CHUNK}",
            (after,),
        ).all()
        if not rows:
            break
        after = rows[-1][0]
        fixed = []
        for rowid, value in rows:
            text = canonical(value)
            if text is None:
                bad += 1
                example = example or f"{value!r} (rowid {rowid})"
            else:
                fixed.append((text, rowid))
        if fixed:
            connection.exec_driver_sql("UPDATE log_entries SET timestamp = ? WHERE rowid = ?", fixed)
    if bad:
        raise RuntimeError(
            f"log_entries.timestamp holds {bad} value(s) that are not ISO 8601 timestamps, e.g. {example}: "
            "correct or delete those rows, then upgrade again"
        )


def upgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name != "sqlite":
        return
    _normalise(connection)
    # The copy into the rebuilt table would also check migration 0008's identifier rules, which rows
    # stored before 0008 may still break until the scrub repairs them: skip CHECKs while copying
    # (the timestamps were all just made canonical).
    op.execute("PRAGMA ignore_check_constraints = ON")
    try:
        with op.batch_alter_table("log_entries", recreate="always") as batch:
            batch.create_check_constraint(CONSTRAINT, sa.text(CANONICAL_SQL))
    finally:
        op.execute("PRAGMA ignore_check_constraints = OFF")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    # The canonical values stay: they are what SQLAlchemy writes anyway.
    op.execute("PRAGMA ignore_check_constraints = ON")
    try:
        with op.batch_alter_table("log_entries", recreate="always") as batch:
            batch.drop_constraint(CONSTRAINT, type_="check")
    finally:
        op.execute("PRAGMA ignore_check_constraints = OFF")
