"""The README's PostgreSQL section works when followed literally, as a person would on a fresh machine.

Its commands are read from README.md itself (so the test breaks when the README drifts) and run one by
one through ``bash`` from the repository root, the earlier ``.``/``export`` lines before each, with a
PATH that does not hold the virtual environment: the README's own activation line must put ``alembic``
and the backend's ``python`` there. Only the database's name is changed (a unique one, dropped at the
end), and the server's address when TEST_POSTGRES_URL points elsewhere. The password of
``create-admin`` comes on stdin; the ingest server runs until it answers a health probe; the console
runs on a pseudo-terminal until it shows the sign-in screen and lets the new administrator in.
Skipped without PostgreSQL (fails instead under AIFW_REQUIRE_POSTGRES=1, as in CI).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import secrets
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import URL, make_url

from db.settings import REPO_ROOT
from tests.support.database import admin_execute, postgres_admin_url, postgres_required

pytestmark = pytest.mark.slow

README = REPO_ROOT / "README.md"
ACTIVATE = REPO_ROOT / ".venv" / "bin" / "activate"
#: What the README's lines name, to be replaced by this test's own.
README_DATABASE = "ai_firewall"
README_SERVER = ("localhost", 5432, "postgres")
ADMIN = "admin"
#: Where the console is drawn, as on the smallest terminal it supports.
COLUMNS, ROWS = 80, 24
CTRL_Q, TAB, ENTER = b"\x11", b"\t", b"\r"
ANSI = re.compile(rb"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()][0-9A-B]|[=>NOPc78])")


# -- the README ------------------------------------------------------------------------------------


def postgres_section_commands() -> list[str]:
    """The command lines of the README's "PostgreSQL" section's code block, without their comments."""
    text = README.read_text(encoding="utf-8")
    assert "\n## PostgreSQL\n" in text, "README.md has no '## PostgreSQL' section"
    section = text.split("\n## PostgreSQL\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block is not None, "the README's PostgreSQL section has no ```bash block"
    lines = [re.sub(r"\s+#\s.*$", "", line).strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line]


def is_shell_state(command: str) -> bool:
    """Lines that change the shell for the lines after them (activation, exports)."""
    return command.startswith((". ", "source ", "export "))


# -- PostgreSQL ------------------------------------------------------------------------------------


def server_or_skip() -> URL:
    """The PostgreSQL server the tests use, reachable; skip (or fail, when required) otherwise."""
    admin = make_url(postgres_admin_url())
    try:
        asyncio.run(admin_execute("SELECT 1"))
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        reason = f"PostgreSQL not reachable at {admin.host}: {error}"
        if postgres_required():
            pytest.fail(f"{reason} (AIFW_REQUIRE_POSTGRES=1: PostgreSQL is required)", pytrace=False)
        pytest.skip(reason)
    return admin


def localized(command: str, database: str, server: URL) -> str:
    """``command`` with the README's database name replaced, and its server when the tests use another."""
    command = re.sub(rf"\b{README_DATABASE}\b", database, command)
    host, port, user = server.host or "localhost", server.port or 5432, server.username or "postgres"
    readme_host, readme_port, readme_user = README_SERVER
    if (host in {readme_host, "127.0.0.1"}, port, user) != (True, readme_port, readme_user):
        command = command.replace(f"-h {readme_host} -U {readme_user}", f"-h {host} -p {port} -U {user}")
        command = command.replace(
            f"{readme_user}:@{readme_host}:{readme_port}/", f"{user}:{server.password or ''}@{host}:{port}/"
        )
    return command


@pytest.fixture
def database() -> Iterator[tuple[str, URL]]:
    """A unique name for the README's database, dropped at the end whatever happened."""
    server = server_or_skip()
    name = f"aifw_readme_{uuid.uuid4().hex[:12]}"
    yield name, server
    asyncio.run(admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# -- running the lines -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fresh_shell_env(data_dir: Path, server: URL) -> dict[str, str]:
    """A login shell's environment: no virtual environment on PATH, no DATABASE_URL yet."""
    venv_bins = {str(REPO_ROOT / ".venv" / "bin"), str(Path(sys.executable).parent)}
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH", "AIFW_DATA_DIR"}
    }
    env["PATH"] = os.pathsep.join(
        part for part in env.get("PATH", "").split(os.pathsep) if part and part not in venv_bins
    )
    env.update(
        # The test's own files, fast password hashes and a port of its own: settings, not commands.
        AIFW_DATA_DIR=str(data_dir),
        AIFW_BCRYPT_ROUNDS="4",
        INGEST_HOST="127.0.0.1",
        INGEST_PORT=str(free_port()),
        PYTHONUNBUFFERED="1",
        TERM="xterm-256color",
    )
    if server.password:
        env["PGPASSWORD"] = server.password
    return env


def script(state: list[str], command: str) -> str:
    """What bash runs: the earlier activation and exports, then ``command`` in the shell's place."""
    return "\n".join(["set -e", *state, f"exec {command}"])


