"""Screenshots of the console for the docs, saved by Textual, on a database filled by the demo.

Runs ``python -m console demo --no-console`` in a temporary data directory (so
the events arrive through the real ingest server from the simulated fleet),
then opens the console under Textual's Pilot at 120x36, signs in as the demo
administrator and saves:

- ``docs/console.svg``: the overview;
- ``docs/console-logs.svg``: the logs, filtered to red events, with the detail of the newest.

    .venv/bin/python bench/screenshot.py [--out docs] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from textual.widgets import Input, Static  # noqa: E402

from console.app import FirewallConsole  # noqa: E402
from console.screens.shell import ShellScreen  # noqa: E402
from console.sections.logs import LogsSection  # noqa: E402
from console.widgets.log_table import LogTable  # noqa: E402
from db.logs import LogFilter  # noqa: E402
from db.settings import REPO_ROOT  # noqa: E402
from simulation.demo import DEMO_ADMIN, PASSWORD_FILE, demo_settings  # noqa: E402

SIZE = (120, 36)


def fill(data_dir: Path, seconds: float) -> None:
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    env.update(AIFW_DATA_DIR=str(data_dir), AIFW_BCRYPT_ROUNDS="4")
    subprocess.run(
        [sys.executable, "-m", "console", "demo", "--no-console", "--duration", str(seconds)],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        check=True,
    )


async def until(condition: Callable[[], bool], pilot: object, within: float = 20.0) -> None:
    async with asyncio.timeout(within):
        while not condition():
            await pilot.pause(0.1)  # type: ignore[attr-defined]


async def shoot(data_dir: Path, out: Path) -> None:
    database = demo_settings({"AIFW_DATA_DIR": str(data_dir)})
    password = (database.directory / PASSWORD_FILE).read_text(encoding="utf-8").strip()
    app = FirewallConsole(database.settings)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.screen.query("#username").results() and app.screen.focused is not None, pilot)
        app.screen.query_one("#username", Input).value = DEMO_ADMIN
        app.screen.query_one("#password", Input).value = password
        app.screen.submit()  # type: ignore[attr-defined]
        try:
            await until(lambda: isinstance(app.screen, ShellScreen), pilot)
        except TimeoutError:
            message = app.screen.query_one("#login-message").render()
            raise SystemExit(f"error: could not sign in: {message}") from None
        status = app.screen.query_one("#overview-status", Static)
        await until(lambda: "updated" in str(status.render()), pilot)
        await pilot.pause(0.5)
        app.save_screenshot(filename="console.svg", path=str(out))
        await pilot.press("2")
        logs = app.screen.query_one(LogsSection)
        logs.apply_filters(LogFilter(risk_levels=frozenset({"red"})))
        table = app.screen.query_one(LogTable)
        await until(lambda: table.row_count > 0, pilot)
        await pilot.pause(1.0)
        app.save_screenshot(filename="console-logs.svg", path=str(out))
    print(f"saved {out / 'console.svg'} and {out / 'console-logs.svg'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs")
    parser.add_argument("--seconds", type=float, default=8.0, help="how long the demo fills the database")
    args = parser.parse_args()
    out = args.out.resolve()
    with tempfile.TemporaryDirectory(prefix="aifw-screenshot-") as directory:
        fill(Path(directory) / "var", args.seconds)
        # Relative, so the title shows "var/demo/firewall.db" rather than a temporary path.
        os.chdir(directory)
        asyncio.run(shoot(Path("var"), out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
