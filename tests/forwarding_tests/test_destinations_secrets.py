"""``python -m console secrets rotate``: every stored secret re-encrypted under the first key, audited, never
printed; a secret no key reads is named so an administrator enters it again."""

from __future__ import annotations

import json

from cryptography.fernet import Fernet
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import new_sessionmaker
from db.models import AuditEvent
from db.secrets import SecretBox, SecretUnreadable
from tests.support.cli import console_command
from tests.support.forwarding_rows import SECRET_KEY, add_destination, add_org, reload

TOKEN = "hec-token-that-must-never-be-printed"


async def test_rotate_re_encrypts_every_secret_with_the_first_key(
    engine: AsyncEngine, subprocess_env: dict[str, str]
) -> None:
    await add_org(engine)
    readable = await add_destination(
        engine, address="https://splunk.example.com", transport="hec", secret=TOKEN, name="splunk"
    )
    lost = await add_destination(
        engine,
        address="https://hooks.example.com/in",
        transport="webhook",
        secret="whsec_lost",
        name="hook",
        secrets=SecretBox([Fernet.generate_key()]),
    )
    new_key = Fernet.generate_key().decode()
    result = console_command(
        {**subprocess_env, "AIFW_SECRET_KEY": f"{new_key},{SECRET_KEY}"}, "secrets", "rotate"
    )
    assert result.returncode == 1, result.stderr
    assert "re-encrypted 1 destination secret with the first key" in result.stdout
    assert (
        "cannot decrypt the secret of destination 'hook' (organisation 'acme'): enter it again"
        in result.stdout
    )
    assert TOKEN not in result.stdout + result.stderr
    rotated = (await reload(engine, readable.id)).secret_ciphertext
    assert rotated is not None
    assert SecretBox([new_key.encode()]).decrypt(rotated) == TOKEN
    assert (await reload(engine, lost.id)).secret_ciphertext == lost.secret_ciphertext
    old_only = SecretBox([SECRET_KEY.encode()])
    try:
        old_only.decrypt(rotated)
        raise AssertionError("the old key alone still decrypts the rotated secret")
    except SecretUnreadable:
        pass
    async with new_sessionmaker(engine)() as session:
        audit = (
            await session.scalars(select(AuditEvent).where(AuditEvent.action == "destination.rotate_secret"))
        ).all()
    assert [(event.entity_id, event.changes) for event in audit] == [
        (str(readable.id), {"secret": {"changed": True}})
    ]
    assert rotated not in json.dumps([event.changes for event in audit])


async def test_rotate_with_nothing_stored_says_so(
    engine: AsyncEngine, subprocess_env: dict[str, str]
) -> None:
    result = console_command({**subprocess_env, "AIFW_SECRET_KEY": SECRET_KEY}, "secrets", "rotate")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "re-encrypted 0 destination secrets with the first key"


async def test_rotate_with_a_bad_key_setting_is_a_usage_error(
    engine: AsyncEngine, subprocess_env: dict[str, str]
) -> None:
    result = console_command({**subprocess_env, "AIFW_SECRET_KEY": "not-a-fernet-key"}, "secrets", "rotate")
    assert result.returncode == 2
    assert result.stderr.startswith("error: AIFW_SECRET_KEY: not a Fernet key")
    assert "Traceback" not in result.stderr
