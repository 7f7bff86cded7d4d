"""`python -m console scrub` as a real process, on a database holding rows today's rules refuse."""

from __future__ import annotations

import subprocess
import sys


def test_scrub_command_dry_run_prints_stored_strings_as_visible_escapes(legacy_url: str) -> None:
    env = {"DATABASE_URL": legacy_url, "PATH": "/usr/bin:/bin", "AIFW_BCRYPT_ROUNDS": "4"}
    done = subprocess.run(
        [sys.executable, "-m", "console", "scrub"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "dry run" in done.stdout
    assert "\x1b" not in done.stdout
    assert "\u202e" not in done.stdout
    assert "--apply" in done.stdout
