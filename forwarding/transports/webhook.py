"""Webhooks signed per the Standard Webhooks specification (https://www.standardwebhooks.com).

One POST per message, its JSON body as it is, with ``webhook-id`` (the item's key, so a receiver
deduplicates on it), ``webhook-timestamp`` (epoch seconds) and ``webhook-signature``
(``v1,`` + base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}``). The secret is ``whsec_`` + base64
(the form the spec's libraries print), or raw text used as it is.

2xx delivered; 401, 403, 404, 410 DestinationDown; 408, 429, 5xx RetryLater; other 4xx: that
message refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Sequence

import httpx

from forwarding.transport import DestinationDown, Message, RetryLater, TransportConfig
from forwarding.transports.http_client import (
    check_url,
    new_client,
    retry_after,
    status_text,
    transport_error,
)

SECRET_PREFIX = "whsec_"


def signing_key(secret: str) -> bytes:
    """The HMAC key: base64-decoded after ``whsec_``, else the secret's UTF-8 bytes."""
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the webhook secret starts with whsec_ but the rest is not base64") from None
    return secret.encode()


def sign(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256>``."""
    signed = b"%s.%d.%s" % (webhook_id.encode(), timestamp, body)
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


class WebhookTransport:
    """Standard Webhooks over HTTPS, keep-alive: delivered means the receiver answered 2xx."""

    acknowledged = True

    def __init__(self, config: TransportConfig) -> None:
        self._url = check_url(config.address)
        self._config = config
        self._client: httpx.AsyncClient | None = None

    def _key(self) -> bytes:
        if not self._config.secret:
            raise DestinationDown("a webhook needs a signing secret: none is set for this destination")
        try:
            return signing_key(self._config.secret)
        except ValueError as error:
            raise DestinationDown(str(error)) from None

    async def send(self, messages: Sequence[Message]) -> list[tuple[Message, str]]:
        """POST each message in order; return those the receiver refused on their own."""
        key = self._key()
        if self._client is None:
            self._client = new_client(self._config)
        refused: list[tuple[Message, str]] = []
        for message in messages:
            reason = await self._post(self._client, key, message)
            if reason is not None:
                refused.append((message, reason))
        return refused

    async def _post(self, client: httpx.AsyncClient, key: bytes, message: Message) -> str | None:
        body = message.body.encode()
        webhook_id = message.item.key
        timestamp = int(time.time())
        headers = {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(key, webhook_id, timestamp, body),
            "Content-Type": "application/json",
        }
        where = f"webhook {self._url}"
        try:
            response = await client.post(self._url, content=body, headers=headers)
        except httpx.TransportError as error:
            raise transport_error(error, where) from None
        status = response.status_code
        if 200 <= status < 300:
            return None
        if status in (408, 429) or status >= 500:
            raise RetryLater(f"{where} answered {status_text(response)}", retry_after=retry_after(response))
        if status in (401, 403, 404, 410) or not 400 <= status < 500:
            raise DestinationDown(f"{where} answered {status_text(response)}")
        return f"{where} refused the message: {status_text(response)}"

    async def close(self) -> None:
        """Close the client and its kept-alive connections."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
