"""Standard Webhooks against a real HTTP server in the test process that verifies each signature."""

from __future__ import annotations

import base64

import orjson
import pytest

from forwarding.transport import DestinationDown, RetryLater, TransportConfig
from forwarding.transports import open_transport
from forwarding.transports.webhook import sign, signing_key
from tests.forwarding_tests import make_alert, make_event, message_of
from tests.support.http_receiver import WEBHOOK_SECRET, HttpReceiver, http_receiver

OPTIONS = {"timeout_seconds": 2}


def webhook(receiver: HttpReceiver, *, secret: str = WEBHOOK_SECRET) -> TransportConfig:
    return TransportConfig("webhook", receiver.url + "/hooks/aifw", OPTIONS, secret=secret)


async def test_each_message_is_posted_signed_with_its_key_as_id() -> None:
    alert = make_alert(2)
    async with http_receiver() as receiver:
        transport = open_transport(webhook(receiver))
        try:
            refused = await transport.send([message_of(make_event(1)), message_of(alert, "ocsf")])
        finally:
            await transport.close()
    assert refused == []
    assert [hook.webhook_id for hook in receiver.webhooks] == ["evt-000001", alert.key]
    assert all(hook.verified for hook in receiver.webhooks)
    assert orjson.loads(receiver.webhooks[0].body)["id"] == "evt-000001"
    assert receiver.requests[0].headers["content-type"] == "application/json"
    assert receiver.connections == 1


async def test_raw_secret_is_accepted() -> None:
    async with http_receiver(webhook_secret="plain shared secret") as receiver:
        transport = open_transport(webhook(receiver, secret="plain shared secret"))
        try:
            await transport.send([message_of(make_event())])
        finally:
            await transport.close()
    assert [hook.verified for hook in receiver.webhooks] == [True]


async def test_wrong_secret_is_refused_by_the_receiver() -> None:
    wrong = "whsec_" + base64.b64encode(b"another key entirely, 32 bytes!!").decode()
    async with http_receiver() as receiver:
        transport = open_transport(webhook(receiver, secret=wrong))
        try:
            with pytest.raises(DestinationDown, match="401"):
                await transport.send([message_of(make_event())])
        finally:
            await transport.close()
    assert receiver.webhooks == []


def test_signature_matches_the_specification_example() -> None:
    # The example of the Standard Webhooks specification (spec/standard-webhooks.md, "Verifying").
    key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = b'{"test": 2432232314}'
    assert sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


@pytest.mark.parametrize("status", [401, 403, 404, 410])
async def test_gone_or_forbidden_is_destination_down(status: int) -> None:
    async with http_receiver() as receiver:
        receiver.faults.status = status
        transport = open_transport(webhook(receiver))
        try:
            with pytest.raises(DestinationDown, match=str(status)):
                await transport.send([message_of(make_event())])
        finally:
            await transport.close()


@pytest.mark.parametrize("status", [408, 429, 500, 503])
async def test_busy_is_retry_later(status: int) -> None:
    async with http_receiver() as receiver:
        receiver.faults.fail_times = 1
        receiver.faults.fail_status = status
        receiver.faults.retry_after = "3"
        transport = open_transport(webhook(receiver))
        try:
            with pytest.raises(RetryLater) as caught:
                await transport.send([message_of(make_event())])
        finally:
            await transport.close()
    assert caught.value.retry_after == 3.0


async def test_other_client_error_refuses_that_message_only() -> None:
    async with http_receiver() as receiver:
        receiver.faults.refuse_containing = "evt-000002"
        transport = open_transport(webhook(receiver))
        try:
            refused = await transport.send([message_of(make_event(n)) for n in range(1, 4)])
        finally:
            await transport.close()
    assert [(message.item.key, "422" in reason) for message, reason in refused] == [("evt-000002", True)]
    assert [hook.webhook_id for hook in receiver.webhooks] == ["evt-000001", "evt-000003"]


async def test_missing_secret_is_destination_down() -> None:
    async with http_receiver() as receiver:
        transport = open_transport(TransportConfig("webhook", receiver.url, OPTIONS))
        with pytest.raises(DestinationDown, match="secret"):
            await transport.send([message_of(make_event())])
