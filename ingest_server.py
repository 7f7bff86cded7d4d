"""The ingest server's entry point: agents stream NDJSON over TCP; every acknowledged event is committed.

The server is the package ``ingest/`` (framing, protocol, writer, connection, server, stats,
cli); the protocol is described in ``docs/protocol.md``. Run ``python ingest_server.py --help``
(or ``aifw-ingest --help``).
"""

from __future__ import annotations

import sys

from ingest.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
