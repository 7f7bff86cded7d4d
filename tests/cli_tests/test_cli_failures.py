"""Every command line fails in one clear line: the real commands, in subprocesses, against real databases.

Each failure must be one line on standard error that names the problem and what to do, with the
documented exit code (1 failed, 2 bad arguments or configuration), no traceback, and never a hash,
a token or the name of a column holding one.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy.engine import Connection, make_url

from console.app import run_console
from db.engine import alembic_config, head_revision, new_engine
from db.settings import load_settings
from tests.support.database import (
    admin_execute,
    create_postgres_database,
    drop_postgres_database,
    migrate_url,
    settings_for,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRETS = ("$2b$", "aifw_", "token_hash", "hashed_password")
PASSWORD = "correct horse battery staple 99"
CONSOLE = ("-m", "console")
CLEANUP = ("cleanup_logs.py",)
INGEST = ("ingest_server.py",)


def base_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in {"DATABASE_URL", "AIFW_DATA_DIR"}}
    env.update(AIFW_BCRYPT_ROUNDS="4", PYTHONUNBUFFERED="1", **extra)
    return env


async def migrate_to(url: str, revision: str) -> None:
    """Bring a new database to ``revision`` only (an older schema than head)."""

    def upgrade(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    engine = new_engine(settings_for(url))
    try:
        async with engine.begin() as connection:
            await connection.run_sync(upgrade)
    finally:
        await engine.dispose()


def run(
    arguments: Sequence[str], env: dict[str, str], *, stdin: str = "", timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=timeout,
        check=False,
    )


def assert_one_clear_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The failure is ``code``, one line on stderr, no traceback, no secret; return that line."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for secret in SECRETS:
        assert secret not in result.stderr, result.stderr
        assert secret not in result.stdout, result.stdout
    return lines[0]


# --- a read-only database -------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadOnlyDatabase:
    url: str
    token_id: str


def _seed(url: str) -> str:
    """An organisation ``acme`` with one token, made through the CLI; return the token's id."""
    env = base_env(DATABASE_URL=url)
    assert run([*CONSOLE, "org", "create", "acme"], env).returncode == 0
    created = run([*CONSOLE, "ingest-token", "create", "--organization", "acme"], env)
    assert created.returncode == 0, created.stderr
    match = re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", created.stdout)
    assert match is not None, created.stdout
    return match.group(0)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def read_only_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReadOnlyDatabase]:
    """A migrated database holding an organisation and a token, then made read-only."""
    if request.param == "postgresql":
        url = create_postgres_database("readonly_test")
        asyncio.run(migrate_url(url))
        token_id = _seed(url)
        name = make_url(url).database
        asyncio.run(admin_execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'))
        yield ReadOnlyDatabase(url, token_id)
        asyncio.run(admin_execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = off'))
        drop_postgres_database(url)
        return
    folder = tmp_path_factory.mktemp("readonly")
    path = folder / "firewall.db"
    asyncio.run(migrate_url(f"sqlite+aiosqlite:///{path}"))
    token_id = _seed(f"sqlite+aiosqlite:///{path}")
    # chmod is what a deployment gets wrong; mode=ro makes it read-only for root (who ignores chmod) too.
    # The folder stays writable: SQLite needs it for the WAL index even to read.
    path.chmod(0o444)
    yield ReadOnlyDatabase(f"sqlite+aiosqlite:///file:{path}?mode=ro&uri=true", token_id)


WRITING_COMMANDS = {
    "org create": ([*CONSOLE, "org", "create", "globex"], ""),
    "ingest-token create": ([*CONSOLE, "ingest-token", "create", "--organization", "acme"], ""),
    "ingest-token revoke": ([*CONSOLE, "ingest-token", "revoke", "{token_id}"], ""),
    "create-admin": ([*CONSOLE, "create-admin", "root", "--email", "root@acme.com"], PASSWORD + "\n"),
    "scrub --apply": ([*CONSOLE, "scrub", "--apply"], ""),
    "cleanup_logs.py": ([*CLEANUP], ""),
}


@pytest.mark.parametrize("name", list(WRITING_COMMANDS))
def test_a_command_that_writes_says_the_database_is_read_only(
    read_only_database: ReadOnlyDatabase, name: str
) -> None:
    command, stdin = WRITING_COMMANDS[name]
    command = [part.format(token_id=read_only_database.token_id) for part in command]
    result = run(command, base_env(DATABASE_URL=read_only_database.url), stdin=stdin)
    line = assert_one_clear_line(result, 1)
    assert "read-only" in line
    assert "is it running" not in line


def test_cleanup_json_says_the_database_is_read_only(read_only_database: ReadOnlyDatabase) -> None:
    result = run([*CLEANUP, "--json"], base_env(DATABASE_URL=read_only_database.url))
    assert_one_clear_line(result, 1)
    summary = json.loads(result.stdout)
    assert summary["status"] == "database_error"
    assert "read-only" in summary["error"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only files: chmod cannot stop it")
def test_console_start_up_migration_of_a_read_only_embedded_database_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "firewall.db").touch()  # an empty file: the console's start-up would migrate it
    (data / "firewall.db").chmod(0o444)
    data.chmod(0o555)
    try:
        result = run([*CONSOLE], base_env(AIFW_DATA_DIR=str(data)))
    finally:
        data.chmod(0o755)
    line = assert_one_clear_line(result, 1)
    assert "read-only" in line or "cannot open" in line
    assert "is it running" not in line


def test_console_start_up_migration_of_a_read_only_embedded_database_fails_before_the_app(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "firewall.db"
    asyncio.run(migrate_to(f"sqlite+aiosqlite:///{path}", "0001"))  # old: the start-up wants to migrate
    assert head_revision() != "0001"
    embedded = replace(
        load_settings({"AIFW_DATA_DIR": str(tmp_path)}),
        database_url=f"sqlite+aiosqlite:///file:{path}?mode=ro&uri=true",
    )
    assert embedded.database_url_is_default
    assert run_console(embedded) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "cannot migrate" in lines[0]
    assert "read-only" in lines[0]


# --- settings and arguments ------------------------------------------------------------------------


def _bad_settings(tmp_path: Path) -> dict[str, dict[str, str]]:
    a_file = tmp_path / "a-file"
    a_file.touch()
    return {
        "INGEST_PORT not a number": {"INGEST_PORT": "http"},
        "INGEST_PORT out of range": {"INGEST_PORT": "70000"},
        "AIFW_DATA_DIR under a file": {"AIFW_DATA_DIR": str(a_file / "data")},
        "in-memory SQLite": {"DATABASE_URL": "sqlite+aiosqlite:///:memory:"},
        "SQLite in a missing folder": {
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'nowhere' / 'x.db'}"
        },
        "PostgreSQL port out of range": {"DATABASE_URL": "postgresql+asyncpg://u:pw@127.0.0.1:99999/x"},
        "PostgreSQL port not a number": {"DATABASE_URL": "postgresql+asyncpg://u:secretpw@127.0.0.1:pg/x"},
    }


EXPECTED_WORDS = {
    "INGEST_PORT not a number": "INGEST_PORT",
    "INGEST_PORT out of range": "INGEST_PORT",
    "AIFW_DATA_DIR under a file": "AIFW_DATA_DIR",
    "in-memory SQLite": "use a file",
    "SQLite in a missing folder": "does not exist",
    "PostgreSQL port out of range": "port",
    "PostgreSQL port not a number": "port",
}


@pytest.mark.parametrize("case", list(EXPECTED_WORDS))
@pytest.mark.parametrize(
    "command",
    [[*CONSOLE, "ingest-token", "list"], [*CLEANUP], [*INGEST, "--port", "0"]],
    ids=["console", "cleanup", "ingest"],
)
def test_a_bad_setting_is_one_line_and_exit_code_2(tmp_path: Path, command: list[str], case: str) -> None:
    result = run(command, base_env(**_bad_settings(tmp_path)[case]), timeout=30)
    line = assert_one_clear_line(result, 2)
    assert EXPECTED_WORDS[case] in line
    assert "secretpw" not in line
    assert "is it running" not in line
    assert not (tmp_path / "nowhere").exists()  # a typo in the path must not create folders


@pytest.mark.skipif(os.geteuid() == 0, reason="root may create folders anywhere")
def test_a_data_folder_in_a_read_only_place_is_one_line(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        result = run([*CONSOLE, "ingest-token", "list"], base_env(AIFW_DATA_DIR=str(locked / "data")))
    finally:
        locked.chmod(0o755)
    assert "AIFW_DATA_DIR" in assert_one_clear_line(result, 2)


@pytest.mark.parametrize("port", ["http", "-1", "65536", "1e3"])
@pytest.mark.parametrize(
    "command",
    [[*INGEST], [*CONSOLE, "simulate", "--organization", "acme", "--token", "t"]],
    ids=["ingest_server.py", "simulate"],
)
def test_a_bad_port_option_is_one_line_and_exit_code_2(tmp_path: Path, command: list[str], port: str) -> None:
    result = run([*command, f"--port={port}"], base_env(AIFW_DATA_DIR=str(tmp_path)), timeout=30)
    line = assert_one_clear_line(result, 2)
    assert "--port" in line
    assert "port number from 0 to 65535" in line


@pytest.mark.parametrize(
    "command",
    [[*CONSOLE, "org", "create"], [*CONSOLE, "ingest-token", "revoke"], [*CONSOLE, "no-such-command"]],
    ids=["missing argument", "missing token id", "unknown command"],
)
def test_a_bad_console_argument_is_one_line_and_exit_code_2(command: list[str]) -> None:
    assert "--help" in assert_one_clear_line(run(command, base_env(), timeout=30), 2)


@pytest.mark.parametrize(
    "arguments",
    [["--batch-size", "0"], ["--wait", "soon"], ["--no-such-option"], ["--batch-size"]],
    ids=["batch size 0", "wait not a number", "unknown option", "missing value"],
)
def test_cleanup_json_with_a_bad_argument_still_prints_json(arguments: list[str]) -> None:
    result = run([*CLEANUP, "--json", *arguments], base_env(), timeout=30)
    assert_one_clear_line(result, 2)
    answer = json.loads(result.stdout)
    assert answer["status"] == "usage_error"
    assert answer["error"]


def test_an_unreachable_server_is_asked_whether_it_is_running() -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:1/nothing_{uuid.uuid4().hex[:6]}"
    line = assert_one_clear_line(run([*CLEANUP], base_env(DATABASE_URL=url), timeout=30), 1)
    assert "cannot connect to PostgreSQL at 127.0.0.1:1" in line
    assert line.endswith("is it running?")


def test_a_missing_postgresql_database_says_create_it_not_is_it_running() -> None:
    url = create_postgres_database("missing_test")
    drop_postgres_database(url)
    line = assert_one_clear_line(run([*CLEANUP], base_env(DATABASE_URL=url), timeout=30), 1)
    assert "has no database" in line
    assert "is it running" not in line
