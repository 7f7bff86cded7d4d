"""The evaluator reads only the events a rule could be met by: never fewer, and most green ones not at all."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from alerts.evaluator import RuleSet
from alerts.prefilter import candidate_filter
from alerts.rules import EVENT_COLUMNS, facts_from_row
from alerts.runner import AlertEvaluator
from db.engine import new_sessionmaker
from db.models import AlertRule
from db.streams import Position, read_events
from tests.alerts_tests.test_windows_and_matching import rule
from tests.support.database import make_event, store_logs

#: Every spelling a case-folding comparison must treat alike, and some it must not.
#: "KIWI" is "Kıwi" (dotless ı) upper-cased, but a different tool once case-folded: a new one.
TOOLS = [
    "ChatGPT",
    "chatgpt",
    "CHATGPT",
    "ChatGpt",
    "Claude",
    "NewAI",
    "İnstruct",
    "ﬁrefly",
    "Firefly",
    "Kıwi",
    "KIWI",
]
MONITORED = {"acme": frozenset({"ChatGPT", "Claude", "firefly", "Kıwi"}), "globex": frozenset({"ChatGPT"})}


def every_kind_of_event() -> list[dict[str, Any]]:
    shapes = itertools.product(
        ("acme", "globex", "initech"),
        TOOLS,
        ("green", "amber", "red"),
        ([], ["API_KEY"], ["Api_Key", "EMAIL"]),
        (False, True),
    )
    return [
        make_event(
            index,
            id=uuid.uuid4(),
            organization_id=organization,
            tool_name=tool,
            risk_level=risk,
            detected_entity_types=types,
            entity_count=len(types),
            was_sanitized=sanitized,
            user_id=("ann", "bob")[index % 2],
            device_id=("laptop-1", "phone-2")[index % 2],
        )
        for index, (organization, tool, risk, types, sanitized) in enumerate(shapes)
    ]


RULES = [
    rule(kind="threshold", filters={"risk_levels": ["red"]}, group_by="user"),
    rule(kind="threshold", filters={"risk_levels": ["amber"], "user_ids": ["bob"], "was_sanitized": True}),
    rule(kind="entity", threshold=1, filters={"entity_types": ["api_key"]}, group_by="user"),
    rule(kind="new_tool", threshold=10, filters={}),
    rule(organization_id="globex", kind="new_tool", threshold=10, filters={"device_ids": ["phone-2"]}),
    rule(organization_id="globex", kind="threshold", filters={"tool_names": ["claude"]}, group_by="user"),
]


def could_meet_a_rule(event: Any, rules: RuleSet) -> bool:
    """What evaluate_page asks before it counts an event for a rule."""
    for compiled in rules.by_organization.get(event.organization_id, ()):
        known = rules.monitored_tools.get(event.organization_id)
        if compiled.kind == "new_tool" and known is not None and event.tool_key in known:
            continue
        if compiled.matches(event):
            return True
    return False


async def read_all(engine: AsyncEngine, where: Any = None) -> list[Any]:
    async with new_sessionmaker(engine)() as session:
        page = await read_events(
            session, after=Position(0), limit=100_000, columns=EVENT_COLUMNS, where=where
        )
    return [facts_from_row(row) for row in page.rows]


async def test_the_prefilter_keeps_every_event_a_rule_could_meet_and_leaves_most_others_out(
    engine: AsyncEngine,
) -> None:
    stored = every_kind_of_event()
    await store_logs(engine, stored)
    spelt = {str(event["id"]): event["tool_name"] for event in stored}
    rules = RuleSet.build(RULES, MONITORED)
    everything = await read_all(engine)
    kept = {event.event_id for event in await read_all(engine, candidate_filter(rules))}
    needed = {event.event_id for event in everything if could_meet_a_rule(event, rules)}
    assert needed <= kept
    # initech has no rule; globex's claude rule narrows by nothing, so globex is read whole.
    left_out = {event.event_id for event in everything} - kept
    assert {event.organization_id for event in everything if event.event_id in left_out} == {
        "acme",
        "initech",
    }
    # acme: green events without entity types of a tool spelt as configured, or in its lower or upper
    # case, are left out; other spellings ("ChatGpt", "Firefly", "ﬁrefly") are read and decided in Python.
    exact_spellings = {"ChatGPT", "chatgpt", "CHATGPT", "Claude"}
    quiet = {
        event.event_id
        for event in everything
        if event.organization_id == "acme"
        and spelt[event.event_id] in exact_spellings
        and event.risk_level == "green"
        and not event.entity_types
    }
    assert quiet <= left_out


async def test_without_event_rules_nothing_is_read(engine: AsyncEngine) -> None:
    await store_logs(engine, every_kind_of_event()[:20])
    assert await read_all(engine, candidate_filter(RuleSet.build([], {}))) == []


def same_rules(**changes: object) -> list[AlertRule]:
    """RULES again as new rows (same ids), with ``changes`` to the first one."""
    rows = [rule(**{column: getattr(row, column) for column in RULE_COLUMNS}) for row in RULES]
    for column, value in changes.items():
        setattr(rows[0], column, value)
    return rows


RULE_COLUMNS = ("id", "organization_id", "name", "kind", "threshold", "window_seconds", "group_by", "filters")


def test_the_evaluator_keeps_its_reader_while_the_rules_read_the_same_events() -> None:
    """Rules are read again every couple of seconds; the page reader (a statement to key and compile)
    is built again only when what it reads changes: a rule's filters, kinds and windows, the monitored
    tools; not a rule's name."""
    evaluator = AlertEvaluator(None, holder="test")  # type: ignore[arg-type]  # never reads here
    first = evaluator._pages_of(RuleSet.build(RULES, MONITORED))
    assert evaluator._pages_of(RuleSet.build(same_rules(), MONITORED)) is first
    assert evaluator._pages_of(RuleSet.build(same_rules(name="renamed"), MONITORED)) is first
    narrower = evaluator._pages_of(RuleSet.build(same_rules(filters={"risk_levels": ["amber"]}), MONITORED))
    assert narrower is not first
    tools = {**MONITORED, "acme": MONITORED["acme"] | {"Gemini"}}
    assert (
        evaluator._pages_of(RuleSet.build(same_rules(filters={"risk_levels": ["amber"]}), tools))
        is not narrower
    )
    assert evaluator._pages_of(RuleSet.build(RULES, MONITORED)) is not first  # built again: a new reader
