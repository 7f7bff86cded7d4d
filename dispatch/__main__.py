"""``python -m dispatch``: the dispatcher on its own (alert evaluation, forwarding); see dispatch/cli.py."""

from __future__ import annotations

import sys

from dispatch.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
