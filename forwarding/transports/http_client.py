"""What the HTTP transports (HEC, webhook) share: the client, Retry-After, and the mapping of
connection errors to DestinationDown or RetryLater."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from forwarding.transport import DestinationDown, RetryLater, TransportConfig
from forwarding.transports.streams import timeout_of

#: Longest Retry-After honoured: a receiver asking for more is retried with the loop's own backoff.
MAX_RETRY_AFTER_SECONDS = 3600.0


def check_url(address: str) -> str:
    """The address as an http(s) URL without a trailing slash; ValueError otherwise."""
    url = httpx.URL(address.strip())
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"address {address!r} is not an http:// or https:// URL")
    return str(url).rstrip("/")


def new_client(config: TransportConfig) -> httpx.AsyncClient:
    """A keep-alive client: certificates verified (``ca_file`` or the system store), proxies from
    the environment, redirects not followed (a signed or authorised request goes where it was told)."""
    ca_file = config.options.get("ca_file")
    verify: ssl.SSLContext | bool = True
    if ca_file:
        try:
            verify = ssl.create_default_context(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as error:
            raise DestinationDown(f"cannot read ca_file {ca_file}: {error}") from None
    return httpx.AsyncClient(
        verify=verify, trust_env=True, timeout=timeout_of(config), follow_redirects=False
    )


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds (a number or an HTTP date), capped; None when absent or unreadable."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def transport_error(error: httpx.TransportError, where: str) -> DestinationDown | RetryLater:
    """A failed request: cannot connect (refused, DNS, TLS) is DestinationDown; a timeout or a
    connection cut mid-request is RetryLater."""
    if isinstance(error, httpx.TimeoutException):
        return RetryLater(f"{where} did not answer in time ({type(error).__name__})")
    if isinstance(error, httpx.ConnectError):
        return DestinationDown(f"cannot connect to {where}: {error}")
    if isinstance(error, httpx.ProxyError | httpx.UnsupportedProtocol):
        return DestinationDown(f"cannot reach {where}: {error}")
    return RetryLater(f"connection to {where} failed mid-request: {error or type(error).__name__}")


def status_text(response: httpx.Response, limit: int = 300) -> str:
    """The status and the start of the body, as text for an error message."""
    body = response.text[:limit].strip() if response.content else ""
    return f"{response.status_code} {response.reason_phrase}" + (f": {body}" if body else "")
