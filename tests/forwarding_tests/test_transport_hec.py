"""Splunk HEC against a real HTTP server in the test process: envelope, token, indexer acks, faults."""

from __future__ import annotations

import pytest

from forwarding.transport import DestinationDown, RetryLater, TransportConfig
from forwarding.transports import open_transport
from tests.forwarding_tests import make_alert, make_event, message_of
from tests.support.http_receiver import HEC_TOKEN, HttpReceiver, http_receiver

OPTIONS = {
    "timeout_seconds": 2,
    "host": "fw-01",
    "source": "aifw",
    "sourcetype": "aifw:event",
    "index": "security",
}


def hec(receiver: HttpReceiver, *, token: str = HEC_TOKEN, **options: object) -> TransportConfig:
    return TransportConfig("hec", receiver.url, {**OPTIONS, **options}, secret=token)


async def test_batch_is_one_request_of_concatenated_events() -> None:
    events = [make_event(number) for number in range(5)]
    async with http_receiver() as receiver:
        transport = open_transport(hec(receiver))
        try:
            refused = await transport.send([message_of(event, "json") for event in events])
            await transport.send([message_of(make_alert(), "cef")])
        finally:
            await transport.close()
    assert refused == []
    assert [request.path for request in receiver.requests] == ["/services/collector/event"] * 2
    assert receiver.connections == 1, "the connection is kept alive"
    first = receiver.hec_events[0]
    assert first["time"] == pytest.approx(events[0].timestamp.timestamp(), abs=1e-6)
    assert isinstance(first["time"], float)
    assert (first["host"], first["source"], first["sourcetype"], first["index"]) == (
        "fw-01",
        "aifw",
        "aifw:event",
        "security",
    )
    assert [event["event"]["id"] for event in receiver.hec_events[:5]] == [event.id for event in events]
    assert receiver.hec_events[5]["event"].startswith("CEF:0|")


async def test_indexer_acknowledgement_is_awaited() -> None:
    async with http_receiver() as receiver:
        receiver.faults.ack_pending_polls = 2
        transport = open_transport(hec(receiver, hec_ack=True))
        try:
            await transport.send([message_of(make_event(number)) for number in range(3)])
        finally:
            await transport.close()
    assert len(receiver.hec_events) == 3, "sent returns only once the events are indexed"
    ack_polls = [request for request in receiver.requests if request.path == "/services/collector/ack"]
    assert len(ack_polls) == 3
    channels = {request.headers["x-splunk-request-channel"] for request in receiver.requests}
    assert len(channels) == 1


async def test_acks_that_never_come_are_retry_later() -> None:
    async with http_receiver() as receiver:
        receiver.faults.ack_pending_polls = 10_000
        transport = open_transport(hec(receiver, hec_ack=True, hec_ack_timeout_seconds=0.5))
        try:
            with pytest.raises(RetryLater, match="indexing"):
                await transport.send([message_of(make_event())])
        finally:
            await transport.close()


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_token_is_destination_down(status: int) -> None:
    async with http_receiver() as receiver:
        receiver.faults.status = status
        transport = open_transport(hec(receiver, token="wrong-secret-token"))
        try:
            with pytest.raises(DestinationDown) as caught:
                await transport.send([message_of(make_event())])
        finally:
            await transport.close()
    assert str(status) in str(caught.value)
    assert "wrong-secret-token" not in str(caught.value)


async def test_wrong_token_is_destination_down() -> None:
    async with http_receiver() as receiver:
        transport = open_transport(hec(receiver, token="not-the-token"))
        try:
            with pytest.raises(DestinationDown, match="401"):
                await transport.send([message_of(make_event())])
        finally:
            await transport.close()


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"), [(429, "7", 7.0), (503, None, None), (408, None, None)]
)
async def test_busy_receiver_is_retry_later_with_retry_after(
    status: int, retry_after: str | None, expected: float | None
) -> None:
    async with http_receiver() as receiver:
        receiver.faults.fail_times = 1
        receiver.faults.fail_status = status
        receiver.faults.retry_after = retry_after
        transport = open_transport(hec(receiver))
        try:
            with pytest.raises(RetryLater) as caught:
                await transport.send([message_of(make_event(1))])
            assert caught.value.retry_after == expected
            await transport.send([message_of(make_event(1))])
        finally:
            await transport.close()
    assert [event["event"]["id"] for event in receiver.hec_events] == ["evt-000001"]


async def test_event_refused_with_400_is_returned_and_the_rest_delivered() -> None:
    events = [make_event(number) for number in range(9)]
    async with http_receiver() as receiver:
        receiver.faults.refuse_containing = "evt-000006"
        transport = open_transport(hec(receiver))
        try:
            refused = await transport.send([message_of(event) for event in events])
        finally:
            await transport.close()
    assert [(message.item.key, "Invalid data format" in reason) for message, reason in refused] == [
        ("evt-000006", True)
    ]
    delivered = [event["event"]["id"] for event in receiver.hec_events]
    assert delivered == [event.id for event in events if event.id != "evt-000006"]


async def test_413_splits_the_batch_and_a_single_oversized_event_is_refused() -> None:
    events = [make_event(number) for number in range(10)]
    async with http_receiver() as receiver:
        receiver.faults.max_events = 3
        transport = open_transport(hec(receiver))
        try:
            assert await transport.send([message_of(event) for event in events]) == []
            receiver.faults.max_events = 0
            refused = await transport.send([message_of(make_event(99))])
        finally:
            await transport.close()
    assert [event["event"]["id"] for event in receiver.hec_events] == [event.id for event in events]
    assert [(message.item.key, "413" in reason) for message, reason in refused] == [("evt-000099", True)]


async def test_receiver_that_hangs_is_retry_later() -> None:
    async with http_receiver() as receiver:
        receiver.faults.hang = True
        transport = open_transport(hec(receiver, timeout_seconds=0.3))
        try:
            with pytest.raises(RetryLater, match="in time"):
                await transport.send([message_of(make_event())])
        finally:
            await transport.close()


async def test_connection_closed_mid_request_is_retry_later() -> None:
    async with http_receiver() as receiver:
        receiver.faults.close_mid_request = True
        transport = open_transport(hec(receiver))
        try:
            with pytest.raises(RetryLater):
                await transport.send([message_of(make_event())])
        finally:
            await transport.close()


async def test_nothing_listening_is_destination_down() -> None:
    async with http_receiver() as receiver:
        url = receiver.url
    transport = open_transport(TransportConfig("hec", url, OPTIONS, secret=HEC_TOKEN))
    try:
        with pytest.raises(DestinationDown, match="cannot connect"):
            await transport.send([message_of(make_event())])
    finally:
        await transport.close()
