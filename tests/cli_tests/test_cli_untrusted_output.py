"""What the command-line tools print from the database cannot act on the terminal: control characters
and ANSI escapes in stored names and messages are printed as visible escapes (``\\x1b``)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from db.base import utcnow
from db.configs import create_organization
from db.retention import FAILED, OrganizationCleanup
from db.rights import Actor
from db.tokens import create_token
from retention.cli import TextReport
from tests.support.cli import console_command

CLEAR_SCREEN = "\x1b[2J\x1b[H"
HOSTILE_NAME = CLEAR_SCREEN + "laptops\x07\u202etxt.exe"


async def test_ingest_token_list_prints_control_characters_of_a_name_as_escapes(
    session: AsyncSession, subprocess_env: dict[str, str]
) -> None:
    await create_organization(session=session, organization_id="acme", actor=Actor.cli())
    await create_token(session=session, organization_id="acme", name=HOSTILE_NAME, actor=Actor.cli())
    await session.commit()
    listed = console_command(subprocess_env, "ingest-token", "list")
    assert listed.returncode == 0, listed.stderr
    for control in ("\x1b", "\x07", "\u202e"):
        assert control not in listed.stdout
    assert "\\x1b[2J\\x1b[H" in listed.stdout


def test_cleanup_lines_print_a_stored_error_with_its_escapes_visible(
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = utcnow()
    report = TextReport(dry_run=False, interactive=False)
    report.result(
        OrganizationCleanup(
            organization_id="acme",
            retention_days=30,
            cutoff=now - timedelta(days=30),
            rows=3,
            status=FAILED,
            error="deadlock on " + HOSTILE_NAME,
            dry_run=False,
            started_at=now,
            finished_at=now,
            run_id=uuid.uuid4(),
        )
    )
    printed = capsys.readouterr().out
    assert "\x1b" not in printed
    assert "\x07" not in printed
    assert printed.rstrip("\n").endswith(
        "FAILED after 3 rows deleted: deadlock on \\x1b[2J\\x1b[Hlaptops\\x07\\u202etxt.exe"
    )


def test_cli_errors_print_control_characters_as_escapes(capsys: pytest.CaptureFixture[str]) -> None:
    from db.cli import fail

    assert fail("organisation " + CLEAR_SCREEN + "x does not exist") == 1
    assert capsys.readouterr().err == "error: organisation \\x1b[2J\\x1b[Hx does not exist\n"
