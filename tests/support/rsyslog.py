"""A real rsyslogd for forwarding tests: its own configuration, work folder and free ports per test.

``async with running_rsyslog(tmp_path) as rsyslog`` starts ``rsyslogd -n -f <conf> -i <pidfile>``
with four inputs: plain TCP (imtcp, octet counting), TLS (imtcp with the gtls driver, server
certificate from a test CA), TLS with client-certificate authentication (x509/certvalid), RELP
(imrelp) and UDP (imudp). Every message is written to ``received.jsonl`` as one JSON object per
line with the parsed RFC 5424 parts (``rsyslog.received()``). ``stop()`` and ``start()`` again
on the same ports play an outage.

Without rsyslogd the tests skip (the run's summary says how to install it), unless
AIFW_REQUIRE_RSYSLOG=1 (CI), where they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import signal
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.programs import free_port, program_path, require_program
from tests.support.waiting import wait_until

#: The text the run's summary looks for in skip reasons (tests/conftest.py).
SKIP_REASON = "rsyslog tests skipped: rsyslogd is not installed"
INSTALL_HINT = "rsyslog tests skipped: install rsyslog rsyslog-gnutls rsyslog-relp (.ci/run does)"


def rsyslog_available() -> bool:
    """True when rsyslogd is on the PATH (or in /usr/sbin)."""
    return program_path("rsyslogd") is not None


def require_rsyslog() -> str:
    """The rsyslogd path; skip the test without it (fail when AIFW_REQUIRE_RSYSLOG=1)."""
    return require_program("rsyslogd", required_variable="AIFW_REQUIRE_RSYSLOG", skip_reason=SKIP_REASON)


# --- certificates ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestPki:
    """A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate, as PEM files."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def make_ca(
    directory: Path, name: str = "aifw test CA"
) -> tuple[Path, x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA certificate written to ``directory/<name>.pem``."""
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{name.replace(' ', '-')}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, cert, key


def _leaf(
    ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, common_name: str, *, server: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def make_pki(directory: Path) -> TestPki:
    """A test CA with a server certificate (localhost, 127.0.0.1) and a client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_path, ca_cert, ca_key = make_ca(directory)
    server_cert, server_key = _leaf(ca_cert, ca_key, "localhost", server=True)
    client_cert, client_key = _leaf(ca_cert, ca_key, "forwarder.aifw.test", server=False)
    paths = TestPki(
        ca_cert=ca_path,
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )
    paths.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(paths.server_key, server_key)
    paths.client_cert.write_bytes(client_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(paths.client_key, client_key)
    return paths


# --- the daemon ------------------------------------------------------------------------------------

#: One JSON object per message: the RFC 5424 parts as rsyslog parsed them, and the input it came on.
_TEMPLATE = """
template(name="parts" type="list" option.jsonf="on") {
    property(outname="input" name="inputname" format="jsonf")
    property(outname="pri" name="pri" format="jsonf")
    property(outname="timestamp" name="timereported" dateFormat="rfc3339" format="jsonf")
    property(outname="hostname" name="hostname" format="jsonf")
    property(outname="app_name" name="app-name" format="jsonf")
    property(outname="procid" name="procid" format="jsonf")
    property(outname="msgid" name="msgid" format="jsonf")
    property(outname="structured_data" name="structured-data" format="jsonf")
    property(outname="msg" name="msg" format="jsonf")
    property(outname="raw" name="rawmsg" format="jsonf")
}
"""


@dataclass
class Rsyslog:
    """A configured rsyslogd (started or not) and what it received."""

    directory: Path
    pki: TestPki
    tcp_port: int = field(default_factory=free_port)
    tls_port: int = field(default_factory=free_port)
    tls_client_auth_port: int = field(default_factory=free_port)
    relp_port: int = field(default_factory=free_port)
    udp_port: int = field(default_factory=lambda: free_port(socket.SOCK_DGRAM))
    process: asyncio.subprocess.Process | None = None

    @property
    def output(self) -> Path:
        return self.directory / "received.jsonl"

    @property
    def config_file(self) -> Path:
        return self.directory / "rsyslog.conf"

    @property
    def log_file(self) -> Path:
        return self.directory / "rsyslogd.log"

    def write_config(self) -> None:
        work = self.directory / "work"
        work.mkdir(exist_ok=True)
        pki = self.pki
        tls = (
            f'streamDriver.name="gtls" streamDriver.mode="1" streamDriver.CAFile="{pki.ca_cert}" '
            f'streamDriver.CertFile="{pki.server_cert}" streamDriver.KeyFile="{pki.server_key}"'
        )
        self.config_file.write_text(
            f"""
global(workDirectory="{work}" maxMessageSize="64k"
       defaultNetstreamDriverCAFile="{pki.ca_cert}"
       defaultNetstreamDriverCertFile="{pki.server_cert}"
       defaultNetstreamDriverKeyFile="{pki.server_key}")
module(load="imtcp")
module(load="imrelp")
module(load="imudp")
{_TEMPLATE}
ruleset(name="received") {{
    action(type="omfile" file="{self.output}" template="parts")
}}
input(type="imtcp" name="tcp" address="127.0.0.1" port="{self.tcp_port}" ruleset="received")
input(type="imtcp" name="tls" address="127.0.0.1" port="{self.tls_port}" ruleset="received"
      {tls} streamDriver.authMode="anon")
input(type="imtcp" name="tls_client_auth" address="127.0.0.1" port="{self.tls_client_auth_port}"
      ruleset="received" {tls} streamDriver.authMode="x509/certvalid")
input(type="imrelp" name="relp" address="127.0.0.1" port="{self.relp_port}" ruleset="received")
input(type="imudp" name="udp" address="127.0.0.1" port="{self.udp_port}" ruleset="received")
"""
        )

    async def start(self) -> None:
        """Start rsyslogd and wait until every TCP input accepts connections."""
        binary = require_rsyslog()
        if not self.config_file.exists():
            self.write_config()
        pid_file = self.directory / "rsyslogd.pid"
        pid_file.unlink(missing_ok=True)
        log = self.log_file.open("ab")
        try:
            self.process = await asyncio.create_subprocess_exec(
                binary,
                "-n",
                "-f",
                str(self.config_file),
                "-i",
                str(pid_file),
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        finally:
            log.close()
        for port in (self.tcp_port, self.tls_port, self.tls_client_auth_port, self.relp_port):
            await wait_until(partial(self._accepts, port), timeout=20, what=f"rsyslogd listening on {port}")

    def _accepts(self, port: int) -> bool:
        if self.process is not None and self.process.returncode is not None:
            raise AssertionError(f"rsyslogd exited ({self.process.returncode}): {self.log_text()}")
        with socket.socket() as probe:
            probe.settimeout(0.5)
            return probe.connect_ex(("127.0.0.1", port)) == 0

    async def stop(self) -> None:
        """Stop rsyslogd (SIGTERM, then SIGKILL after 10 s); what it received stays in the file."""
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def received(self) -> list[dict[str, Any]]:
        """Every message written so far, in arrival order, as the parsed parts."""
        if not self.output.exists():
            return []
        return [json.loads(line) for line in self.output.read_text().splitlines() if line.strip()]

    async def wait_for(self, count: int, *, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Wait until at least ``count`` messages were written; return them all."""
        await wait_until(
            lambda: len(self.received()) >= count, timeout=timeout, what=f"{count} messages in rsyslog"
        )
        return self.received()


@contextlib.asynccontextmanager
async def running_rsyslog(directory: Path) -> AsyncIterator[Rsyslog]:
    """A started rsyslogd with its own configuration in ``directory``; stopped when the block ends."""
    require_rsyslog()
    server = Rsyslog(directory=directory, pki=make_pki(directory / "pki"))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
