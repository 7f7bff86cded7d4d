"""The simulation and the retention command line run without the console: importing them loads
neither Textual, Rich nor any ``console`` module (checked in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from db.settings import REPO_ROOT

CHECK = """
import importlib, sys
importlib.import_module(sys.argv[1])
print(" ".join(sorted(m for m in sys.modules if m.split(".")[0] in {"textual", "rich", "console"})))
"""


@pytest.mark.parametrize(
    "module", ["simulation.demo", "simulation.fleet", "simulation.events", "retention.cli", "cleanup_logs"]
)
def test_module_imports_neither_textual_rich_nor_the_console(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHECK, module], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
