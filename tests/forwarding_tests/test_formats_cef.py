"""CEF output: the header and extension escaping rules, checked by parsing the line back."""

from __future__ import annotations

import re

import pytest

from forwarding.formats import render_body
from tests.console_tests.naughty_strings import NAUGHTY, WITH_CONTROLS
from tests.forwarding_tests import PRODUCT_VERSION, make_alert, make_event

HOSTILE = (
    "a|b",
    "back\\slash",
    "x=y",
    "line\nbreak",
    "cr\rlf",
    "\\|\\=",
    "\\",
    "=",
    "|",
    *NAUGHTY,
    *WITH_CONTROLS,
)


def split_unescaped(text: str, separator: str) -> list[str]:
    """Split on ``separator`` where it is not escaped by a backslash; backslash escapes kept."""
    parts, current, escaped = [], "", False
    for char in text:
        if escaped:
            current += "\\" + char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            parts.append(current)
            current = ""
        else:
            current += char
    assert not escaped, "a dangling backslash"
    parts.append(current)
    return parts


def unescape(value: str) -> str:
    """Undo CEF escapes: \\\\, \\|, \\=, \\n, \\r; any other escape is an error."""
    replacements = {"\\": "\\", "|": "|", "=": "=", "n": "\n", "r": "\r"}
    return re.sub(r"\\(.)", lambda match: replacements[match.group(1)], value, flags=re.DOTALL)


def parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    """A CEF line as its seven header fields (unescaped) and its extensions (unescaped)."""
    assert line.startswith("CEF:0|")
    assert "\n" not in line
    assert "\r" not in line
    fields = split_unescaped(line, "|")
    header, extension = fields[:7], "|".join(fields[7:])
    # Each unescaped "=" ends a key: the word before it, after the last space.
    pieces = split_unescaped(extension, "=")
    extensions: dict[str, str] = {}
    key = pieces[0]
    assert re.fullmatch(r"[A-Za-z0-9_]+", key), key
    for index, piece in enumerate(pieces[1:], start=1):
        if index == len(pieces) - 1:
            value, next_key = piece, None
        else:
            value, _, next_key = piece.rpartition(" ")
            assert re.fullmatch(r"[A-Za-z0-9_]+", next_key), next_key
        assert key not in extensions, f"{key} twice"
        extensions[key] = unescape(value)
        key = next_key or ""
    return [unescape(field) for field in header], extensions


def test_event_header_and_extensions() -> None:
    header, extensions = parse_cef(render_body(make_event(3), "cef", product_version=PRODUCT_VERSION))
    assert header == ["CEF:0", "AI Usage Firewall", "aifw", PRODUCT_VERSION, "event:amber", header[5], "5"]
    assert extensions["externalId"] == "evt-000003"
    assert extensions["suser"] == "alice@acme.example"
    assert extensions["deviceExternalId"] == "laptop-042"
    assert extensions["app"] == "ChatGPT"
    assert extensions["cat"] == "amber"
    assert extensions["cs1Label"] == "organization"
    assert extensions["cs1"] == "acme"
    assert extensions["rt"] == str(int(make_event(3).timestamp.timestamp() * 1000))
    assert extensions["cn1Label"] == "entityCount"
    assert extensions["cn1"] == "2"


def test_alert_carries_its_id_revision_and_rule_severity() -> None:
    alert = make_alert(3, severity="critical", activity="close", state="resolved")
    header, extensions = parse_cef(render_body(alert, "cef", product_version=PRODUCT_VERSION))
    assert header[4] == "alert:threshold"
    assert header[6] == "10"
    assert extensions["externalId"] == alert.alert_id
    assert extensions["cn2Label"] == "revision"
    assert extensions["cn2"] == "3"
    assert extensions["act"] == "close"


@pytest.mark.parametrize(("risk", "severity"), [("green", "1"), ("amber", "5"), ("red", "8")])
def test_event_severity_follows_the_table(risk: str, severity: str) -> None:
    header, _ = parse_cef(render_body(make_event(risk_level=risk), "cef", product_version=PRODUCT_VERSION))
    assert header[6] == severity


@pytest.mark.parametrize("value", HOSTILE)
def test_extension_values_survive_escaping(value: str) -> None:
    event = make_event(user_id=value, tool_name=value, device_id=value)
    _, extensions = parse_cef(render_body(event, "cef", product_version=PRODUCT_VERSION))
    assert extensions["suser"] == value
    assert extensions["app"] == value
    assert extensions["deviceExternalId"] == value


@pytest.mark.parametrize("value", HOSTILE)
def test_header_fields_survive_escaping(value: str) -> None:
    alert = make_alert(rule_name=value, rule_kind=value)
    header, extensions = parse_cef(render_body(alert, "cef", product_version=value))
    # A header cannot hold a line break: CR and LF become spaces there, and only there.
    flattened = value.replace("\r", " ").replace("\n", " ")
    assert header[3] == flattened
    assert header[4] == f"alert:{flattened}"
    assert flattened in header[5]
    assert extensions["cs2"] == value


def test_escapes_are_the_cef_ones() -> None:
    line = render_body(make_alert(rule_name="a|b\\c", group_key="k=v\\w\nx\ry"), "cef", product_version="1")
    assert "a\\|b\\\\c" in line
    assert "cs3=k\\=v\\\\w\\nx\\ry" in line
