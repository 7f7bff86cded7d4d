"""Where each week of ``log_entries`` lives on PostgreSQL: partition names, bounds and the window they cover.

``log_entries`` is range-partitioned on ``timestamp`` by ISO week (Monday 00:00
UTC to the next Monday): 58 weekly partitions plan an unbounded page in a few
milliseconds where 400 daily ones take a hundred (docs/partitions.md). There is
no default partition, so the partitions must cover every timestamp the ingest
server accepts: from the longest retention (:data:`MAX_RETENTION_DAYS`) back to
:data:`AHEAD` into the future. This module is pure (no I/O): the migration and
:mod:`db.partitions` share it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Final

from db.vocabulary import MAX_RETENTION_DAYS

WEEK: Final = timedelta(weeks=1)
#: How far ahead of now partitions exist: the server accepts timestamps up to a day ahead, and
#: a maintainer that misses a run or two must not leave the next week without its partition.
AHEAD: Final = timedelta(weeks=2)
#: How far back partitions are created: every timestamp some organisation's retention keeps.
BEHIND: Final = timedelta(days=MAX_RETENTION_DAYS)
PARENT: Final = "log_entries"
#: The one partition a migrated database keeps its old rows in, from the first timestamp on.
LEGACY: Final = "log_entries_legacy"
_NAME = re.compile(r"^log_entries_p(\d{8})$")


def week_start(moment: datetime) -> datetime:
    """The Monday 00:00 UTC on or before ``moment`` (naive is UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    day = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday())


def partition_name(start: datetime) -> str:
    """``log_entries_pYYYYMMDD``: the partition of the week starting at ``start``."""
    return f"{PARENT}_p{start:%Y%m%d}"


def partition_start(name: str) -> datetime | None:
    """The week a partition name stands for, or None for a name that is not a weekly partition."""
    match = _NAME.match(name)
    if match is None:
        return None
    return datetime.strptime(match.group(1), "%Y%m%d").replace(tzinfo=UTC)


def is_partition(table: str) -> bool:
    """True for a partition of log_entries: a weekly one or the legacy one."""
    return table == LEGACY or partition_start(table) is not None


def weeks_covering(first: datetime, last: datetime) -> Iterator[datetime]:
    """The starts of the weeks from the one holding ``first`` to the one holding ``last``."""
    start = week_start(first)
    while start <= last:
        yield start
        start += WEEK


def wanted_weeks(now: datetime) -> list[datetime]:
    """The weeks that must have a partition at ``now``: from the longest retention back to AHEAD ahead."""
    return list(weeks_covering(now - BEHIND, now + AHEAD))


def bound_literal(moment: datetime) -> str:
    """A partition bound as a ``timestamptz`` literal that means the same in any session time zone."""
    return f"'{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}+00'"


#: The function (migration 0015) that adds the rows of one INSERT or COPY to the rollups.
COUNT_FUNCTION: Final = "log_entries_count_rollups"


def count_trigger_sql(table: str) -> str:
    """The statement trigger that counts what one statement inserted into ``table``.

    The parent has it, and so does every partition: PostgreSQL fires statement triggers
    only on the table a statement names, so a row is counted once whether it was written
    through the parent or straight into its partition.
    """
    return (
        f'CREATE TRIGGER {COUNT_FUNCTION} AFTER INSERT ON "{table}" REFERENCING NEW TABLE AS new_rows '
        f"FOR EACH STATEMENT EXECUTE FUNCTION {COUNT_FUNCTION}()"
    )
