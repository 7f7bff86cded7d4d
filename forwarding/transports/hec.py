"""Splunk HTTP Event Collector: several JSON event objects per POST to /services/collector/event.

With the option ``hec_ack`` (the token has indexer acknowledgement), each request carries the
transport's ``X-Splunk-Request-Channel`` and a batch counts as delivered only once
/services/collector/ack says every ackId is indexed. Without it, a 200 means only "received":
``acknowledged`` is True either way, as the delivery loop cannot do better than HEC's answer.

Status mapping: 401/403 (and other unexpected answers) DestinationDown; 408, 429 and 5xx
RetryLater (Retry-After honoured); 400 or 413 split the batch in halves until the message HEC
refuses is found, and that message alone is returned as refused.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import httpx
import orjson

from forwarding.items import EventItem
from forwarding.transport import DestinationDown, Message, RetryLater, TransportConfig
from forwarding.transports.http_client import (
    check_url,
    new_client,
    retry_after,
    status_text,
    transport_error,
)

EVENT_PATH = "/services/collector/event"
ACK_PATH = "/services/collector/ack"
#: Seconds to wait for indexer acknowledgement before retrying the batch (Splunk's own default is 300).
DEFAULT_ACK_TIMEOUT_SECONDS = 120.0
FIRST_ACK_POLL_SECONDS = 0.05
LAST_ACK_POLL_SECONDS = 2.0


def hec_event(message: Message, options: dict[str, Any]) -> dict[str, Any]:
    """The HEC event object of one message: time (epoch seconds with decimals), metadata, the body."""
    item = message.item
    when = item.timestamp if isinstance(item, EventItem) else item.changed_at
    body: Any = message.body
    if body.startswith("{"):
        body = orjson.loads(body)
    event: dict[str, Any] = {"time": round(when.timestamp(), 6)}
    for name in ("host", "source", "sourcetype", "index"):
        if options.get(name):
            event[name] = str(options[name])
    event["event"] = body
    return event


class _Refused(Exception):
    """HEC refused this request's payload (400, 413): split it to find the message at fault."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HecTransport:
    """Splunk HEC over HTTPS, keep-alive, with or without indexer acknowledgement."""

    acknowledged = True

    def __init__(self, config: TransportConfig) -> None:
        self._url = check_url(config.address)
        self._config = config
        self._use_ack = bool(config.options.get("hec_ack"))
        self._ack_timeout = float(config.options.get("hec_ack_timeout_seconds", DEFAULT_ACK_TIMEOUT_SECONDS))
        self._channel = str(uuid.uuid4())
        self._client: httpx.AsyncClient | None = None

    def _headers(self) -> dict[str, str]:
        if not self._config.secret:
            raise DestinationDown("HEC needs a token: none is set for this destination")
        headers = {"Authorization": f"Splunk {self._config.secret}", "Content-Type": "application/json"}
        if self._use_ack:
            headers["X-Splunk-Request-Channel"] = self._channel
        return headers

    async def send(self, messages: Sequence[Message]) -> list[tuple[Message, str]]:
        """POST the batch (split on 400 and 413); with ``hec_ack``, wait until every part is indexed."""
        if not messages:
            return []
        if self._client is None:
            self._client = new_client(self._config)
        refused: list[tuple[Message, str]] = []
        ack_ids: list[int] = []
        await self._send_part(self._client, list(messages), refused, ack_ids)
        if ack_ids:
            await self._wait_for_acks(self._client, ack_ids)
        return refused

    async def _send_part(
        self,
        client: httpx.AsyncClient,
        part: list[Message],
        refused: list[tuple[Message, str]],
        ack_ids: list[int],
    ) -> None:
        try:
            ack_id = await self._post_events(client, part)
        except _Refused as error:
            if len(part) == 1:
                refused.append((part[0], error.reason))
                return
            middle = len(part) // 2
            await self._send_part(client, part[:middle], refused, ack_ids)
            await self._send_part(client, part[middle:], refused, ack_ids)
            return
        if ack_id is not None:
            ack_ids.append(ack_id)

    async def _post(self, client: httpx.AsyncClient, path: str, content: bytes) -> httpx.Response:
        where = f"HEC at {self._url}"
        try:
            response = await client.post(self._url + path, content=content, headers=self._headers())
        except httpx.TransportError as error:
            raise transport_error(error, where) from None
        status = response.status_code
        if status in (401, 403):
            raise DestinationDown(f"{where} refused the token: {status_text(response)}")
        if status in (408, 429) or status >= 500:
            raise RetryLater(f"{where} answered {status_text(response)}", retry_after=retry_after(response))
        return response

    async def _post_events(self, client: httpx.AsyncClient, part: list[Message]) -> int | None:
        content = b"".join(orjson.dumps(hec_event(message, self._config.options)) for message in part)
        response = await self._post(client, EVENT_PATH, content)
        if response.status_code in (400, 413):
            raise _Refused(f"HEC refused the event: {status_text(response)}")
        if not 200 <= response.status_code < 300:
            raise DestinationDown(f"HEC at {self._url} answered {status_text(response)}")
        if not self._use_ack:
            return None
        try:
            ack_id = orjson.loads(response.content).get("ackId")
        except (orjson.JSONDecodeError, AttributeError):
            ack_id = None
        if not isinstance(ack_id, int):
            raise DestinationDown(
                f"HEC at {self._url} gave no ackId: turn on indexer acknowledgement for the token, "
                "or turn off hec_ack for this destination"
            )
        return ack_id

    async def _wait_for_acks(self, client: httpx.AsyncClient, ack_ids: list[int]) -> None:
        pending = set(ack_ids)
        pause = FIRST_ACK_POLL_SECONDS
        try:
            async with asyncio.timeout(self._ack_timeout):
                while pending:
                    response = await self._post(client, ACK_PATH, orjson.dumps({"acks": sorted(pending)}))
                    if response.status_code != 200:
                        raise DestinationDown(f"HEC at {self._url} ack query failed: {status_text(response)}")
                    try:
                        acks = orjson.loads(response.content).get("acks", {})
                    except (orjson.JSONDecodeError, AttributeError):
                        acks = {}
                    pending -= {int(key) for key, done in acks.items() if done is True and key.isdigit()}
                    if pending:
                        await asyncio.sleep(pause)
                        pause = min(pause * 2, LAST_ACK_POLL_SECONDS)
        except TimeoutError:
            raise RetryLater(
                f"HEC at {self._url} did not confirm indexing within {self._ack_timeout:g} s"
            ) from None

    async def close(self) -> None:
        """Close the client and its kept-alive connections."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
