"""Run one AlertEvaluator against DATABASE_URL until SIGTERM: for tests that kill or stop it.

    python -m tests.support.evaluator_process HOLDER LEASE_SECONDS

It polls quickly and uses a short lease, so a test sees a takeover within seconds.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from alerts.runner import AlertEvaluator
from db.engine import new_engine, new_sessionmaker
from db.settings import load_settings


async def main(holder: str, lease_seconds: float) -> None:
    engine = new_engine(load_settings())
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    evaluator = AlertEvaluator(
        new_sessionmaker(engine), holder=holder, poll_seconds=0.05, lease_seconds=lease_seconds
    )
    try:
        await evaluator.run(stop)
    finally:
        await engine.dispose()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
