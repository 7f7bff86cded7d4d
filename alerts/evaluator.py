"""Deciding, for a page of events, which rules were met by which group: pure, no I/O.

:func:`evaluate_page` counts each event into the windows of the rules it matches and returns
an :class:`~db.alerts.AlertHit` per (rule, group) touched by a live event: its live matches
(which update an alert already open) and the first and last moments the rule was met (which
may open one). Whether an alert is opened or updated depends on what is stored (a live alert,
a cooldown, a tool that raised before): db.alerts.apply_hits decides that in the same
transaction as the cursor moves. :func:`count_events` replays events into the windows only,
as after a takeover. Both cost O(1) per event and rule (a late event in a full window: O(N)).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from alerts.rules import CompiledRule, EventFacts, compile_rule
from alerts.windows import SlidingWindows
from db.alerts import AlertHit, EventSummary, Trigger
from db.models import AlertRule

#: The kinds whose rules read events.
EVENT_KINDS = ("threshold", "entity", "new_tool")


@dataclass(frozen=True)
class RuleSet:
    """The enabled rules, as the evaluator uses them."""

    #: Event rules of each organisation.
    by_organization: Mapping[str, Sequence[CompiledRule]]
    #: The rows, for opening alerts (name, severity, cooldown, cap).
    rows: Mapping[uuid.UUID, AlertRule]
    #: Silent-agent rules (checked on a timer, not per event).
    silent_agent: Sequence[AlertRule]
    #: Monitored tool names (case-folded) of organisations with a new-tool rule.
    monitored_tools: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: The same names as configured (alerts/prefilter.py leaves events of exactly these spellings out).
    monitored_spellings: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def build(cls, rules: Iterable[AlertRule], monitored_spellings: Mapping[str, frozenset[str]]) -> RuleSet:
        by_organization: dict[str, list[CompiledRule]] = {}
        rows: dict[uuid.UUID, AlertRule] = {}
        silent: list[AlertRule] = []
        for rule in rules:
            if not rule.enabled:
                continue
            if rule.kind == "silent_agent":
                silent.append(rule)
            elif rule.kind in EVENT_KINDS:
                by_organization.setdefault(rule.organization_id, []).append(compile_rule(rule))
                rows[rule.id] = rule
        monitored_tools = {
            organization_id: frozenset(name.casefold() for name in names)
            for organization_id, names in monitored_spellings.items()
        }
        return cls(by_organization, rows, silent, monitored_tools, monitored_spellings)

    def reading_key(self) -> tuple[Any, ...]:
        """What decides which events the evaluator reads (alerts/prefilter.py): equal keys, same reads."""
        rules = tuple(
            (organization_id, tuple(sorted(repr(rule.signature) for rule in compiled)))
            for organization_id, compiled in sorted(self.by_organization.items())
        )
        spellings = tuple(
            (organization_id, tuple(sorted(names)))
            for organization_id, names in sorted(self.monitored_spellings.items())
        )
        return rules, spellings

    def compiled(self) -> dict[uuid.UUID, CompiledRule]:
        return {rule.id: rule for rules in self.by_organization.values() for rule in rules}


@dataclass(slots=True)
class _Progress:
    rule: CompiledRule
    hit: AlertHit
    #: The last event that met the rule again after the first (its window is read at the end of the page).
    met_again: EventFacts | None = None


def _met(rule: CompiledRule, event: EventFacts, windows: SlidingWindows, key: tuple[uuid.UUID, str]) -> bool:
    if rule.size == 1:
        return True
    return windows.add(key, event.timestamp, event.event_id, size=rule.size, width=rule.window)


def evaluate_page(events: Iterable[EventFacts], rules: RuleSet, windows: SlidingWindows) -> list[AlertHit]:
    """Count the events (in commit order) and say, per rule and group, what the live ones did."""
    progress: dict[tuple[uuid.UUID, str], _Progress] = {}
    by_organization = rules.by_organization
    monitored = rules.monitored_tools
    for event in events:
        organization_rules = by_organization.get(event.organization_id)
        if not organization_rules:
            continue
        for rule in organization_rules:
            if rule.kind == "new_tool":
                known = monitored.get(event.organization_id)
                if (known is not None and event.tool_key in known) or not rule.matches(event):
                    continue
            elif not rule.matches(event):
                continue
            key = (rule.id, rule.group_of(event))
            met = _met(rule, event, windows, key)
            if not rule.is_live(event):
                continue  # counted, but a late event raises and updates nothing
            entry = progress.get(key)
            if entry is None:
                entry = progress[key] = _Progress(rule, AlertHit(rule_id=rule.id, group_key=key[1]))
            hit = entry.hit
            hit.matches.add(event.timestamp, event.event_id)
            if hit.first_trigger is not None:
                hit.first_trigger.later.add(event.timestamp, event.event_id)
            if not met:
                continue
            if hit.first_trigger is None:
                window = (
                    EventSummary.of(windows.contents(key))
                    if rule.size > 1
                    else EventSummary.of([(event.timestamp, event.event_id)])
                )
                hit.first_trigger = Trigger(at=window.last_at or event.timestamp, window=window)
            else:
                entry.met_again = event
    hits = []
    for key, entry in progress.items():
        hit = entry.hit
        again = entry.met_again
        if again is not None:
            window = (
                EventSummary.of(windows.contents(key))
                if entry.rule.size > 1
                else EventSummary.of([(again.timestamp, again.event_id)])
            )
            hit.last_trigger = Trigger(at=again.timestamp, window=window)
        else:
            hit.last_trigger = hit.first_trigger
        hits.append(hit)
    return hits


def count_events(events: Iterable[EventFacts], rules: RuleSet, windows: SlidingWindows) -> int:
    """Count events into the threshold windows only (what a new lease holder does with recent history)."""
    counted = 0
    for event in events:
        for rule in rules.by_organization.get(event.organization_id, ()):
            if rule.kind == "threshold" and rule.size > 1 and rule.matches(event):
                windows.add(
                    (rule.id, rule.group_of(event)),
                    event.timestamp,
                    event.event_id,
                    size=rule.size,
                    width=rule.window,
                )
                counted += 1
    return counted
