"""`python -m console create-admin`: password from stdin, bcrypt only, clear one-line refusals (the password
policy, the column lengths) that store nothing."""

from __future__ import annotations

import subprocess
import sys

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import AuditEvent, FirewallConfig, User
from db.security import verify_password
from tests.support.database import PASSWORD


def create_admin(
    env: dict[str, str], username: str, email: str, password: str, *arguments: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "console", "create-admin", username, "--email", email, *arguments],
        input=password + "\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


async def test_creates_an_admin_storing_only_the_bcrypt_hash(
    session: AsyncSession, subprocess_env: dict[str, str]
) -> None:
    result = create_admin({**subprocess_env, "USER": "ops-oscar"}, "root", "root@acme.com", "s3cret-password")
    assert result.returncode == 0, result.stderr
    user = await session.scalar(select(User).where(User.username == "root"))
    assert user is not None
    assert user.is_admin
    assert user.hashed_password.startswith("$2b$")
    assert await verify_password("s3cret-password", user.hashed_password)
    audit = await session.scalar(select(AuditEvent).where(AuditEvent.entity_id == "root"))
    assert audit is not None
    # The operating-system user made it, not the new administrator.
    assert (audit.action, audit.actor, audit.source) == ("user.create", "ops-oscar", "cli")
    assert "s3cret-password" not in str(audit.changes)


async def test_refuses_a_duplicate_with_a_clear_message(
    session: AsyncSession, subprocess_env: dict[str, str]
) -> None:
    assert create_admin(subprocess_env, "root", "root@acme.com", "s3cret-password").returncode == 0
    again = create_admin(subprocess_env, "root", "other@acme.com", "s3cret-password")
    assert again.returncode == 2
    assert again.stderr.strip() == "error: username 'root' is taken"


async def test_refuses_a_short_password_and_stores_nothing(
    session: AsyncSession, subprocess_env: dict[str, str]
) -> None:
    result = create_admin(subprocess_env, "root", "root@acme.com", "short")
    assert result.returncode == 2
    assert "password must be at least 12 characters; got 5" in result.stderr
    assert await session.scalar(select(User)) is None


async def test_create_admin_refuses_a_common_password_saying_why(
    session: AsyncSession, subprocess_env: dict[str, str]
) -> None:
    result = create_admin(subprocess_env, "root", "root@acme.com", "qwerty123456")
    assert result.returncode == 2
    assert result.stderr == (
        "error: password is too common: it is in the list of the 10,000 most used passwords\n"
    )
    assert await session.scalar(select(User)) is None


async def test_create_admin_with_an_over_long_full_name_prints_one_line_and_stores_nothing(
    session: AsyncSession, subprocess_env: dict[str, str]
) -> None:
    result = create_admin(subprocess_env, "root", "root@acme.com", PASSWORD, "--full-name", "n" * 300)
    assert result.returncode == 2
    assert result.stderr == "error: full_name must be at most 255 characters; got 300\n"
    assert result.stdout == ""
    assert await session.scalar(select(User)) is None
    assert await session.scalar(select(FirewallConfig)) is None
