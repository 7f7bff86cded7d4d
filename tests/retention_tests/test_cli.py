"""``cleanup_logs.py`` (:mod:`retention.cli`) as cron runs it: a real subprocess, its output, its JSON and
its exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db.models import AuditEvent
from db.settings import REPO_ROOT
from retention.cli import PROGRESS_AFTER_SECONDS
from tests.support.database import count_events
from tests.support.retention import AddLogs, add_config, days_ago, start_lock_holder

Sessions = async_sessionmaker[AsyncSession]
SCRIPT = REPO_ROOT / "cleanup_logs.py"
LINE_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ")


def cleanup(
    env: dict[str, str], *args: str, python: str = sys.executable
) -> subprocess.CompletedProcess[str]:
    """Run the script the way the guide's cron line does: from the repository, by file name."""
    return subprocess.run(
        [python, "cleanup_logs.py", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def seed(sessions: Sessions, add_logs: AddLogs, now: datetime) -> None:
    """acme keeps 30 days (2 expired), legacy has no config (90 days, 1 expired)."""
    await add_config(sessions, "acme", 30)
    await add_logs("acme", [days_ago(now, 31), days_ago(now, 45), days_ago(now, 1)])
    await add_logs("legacy", [days_ago(now, 91), days_ago(now, 89)])


async def test_cleans_all_organisations_and_says_cutoff_and_count_per_line(
    engine: AsyncEngine, sessions: Sessions, add_logs: AddLogs, now: datetime, subprocess_env: dict[str, str]
) -> None:
    await seed(sessions, add_logs, now)

    result = cleanup(subprocess_env)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(LINE_STAMP.match(line) for line in lines)
    assert any(re.search(r" acme: retention 30 days, cutoff \S+Z, deleted 2 rows$", line) for line in lines)
    assert any(
        re.search(r" legacy: retention 90 days \(default\), cutoff \S+Z, deleted 1 row$", line)
        for line in lines
    )
    assert "succeeded: 2 organisations, 3 rows deleted" in lines[-1]
    assert (await count_events(engine, "acme"), await count_events(engine, "legacy")) == (1, 1)


async def test_dry_run_json_counts_and_deletes_nothing(
    engine: AsyncEngine, sessions: Sessions, add_logs: AddLogs, now: datetime, subprocess_env: dict[str, str]
) -> None:
    await seed(sessions, add_logs, now)

    result = cleanup(subprocess_env, "--dry-run", "--json")

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["status"], summary["dry_run"], summary["trigger"], summary["total_rows"]) == (
        "succeeded",
        True,
        "cli",
        3,
    )
    assert [(o["organization_id"], o["retention_days"], o["rows"]) for o in summary["organizations"]] == [
        ("acme", 30, 2),
        ("legacy", 90, 1),
    ]
    assert datetime.fromisoformat(summary["organizations"][0]["cutoff"]) < now
    assert await count_events(engine) == 5


async def test_organization_option_cleans_only_that_organisation(
    engine: AsyncEngine, sessions: Sessions, add_logs: AddLogs, now: datetime, subprocess_env: dict[str, str]
) -> None:
    await seed(sessions, add_logs, now)

    result = cleanup(subprocess_env, "--organization", "legacy", "--json")

    assert result.returncode == 0, result.stderr
    assert [o["organization_id"] for o in json.loads(result.stdout)["organizations"]] == ["legacy"]
    assert (await count_events(engine, "acme"), await count_events(engine, "legacy")) == (3, 1)


async def test_a_real_run_is_audited_per_organisation_and_a_dry_run_is_not(
    sessions: Sessions, add_logs: AddLogs, now: datetime, subprocess_env: dict[str, str]
) -> None:
    await seed(sessions, add_logs, now)

    assert cleanup({**subprocess_env, "USER": "cronjob"}, "--dry-run").returncode == 0
    assert cleanup({**subprocess_env, "USER": "cronjob"}).returncode == 0

    async with sessions() as session:
        rows = (await session.scalars(select(AuditEvent).order_by(AuditEvent.entity_id))).all()
    assert [(r.actor, r.source, r.action, r.entity_id) for r in rows] == [
        ("cronjob", "cli", "retention.run", "acme"),
        ("cronjob", "cli", "retention.run", "legacy"),
    ]
    assert rows[0].changes["rows_deleted"] == {"after": 2}


async def test_unknown_organisation_exits_2_with_one_line(
    sessions: Sessions, subprocess_env: dict[str, str]
) -> None:
    result = cleanup(subprocess_env, "--organization", "nobody")

    assert result.returncode == 2
    assert result.stderr.strip().endswith(
        "error: unknown organisation 'nobody': it has no configuration and no logs"
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [["--batch-size", "0"], ["--no-such-option"], ["--wait", "soon"]])
def test_bad_arguments_exit_2(subprocess_env: dict[str, str], args: list[str]) -> None:
    result = cleanup(subprocess_env, *args)

    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()  # one line naming the option, not argparse's usage block
    assert line.endswith("(see cleanup_logs.py --help)")


async def test_failed_organisation_exits_1_and_says_why(
    engine: AsyncEngine,
    sessions: Sessions,
    add_logs: AddLogs,
    now: datetime,
    subprocess_env: dict[str, str],
    refuse_deletes: str,
) -> None:
    await seed(sessions, add_logs, now)
    await add_config(sessions, refuse_deletes, 30)
    await add_logs(refuse_deletes, [days_ago(now, 40)])

    result = cleanup(subprocess_env)

    assert result.returncode == 1
    assert re.search(rf" {refuse_deletes}: .*FAILED after 0 rows deleted: .*deletes refused", result.stdout)
    assert "failed: 3 organisations, 3 rows deleted, 1 failed" in result.stdout
    assert await count_events(engine, "legacy") == 1


async def test_cleanup_already_running_elsewhere_exits_1(
    engine: AsyncEngine, sessions: Sessions, add_logs: AddLogs, now: datetime, subprocess_env: dict[str, str]
) -> None:
    await seed(sessions, add_logs, now)
    holder = await start_lock_holder(subprocess_env)
    try:
        result = cleanup(subprocess_env, "--json")
    finally:
        holder.kill()
        await holder.wait()

    assert result.returncode == 1
    assert json.loads(result.stdout) == {
        "status": "already_running",
        "error": "a retention cleanup is already running",
    }
    assert "error: a retention cleanup is already running" in result.stderr
    assert await count_events(engine) == 5


def test_unreachable_database_exits_1_with_one_line(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    env = {**subprocess_env, "DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere"}

    result = cleanup(env)

    assert result.returncode == 1
    assert "cannot connect to PostgreSQL at 127.0.0.1:1" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


async def test_python_without_dependencies_reexecutes_with_the_repository_venv(
    sessions: Sessions, add_logs: AddLogs, now: datetime, subprocess_env: dict[str, str]
) -> None:
    bare_python = Path(sys.base_prefix) / "bin" / "python3"
    venv_python = REPO_ROOT / ".venv" / "bin" / "python"
    if not venv_python.exists() or Path(sys.prefix).resolve() != venv_python.parent.parent.resolve():
        pytest.skip("the tests are not running from the repository's .venv")
    if subprocess.run([bare_python, "-c", "import sqlalchemy"], capture_output=True).returncode == 0:
        pytest.skip(f"{bare_python} has the dependencies installed; nothing to re-execute")
    await seed(sessions, add_logs, now)
    env = {key: value for key, value in subprocess_env.items() if key not in {"VIRTUAL_ENV", "PYTHONPATH"}}

    result = cleanup(env, "--json", python=str(bare_python))

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["total_rows"] == 3


def cleanup_on_terminal(env: dict[str, str], *args: str, started: threading.Event) -> tuple[int, str]:
    """Run the script with its stdout on a pseudo-terminal, as a person at a shell would.

    ``started`` is set once the script has said that the cleanup started.
    """
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "cleanup_logs.py", *args],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.DEVNULL,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
        if b"retention cleanup started" in b"".join(chunks):
            started.set()
    os.close(master)
    return process.wait(timeout=60), b"".join(chunks).decode()


async def test_long_run_on_a_terminal_shows_a_progress_line(
    sessions: Sessions, add_logs: AddLogs, now: datetime, subprocess_env: dict[str, str]
) -> None:
    await add_config(sessions, "acme", 30)
    await add_logs("acme", [days_ago(now, 40, seconds=-i) for i in range(20)])
    # The run outlasts the one-second threshold by waiting for the lock another process holds.
    holder = await start_lock_holder(subprocess_env)
    started = threading.Event()
    run = asyncio.create_task(
        asyncio.to_thread(
            cleanup_on_terminal, subprocess_env, "--batch-size", "1", "--wait", "30", started=started
        )
    )
    assert await asyncio.to_thread(started.wait, 30)
    # Not a wait for a condition: the behaviour is "after a second", so the run is made to last longer.
    await asyncio.sleep(PROGRESS_AFTER_SECONDS + 0.2)
    holder.kill()
    await holder.wait()
    code, output = await run

    assert code == 0
    assert re.search(r"\r\x1b\[K\S+Z acme: \d+ rows? deleted so far\.\.\.", output), output
    assert "deleted 20 rows" in output


async def test_cron_can_run_the_script_by_its_path_from_any_directory(
    sessions: Sessions, add_logs: AddLogs, now: datetime, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    await seed(sessions, add_logs, now)

    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--json"],
        cwd=tmp_path,
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["total_rows"] == 3


def test_the_installed_command_and_the_script_run_the_same_main() -> None:
    import cleanup_logs
    from retention import cli

    assert cleanup_logs.main is cli.main
