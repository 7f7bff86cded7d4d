"""The RFC 5424 envelope: header fields, structured data and its escaping, MSGID, SD-ID checks."""

from __future__ import annotations

import re

import pytest

from forwarding.formats.syslog import rfc5424, validate_sd_id
from tests.console_tests.naughty_strings import NAUGHTY
from tests.forwarding_tests import make_alert, make_event, message_of

#: RFC 5424 section 6: HEADER SP STRUCTURED-DATA [SP MSG], one SD-ELEMENT here.
SYSLOG = re.compile(
    r"<(?P<pri>\d{1,3})>1 (?P<timestamp>\S+) (?P<hostname>[!-~]{1,255}) (?P<app>[!-~]{1,48}) "
    r"(?P<procid>[!-~]{1,128}) (?P<msgid>[!-~]{1,32}) "
    r'(?P<sd>\[(?P<sd_id>[^ =\]"]{1,32})(?P<params>(?: [^ =\]"]{1,32}="(?:[^"\\\]]|\\["\\\]])*")*)\]) '
    r"(?P<msg>.*)",
    re.DOTALL,
)
PARAM = re.compile(r' ([^ =\]"]+)="((?:[^"\\\]]|\\["\\\]])*)"')


def parse(frame: bytes) -> tuple[re.Match[str], dict[str, str]]:
    match = SYSLOG.fullmatch(frame.decode())
    assert match is not None, frame
    params = {name: re.sub(r'\\(["\\\]])', r"\1", value) for name, value in PARAM.findall(match["params"])}
    return match, params


def test_event_header_and_structured_data() -> None:
    event = make_event(5, risk_level="red")
    message = message_of(event, "cef")
    match, params = parse(rfc5424(message, hostname="fw-01.example"))
    assert match["pri"] == str(16 * 8 + 3)
    assert match["timestamp"] == "2025-03-14T15:09:31.535897Z"
    assert (match["hostname"], match["app"], match["procid"], match["msgid"]) == (
        "fw-01.example",
        "aifw",
        "-",
        "event",
    )
    assert match["sd_id"] == "aifw@32473"
    assert params == {"id": event.id, "org": "acme", "risk": "red"}
    assert match["msg"] == message.body


def test_alert_structured_data_has_its_revision_and_activity() -> None:
    alert = make_alert(3, activity="close", severity="critical")
    match, params = parse(rfc5424(message_of(alert), hostname="h", facility=4, sd_id="siem@99999"))
    assert match["msgid"] == "alert"
    assert match["pri"] == str(4 * 8 + 2)
    assert match["sd_id"] == "siem@99999"
    assert params == {
        "id": alert.alert_id,
        "org": "acme",
        "severity": "critical",
        "revision": "3",
        "activity": "close",
    }


@pytest.mark.parametrize("value", ['q"uote', "back\\slash", "close]bracket", '\\"]', *NAUGHTY])
def test_structured_data_values_are_escaped(value: str) -> None:
    event = make_event(id=value, organization_id=value)
    _, params = parse(rfc5424(message_of(event), hostname="h"))
    assert params["id"] == value
    assert params["org"] == value


def test_header_fields_are_printable_ascii_within_their_lengths() -> None:
    match, _ = parse(rfc5424(message_of(make_event()), hostname="hôte with space" + "x" * 300, app_name=""))
    assert match["hostname"].startswith("h_te_with_space")
    assert len(match["hostname"]) == 255
    assert match["app"] == "-"


def test_long_event_ids_stay_out_of_msgid() -> None:
    event = make_event(id="e" * 64)
    match, params = parse(rfc5424(message_of(event), hostname="h"))
    assert match["msgid"] == "event"
    assert params["id"] == "e" * 64


@pytest.mark.parametrize(
    "sd_id", ["", "no-at-sign", 'bad"quote@1', "sp ace@1", "a=b@1", "x]@1", "a" * 30 + "@123"]
)
def test_invalid_sd_id_is_refused(sd_id: str) -> None:
    with pytest.raises(ValueError, match="sd_id"):
        validate_sd_id(sd_id)


def test_valid_sd_id_is_kept() -> None:
    assert validate_sd_id("aifw@32473") == "aifw@32473"
    assert validate_sd_id("origin.x@32473.1.2") == "origin.x@32473.1.2"
