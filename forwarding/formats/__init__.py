"""Formats of what is forwarded: our JSON, CEF and OCSF bodies, and the syslog severity of an item.

The delivery loop builds each :class:`forwarding.transport.Message` from
``render_body(item, fmt, product_version=…)`` and ``syslog_severity(item)``; the transports add
their envelopes (forwarding/formats/syslog.py for syslog and RELP).
"""

from __future__ import annotations

from typing import Final, Literal

from forwarding.formats.cef import render_cef
from forwarding.formats.json_body import render_json
from forwarding.formats.ocsf import render_ocsf
from forwarding.items import ForwardItem
from forwarding.severity import severity_of

BodyFormat = Literal["json", "cef", "ocsf"]
BODY_FORMATS: Final = ("json", "cef", "ocsf")


def render_body(item: ForwardItem, fmt: BodyFormat, *, product_version: str) -> str:
    """The item in format ``fmt``; ValueError for an unknown format or a green event in OCSF."""
    if fmt == "json":
        return render_json(item)
    if fmt == "cef":
        return render_cef(item, product_version=product_version)
    if fmt == "ocsf":
        return render_ocsf(item, product_version=product_version)
    raise ValueError(f"unknown format {fmt!r}: expected one of {', '.join(BODY_FORMATS)}")


def syslog_severity(item: ForwardItem) -> int:
    """The syslog severity (PRI's low three bits) of the item, from the one table (forwarding/severity.py)."""
    return severity_of(item).syslog


__all__ = ["BODY_FORMATS", "BodyFormat", "render_body", "syslog_severity"]
