"""OCSF output: Data Security Finding (class 2006) with every attribute the 1.3.0 schema requires.

No well-kept PyPI package ships the OCSF JSON schema for offline validation (the official
``ocsf-lib`` fetches it from schema.ocsf.io), so the requirements below were read from the
ocsf/ocsf-schema repository at tag 1.3.0:

- events/base_event.json with includes/classification.json and includes/occurrence.json:
  activity_id, category_uid, class_uid, type_uid, time, severity_id, metadata (required);
- events/findings/finding.json: finding_info (required);
- events/findings/data_security_finding.json: its profile security_control (profiles/security_control.json):
  action_id (required);
- objects/metadata.json: product, version; objects/product.json: vendor_name, and (objects/_entity.json)
  at least one of name and uid; objects/finding_info.json: title, uid;
- objects/device.json: type_id; objects/user.json: at least one of account, name, uid;
- objects/data_security.json: at least one of data_lifecycle_state_id, detection_pattern,
  detection_system_id, policy.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from forwarding.formats import render_body
from forwarding.formats.ocsf import OCSF_VERSION
from tests.forwarding_tests import EVENT_TIME, PRODUCT_VERSION, make_alert, make_event

REQUIRED_TOP_LEVEL = (
    "activity_id",
    "category_uid",
    "class_uid",
    "type_uid",
    "time",
    "severity_id",
    "metadata",
    "finding_info",
    "action_id",
)
#: Enumerations of 1.3.0 for the ids we set: (attribute, allowed values).
ENUMS = {
    "activity_id": {1, 2, 3, 4},
    "severity_id": {0, 1, 2, 3, 4, 5, 6, 99},
    "action_id": {0, 1, 2, 99},
    "status_id": {0, 1, 2, 3, 4, 99},
}


def finding(item: Any) -> dict[str, Any]:
    return orjson.loads(render_body(item, "ocsf", product_version=PRODUCT_VERSION))


def assert_schema_requirements(document: dict[str, Any]) -> None:
    """Every attribute 1.3.0 requires of a Data Security Finding, with a value of the right type."""
    for name in REQUIRED_TOP_LEVEL:
        assert name in document, f"{name} is required"
    for name in ("activity_id", "category_uid", "class_uid", "type_uid", "time", "severity_id", "action_id"):
        assert type(document[name]) is int, f"{name} must be an integer"
    for name, allowed in ENUMS.items():
        if name in document:
            assert document[name] in allowed, f"{name}={document[name]} is not in the 1.3.0 enumeration"
    metadata = document["metadata"]
    assert metadata["version"] == OCSF_VERSION
    product = metadata["product"]
    assert isinstance(product["vendor_name"], str)
    assert product["vendor_name"]
    assert product.get("name") or product.get("uid")
    info = document["finding_info"]
    assert isinstance(info["uid"], str)
    assert info["uid"]
    assert isinstance(info["title"], str)
    assert info["title"]
    for name in ("created_time", "modified_time", "first_seen_time", "last_seen_time"):
        if name in info:
            assert isinstance(info[name], int), name
    if "types" in info:
        assert all(isinstance(value, str) for value in info["types"])
    if "device" in document:
        assert isinstance(document["device"]["type_id"], int)
    if "actor" in document:
        user = document["actor"]["user"]
        assert user.get("account") or user.get("name") or user.get("uid")
    if "data_security" in document:
        assert any(
            name in document["data_security"]
            for name in ("data_lifecycle_state_id", "detection_pattern", "detection_system_id", "policy")
        )
    for resource in document.get("resources", []):
        assert resource.get("name") or resource.get("uid")


@pytest.mark.parametrize("risk", ["amber", "red"])
def test_event_finding_has_every_required_attribute(risk: str) -> None:
    assert_schema_requirements(finding(make_event(risk_level=risk)))


@pytest.mark.parametrize("activity", ["create", "update", "close"])
def test_alert_finding_has_every_required_attribute(activity: str) -> None:
    assert_schema_requirements(finding(make_alert(2, activity=activity)))


def test_event_is_a_created_data_security_finding() -> None:
    event = make_event(7, risk_level="red")
    document = finding(event)
    assert document["class_uid"] == 2006
    assert document["category_uid"] == 2
    assert document["activity_id"] == 1
    assert document["type_uid"] == 200601
    assert document["time"] == int(event.timestamp.timestamp() * 1000)
    assert document["finding_info"]["uid"] == event.id
    assert document["metadata"]["product"]["version"] == PRODUCT_VERSION
    assert document["actor"]["user"]["uid"] == "alice@acme.example"
    assert document["device"]["uid"] == "laptop-042"


def test_time_is_in_epoch_milliseconds() -> None:
    document = finding(make_event(0))
    assert document["time"] == 1741964966535
    assert document["time"] // 1000 == int(EVENT_TIME.timestamp())


@pytest.mark.parametrize(("activity", "activity_id"), [("create", 1), ("update", 2), ("close", 3)])
def test_alert_activity_sets_activity_and_type(activity: str, activity_id: int) -> None:
    alert = make_alert(4, activity=activity)
    document = finding(alert)
    assert document["activity_id"] == activity_id
    assert document["type_uid"] == 200600 + activity_id
    assert document["finding_info"]["uid"] == alert.alert_id
    assert document["unmapped"]["revision"] == 4
    assert document["time"] == int(alert.changed_at.timestamp() * 1000)


@pytest.mark.parametrize(
    ("severity", "severity_id"),
    [("informational", 1), ("low", 2), ("medium", 3), ("high", 4), ("critical", 5)],
)
def test_alert_severity_follows_the_table(severity: str, severity_id: int) -> None:
    assert finding(make_alert(severity=severity))["severity_id"] == severity_id


@pytest.mark.parametrize(("risk", "severity_id"), [("amber", 3), ("red", 4)])
def test_event_severity_follows_the_table(risk: str, severity_id: int) -> None:
    assert finding(make_event(risk_level=risk))["severity_id"] == severity_id


def test_green_event_is_not_a_finding() -> None:
    with pytest.raises(ValueError, match="green events are not forwarded in OCSF"):
        render_body(make_event(risk_level="green"), "ocsf", product_version=PRODUCT_VERSION)


def test_resolved_alert_is_a_resolved_finding() -> None:
    document = finding(make_alert(3, activity="close", state="resolved"))
    assert document["status_id"] == 4
