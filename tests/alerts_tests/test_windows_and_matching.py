"""The pure parts: sliding windows at their boundaries, and matching events against filters."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from alerts.rules import EventFacts, compile_rule
from alerts.windows import SlidingWindows
from db.models import AlertRule

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
KEY = (uuid.uuid4(), "ann")
MINUTE = timedelta(seconds=60)


def add(windows: SlidingWindows, *offsets: float) -> list[bool]:
    return [windows.add(KEY, T0 + timedelta(seconds=o), f"e{o}", size=3, width=MINUTE) for o in offsets]


def test_the_nth_most_recent_event_exactly_one_window_back_still_counts() -> None:
    assert add(SlidingWindows(), 0, 30, 60) == [False, False, True]


def test_one_second_more_than_the_window_does_not() -> None:
    assert add(SlidingWindows(), 0, 30, 61) == [False, False, False]


def test_only_the_last_n_events_are_kept_and_late_ones_are_slotted_in_time_order() -> None:
    windows = SlidingWindows()
    assert add(windows, 0, 100, 200, 150) == [False, False, False, False]
    assert [at for at, _ in windows.contents(KEY)] == [T0 + timedelta(seconds=s) for s in (100, 150, 200)]
    assert add(windows, 10) == [False]  # older than every kept event: dropped
    assert add(windows, 160) == [True]  # 150, 160, 200 lie within a minute
    assert len(windows.contents(KEY)) == 3


def test_forgetting_a_rule_drops_its_groups_only() -> None:
    windows = SlidingWindows()
    other = (uuid.uuid4(), "ann")
    add(windows, 0)
    windows.add(other, T0, "x", size=2, width=MINUTE)
    windows.forget_rule(KEY[0])
    assert windows.contents(KEY) == []
    assert len(windows.contents(other)) == 1


def facts(**overrides: object) -> EventFacts:
    values: dict[str, object] = {
        "event_id": "e1",
        "organization_id": "acme",
        "timestamp": T0,
        "created_at": T0,
        "user_id": "ann",
        "device_id": "laptop-1",
        "tool_key": "chatgpt",
        "risk_level": "red",
        "entity_types": frozenset({"api_key"}),
        "was_sanitized": False,
        **overrides,
    }
    return EventFacts(**values)  # type: ignore[arg-type]


def rule(**overrides: object) -> AlertRule:
    values: dict[str, object] = {
        "id": uuid.uuid4(),
        "organization_id": "acme",
        "name": "r",
        "kind": "threshold",
        "enabled": True,
        "severity": "high",
        "threshold": 3,
        "window_seconds": 600,
        "group_by": "tool",
        "cooldown_seconds": 0,
        "filters": {},
        **overrides,
    }
    return AlertRule(**values)


def test_filters_all_hold_and_names_compare_case_folded() -> None:
    compiled = compile_rule(
        rule(
            filters={
                "risk_levels": ["red"],
                "tool_names": ["ChatGPT"],
                "entity_types": ["API_KEY", "SSN"],
                "was_sanitized": False,
            }
        )
    )
    assert compiled.matches(facts())
    assert compiled.group_of(facts()) == "chatgpt"
    assert not compiled.matches(facts(risk_level="amber"))
    assert not compiled.matches(facts(tool_key="claude"))
    assert not compiled.matches(facts(entity_types=frozenset()))
    assert not compiled.matches(facts(was_sanitized=True))


def test_an_event_stays_live_for_the_window_plus_five_minutes() -> None:
    compiled = compile_rule(rule(window_seconds=600))
    assert compiled.is_live(facts(created_at=T0 + timedelta(seconds=900)))
    assert not compiled.is_live(facts(created_at=T0 + timedelta(seconds=901)))
