"""The rules every identifier an agent sends must follow, defined once for the validator and the database.

An identifier (``tool_name``, ``user_id``, ``device_id``, ``organization_id``,
entity types, metadata keys and metadata string values) is shown to operators
and used as a rollup key, so it may not carry characters that change how text
is displayed or compared: C0 and C1 control characters (ANSI escapes start with
one), bidirectional overrides and isolates, zero-width characters and the byte
order mark. ``user_id`` may hold a zero-width non-joiner or joiner between two
letters (Persian and Indic names need them), nowhere else.

The forbidden characters are listed once as code point ranges
(:data:`FORBIDDEN_RANGES`); the Python check and the CHECK constraints of both
engines are built from that one list, so rows written by SQL cannot bypass what
the ingest server refuses.
"""

from __future__ import annotations

import re
from typing import Final

#: Inclusive code point ranges no identifier may contain.
FORBIDDEN_RANGES: Final[tuple[tuple[int, int], ...]] = (
    (0x0000, 0x001F),  # C0 controls (ESC starts ANSI escapes)
    (0x007F, 0x009F),  # DEL and C1 controls (CSI is 0x9B)
    (0x061C, 0x061C),  # ARABIC LETTER MARK (bidi)
    (0x180E, 0x180E),  # MONGOLIAN VOWEL SEPARATOR (zero width)
    (0x200B, 0x200F),  # zero width space, ZWNJ, ZWJ, LRM, RLM
    (0x2028, 0x2029),  # line and paragraph separators
    (0x202A, 0x202E),  # bidi embeddings and overrides
    (0x2060, 0x2064),  # word joiner and invisible operators
    (0x2066, 0x2069),  # bidi isolates
    (0xFEFF, 0xFEFF),  # byte order mark / zero width no-break space
)
ZERO_WIDTH_NON_JOINER: Final = "\u200c"
ZERO_WIDTH_JOINER: Final = "\u200d"
#: The joiners ``user_id`` may hold between two letters.
JOINERS: Final = frozenset({ZERO_WIDTH_NON_JOINER, ZERO_WIDTH_JOINER})


_JOINER_CODE_POINTS: Final = tuple(sorted(ord(joiner) for joiner in JOINERS))


def _ranges_except_joiners() -> tuple[tuple[int, int], ...]:
    """FORBIDDEN_RANGES with ZWNJ and ZWJ cut out of the range that holds them."""
    low, high = _JOINER_CODE_POINTS[0], _JOINER_CODE_POINTS[-1]
    pieces: list[tuple[int, int]] = []
    for start, end in FORBIDDEN_RANGES:
        if start <= low and high <= end:
            pieces += [piece for piece in ((start, low - 1), (high + 1, end)) if piece[0] <= piece[1]]
        else:
            pieces.append((start, end))
    return tuple(pieces)


def _character_class(ranges: tuple[tuple[int, int], ...]) -> str:
    parts = []
    for start, end in ranges:
        parts.append(
            re.escape(chr(start)) if start == end else f"{re.escape(chr(start))}-{re.escape(chr(end))}"
        )
    return "[" + "".join(parts) + "]"


#: Matches any forbidden character.
FORBIDDEN: Final = re.compile(_character_class(FORBIDDEN_RANGES))

#: Length bounds, in characters, of each identifier (the columns are at least this wide).
MAX_TOOL_NAME_CHARS: Final = 100
MAX_USER_ID_CHARS: Final = 255
MAX_DEVICE_ID_CHARS: Final = 128
MAX_ORGANIZATION_ID_CHARS: Final = 64
MAX_ENTITY_TYPE_CHARS: Final = 48
MAX_METADATA_KEY_CHARS: Final = 64
MAX_METADATA_STRING_CHARS: Final = 256

#: Entity types name a kind of sensitive data: ``EMAIL``, ``API_KEY``, ``CREDIT_CARD``.
ENTITY_TYPE_PATTERN: Final = re.compile(rf"[A-Z][A-Z0-9_]{{0,{MAX_ENTITY_TYPE_CHARS - 1}}}")


def _joins_letters(value: str, index: int) -> bool:
    """True if ``value[index]`` is a joiner with a letter on each side (where ``user_id`` may hold one)."""
    return (
        value[index] in JOINERS
        and 0 < index < len(value) - 1
        and value[index - 1].isalpha()
        and value[index + 1].isalpha()
    )


def forbidden_character(value: str, *, joiners_between_letters: bool = False) -> str | None:
    """A description of the first forbidden character in ``value`` (``"U+202E"``), or None if it is clean.

    With ``joiners_between_letters`` (``user_id``), ZWNJ and ZWJ pass when a letter
    stands on each side of them.
    """
    first = FORBIDDEN.search(value)  # the hot path: one search finds nothing in a clean value
    if first is None:
        return None
    for found in FORBIDDEN.finditer(value, first.start()):
        if not (joiners_between_letters and _joins_letters(value, found.start())):
            return f"U+{ord(found.group()):04X}"
    return None


