"""Counts in words, for the console and the command-line tools alike: "1 user", "2 users", "1,204 rows"."""

from __future__ import annotations


def counted(count: int, singular: str, plural: str | None = None) -> str:
    """``count`` with its noun in the right number, thousands separated ("1 organisation", "3 entries")."""
    noun = singular if count == 1 else (plural if plural is not None else f"{singular}s")
    return f"{count:,} {noun}"
