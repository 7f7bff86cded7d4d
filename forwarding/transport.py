"""The contract between the delivery loop (forwarding/delivery.py) and the transports (forwarding/transports).

The delivery loop formats each item (forwarding/formats/) into a :class:`Message` and hands
batches to a :class:`Transport`. The transport wraps them in its envelope (an RFC 5424
header and structured data, a HEC event object, a signed webhook request) and sends them.

Outcomes:

- ``send`` returns normally: every message was delivered *as far as this transport can
  tell* (:attr:`Transport.acknowledged` says how far), except those it returns as refused
  with a reason (HEC 400, a 413 for a single event): those go to the dead letters;
- :class:`DestinationDown`: a destination-wide fault (connection refused, DNS, TLS, HEC
  401/403): nothing of the batch counts as delivered; the destination is paused, shown in
  the console, an alert is raised, and delivery is tried again with a growing delay;
- :class:`RetryLater`: a passing fault (408, 429, 5xx, a timeout, a connection cut
  mid-batch): nothing of the batch counts as delivered; retried with backoff.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from forwarding.items import ForwardItem


@dataclass(frozen=True)
class Message:
    """One formatted item, ready for a transport's envelope."""

    item: ForwardItem
    #: The item formatted per the destination's format: JSON text, a CEF line or OCSF JSON text.
    body: str
    #: Syslog severity (0 emergency … 7 debug) for the PRI, from the item's risk or alert severity.
    syslog_severity: int


@dataclass(frozen=True)
class TransportConfig:
    """A destination's transport settings, its secret decrypted (never logged, never shown)."""

    transport: str
    address: str
    options: dict[str, Any] = field(default_factory=dict)
    secret: str | None = field(default=None, repr=False)


class DestinationDown(Exception):
    """The destination cannot take anything now (refused, DNS, TLS, 401/403); the message says why."""


class RetryLater(Exception):
    """A passing fault (408, 429, 5xx, timeout, connection cut): try the batch again later."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Transport(Protocol):
    #: True when "delivered" means the receiver acknowledged each message (RELP, HEC with indexer
    #: acknowledgement, a webhook's 2xx); False when it means "accepted by the connection" (TCP or
    #: TLS syslog: the delivery loop resends the last batch after a reconnect) or only "sent" (UDP).
    acknowledged: bool

    async def send(self, messages: Sequence[Message]) -> list[tuple[Message, str]]:
        """Send ``messages`` in order; return the ones refused on their own, with the receiver's reason.

        Raises :class:`DestinationDown` or :class:`RetryLater` when the batch as a whole failed.
        Connects (or reconnects) as needed.
        """
        ...

    async def close(self) -> None:
        """Close the connection, if any; ``send`` may connect again later."""
        ...
