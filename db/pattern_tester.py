"""The pattern tester: what an organisation's custom patterns find in a sample text, never stored.

The sample lives only in memory: it goes to a short-lived child Python process
through a pipe and the child prints what matched. A child, not a thread, because
Python's ``re`` holds the GIL while it matches: a catastrophically backtracking
pattern run in a thread would freeze the console and could not be stopped. The
child is killed after :data:`TIMEOUT_SECONDS`, and the sample is capped at
:data:`MAX_SAMPLE_CHARS`, so no pattern can hang the console.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from db.configs import get_config
from db.vocabulary import RISK_LEVELS

MAX_SAMPLE_CHARS = 5000
TIMEOUT_SECONDS = 2.0
#: Matches shown per pattern (the count is always complete).
MAX_MATCHES_SHOWN = 20

# The child: reads {"patterns": [...], "sample": str} from stdin; prints "start <i>" before each
# pattern (so a timeout names the culprit) and one final JSON line with every pattern's matches.
_CHILD = r"""
import json, re, sys
job = json.load(sys.stdin)
results = []
for index, pattern in enumerate(job["patterns"]):
    print("start", index, flush=True)
    try:
        compiled = re.compile(pattern["regex"])
    except re.error as error:
        results.append({"error": str(error), "spans": [], "count": 0})
        continue
    spans, count = [], 0
    for match in compiled.finditer(job["sample"]):
        count += 1
        if len(spans) < job["shown"]:
            spans.append([match.start(), match.end()])
    results.append({"error": None, "spans": spans, "count": count})
print("result", json.dumps(results), flush=True)
"""


class PatternTestError(ValueError):
    """The test could not run: sample too long, a pattern too slow, or no patterns; the message says which."""


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


async def _run_child(patterns: list[dict[str, Any]], sample: str, time_limit: float) -> list[dict[str, Any]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",
        "-c",
        _CHILD,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    job = json.dumps({"patterns": patterns, "sample": sample, "shown": MAX_MATCHES_SHOWN}).encode()
    started = -1
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        async with asyncio.timeout(time_limit):
            process.stdin.write(job)
            await process.stdin.drain()
            process.stdin.close()
            while line := await process.stdout.readline():
                kind, _, rest = line.decode().partition(" ")
                if kind == "start":
                    started = int(rest)
                elif kind == "result":
                    await process.wait()
                    return list(json.loads(rest))
    except TimeoutError:
        culprit = patterns[started]["name"] if 0 <= started < len(patterns) else "a pattern"
        raise PatternTestError(
            f"pattern {culprit!r} took longer than {time_limit:g} s on this sample (catastrophic "
            "backtracking?): simplify the regex, e.g. avoid nested repeats like (a+)+"
        ) from None
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    raise PatternTestError("the pattern tester stopped unexpectedly; try again")


async def run_patterns(
    patterns: list[dict[str, Any]], sample: str, *, time_limit: float = TIMEOUT_SECONDS
) -> PatternTestResult:
    """Run ``patterns`` (``name``, ``regex``, ``entity_type``, ``severity``) on ``sample``, in a child process.

    A pattern whose regex does not compile is reported with its error, not raised.
    Raises PatternTestError for a sample over :data:`MAX_SAMPLE_CHARS` or a pattern
    that runs past ``time_limit`` seconds.
    """
    if len(sample) > MAX_SAMPLE_CHARS:
        raise PatternTestError(
            f"the sample is {len(sample):,} characters; the tester takes at most {MAX_SAMPLE_CHARS:,}"
        )
    hits: list[PatternHit] = []
    runnable = [{"name": str(p.get("name", "")), "regex": str(p.get("regex", ""))} for p in patterns]
    outcomes = await _run_child(runnable, sample, time_limit) if runnable else []
    for pattern, outcome in zip(patterns, outcomes, strict=True):
        matches = tuple((start, end, sample[start:end]) for start, end in outcome["spans"])
        hits.append(
            PatternHit(
                name=str(pattern.get("name", "")),
                entity_type=str(pattern.get("entity_type", "")),
                severity=str(pattern.get("severity", "amber")),
                count=int(outcome["count"]),
                matches=matches,
                error=outcome["error"],
            )
        )
    return PatternTestResult(tuple(hits))


async def try_organization_patterns(
    *, session: AsyncSession, organization_id: str, sample: str, time_limit: float = TIMEOUT_SECONDS
) -> PatternTestResult:
    """Run the organisation's saved custom patterns on ``sample`` (which is never stored)."""
    row = await get_config(session=session, organization_id=organization_id)
    patterns = list(row.custom_patterns or []) if row is not None else []
    if not patterns:
        raise PatternTestError(f"organisation {organization_id!r} has no custom patterns to test")
    return await run_patterns(patterns, sample, time_limit=time_limit)
