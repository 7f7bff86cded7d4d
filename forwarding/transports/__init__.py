"""Transports: how formatted messages reach a destination (syslog over TCP, TLS or UDP, RELP, Splunk
HEC, signed webhooks). Each follows the contract of forwarding/transport.py."""

from __future__ import annotations

from forwarding.transport import Transport, TransportConfig
from forwarding.transports.hec import HecTransport
from forwarding.transports.relp import RelpTransport
from forwarding.transports.syslog import SyslogStreamTransport, SyslogUdpTransport
from forwarding.transports.webhook import WebhookTransport


def open_transport(config: TransportConfig) -> Transport:
    """The transport for ``config.transport`` (one of db.models.FORWARD_TRANSPORTS), not yet connected.

    Raises ValueError with a message a person can act on for an unknown transport, a bad address
    or a bad option; nothing in it carries the secret.
    """
    if config.transport == "syslog_tcp":
        return SyslogStreamTransport(config, tls=False)
    if config.transport == "syslog_tls":
        return SyslogStreamTransport(config, tls=True)
    if config.transport == "syslog_udp":
        return SyslogUdpTransport(config)
    if config.transport == "relp":
        return RelpTransport(config)
    if config.transport == "hec":
        return HecTransport(config)
    if config.transport == "webhook":
        return WebhookTransport(config)
    raise ValueError(f"unknown transport {config.transport!r}")


__all__ = ["open_transport"]
