"""The layers hold: the server, the cleanup and the data layer never load Textual, and the contracts pass.

The import-linter contracts live in pyproject.toml; running ``lint-imports`` here means ``pytest``
alone catches a broken one. The child-process checks cover what import-linter cannot see: the two
single-module entry points, and imports made at run time.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Packages that must never bring Textual or Rich in (retention/ is checked once it exists).
HEADLESS_PACKAGES = ("db", "ingest", "simulation", "retention")
HEADLESS_MODULES = ("ingest_server", "cleanup_logs")


def loaded_ui_modules(modules: tuple[str, ...], packages: tuple[str, ...]) -> list[str]:
    """Import ``modules`` and every module of ``packages`` in a fresh interpreter; return the
    Textual and Rich modules that ended up in ``sys.modules``."""
    script = textwrap.dedent(
        f"""
        import importlib, importlib.util, pkgutil, sys

        for name in {modules!r}:
            importlib.import_module(name)
        for name in {packages!r}:
            if importlib.util.find_spec(name) is None:
                continue
            package = importlib.import_module(name)
            for found in pkgutil.walk_packages(package.__path__, prefix=name + "."):
                if found.name.rsplit(".", 1)[-1] != "__main__":  # importing it would run the program
                    importlib.import_module(found.name)
        print("\\n".join(sorted(m for m in sys.modules if m.split(".")[0] in {{"textual", "rich"}})))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_the_server_the_cleanup_and_the_data_layer_load_without_textual_or_rich() -> None:
    assert loaded_ui_modules(HEADLESS_MODULES, HEADLESS_PACKAGES) == []


def test_the_console_command_line_loads_textual_only_to_open_the_app() -> None:
    assert loaded_ui_modules(("console.cli",), ("console.commands",)) == []


def test_the_import_contracts_of_pyproject_hold() -> None:
    # What the `lint-imports` script runs, found through this interpreter rather than PATH.
    command = (
        "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    )
    result = subprocess.run(
        [sys.executable, "-c", command, "--no-cache"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"lint-imports found a broken contract:\n{result.stdout}{result.stderr}"
