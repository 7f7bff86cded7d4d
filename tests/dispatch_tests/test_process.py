"""``python -m dispatch`` as a real process: it takes the evaluator's and the forwarders' leases, and on
SIGTERM stops, gives them up and exits 0; a bad setting is one line and exit code 2."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from db.destinations import lease_name
from db.settings import REPO_ROOT, Settings
from tests.dispatch_tests.lease_rows import EVALUATOR, expired, is_held, leases
from tests.support.database import environment_for
from tests.support.waiting import wait_until


def dispatcher_env(settings: Settings, secret_key: str, **extra: str) -> dict[str, str]:
    env = environment_for(settings)
    env.update(
        {
            "AIFW_SECRET_KEY": secret_key,
            "DISPATCH_LEASE_SECONDS": "30",
            "DISPATCH_POLL_MS": "50",
            "FORWARD_POLL_MS": "50",
            **extra,
        }
    )
    return env


async def start_dispatcher(env: dict[str, str], *arguments: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dispatch",
        *arguments,
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def run_dispatcher(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dispatch", *arguments],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_the_dispatcher_takes_the_leases_and_gives_them_up_on_sigterm(
    settings: Settings, engine: AsyncEngine, secret_key: str, destination_id: uuid.UUID
) -> None:
    process = await start_dispatcher(dispatcher_env(settings, secret_key))
    holder = f":{process.pid}:"
    forwarder = lease_name(destination_id)

    async def both_held() -> bool:
        rows = await leases(engine)
        return is_held(rows.get(EVALUATOR), holding=holder) and is_held(rows.get(forwarder), holding=holder)

    try:
        await wait_until(
            both_held, timeout=30, what="the dispatcher holds the evaluator's and the forwarder's leases"
        )
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()
    rows = await leases(engine)
    assert holder in rows[EVALUATOR].holder
    assert expired(rows[EVALUATOR]), stderr.decode()
    assert holder in rows[forwarder].holder
    assert expired(rows[forwarder]), stderr.decode()
    assert "stopped" in stderr.decode().splitlines()[-1]


async def test_only_alerts_runs_the_evaluator_and_no_forwarder(
    settings: Settings, engine: AsyncEngine, secret_key: str, destination_id: uuid.UUID
) -> None:
    process = await start_dispatcher(dispatcher_env(settings, secret_key), "--only", "alerts")

    async def evaluator_held() -> bool:
        return is_held((await leases(engine)).get(EVALUATOR), holding=f":{process.pid}:")

    try:
        await wait_until(evaluator_held, timeout=30, what="the dispatcher holds the evaluator's lease")
        # The forwarders scan for destinations at once when they run: given the evaluator's start, a
        # forwarder of ours would have taken its lease by now.
        await asyncio.sleep(1.0)
        assert lease_name(destination_id) not in await leases(engine)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()


def test_a_bad_setting_is_one_line_and_exit_code_2(settings: Settings, secret_key: str) -> None:
    result = run_dispatcher(dispatcher_env(settings, secret_key, DISPATCH_LEASE_SECONDS="1"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: DISPATCH_LEASE_SECONDS must be at least 2 and at most 300; got '1'"
    ]


def test_a_bad_option_is_one_line_and_exit_code_2(settings: Settings, secret_key: str) -> None:
    result = run_dispatcher(dispatcher_env(settings, secret_key), "--only", "everything")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "--only" in result.stderr


def test_a_secret_key_that_is_not_a_key_is_one_line_and_never_echoed(settings: Settings) -> None:
    result = run_dispatcher(dispatcher_env(settings, "not-a-fernet-key-but-a-secret"))
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: AIFW_SECRET_KEY")
    assert "not-a-fernet-key-but-a-secret" not in result.stderr + result.stdout


def test_a_database_not_migrated_is_one_line_and_exit_code_1(
    settings: Settings, secret_key: str, tmp_path: Path
) -> None:
    env = dispatcher_env(settings, secret_key, DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    result = run_dispatcher(env)
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "alembic upgrade head" in result.stderr


async def test_without_a_usable_key_file_syslog_destinations_still_forward(
    settings: Settings, engine: AsyncEngine, destination_id: uuid.UUID
) -> None:
    env = environment_for(settings)
    env.pop("AIFW_SECRET_KEY", None)
    # A data folder nobody can create: the key file cannot be made; a destination without a secret needs none.
    env.update(
        AIFW_DATA_DIR="/proc/aifw-no-such-folder",
        DISPATCH_LEASE_SECONDS="30",
        DISPATCH_POLL_MS="50",
        FORWARD_POLL_MS="50",
    )
    process = await start_dispatcher(env)
    forwarder = lease_name(destination_id)

    async def forwarding() -> bool:
        return is_held((await leases(engine)).get(forwarder), holding=f":{process.pid}:")

    try:
        await wait_until(forwarding, timeout=30, what="the dispatcher forwards to the syslog destination")
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()
    assert "destination secrets cannot be used" in stderr.decode()
