"""Cron entry of the log retention cleanup; the command line itself is :mod:`retention.cli`.

    0 2 * * * cd /path/to/repo && python cleanup_logs.py >> /var/log/ai-firewall-cleanup.log 2>&1

``python cleanup_logs.py --help`` lists the options; ``aifw-cleanup`` is the same command.
Cron's ``python`` is whatever is first on PATH, often one without this project's
dependencies: if the imports fail and the repository's ``.venv`` exists, the script
re-executes itself with ``.venv/bin/python`` (from any working directory).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

VENV_PYTHON = Path(__file__).resolve().parent / ".venv" / "bin" / "python"
REEXEC_MARKER = "AIFW_CLEANUP_REEXECUTED"


def _reexec_in_venv(error: ImportError) -> None:
    """Replace this process with the venv's Python running the same command, if that can help."""
    in_venv = Path(sys.prefix).resolve() == VENV_PYTHON.parent.parent.resolve()
    if VENV_PYTHON.exists() and not in_venv and not os.environ.get(REEXEC_MARKER):
        os.environ[REEXEC_MARKER] = "1"
        os.execv(VENV_PYTHON, [str(VENV_PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]])
    print(
        f"error: cannot import the backend ({error}) with {sys.executable}; "
        f"install it (`make setup`) or run {VENV_PYTHON} {Path(__file__).name}",
        file=sys.stderr,
    )
    sys.exit(1)


try:
    from retention.cli import main
except ImportError as import_error:  # pragma: no cover - exercised by a subprocess test
    if __name__ != "__main__":
        raise
    _reexec_in_venv(import_error)

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
