"""The command line refuses what the console refuses, because both call the same ``db/`` change
functions: each rule and each audit row is written once, in ``db/``."""

from __future__ import annotations

import subprocess
import sys

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import AuditEvent, FirewallConfig
from db.settings import REPO_ROOT
from tests.support.cli import console_command


async def audit_rows(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(AuditEvent)) or 0)


async def test_org_create_refuses_an_organisation_differing_only_in_case_and_audits_nothing(
    session: AsyncSession, subprocess_env: dict[str, str]
) -> None:
    assert console_command(subprocess_env, "org", "create", "acme").returncode == 0
    assert await audit_rows(session) == 1

    again = console_command(subprocess_env, "org", "create", "ACME")

    assert again.returncode == 2
    assert again.stderr.strip() == "error: organisation 'ACME' already exists as 'acme'"
    assert await session.scalar(select(func.count()).select_from(FirewallConfig)) == 1
    assert await audit_rows(session) == 1


async def test_org_create_refuses_a_retention_the_console_refuses(
    session: AsyncSession, subprocess_env: dict[str, str]
) -> None:
    result = console_command(subprocess_env, "org", "create", "acme", "--retention-days", "10")

    assert result.returncode == 2
    assert "log_retention_days must be between 30 and 365; got 10" in result.stderr
    assert await session.scalar(select(FirewallConfig)) is None
    assert await audit_rows(session) == 0


async def test_create_admin_refuses_an_email_the_console_refuses(
    session: AsyncSession, subprocess_env: dict[str, str]
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "console", "create-admin", "root", "--email", "not-an-address"],
        input="correct horse battery staple 99\n",
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=subprocess_env,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert result.stderr.strip() == "error: 'not-an-address' is not an email address"
    assert await audit_rows(session) == 0
