"""How long each text column may be, read from the models, and the one check every writer in ``db/`` uses.

PostgreSQL refuses an over-long value with "value too long for type character
varying(255)" (and a statement error that carries every parameter, hashes
included); SQLite stores it whole. Checking in ``db/`` first gives both engines
the same refusal, with a message naming the field, before any SQL runs.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import String
from sqlalchemy.orm import InstrumentedAttribute


def max_length(attribute: InstrumentedAttribute[Any]) -> int:
    """The declared length of a ``String(n)`` column (``User.full_name`` → 255)."""
    column_type = attribute.property.columns[0].type
    if not isinstance(column_type, String) or column_type.length is None:
        raise TypeError(f"{attribute} is not a String column with a length")
    return column_type.length


def length_problem(
    attribute: InstrumentedAttribute[Any], value: str, *, field: str | None = None
) -> str | None:
    """Why ``value`` does not fit ``attribute``'s column ("full_name must be at most 255 characters; got
    3000"), or None when it fits; ``field`` names it in the message (default: the column's name)."""
    limit = max_length(attribute)
    if len(value) <= limit:
        return None
    return f"{field or attribute.key} must be at most {limit:,} characters; got {len(value):,}"
