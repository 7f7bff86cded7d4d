"""What the stream transports share (syslog over TCP or TLS, RELP): the address, the TLS context,
opening a connection with the errors mapped to DestinationDown or RetryLater, and the envelope options."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import tempfile
from dataclasses import dataclass
from typing import Any

from forwarding.formats.syslog import (
    DEFAULT_APP_NAME,
    DEFAULT_FACILITY,
    DEFAULT_SD_ID,
    rfc5424,
    validate_facility,
    validate_sd_id,
)
from forwarding.transport import DestinationDown, Message, RetryLater, TransportConfig

#: Seconds to connect, or to get rid of a batch (drain, acknowledgements), before giving up for now.
DEFAULT_TIMEOUT_SECONDS = 10.0


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[ipv6]:port`` as (host, port); ValueError with the expected form otherwise."""
    text = address.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":") if rest.startswith(":") else ""
    else:
        host, _, port_text = text.rpartition(":")
        if ":" in host:
            raise ValueError(f"address {address!r}: write an IPv6 address in brackets, as [::1]:6514")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"address {address!r} is not host:port (port 1 to 65535)")
    return host, int(port_text)


def timeout_of(config: TransportConfig) -> float:
    """The ``timeout_seconds`` option, or the default."""
    value = config.options.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"timeout_seconds must be a positive number (got {value!r})")
    return float(value)


@dataclass(frozen=True)
class Envelope:
    """The RFC 5424 envelope options of a syslog or RELP destination."""

    hostname: str
    app_name: str
    facility: int
    sd_id: str

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Envelope:
        """Read ``hostname``, ``app_name``, ``facility`` and ``sd_id``; ValueError for a bad one."""
        return cls(
            hostname=str(options.get("hostname") or socket.gethostname()),
            app_name=str(options.get("app_name") or DEFAULT_APP_NAME),
            facility=validate_facility(options.get("facility", DEFAULT_FACILITY)),
            sd_id=validate_sd_id(str(options.get("sd_id") or DEFAULT_SD_ID)),
        )

    def wrap(self, message: Message) -> bytes:
        """The message as RFC 5424 bytes."""
        return rfc5424(
            message, hostname=self.hostname, app_name=self.app_name, facility=self.facility, sd_id=self.sd_id
        )


def tls_context(config: TransportConfig) -> ssl.SSLContext:
    """A client context: server certificate verified against ``ca_file`` (else the system store),
    host name checked; with ``client_cert_file``, the client certificate whose private key is the
    destination's secret (PEM), loaded through a 0600 temporary file removed right after."""
    ca_file = config.options.get("ca_file")
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as error:
        raise DestinationDown(f"cannot read ca_file {ca_file}: {error}") from None
    cert_file = config.options.get("client_cert_file")
    if cert_file:
        if not config.secret:
            raise DestinationDown("client_cert_file is set but no private key was given as the secret")
        descriptor, key_path = tempfile.mkstemp(prefix="aifw-key-", suffix=".pem")
        try:
            with os.fdopen(descriptor, "w") as key_file:
                key_file.write(config.secret)
            context.load_cert_chain(str(cert_file), keyfile=key_path)
        except (OSError, ssl.SSLError) as error:
            # The error names files and OpenSSL reasons, never the key's content.
            raise DestinationDown(f"cannot load client certificate {cert_file}: {error}") from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(key_path)
    return context


async def open_stream(
    host: str,
    port: int,
    *,
    within: float,
    context: ssl.SSLContext | None = None,
    server_name: str | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect (with TLS when ``context``); refused, DNS and TLS failures raise DestinationDown, a
    timeout RetryLater."""
    where = f"{host}:{port}"
    try:
        async with asyncio.timeout(within):
            return await asyncio.open_connection(
                host, port, ssl=context, server_hostname=(server_name or host) if context else None
            )
    except TimeoutError:
        raise RetryLater(f"connecting to {where} timed out after {within:g} s") from None
    except ssl.SSLError as error:
        raise DestinationDown(f"TLS with {where} failed: {error.reason or error}") from None
    except socket.gaierror as error:
        raise DestinationDown(f"cannot resolve {host}: {error.strerror}") from None
    except OSError as error:
        raise DestinationDown(f"cannot connect to {where}: {error.strerror or error}") from None


async def close_stream(writer: asyncio.StreamWriter | None) -> None:
    """Close a connection, ignoring a peer already gone."""
    if writer is None:
        return
    writer.close()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2):
            await writer.wait_closed()
