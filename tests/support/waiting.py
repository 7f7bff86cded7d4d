"""Waiting for a condition instead of sleeping a fixed time: ``await wait_until(condition)``."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

#: How often a condition is checked; small, as a check is a cheap query or a flag.
POLL_SECONDS = 0.02


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], *, timeout: float = 20.0, what: str = "the condition"
) -> None:
    """Return as soon as ``condition()`` (sync or async) is true; fail the test after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = condition()
                if inspect.isawaitable(result):
                    result = await result
                if result:
                    return
                await asyncio.sleep(POLL_SECONDS)
    except TimeoutError:
        raise AssertionError(f"{what} did not hold within {timeout:g} s") from None
