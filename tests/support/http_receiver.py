"""A real HTTP/1.1 server in the test process that plays Splunk HEC and a Standard Webhooks receiver.

Plain asyncio streams, keep-alive, Content-Length bodies. ``async with http_receiver() as receiver``
serves on 127.0.0.1 at ``receiver.url``:

- ``POST /services/collector/event``: checks ``Authorization: Splunk <token>``, parses the body as
  concatenated JSON objects, records them in ``receiver.hec_events``; answers
  ``{"text":"Success","code":0}`` (with an ``ackId`` when ``X-Splunk-Request-Channel`` is sent);
- ``POST /services/collector/ack``: ``{"acks": {"<id>": true|false}}`` (false for the first
  ``ack_pending_polls`` polls of each id);
- any other path: a webhook, whose signature (``webhook-id``, ``webhook-timestamp``,
  ``webhook-signature``) and timestamp (5 minutes of tolerance) are verified before it is
  recorded in ``receiver.webhooks``; a bad one gets 401.

Faults the test switches on (:class:`Faults`): a fixed status (401, 403, 410, ...), 429 or 503
for the next N requests (with Retry-After), 400 for a batch holding a given text, 413 for
batches of more than N events, hang without answering, close the connection mid-request.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

HEC_TOKEN = "test-hec-token-00000000"
#: A Standard Webhooks secret in its usual printed form.
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"aifw test webhook signing key 32").decode()
TOLERANCE_SECONDS = 300


@dataclass
class Faults:
    """What the receiver does wrong, set by the test; each applies to the requests that follow."""

    #: Answer every request with this status (401, 403, 404, 410, ...).
    status: int | None = None
    #: Answer the next ``fail_times`` requests with ``fail_status`` (429, 503, 408) and ``retry_after``.
    fail_times: int = 0
    fail_status: int = 503
    retry_after: str | None = None
    #: HEC: 400 for a request whose body holds this text (an event id); webhook: 422 for it.
    refuse_containing: str | None = None
    #: 503 (a passing fault) for every request whose body holds this text, until the test clears it.
    unavailable_containing: str | None = None
    #: HEC: 413 for a request of more than this many events.
    max_events: int | None = None
    #: Read the request and never answer.
    hang: bool = False
    #: Read the request and close the connection without answering.
    close_mid_request: bool = False
    #: HEC: answer an ack poll "false" this many times per ackId before "true".
    ack_pending_polls: int = 0


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Webhook:
    """One webhook as received: its headers, body, and whether the signature and time checked out."""

    webhook_id: str
    timestamp: int
    body: bytes
    verified: bool


@dataclass
class HttpReceiver:
    token: str = HEC_TOKEN
    webhook_secret: str = WEBHOOK_SECRET
    faults: Faults = field(default_factory=Faults)
    requests: list[Request] = field(default_factory=list)
    hec_events: list[dict[str, Any]] = field(default_factory=list)
    webhooks: list[Webhook] = field(default_factory=list)
    port: int = 0
    connections: int = 0
    _next_ack: int = 0
    _ack_polls: dict[int, int] = field(default_factory=dict)
    _unacked_events: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- the connection ----------------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    return
                self.requests.append(request)
                if self.faults.close_mid_request:
                    return
                if self.faults.hang:
                    await reader.read()
                    return
                status, body, headers = self._answer(request)
                head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", f"Content-Length: {len(body)}"]
                head += [f"{name}: {value}" for name, value in headers.items()]
                head.append("Content-Type: application/json")
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
                await writer.drain()
                if request.headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_request(self, reader: asyncio.StreamReader) -> Request | None:
        line = await reader.readline()
        if not line:
            return None
        method, path, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            header = (await reader.readline()).decode("latin-1").rstrip("\r\n")
            if not header:
                break
            name, _, value = header.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return Request(method, path.split("?", 1)[0], headers, body)

    # --- the answers -------------------------------------------------------------------------------

    def _answer(self, request: Request) -> tuple[int, bytes, dict[str, str]]:
        faults = self.faults
        if faults.status is not None:
            return faults.status, b'{"text":"refused by the test","code":99}', {}
        unavailable = faults.unavailable_containing
        if unavailable is not None and unavailable.encode() in request.body:
            return 503, b'{"text":"Server is busy","code":9}', {}
        if faults.fail_times > 0:
            faults.fail_times -= 1
            headers = {"Retry-After": faults.retry_after} if faults.retry_after else {}
            return faults.fail_status, b'{"text":"Server is busy","code":9}', headers
        if request.path == "/services/collector/event":
            return self._hec_event(request)
        if request.path == "/services/collector/ack":
            return self._hec_ack(request)
        return self._webhook(request)

    def _hec_event(self, request: Request) -> tuple[int, bytes, dict[str, str]]:
        if request.headers.get("authorization") != f"Splunk {self.token}":
            return 401, b'{"text":"Invalid token","code":4}', {}
        events = parse_concatenated_json(request.body)
        if self.faults.max_events is not None and len(events) > self.faults.max_events:
            return 413, b'{"text":"Content too large","code":27}', {}
        if self.faults.refuse_containing is not None:
            for number, event in enumerate(events):
                if self.faults.refuse_containing in orjson.dumps(event).decode():
                    answer = {"text": "Invalid data format", "code": 6, "invalid-event-number": number}
                    return 400, orjson.dumps(answer), {}
        for event in events:
            if not isinstance(event.get("time"), int | float) or "event" not in event:
                return 400, b'{"text":"Event field is required","code":12}', {}
        channel = request.headers.get("x-splunk-request-channel")
        if channel is None:
            self.hec_events.extend(events)
            return 200, b'{"text":"Success","code":0}', {}
        ack_id = self._next_ack
        self._next_ack += 1
        self._ack_polls[ack_id] = 0
        self._unacked_events[ack_id] = events
        return 200, orjson.dumps({"text": "Success", "code": 0, "ackId": ack_id}), {}

    def _hec_ack(self, request: Request) -> tuple[int, bytes, dict[str, str]]:
        if request.headers.get("authorization") != f"Splunk {self.token}":
            return 401, b'{"text":"Invalid token","code":4}', {}
        if "x-splunk-request-channel" not in request.headers:
            return 400, b'{"text":"Data channel is missing","code":10}', {}
        acks: dict[str, bool] = {}
        for ack_id in orjson.loads(request.body).get("acks", []):
            polls = self._ack_polls.get(ack_id)
            if polls is None:
                acks[str(ack_id)] = False
                continue
            self._ack_polls[ack_id] = polls + 1
            done = polls >= self.faults.ack_pending_polls
            if done and ack_id in self._unacked_events:
                # "Indexed" now: only then does the test see the events as received.
                self.hec_events.extend(self._unacked_events.pop(ack_id))
            acks[str(ack_id)] = done
        return 200, orjson.dumps({"acks": acks}), {}

    def _webhook(self, request: Request) -> tuple[int, bytes, dict[str, str]]:
        webhook_id = request.headers.get("webhook-id", "")
        timestamp_text = request.headers.get("webhook-timestamp", "")
        timestamp = int(timestamp_text) if timestamp_text.isdigit() else 0
        verified = (
            verify_webhook(
                self.webhook_secret,
                webhook_id,
                timestamp_text,
                request.body,
                request.headers.get("webhook-signature", ""),
            )
            and abs(time.time() - timestamp) <= TOLERANCE_SECONDS
        )
        if not verified:
            return 401, b'{"error":"bad signature"}', {}
        if (
            self.faults.refuse_containing is not None
            and self.faults.refuse_containing.encode() in request.body
        ):
            return 422, b'{"error":"unprocessable"}', {}
        self.webhooks.append(Webhook(webhook_id, timestamp, request.body, verified))
        return 204, b"", {}


_REASONS = {
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    410: "Gone",
    413: "Content Too Large",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


def parse_concatenated_json(body: bytes) -> list[dict[str, Any]]:
    """HEC's body: JSON objects one after another (whitespace between them allowed)."""
    text = body.decode()
    decoder = json.JSONDecoder()
    objects: list[dict[str, Any]] = []
    position = 0
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        value, position = decoder.raw_decode(text, position)
        objects.append(value)
    return objects


def verify_webhook(secret: str, webhook_id: str, timestamp: str, body: bytes, signatures: str) -> bool:
    """Standard Webhooks verification: any ``v1,<sig>`` in the space-separated header matches."""
    key = base64.b64decode(secret.removeprefix("whsec_")) if secret.startswith("whsec_") else secret.encode()
    expected = base64.b64encode(
        hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    ).decode()
    for signature in signatures.split():
        version, _, value = signature.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True
    return False


@contextlib.asynccontextmanager
async def http_receiver(**settings: Any) -> AsyncIterator[HttpReceiver]:
    """An :class:`HttpReceiver` serving on an ephemeral port of 127.0.0.1 for the block."""
    receiver = HttpReceiver(**settings)
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    receiver.port = server.sockets[0].getsockname()[1]
    try:
        yield receiver
    finally:
        server.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await server.wait_closed()
