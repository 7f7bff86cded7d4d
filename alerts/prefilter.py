"""Which stored events could meet an enabled rule: a SQL condition the evaluator reads through.

Most events meet no rule (green events of monitored tools), and reading an event back costs the
evaluator more than evaluating it. So it reads only the events this condition keeps; the cursor
still moves past the others (db.streams.read_events).

The condition keeps a superset of the events that meet a rule, never fewer: a rule narrows only by
what SQL compares exactly as :meth:`alerts.rules.CompiledRule.matches` does (risk levels, user and
device ids, ``was_sanitized``, having any entity type at all, and, for a new-tool rule, a tool spelt
exactly as one of the organisation's monitored tools is configured, or in its lower or upper case
when that case-folds to the same name). Tool names and entity types
are compared case-folded by the rules, which SQL cannot do the same way, so they narrow no further;
the evaluator decides. An organisation with a rule that narrows by nothing has all its events read.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Text, and_, cast, false, or_

from alerts.evaluator import RuleSet
from alerts.rules import CompiledRule
from db.models import LogEntry


def candidate_filter(rules: RuleSet) -> ColumnElement[bool]:
    """The events any enabled event rule could be met by (false() when there is no such rule)."""
    per_organization: list[ColumnElement[bool]] = []
    for organization_id, compiled in rules.by_organization.items():
        conditions = [_rule_condition(rule, rules) for rule in compiled]
        narrowed = [condition for condition in conditions if condition is not None]
        same_organization = LogEntry.organization_id == organization_id
        if len(narrowed) < len(conditions):
            per_organization.append(same_organization)
        else:
            per_organization.append(and_(same_organization, or_(*narrowed)))
    return or_(*per_organization) if per_organization else false()


def _rule_condition(rule: CompiledRule, rules: RuleSet) -> ColumnElement[bool] | None:
    """What SQL can check of the rule's filters, or None when it can check nothing."""
    parts: list[ColumnElement[Any]] = []
    if rule.risk_levels is not None:
        parts.append(LogEntry.risk_level.in_(sorted(rule.risk_levels)))
    if rule.user_ids is not None:
        parts.append(LogEntry.user_id.in_(sorted(rule.user_ids)))
    if rule.device_ids is not None:
        parts.append(LogEntry.device_id.in_(sorted(rule.device_ids)))
    if rule.was_sanitized is not None:
        parts.append(LogEntry.was_sanitized.is_(rule.was_sanitized))
    if rule.entity_types is not None:
        # Only events with some entity type can carry one of the rule's (the text of an empty list is
        # "[]" on both engines; any other spelling is kept, which is only a wider read).
        parts.append(cast(LogEntry.detected_entity_types, Text) != "[]")
    if rule.kind == "new_tool":
        known = rules.monitored_tools.get(rule.organization_id)
        if known is not None:
            spelt = _monitored_spellings(
                rules.monitored_spellings.get(rule.organization_id, frozenset()), known
            )
            if spelt:
                parts.append(LogEntry.tool_name.not_in(spelt))
    return and_(*parts) if parts else None


def _monitored_spellings(configured: frozenset[str], known: frozenset[str]) -> list[str]:
    """Spellings of monitored tools to leave out: as configured, in lower and upper case, each kept
    only when it case-folds to a monitored name (so leaving it out never hides a new tool)."""
    spellings = {form for name in configured for form in (name, name.lower(), name.upper())}
    return sorted(name for name in spellings if name.casefold() in known)
