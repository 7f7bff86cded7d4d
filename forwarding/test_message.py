"""The console's "send test message": one clearly marked message over a fresh connection, now.

The test message is an alert revision that exists nowhere else: rule name ``Test message``,
rule kind ``forwarding``, severity ``informational``, a fresh alert id, revision 1, activity
``create``, no events, and ``details`` saying it is a test. It is formatted in the destination's
format and sent over its transport like any alert, so a receiver shows it where alerts go. It
is not recorded anywhere (no cursor moves, no dead letter, no state change).
"""

from __future__ import annotations

import uuid

from db.base import utcnow
from db.models import ForwardDestination
from db.secrets import SecretBox
from forwarding.delivery import format_message, product_version, transport_config
from forwarding.items import AlertItem
from forwarding.transport import DestinationDown
from forwarding.transports import open_transport

TEST_RULE_NAME = "Test message"


def test_item(destination: ForwardDestination) -> AlertItem:
    """The test alert for ``destination`` (see the module docstring)."""
    now = utcnow()
    return AlertItem(
        alert_id=str(uuid.uuid4()),
        organization_id=destination.organization_id,
        revision=1,
        activity="create",
        changed_at=now,
        rule_name=TEST_RULE_NAME,
        rule_kind="forwarding",
        severity="informational",
        group_key=destination.name,
        state="open",
        first_event_at=now,
        last_event_at=now,
        event_count=0,
        event_ids=[],
        details={
            "test": True,
            "message": "AI Usage Firewall test message: forwarding to this receiver works",
        },
    )


async def send_test_message(destination: ForwardDestination, secrets: SecretBox) -> str:
    """Send one test message to ``destination``; a one-line result.

    Raises SecretUnreadable (enter the secret again), DestinationDown (the message says what failed:
    connection, TLS, token, or the receiver refused the message) or RetryLater (try again shortly).
    """
    config = transport_config(destination, secrets)
    try:
        transport = open_transport(config)
    except ValueError as error:
        raise DestinationDown(f"the destination's settings cannot be used: {error}") from None
    item = test_item(destination)
    try:
        message = format_message(item, destination.format, version=product_version())
        refused = await transport.send([message])
    finally:
        await transport.close()
    if refused:
        raise DestinationDown(f"the receiver refused the test message: {refused[0][1]}")
    if destination.transport == "syslog_udp":
        how = "sent over UDP (no delivery promise: check the receiver)"
    elif transport.acknowledged:
        how = "delivered and acknowledged by the receiver"
    else:
        how = "accepted by the receiver's connection"
    return f"test message {item.alert_id} {how}"