_SHORT_ESCAPES: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(character: str) -> str:
    short = _SHORT_ESCAPES.get(character)
    if short is not None:
        return short
    code = ord(character)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_forbidden(value: str, *, joiners_between_letters: bool = False) -> str:
    """``value`` with every forbidden character written as a visible escape (``\\x1b``, ``\\u202e``, ``\\n``).

    With ``joiners_between_letters``, a joiner with a letter on each side stays, as
    :func:`forbidden_character` allows it there; everything else is left exactly as it is.
    """

    def escaped(found: re.Match[str]) -> str:
        if joiners_between_letters and _joins_letters(value, found.start()):
            return found.group()
        return _escape(found.group())

    return FORBIDDEN.sub(escaped, value)


# --- the same rules as SQL, for the CHECK constraints of both engines ------------------------------------


def _postgresql_class(ranges: tuple[tuple[int, int], ...]) -> str:
    # PostgreSQL text cannot hold NUL (and its regex cannot name it): the class starts at U+0001.
    parts = []
    for start, end in ranges:
        start = max(start, 1)
        parts.append(f"\\u{start:04x}" if start == end else f"\\u{start:04x}-\\u{end:04x}")
    return "[" + "".join(parts) + "]"


def _sqlite_glob_class(ranges: tuple[tuple[int, int], ...]) -> str:
    """``'*[…]*'`` for GLOB, spelled with char() so the schema's SQL holds no control characters.

    GLOB ends its pattern at NUL, so U+0000 is checked apart (:func:`check_clean_sql`).
    """
    code_points = [ord("*"), ord("[")]
    for start, end in ranges:
        start = max(start, 1)
        code_points += [start] if start == end else [start, ord("-"), end]
    code_points += [ord("]"), ord("*")]
    return f"char({', '.join(map(str, code_points))})"


def check_clean_sql(column: str, dialect: str, *, joiners_between_letters: bool = False) -> str:
    """SQL that is true when ``column`` holds none of FORBIDDEN_RANGES (for a CHECK constraint).

    ``dialect`` is ``postgresql`` or ``sqlite``. With ``joiners_between_letters``
    (``user_id``) ZWNJ and ZWJ may appear, but not first, last or two in a row:
    neither engine can tell a letter apart portably in a CHECK, so the database
    holds this looser rule and the validator the exact one (:func:`forbidden_character`).
    """
    ranges = _ranges_except_joiners() if joiners_between_letters else FORBIDDEN_RANGES
    joiners = "".join(f"\\u{code:04x}" for code in _JOINER_CODE_POINTS)
    if dialect == "postgresql":
        clean = f"{column} !~ '{_postgresql_class(ranges)}'"
        if joiners_between_letters:
            clean += f" AND {column} !~ '^[{joiners}]|[{joiners}]$|[{joiners}]{{2}}'"
        return clean
    if dialect == "sqlite":
        # NUL: GLOB and length() stop at it, instr() on the bytes does not.
        clean = f"instr(CAST({column} AS BLOB), X'00') = 0 AND {column} NOT GLOB {_sqlite_glob_class(ranges)}"
        if joiners_between_letters:
            joiner_class = f"char({ord('[')}, {', '.join(map(str, _JOINER_CODE_POINTS))}, {ord(']')})"
            clean += (
                f" AND {column} NOT GLOB ({joiner_class} || '*')"
                f" AND {column} NOT GLOB ('*' || {joiner_class})"
                f" AND {column} NOT GLOB ('*' || {joiner_class} || {joiner_class} || '*')"
            )
        return clean
    raise ValueError(f"no identifier CHECK for the {dialect!r} dialect")


def check_identifier_sql(
    column: str, dialect: str, *, max_chars: int, min_chars: int = 1, joiners_between_letters: bool = False
) -> str:
    """SQL true when ``column`` is a clean identifier of ``min_chars`` to ``max_chars`` characters.

    The length is checked on both engines: SQLite does not enforce VARCHAR lengths.
    """
    clean = check_clean_sql(column, dialect, joiners_between_letters=joiners_between_letters)
    return f"length({column}) BETWEEN {min_chars} AND {max_chars} AND {clean}"


#: The longest rollup key: a key is at most the longest identifier it counts (a user id).
MAX_ROLLUP_KEY_CHARS: Final = MAX_USER_ID_CHARS


def check_rollup_key_sql(dialect: str) -> str:
    """SQL true when a rollup row's ``key`` may be stored: empty or a clean identifier.

    Empty is the risk dimension's key and the overflow key (db/rollups.py), which
    no identifier can be; user keys may hold the joiners ``user_id`` may hold.
    """
    user = check_clean_sql("key", dialect, joiners_between_letters=True)
    other = check_clean_sql("key", dialect)
    return (
        f"length(key) <= {MAX_ROLLUP_KEY_CHARS} "
        f"AND (dimension = 'user' AND {user} OR dimension <> 'user' AND {other})"
    )


def visible(value: object) -> str:
    """``value`` as a string whose control, bidi and zero-width characters are written as escapes.

    ``"\\x1b[31mred"`` becomes the nine characters ``\\x1b[31mred``; everything
    else, markup-looking brackets included, is left exactly as it is.
    """
    return escape_forbidden(value if isinstance(value, str) else str(value), joiners_between_letters=True)