def run_line(
    state: list[str], command: str, env: dict[str, str], *, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", script(state, command)],
        cwd=REPO_ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def health_probe(port: int) -> dict[str, object]:
    """Connect, send the load balancer's health line and return the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(b'{"type":"health"}\n')
        answer = connection.makefile("rb").readline()
    return dict(json.loads(answer))


def probe_until_up(server: subprocess.Popen[bytes], port: int, *, within: float = 30) -> dict[str, object]:
    """The first health answer of the server starting on ``port``; fails if it exits or never answers."""
    deadline = time.monotonic() + within
    while True:
        assert server.poll() is None, f"the ingest server exited with {server.returncode}"
        try:
            return health_probe(port)
        except (ConnectionRefusedError, ConnectionResetError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # not listening yet: the server is still starting


class Terminal:
    """A program on a pseudo-terminal of COLUMNS×ROWS: what it drew (escape sequences removed), keys."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        self.process = subprocess.Popen(
            argv, cwd=REPO_ROOT, env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
        )
        os.close(slave)
        self.raw = b""

    @property
    def text(self) -> str:
        return ANSI.sub(b"", self.raw).decode("utf-8", "replace")

    def read_until(self, wanted: str, *, within: float = 30) -> None:
        deadline = time.monotonic() + within
        while wanted not in self.text:
            left = deadline - time.monotonic()
            shown = self.text[-2000:]
            assert left > 0, f"{wanted!r} not shown within {within:g} s; the terminal showed:\n{shown}"
            exited = f"the program exited with {self.process.returncode} before showing {wanted!r}"
            assert self._read(min(left, 0.5)) or self.process.poll() is None, f"{exited}:\n{shown}"

    def type(self, keys: bytes, *, pause: float = 0.3) -> None:
        """Type ``keys``, then pause as a person would: keys typed at once all go to the widget focused when
        the first arrives, so text after a Tab would land in the field the Tab leaves."""
        os.write(self.master, keys)
        deadline = time.monotonic() + pause
        while (left := deadline - time.monotonic()) > 0:
            self._read(left)

    def wait(self, *, within: float = 15) -> int:
        deadline = time.monotonic() + within
        while self.process.poll() is None and time.monotonic() < deadline:
            self._read(0.1)
        return self.process.wait(timeout=1)

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # the program closed the terminal
            return False
        self.raw += data
        return bool(data)

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        os.close(self.master)


# -- the test --------------------------------------------------------------------------------------


def test_the_readme_postgresql_section_runs_as_written(database: tuple[str, URL], tmp_path: Path) -> None:
    name, server = database
    if not ACTIVATE.exists():
        pytest.skip(f"no {ACTIVATE.relative_to(REPO_ROOT)}: `make setup` makes it, as the README says first")
    commands = postgres_section_commands()
    assert commands[0] == ". .venv/bin/activate", "the section starts by activating the environment"
    env = fresh_shell_env(tmp_path / "data", server)
    port = int(env["INGEST_PORT"])
    password = secrets.token_urlsafe(18)
    state: list[str] = []
    ran: list[str] = []
    for line in commands:
        command = localized(line, name, server)
        if is_shell_state(command):
            state.append(command)
            continue
        if command.startswith("createdb "):
            if shutil.which("createdb", path=env["PATH"]) is None:
                asyncio.run(admin_execute(f'CREATE DATABASE "{name}"'))
            else:
                result = run_line(state, command, env)
                assert result.returncode == 0, result.stderr
        elif command == "alembic upgrade head":
            result = run_line(state, command, env)
            assert result.returncode == 0, result.stderr
            assert "Running upgrade" in result.stderr
        elif command.startswith("python -m console create-admin "):
            result = run_line(state, command, env, stdin=password + "\n")
            assert result.returncode == 0, result.stderr
            assert result.stdout.strip() == f"created administrator {ADMIN!r}"
        elif command == "python -m console":
            terminal = Terminal(["bash", "-c", script(state, command)], env)
            try:
                terminal.read_until("Sign in")
                terminal.read_until(name)  # the database it reached, under the title
                for keys in (ADMIN.encode(), TAB, password.encode(), ENTER):
                    terminal.type(keys)
                terminal.read_until(f"{ADMIN} (admin)")
                terminal.type(CTRL_Q)
                assert terminal.wait() == 0, terminal.text[-2000:]
            finally:
                terminal.close()
            assert "Traceback" not in terminal.text
        elif command == "python ingest_server.py":
            log = (tmp_path / "ingest.log").open("wb")
            process = subprocess.Popen(
                ["bash", "-c", script(state, command)], cwd=REPO_ROOT, env=env, stdout=log, stderr=log
            )
            try:
                assert probe_until_up(process, port) == {"type": "health", "status": "ok"}
                process.send_signal(signal.SIGTERM)
                assert process.wait(timeout=30) == 0
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=10)
                log.close()
        else:
            pytest.fail(f"the README's PostgreSQL section has a line this test does not know: {line!r}")
        ran.append(command.split()[0] if not command.startswith("python") else " ".join(command.split()[:3]))
    assert ran == [
        "createdb",
        "alembic",
        "python -m console",
        "python -m console",
        "python ingest_server.py",
    ]
