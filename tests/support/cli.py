"""Running ``python -m console <subcommand>`` as a real process, as an operator would."""

from __future__ import annotations

import subprocess
import sys

from db.settings import REPO_ROOT


def console_command(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m console *args`` from the repository root with ``env``; never raises on failure."""
    return subprocess.run(
        [sys.executable, "-m", "console", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=60,
        check=False,
    )
