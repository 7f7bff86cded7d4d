"""``python -m console demo`` run end to end as a real process, without a terminal: it fills the
database through the real ingest path and stops everything it started, after ``--duration`` or at
SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import new_engine
from db.models import FirewallConfig, IngestToken, LogEntry, User
from db.settings import REPO_ROOT, Settings
from simulation.demo import DEMO_ORGANIZATIONS, DEMO_TOKEN_NAME, port_is_free
from tests.support.database import settings_for
from tests.support.waiting import wait_until

RUN_SECONDS = "6"


@dataclass(frozen=True)
class DemoChildren:
    """What a demo run printed about the processes it started."""

    server_pid: int
    simulator_pid: int
    port: int


def children_printed(output: str) -> DemoChildren:
    server = re.search(r"ingest server pid (\d+) listening on [\d.]+:(\d+)", output)
    simulator = re.search(r"simulator pid (\d+)", output)
    assert server is not None, output
    assert simulator is not None, output
    return DemoChildren(int(server.group(1)), int(simulator.group(1)), int(server.group(2)))


def is_running(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line or environment contains ``text`` (our tmp dir)."""
    needle = text.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        for part in ("cmdline", "environ"):
            with contextlib.suppress(OSError):
                if needle in (entry / part).read_bytes() and is_running(int(entry.name)):
                    found.append(int(entry.name))
                    break
    return found


def demo_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    env.update(AIFW_DATA_DIR=str(data_dir), AIFW_BCRYPT_ROUNDS="4", PYTHONUNBUFFERED="1", **extra)
    return env


def run_demo(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "console", "demo", *arguments],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def database_contents(settings: Settings) -> dict[str, object]:
    engine = new_engine(settings)
    try:
        async with engine.connect() as connection:
            return {
                "events": await connection.scalar(select(func.count()).select_from(LogEntry)),
                "organizations": set(await connection.scalars(select(FirewallConfig.organization_id))),
                "admins": set(await connection.scalars(select(User.username).where(User.is_admin))),
                "live_tokens": set(
                    await connection.scalars(
                        select(IngestToken.organization_id).where(
                            IngestToken.name == DEMO_TOKEN_NAME, IngestToken.revoked_at.is_(None)
                        )
                    )
                ),
            }
    finally:
        await engine.dispose()


def test_demo_without_a_terminal_fills_its_database_and_leaves_nothing_running(tmp_path: Path) -> None:
    result = run_demo(demo_env(tmp_path), "--duration", RUN_SECONDS, "--backfill-days", "7")
    assert result.returncode == 0, result.stdout + result.stderr
    children = children_printed(result.stdout)
    assert not is_running(children.server_pid)
    assert not is_running(children.simulator_pid)
    assert processes_mentioning(str(tmp_path)) == []
    assert port_is_free("127.0.0.1", children.port)
    assert "admin / " in result.stdout
    contents = asyncio.run(
        database_contents(settings_for(f"sqlite+aiosqlite:///{tmp_path}/demo/firewall.db"))
    )
    # The machine's load decides how many events arrive in the run; what must hold whatever it is:
    # traffic flowed, and every event the simulator was told is stored is in the database.
    acknowledged = int(re.search(r"acknowledged (\d+)", result.stdout).group(1))
    assert acknowledged > 0
    assert contents["events"] >= acknowledged
    assert contents["organizations"] == {name for name, _ in DEMO_ORGANIZATIONS}
    assert contents["admins"] == {"admin"}
    assert contents["live_tokens"] == contents["organizations"]


def test_demo_refuses_a_configured_database_url(tmp_path: Path) -> None:
    configured = tmp_path / "production.db"
    result = run_demo(demo_env(tmp_path, DATABASE_URL=f"sqlite:///{configured}"), "--duration", "1")
    assert result.returncode == 2
    assert "DATABASE_URL is set" in result.stderr
    assert "--database-url" in result.stderr
    assert not configured.exists()
    assert not (tmp_path / "demo").exists()


async def test_demo_with_an_explicit_database_url_fills_that_database_until_sigterm(
    settings: Settings, engine: AsyncEngine, tmp_path: Path
) -> None:
    demo = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "console",
        "demo",
        "--database-url",
        settings.database_url,
        "--duration",
        "0",
        "--backfill-days",
        "2",
        "--devices",
        "6",
        cwd=REPO_ROOT,
        env=demo_env(tmp_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )

    async def events_arrived_or_demo_ended() -> bool:
        return demo.returncode is not None or await stored_events(engine) > 0

    try:
        await wait_until(events_arrived_or_demo_ended, timeout=90, what="the demo stores events")
    finally:
        if demo.returncode is None:
            demo.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(demo.communicate(), 90)
    output = stdout.decode() + stderr.decode()
    assert demo.returncode == 0, output
    assert "interrupted, stopping" in output
    children = children_printed(stdout.decode())
    assert port_is_free("127.0.0.1", children.port)
    assert processes_mentioning(str(tmp_path)) == []
    contents = await database_contents(settings)
    assert contents["events"] > 0
    assert contents["organizations"] == {name for name, _ in DEMO_ORGANIZATIONS}


async def stored_events(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(LogEntry)) or 0)
