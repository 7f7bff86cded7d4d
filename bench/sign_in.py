"""Sign-in timing: an unknown name, a disabled account and a locked name against a wrong password.

Every attempt that reaches the password costs one bcrypt check, so a guesser
cannot tell from the time an unknown username from a known one, nor a disabled
account from an active one (issue 11). This measures, through
:func:`db.sign_in.sign_in` and a commit as the console does, the median time of
``--attempts`` attempts of each kind at cost ``--rounds`` (default: the
``BCRYPT_ROUNDS`` setting), and prints each as a ratio of the wrong-password
median measured in the same run. Targets: unknown and disabled within
[0.8, 1.25] of it; locked (refused before bcrypt) under 0.1.

    .venv/bin/python bench/sign_in.py                 # a throwaway SQLite file
    .venv/bin/python bench/sign_in.py --postgres      # a throwaway PostgreSQL database

PostgreSQL comes from ``TEST_POSTGRES_URL`` (default: the local server as postgres).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import bcrypt
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from db.base import utcnow  # noqa: E402
from db.engine import migrate, new_engine, new_sessionmaker  # noqa: E402
from db.models import User  # noqa: E402
from db.settings import load_settings  # noqa: E402
from db.sign_in import FREE_ATTEMPTS, SignInOutcome, sign_in  # noqa: E402

DEFAULT_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
PASSWORD = "bench sign-in password"
#: (label, username, password, expected outcome); the wrong password is the ceiling the others are held to.
CASES = (
    ("wrong password", "alice", "not the password", SignInOutcome.WRONG),
    ("unknown username", "nobody", "not the password", SignInOutcome.WRONG),
    ("disabled, right password", "bob", PASSWORD, SignInOutcome.DISABLED),
    ("disabled, wrong password", "bob", "not the password", SignInOutcome.WRONG),
    ("locked", "carol", PASSWORD, SignInOutcome.LOCKED),
    ("success", "alice", PASSWORD, SignInOutcome.OK),
)
#: The ratio to the wrong-password median each kind must stay within (None: printed, not judged).
TARGETS: dict[str, tuple[float, float] | None] = {
    "wrong password": None,
    "unknown username": (0.8, 1.25),
    "disabled, right password": (0.8, 1.25),
    "disabled, wrong password": (0.8, 1.25),
    "locked": (0.0, 0.1),
    "success": None,
}


async def add_users(sessions: async_sessionmaker[AsyncSession], rounds: int) -> None:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=rounds)).decode()
    async with sessions() as session:
        for username, active in (("alice", True), ("bob", False), ("carol", True)):
            email = f"{username}@bench.example"
            session.add(User(username=username, email=email, hashed_password=hashed, is_active=active))
        await session.commit()


async def attempt(
    sessions: async_sessionmaker[AsyncSession], username: str, password: str, rounds: int, now: datetime
) -> tuple[float, SignInOutcome]:
    started = time.perf_counter()
    async with sessions() as session:
        result = await sign_in(
            session=session, username=username, password=password, bcrypt_rounds=rounds, now=now
        )
        await session.commit()
    return time.perf_counter() - started, result.outcome


async def measure(database_url: str, rounds: int, attempts: int) -> int:
    settings = replace(load_settings(), database_url=database_url, database_url_is_default=False)
    engine = new_engine(settings)
    try:
        await migrate(engine)
        sessions = new_sessionmaker(engine)
        await add_users(sessions, rounds)
        start = utcnow()
        for _ in range(FREE_ATTEMPTS):  # carol waits from now on
            await attempt(sessions, "carol", "not the password", rounds, start)
        timings: dict[str, list[float]] = {label: [] for label, *_ in CASES}
        for index in range(attempts):
            for position, (label, username, password, expected) in enumerate(CASES):
                # Minutes apart (the longest wait is a minute), so no delay stops the counted kinds;
                # carol's wait runs from the start.
                later = timedelta(hours=index + 1, minutes=position)
                now = start + timedelta(seconds=1) if expected is SignInOutcome.LOCKED else start + later
                seconds, outcome = await attempt(sessions, username, password, rounds, now)
                if outcome is not expected:
                    raise SystemExit(f"{label}: expected {expected}, got {outcome}")
                timings[label].append(seconds)
    finally:
        await engine.dispose()
    ceiling = statistics.median(timings["wrong password"])
    print(f"bcrypt cost {rounds}, {attempts} attempts each, {make_url(database_url).get_backend_name()}")
    print(f"{'attempt':<28}{'median ms':>10}{'ratio':>8}  target")
    missed = 0
    for label, values in timings.items():
        median = statistics.median(values)
        ratio = median / ceiling
        target = TARGETS[label]
        verdict = ""
        if target is not None:
            ok = target[0] <= ratio <= target[1]
            missed += not ok
            verdict = f"[{target[0]}, {target[1]}] {'ok' if ok else 'MISSED'}"
        print(f"{label:<28}{median * 1000:>10.1f}{ratio:>8.2f}  {verdict}")
    return 1 if missed else 0


async def run(args: argparse.Namespace) -> int:
    if not args.postgres:
        with tempfile.TemporaryDirectory() as directory:
            return await measure(f"sqlite+aiosqlite:///{directory}/sign-in.db", args.rounds, args.attempts)
    admin_url = make_url(os.environ.get("TEST_POSTGRES_URL", DEFAULT_ADMIN_URL))
    dsn = admin_url.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"aifw_bench_sign_in_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = admin_url.set(database=name).render_as_string(hide_password=False)
            return await measure(url, args.rounds, args.attempts)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds",
        type=int,
        default=load_settings().bcrypt_rounds,
        help="bcrypt cost (default BCRYPT_ROUNDS)",
    )
    parser.add_argument("--attempts", type=int, default=9, help="attempts of each kind (default 9)")
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL database, not SQLite")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
