"""Our own JSON format: every stored field, times as ISO 8601 UTC, and the severity table."""

from __future__ import annotations

from dataclasses import fields

import orjson
import pytest

from forwarding.formats import render_body, syslog_severity
from forwarding.items import AlertItem, EventItem
from tests.forwarding_tests import PRODUCT_VERSION, make_alert, make_event


def test_event_carries_every_field_and_its_type() -> None:
    event = make_event(1)
    document = orjson.loads(render_body(event, "json", product_version=PRODUCT_VERSION))
    assert document["type"] == "event"
    assert set(document) == {"type", *(field.name for field in fields(EventItem))}
    assert document["timestamp"] == "2025-03-14T15:09:27.535897Z"
    assert document["detected_entity_types"] == ["EMAIL", "PHONE"]


def test_alert_carries_its_activity_and_revision() -> None:
    document = orjson.loads(render_body(make_alert(2), "json", product_version=PRODUCT_VERSION))
    assert document["type"] == "alert"
    assert set(document) == {"type", *(field.name for field in fields(AlertItem))}
    assert (document["activity"], document["revision"]) == ("update", 2)


def test_unknown_format_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="json, cef, ocsf"):
        render_body(make_event(), "xml", product_version=PRODUCT_VERSION)  # type: ignore[arg-type]


@pytest.mark.parametrize(("risk", "severity"), [("green", 6), ("amber", 4), ("red", 3)])
def test_event_syslog_severity(risk: str, severity: int) -> None:
    assert syslog_severity(make_event(risk_level=risk)) == severity


@pytest.mark.parametrize(
    ("level", "severity"), [("informational", 6), ("low", 5), ("medium", 4), ("high", 3), ("critical", 2)]
)
def test_alert_syslog_severity(level: str, severity: int) -> None:
    assert syslog_severity(make_alert(severity=level)) == severity
