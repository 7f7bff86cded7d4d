"""A forwarder process for tests: ``python -m tests.support.forwarder_process HOLDER`` runs every
destination's forwarder against DATABASE_URL (secrets from AIFW_SECRET_KEY) with test-sized timings
until SIGTERM.

It prints ``ready`` once running; tests kill it with SIGKILL to show that another process finishes the work.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from db.engine import new_engine, new_sessionmaker
from db.secrets import secret_box_for
from db.settings import load_settings
from forwarding.runner import Forwarders


async def serve(holder: str) -> None:
    settings = load_settings()
    engine = new_engine(settings)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    forwarders = Forwarders(
        new_sessionmaker(engine),
        holder=holder,
        secrets=secret_box_for(settings),
        poll_seconds=0.02,
        lease_seconds=float(os.environ.get("FORWARD_LEASE_SECONDS", "1.0")),
        scan_seconds=0.1,
        page_rows=int(os.environ.get("FORWARD_PAGE_ROWS", "10")),
        frame_page_rows=int(os.environ.get("FORWARD_PAGE_ROWS", "10")),
        retry_first_seconds=0.05,
    )
    print("ready", flush=True)
    try:
        await forwarders.run(stop)
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1] if len(sys.argv) > 1 else f"test-process-{os.getpid()}"))
