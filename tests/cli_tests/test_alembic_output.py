"""`alembic upgrade head` from the repository root, as the README says: each line it logs, once."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from db.engine import head_revision
from db.settings import REPO_ROOT

#: The virtual environment's own `alembic` script, the one an operator runs after activating it.
ALEMBIC = Path(sys.executable).parent / "alembic"


def upgrade_head(database_url: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "AIFW_DATA_DIR"}
    env["DATABASE_URL"] = database_url
    return subprocess.run(
        [str(ALEMBIC), "upgrade", "head"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_alembic_upgrade_head_logs_each_line_once(fresh_url: str) -> None:
    result = upgrade_head(fresh_url)

    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("INFO")]
    upgrades = [line for line in lines if "Running upgrade" in line]
    assert upgrades, result.stderr
    assert f"-> {head_revision()}," in upgrades[-1]
    repeated = {line: count for line, count in Counter(lines).items() if count > 1}
    assert repeated == {}
    assert sum("Context impl" in line for line in lines) == 1


def test_alembic_upgrade_head_again_has_nothing_to_run_and_says_so_once(fresh_url: str) -> None:
    assert upgrade_head(fresh_url).returncode == 0

    result = upgrade_head(fresh_url)

    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("INFO")]
    assert not any("Running upgrade" in line for line in lines)
    assert sum("Context impl" in line for line in lines) == 1
