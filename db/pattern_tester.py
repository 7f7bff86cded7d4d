"""The pattern tester: what an organisation's custom patterns find in a sample text, never stored.

Patterns run with RE2 (:mod:`db.regex_engine`), the engine they are checked
with when saved and the one agents run: matching time grows linearly with the
sample, so even ``(a+)+$`` cannot hang the console. The sample, capped at
:data:`MAX_SAMPLE_CHARS`, lives only in memory; matching runs in a thread so
the console keeps drawing meanwhile.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from db.configs import get_config
from db.regex_engine import PatternSyntaxError, compile_pattern
from db.vocabulary import RISK_LEVELS

MAX_SAMPLE_CHARS = 5000
#: Matches shown per pattern (the count is always complete).
MAX_MATCHES_SHOWN = 20


class PatternTestError(ValueError):
    """The test could not run: the sample is too long or there are no patterns; the message says which."""


@dataclass(frozen=True)
class PatternHit:
    """What one pattern found: how many matches, the first few (start, end, text), or its regex error."""

    name: str
    entity_type: str
    severity: str
    count: int
    matches: tuple[tuple[int, int, str], ...]
    error: str | None = None


@dataclass(frozen=True)
class PatternTestResult:
    """Every pattern's outcome on one sample."""

    hits: tuple[PatternHit, ...]

    @property
    def matched(self) -> tuple[PatternHit, ...]:
        return tuple(hit for hit in self.hits if hit.count)

    @property
    def highest_severity(self) -> str | None:
        """The most severe level among patterns that matched (None when nothing matched)."""
        levels = [RISK_LEVELS.index(hit.severity) for hit in self.matched if hit.severity in RISK_LEVELS]
        return RISK_LEVELS[max(levels)] if levels else None


def _match_all(pattern: dict[str, Any], sample: str) -> PatternHit:
    problem: str | None = None
    try:
        compiled = compile_pattern(str(pattern.get("regex", "")))
    except PatternSyntaxError as error:
        compiled, problem = None, str(error)
    matches: list[tuple[int, int, str]] = []
    count = 0
    if compiled is not None:
        for match in compiled.finditer(sample):
            count += 1
            if len(matches) < MAX_MATCHES_SHOWN:
                matches.append((match.start(), match.end(), sample[match.start() : match.end()]))
    return PatternHit(
        name=str(pattern.get("name", "")),
        entity_type=str(pattern.get("entity_type", "")),
        severity=str(pattern.get("severity", "amber")),
        count=count,
        matches=tuple(matches),
        error=problem,
    )


async def run_patterns(patterns: list[dict[str, Any]], sample: str) -> PatternTestResult:
    """Run ``patterns`` (``name``, ``regex``, ``entity_type``, ``severity``) on ``sample`` with RE2.

    A pattern RE2 refuses (saved before patterns were checked as RE2) is reported
    with RE2's reason, not raised. Raises PatternTestError for a sample over
    :data:`MAX_SAMPLE_CHARS`.
    """
    if len(sample) > MAX_SAMPLE_CHARS:
        raise PatternTestError(
            f"the sample is {len(sample):,} characters; the tester takes at most {MAX_SAMPLE_CHARS:,}"
        )

    def match_every_pattern() -> tuple[PatternHit, ...]:
        return tuple(_match_all(pattern, sample) for pattern in patterns)

    return PatternTestResult(await asyncio.to_thread(match_every_pattern))


async def try_organization_patterns(
    *, session: AsyncSession, organization_id: str, sample: str
) -> PatternTestResult:
    """Run the organisation's saved custom patterns on ``sample`` (which is never stored)."""
    row = await get_config(session=session, organization_id=organization_id)
    patterns = list(row.custom_patterns or []) if row is not None else []
    if not patterns:
        raise PatternTestError(f"organisation {organization_id!r} has no custom patterns to test")
    return await run_patterns(patterns, sample)
