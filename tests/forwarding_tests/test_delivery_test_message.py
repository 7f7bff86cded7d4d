"""The console's "send test message": one marked alert over a fresh connection, or an error a person can
act on."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import AsyncEngine

from db.secrets import SecretBox, SecretUnreadable
from forwarding.test_message import TEST_RULE_NAME, send_test_message
from forwarding.transport import DestinationDown
from tests.support.forwarding_rows import SECRETS, add_destination, add_org
from tests.support.http_receiver import HEC_TOKEN, http_receiver
from tests.support.syslog_receiver import SyslogReceiver
from tests.support.waiting import wait_until


async def test_a_test_message_reaches_a_syslog_receiver(engine: AsyncEngine) -> None:
    await add_org(engine)
    receiver = await SyslogReceiver().start()
    try:
        destination = await add_destination(engine, address=receiver.address, forward_alerts=True)
        result = await send_test_message(destination, SECRETS)
        await wait_until(lambda: len(receiver.messages) == 1, what="the test message")
    finally:
        await receiver.close()
    assert result.startswith("test message ")
    assert result.endswith("accepted by the receiver's connection")
    [message] = receiver.messages
    assert TEST_RULE_NAME in message
    assert 'activity="create"' in message
    assert 'revision="1"' in message


async def test_a_test_message_to_hec_is_acknowledged(engine: AsyncEngine) -> None:
    await add_org(engine)
    async with http_receiver() as receiver:
        destination = await add_destination(engine, address=receiver.url, transport="hec", secret=HEC_TOKEN)
        result = await send_test_message(destination, SECRETS)
        assert len(receiver.hec_events) == 1
    assert result.endswith("delivered and acknowledged by the receiver")


async def test_a_test_message_says_why_it_failed(engine: AsyncEngine) -> None:
    await add_org(engine)
    receiver = await SyslogReceiver().start()
    await receiver.stop()
    destination = await add_destination(engine, address=receiver.address, name="down")
    with pytest.raises(DestinationDown, match=f"cannot connect to {receiver.address}"):
        await send_test_message(destination, SECRETS)
    async with http_receiver() as hec:
        wrong_token = await add_destination(
            engine, address=hec.url, transport="hec", secret="not-the-token", name="wrong token"
        )
        with pytest.raises(DestinationDown, match="refused the token") as refused:
            await send_test_message(wrong_token, SECRETS)
    assert "not-the-token" not in str(refused.value)


async def test_a_test_message_with_a_lost_key_asks_for_the_secret_again(engine: AsyncEngine) -> None:
    await add_org(engine)
    destination = await add_destination(
        engine,
        address="http://127.0.0.1:9",
        transport="hec",
        secret="t",
        secrets=SecretBox([Fernet.generate_key()]),
    )
    with pytest.raises(SecretUnreadable, match="enter it again"):
        await send_test_message(destination, SECRETS)
