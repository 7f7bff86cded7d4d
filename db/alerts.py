"""Alert rules and alerts: what the console reads and changes, and what the evaluator writes.

Every change an operator makes (rules, acknowledge, resolve) checks the actor in its own
transaction (db/rights.py) and is audited. Every change of an alert, by an operator or by
the evaluator, bumps its ``revision`` and adds an ``alert_changes`` row in the same
transaction (:func:`record_alert_change`): that is what forwarders send as create, update
and close.

The evaluator (alerts/runner.py) decides in memory which rule met which group (an
:class:`AlertHit` per rule and group and page of events) and hands the hits to
:func:`apply_hits`, which opens, updates or leaves alone each one against what is stored:
the live alert of that rule and group, the cooldown since the last one was resolved, and
for new tools, whether the tool ever raised one and the hourly cap. Alerts read here for a
change are locked (``FOR UPDATE`` on PostgreSQL; on SQLite the transaction holds the write
lock already), so an operator's acknowledge and the evaluator's update take turns.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from sqlalchemy import Table, and_, delete, func, insert, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.orm.attributes import flag_modified

from db.alert_rules import HOUR, RuleProblem, validate_rule
from db.audit import apply_changes, record_change
from db.base import as_utc, utcnow
from db.commit_order import is_postgresql, next_commit_seq
from db.engine import name_in_use, row_for_update, take_sqlite_write_lock
from db.models import Alert, AlertChange, AlertRule, Device, FirewallConfig, LogEntry
from db.rights import Actor, require_admin
from db.streams import Position
from db.vocabulary import DEFAULT_MONITORED_TOOLS, DEFAULT_SENSITIVITY_THRESHOLDS

AlertActivity = Literal["create", "update", "close"]
#: How many event ids an alert keeps (the first ones; later matches only count).
MAX_ALERT_EVENT_IDS = 20
ALERT_PAGE_SIZE = 200
#: A silent-agent alert lists at most this many devices (and says how many there are).
MAX_SILENT_DEVICE_IDS = 50
#: Who resolves an alert whose cause went away by itself.
SYSTEM_ACTOR = "system"

# The mapped class declares __table__ as a FromClause; for alert_changes it is the Table itself.
_ALERT_CHANGES = cast(Table, AlertChange.__table__)


class AlertError(ValueError):
    """A rule or an alert change is not valid (the message says why), or it does not exist."""


@dataclass(frozen=True)
class AlertRuleSpec:
    """What an administrator sets on a rule (alerts/rules.py documents each kind's use of the fields)."""

    name: str
    kind: str
    enabled: bool = True
    severity: str = "high"
    threshold: int = 1
    window_seconds: int = 600
    group_by: str = "user"
    cooldown_seconds: int = 900
    filters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AlertFilter:
    """Which alerts the console lists; empty fields mean all."""

    states: frozenset[str] = frozenset()
    organization_id: str | None = None
    rule_id: uuid.UUID | None = None


@dataclass(frozen=True)
class OpenAlerts:
    """The overview's count of alerts not resolved yet, by severity, and the newest few."""

    by_severity: dict[str, int]
    newest: Sequence[Alert]

    @property
    def total(self) -> int:
        return sum(self.by_severity.values())


# --- default rules ------------------------------------------------------------------------------


def default_rule_specs(*, red_entity_types: Sequence[str]) -> list[AlertRuleSpec]:
    """A new organisation's rules: a red burst per user, the red entity types, silent agents, new tools,
    and a failing forwarding destination.

    Without red entity types there is no entity rule (it would match nothing).
    Migration 0014 writes the same values out for organisations older than alerts.
    """
    specs = [
        AlertRuleSpec(
            name="Red burst per user",
            kind="threshold",
            severity="high",
            threshold=5,
            window_seconds=600,
            group_by="user",
            cooldown_seconds=900,
            filters={"risk_levels": ["red"]},
        )
    ]
    if red_entity_types:
        specs.append(
            AlertRuleSpec(
                name="Red entity types",
                kind="entity",
                severity="high",
                window_seconds=600,
                group_by="user",
                cooldown_seconds=900,
                filters={"entity_types": list(red_entity_types)},
            )
        )
    specs += [
        AlertRuleSpec(
            name="Silent agents",
            kind="silent_agent",
            severity="medium",
            window_seconds=72 * HOUR,
            group_by="organization",
            cooldown_seconds=HOUR,
        ),
        AlertRuleSpec(
            name="New AI tool",
            kind="new_tool",
            severity="low",
            threshold=10,
            window_seconds=600,
            group_by="tool",
            cooldown_seconds=0,
        ),
        AlertRuleSpec(
            name="Forwarding destination failing",
            kind="forwarding",
            severity="high",
            window_seconds=600,
            group_by="organization",
            cooldown_seconds=900,
        ),
    ]
    return specs


def _validated(spec: AlertRuleSpec) -> dict[str, Any]:
    try:
        return validate_rule(
            name=spec.name,
            kind=spec.kind,
            enabled=spec.enabled,
            severity=spec.severity,
            threshold=spec.threshold,
            window_seconds=spec.window_seconds,
            group_by=spec.group_by,
            cooldown_seconds=spec.cooldown_seconds,
            filters=spec.filters,
        )
    except RuleProblem as problem:
        raise AlertError(str(problem)) from None


async def _organization_config(session: AsyncSession, organization_id: str) -> FirewallConfig | None:
    if not organization_id.isascii():
        return None
    return await session.scalar(
        select(FirewallConfig).where(func.lower(FirewallConfig.organization_id) == organization_id.lower())
    )


async def create_default_rules(*, session: AsyncSession, organization_id: str) -> list[AlertRule]:
    """Add :func:`default_rule_specs` for a new organisation (its ``red_entity_types``), in the caller's
    transaction; called by db.configs.create_organization (the organisation's audit row covers them)."""
    config = await _organization_config(session, organization_id)
    thresholds = (config.sensitivity_thresholds if config is not None else None) or {}
    red_types = thresholds.get("red_entity_types", DEFAULT_SENSITIVITY_THRESHOLDS["red_entity_types"])
    now = utcnow()
    rules = [
        AlertRule(organization_id=organization_id, **_validated(spec), created_at=now, updated_at=now)
        for spec in default_rule_specs(red_entity_types=[str(t) for t in red_types or []])
    ]
    session.add_all(rules)
    await session.flush()
    return rules


# --- rules --------------------------------------------------------------------------------------


async def list_rules(*, session: AsyncSession, organization_id: str | None = None) -> Sequence[AlertRule]:
    """Rules by organisation, then name (of one organisation if given)."""
    statement = select(AlertRule).order_by(AlertRule.organization_id, func.lower(AlertRule.name))
    if organization_id is not None:
        statement = statement.where(AlertRule.organization_id == organization_id)
    return (await session.scalars(statement)).all()


async def get_rule(*, session: AsyncSession, rule_id: uuid.UUID) -> AlertRule:
    """Raises AlertError if there is no such rule."""
    rule = await session.get(AlertRule, rule_id, populate_existing=True)
    if rule is None:
        raise AlertError("there is no such alert rule (deleted meanwhile?)")
    return rule


async def _refuse_taken_name(
    session: AsyncSession, organization_id: str, name: str, *, other_than: uuid.UUID | None = None
) -> None:
    taken = await name_in_use(
        session, AlertRule, organization_id=organization_id, name=name, other_than=other_than
    )
    if taken:
        raise AlertError(f"organisation {organization_id!r} already has a rule named {name!r}")


async def create_rule(
    *, session: AsyncSession, organization_id: str, spec: AlertRuleSpec, actor: Actor
) -> AlertRule:
    """Validate and add a rule for ``actor`` (an administrator now), audited (``alert_rule.create``).

    Raises NotAllowed for a viewer, AlertError for an invalid rule, a name the organisation
    already uses, or an organisation that does not exist.
    """
    await require_admin(session=session, actor=actor, what="create alert rules")
    values = _validated(spec)
    config = await _organization_config(session, organization_id)
    if config is None:
        raise AlertError(f"organisation {organization_id!r} does not exist")
    organization_id = config.organization_id
    await _refuse_taken_name(session, organization_id, values["name"])
    now = utcnow()
    rule = AlertRule(
        organization_id=organization_id, **values, created_at=now, updated_at=now, updated_by=actor.name
    )
    session.add(rule)
    await session.flush()
    await record_change(
        session=session,
        actor=actor,
        action="alert_rule.create",
        entity_type="alert_rule",
        entity_id=str(rule.id),
        changes={
            "organization_id": {"after": organization_id},
            **{k: {"after": v} for k, v in values.items()},
        },
    )
    return rule


async def update_rule(
    *, session: AsyncSession, rule_id: uuid.UUID, spec: AlertRuleSpec, actor: Actor
) -> tuple[AlertRule, dict[str, dict[str, Any]]]:
    """Validate and apply ``spec``; return the rule and what changed (audited ``alert_rule.update``).

    The kind of a rule cannot change (delete it and create another). Its live alerts keep the
    name and severity they were raised with.
    """
    await require_admin(session=session, actor=actor, what="change alert rules")
    rule = await get_rule(session=session, rule_id=rule_id)
    if spec.kind != rule.kind:
        raise AlertError(f"a rule's kind cannot change ({rule.kind} to {spec.kind}); create another rule")
    values = _validated(spec)
    await _refuse_taken_name(session, rule.organization_id, values["name"], other_than=rule.id)
    changes = apply_changes(rule, values)
    if changes:
        rule.updated_at = utcnow()
        rule.updated_by = actor.name
        await session.flush()
        await record_change(
            session=session,
            actor=actor,
            action="alert_rule.update",
            entity_type="alert_rule",
            entity_id=str(rule.id),
            changes=changes,
        )
    return rule, changes


async def delete_rule(*, session: AsyncSession, rule_id: uuid.UUID, actor: Actor) -> AlertRule:
    """Delete a rule (its alerts stay, under the rule's name as raised), audited (``alert_rule.delete``)."""
    await require_admin(session=session, actor=actor, what="delete alert rules")
    rule = await get_rule(session=session, rule_id=rule_id)
    await session.execute(delete(AlertRule).where(AlertRule.id == rule.id))
    await record_change(
        session=session,
        actor=actor,
        action="alert_rule.delete",
        entity_type="alert_rule",
        entity_id=str(rule.id),
        changes={
            "organization_id": {"before": rule.organization_id},
            "name": {"before": rule.name},
            "kind": {"before": rule.kind},
        },
    )
    return rule


# --- reading alerts -----------------------------------------------------------------------------


async def list_alerts(
    *,
    session: AsyncSession,
    alert_filter: AlertFilter = AlertFilter(),
    limit: int = ALERT_PAGE_SIZE,
    before: tuple[datetime, uuid.UUID] | None = None,
    after: tuple[datetime, uuid.UUID] | None = None,
    oldest_first: bool = False,
) -> Sequence[Alert]:
    """Alerts by their last change (``updated_at``, then ``id``), newest first (``oldest_first``: oldest
    first), keyset-paged: ``before`` keeps those changed before that (updated_at, id), ``after`` those
    changed after it. The oldest page is the first ``oldest_first`` page, reversed by the caller.

    Each state asked for is its own walk of ``ix_alerts_state_updated_at`` (several states: a
    ``UNION ALL`` of one ordered, limited walk each, merged and cut to ``limit``); an organisation
    walks ``ix_alerts_organization_updated_at`` (with states, ``ix_alerts_organization_state``
    finds them); a rule's alerts are found through ``ix_alerts_rule_group_resolved``. Every state
    of every organisation has no index of its own: the matching alerts are read and the ``limit``
    first kept.
    """
    where: list[Any] = []
    if alert_filter.organization_id is not None:
        where.append(Alert.organization_id == alert_filter.organization_id)
    if alert_filter.rule_id is not None:
        where.append(Alert.rule_id == alert_filter.rule_id)
    if before is not None:
        at, alert_id = before
        where.append(or_(Alert.updated_at < at, and_(Alert.updated_at == at, Alert.id < alert_id)))
    if after is not None:
        at, alert_id = after
        where.append(or_(Alert.updated_at > at, and_(Alert.updated_at == at, Alert.id > alert_id)))

    def ordered(updated_at: Any, alert_id: Any) -> tuple[Any, Any]:
        if oldest_first:
            return updated_at.asc(), alert_id.asc()
        return updated_at.desc(), alert_id.desc()

    states = sorted(alert_filter.states)
    if len(states) <= 1 or alert_filter.organization_id is not None:
        if states:
            where.append(Alert.state.in_(states))
        statement = select(Alert).where(*where).order_by(*ordered(Alert.updated_at, Alert.id)).limit(limit)
        return (await session.scalars(statement)).all()
    parts = [
        select(
            select(Alert)
            .where(*where, Alert.state == state)
            .order_by(*ordered(Alert.updated_at, Alert.id))
            .limit(limit)
            .subquery()
        )
        for state in states
    ]
    rows = aliased(Alert, union_all(*parts).subquery("page_alerts"))
    merged = select(rows).order_by(*ordered(rows.updated_at, rows.id)).limit(limit)
    return (await session.scalars(merged)).all()


async def get_alert(*, session: AsyncSession, alert_id: uuid.UUID) -> Alert:
    """Raises AlertError if there is no such alert."""
    alert = await session.get(Alert, alert_id, populate_existing=True)
    if alert is None:
        raise AlertError("there is no such alert (deleted by retention?)")
    return alert


async def open_alerts(
    *, session: AsyncSession, organization_id: str | None = None, newest: int = 5
) -> OpenAlerts:
    """What the overview shows: alerts open or acknowledged, counted by severity, and the newest few."""
    live = Alert.state != "resolved"
    where = [live] if organization_id is None else [live, Alert.organization_id == organization_id]
    counts = await session.execute(
        select(Alert.severity, func.count()).where(*where).group_by(Alert.severity)
    )
    by_severity = {str(severity): int(count) for severity, count in counts.all()}
    rows = (
        await session.scalars(
            select(Alert).where(*where).order_by(Alert.updated_at.desc(), Alert.id.desc()).limit(newest)
        )
    ).all()
    return OpenAlerts(by_severity=by_severity, newest=rows)


# --- operators' changes ---------------------------------------------------------------------------


async def _alert_for_change(session: AsyncSession, alert_id: uuid.UUID, *, actor: Actor, what: str) -> Alert:
    """For ``actor`` (an administrator now, to do ``what``): the alert as it is now, locked until the
    transaction ends (SQLite: the write lock is held)."""
    await take_sqlite_write_lock(session, Alert)  # the CLI is not checked, so require_admin may not take it
    await require_admin(session=session, actor=actor, what=what)
    alert = await row_for_update(session, Alert, alert_id)
    if alert is None:
        raise AlertError("there is no such alert (deleted by retention?)")
    return alert


async def _record_state_change(
    session: AsyncSession,
    alert: Alert,
    *,
    actor: Actor,
    action: str,
    before: str,
    activity: AlertActivity,
    now: datetime,
) -> None:
    """``actor`` moved ``alert`` from state ``before`` at ``now``: its new revision (for the forwarders)
    and its audit row."""
    await _new_revision(session, alert, activity, now)
    await record_change(
        session=session,
        actor=actor,
        action=action,
        entity_type="alert",
        entity_id=str(alert.id),
        changes={"state": {"before": before, "after": alert.state}, "revision": {"after": alert.revision}},
    )


async def acknowledge_alert(*, session: AsyncSession, alert_id: uuid.UUID, actor: Actor) -> Alert:
    """Mark an open alert acknowledged by ``actor`` (an administrator now), audited, as a new revision.

    Raises AlertError if it is not open.
    """
    alert = await _alert_for_change(session, alert_id, actor=actor, what="acknowledge alerts")
    if alert.state != "open":
        raise AlertError(f"the alert is {alert.state} already; only an open alert can be acknowledged")
    now = utcnow()
    alert.state = "acknowledged"
    alert.acknowledged_by = actor.name
    alert.acknowledged_at = now
    await _record_state_change(
        session, alert, actor=actor, action="alert.acknowledge", before="open", activity="update", now=now
    )
    return alert


async def resolve_alert(*, session: AsyncSession, alert_id: uuid.UUID, actor: Actor) -> Alert:
    """Resolve an open or acknowledged alert by ``actor``, audited, as a new revision (``close``).

    The rule's cooldown for its group starts now. Raises AlertError if it is already resolved.
    """
    alert = await _alert_for_change(session, alert_id, actor=actor, what="resolve alerts")
    if alert.state == "resolved":
        raise AlertError("the alert is resolved already")
    before = alert.state
    now = utcnow()
    _resolve(alert, actor.name, now)
    await _record_state_change(
        session, alert, actor=actor, action="alert.resolve", before=before, activity="close", now=now
    )
    return alert


def _resolve(alert: Alert, by: str, now: datetime) -> None:
    alert.state = "resolved"
    alert.resolved_by = by
    alert.resolved_at = now


# --- revisions ----------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return None if value is None else as_utc(value).isoformat()


def alert_snapshot(alert: Alert) -> dict[str, Any]:
    """The alert's fields as forwarded (JSON-ready: times as ISO 8601 text, ids as text)."""
    return {
        "id": str(alert.id),
        "organization_id": alert.organization_id,
        "rule_id": str(alert.rule_id),
        "rule_name": alert.rule_name,
        "rule_kind": alert.rule_kind,
        "severity": alert.severity,
        "group_key": alert.group_key,
        "state": alert.state,
        "first_event_at": _iso(alert.first_event_at),
        "last_event_at": _iso(alert.last_event_at),
        "event_count": int(alert.event_count),
        "event_ids": list(alert.event_ids or []),
        "details": dict(alert.details or {}),
        "revision": int(alert.revision),
        "opened_at": _iso(alert.opened_at),
        "updated_at": _iso(alert.updated_at),
        "acknowledged_by": alert.acknowledged_by,
        "acknowledged_at": _iso(alert.acknowledged_at),
        "resolved_by": alert.resolved_by,
        "resolved_at": _iso(alert.resolved_at),
    }


async def record_alert_change(*, session: AsyncSession, alert: Alert, activity: AlertActivity) -> None:
    """Add the ``alert_changes`` row of ``alert``'s current revision (commit order: db/commit_order.py)."""
    await record_alert_changes(session=session, changes=[(alert, activity)])


async def record_alert_changes(
    *, session: AsyncSession, changes: Sequence[tuple[Alert, AlertActivity]]
) -> None:
    """Add the ``alert_changes`` rows of these alerts' current revisions, in this order, in one statement."""
    if not changes:
        return
    commit_seq = await next_commit_seq(session, "alert_changes")
    rows: list[dict[str, Any]] = []
    for alert, activity in changes:
        values: dict[str, Any] = {
            "alert_id": alert.id,
            "organization_id": alert.organization_id,
            "revision": alert.revision,
            "activity": activity,
            "snapshot": alert_snapshot(alert),
            "changed_at": alert.updated_at,
        }
        if commit_seq is not None:  # PostgreSQL's column default stamps it otherwise: never send NULL there
            values["commit_seq"] = commit_seq
        rows.append(values)
    # The table, not the mapped class: a Core executemany, compiled once, where the ORM's bulk insert
    # keys a statement with every row's values again.
    await session.execute(insert(_ALERT_CHANGES), rows)


async def _new_revision(session: AsyncSession, alert: Alert, activity: AlertActivity, now: datetime) -> None:
    """The alert changed: one more revision, and its row for the forwarders."""
    _next_revision(alert, now)
    await session.flush()
    await record_alert_change(session=session, alert=alert, activity=activity)


def _next_revision(alert: Alert, now: datetime) -> None:
    alert.revision = int(alert.revision) + 1
    alert.updated_at = now


async def _open(session: AsyncSession, alert: Alert) -> Alert:
    """Store a new alert (from :func:`_new_alert`) and its first revision's row."""
    session.add(alert)
    await session.flush()
    await record_alert_change(session=session, alert=alert, activity="create")
    return alert


def _new_alert(
    rule: AlertRule,
    group_key: str,
    *,
    first_at: datetime,
    last_at: datetime,
    count: int,
    event_ids: Sequence[str],
    details: dict[str, Any],
    now: datetime,
) -> Alert:
    return Alert(
        organization_id=rule.organization_id,
        rule_id=rule.id,
        rule_name=rule.name,
        rule_kind=rule.kind,
        severity=rule.severity,
        group_key=group_key[:255],
        state="open",
        first_event_at=first_at,
        last_event_at=last_at,
        event_count=count,
        event_ids=list(event_ids)[:MAX_ALERT_EVENT_IDS],
        details=details,
        revision=1,
        opened_at=now,
        updated_at=now,
    )


# --- what the evaluator hands over ----------------------------------------------------------------


@dataclass(slots=True)
class EventSummary:
    """Matching events, aggregated: how many, their first and last times, the first few ids."""

    count: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None
    ids: list[str] = field(default_factory=list)

    def add(self, at: datetime, event_id: str) -> None:
        self.count += 1
        if self.first_at is None or at < self.first_at:
            self.first_at = at
        if self.last_at is None or at > self.last_at:
            self.last_at = at
        if len(self.ids) < MAX_ALERT_EVENT_IDS:
            self.ids.append(event_id)

    @classmethod
    def of(cls, events: Iterable[tuple[datetime, str]]) -> EventSummary:
        summary = cls()
        for at, event_id in events:
            summary.add(at, event_id)
        return summary


@dataclass(slots=True)
class Trigger:
    """The moment a rule was met for a group: the event's time, the events that met it, and the live
    matches that followed it in the same page."""

    at: datetime
    window: EventSummary
    later: EventSummary = field(default_factory=EventSummary)


@dataclass(slots=True)
class AlertHit:
    """One rule and group in one page of events: its live matches, and when (if) the rule was met.

    The first and the last trigger are kept: when the cooldown of a resolved alert ends within
    the page, the last one may raise where the first may not.
    """

    rule_id: uuid.UUID
    group_key: str
    matches: EventSummary = field(default_factory=EventSummary)
    first_trigger: Trigger | None = None
    last_trigger: Trigger | None = None


async def enabled_rules(*, session: AsyncSession, kinds: Collection[str]) -> Sequence[AlertRule]:
    """Every enabled rule of these kinds, of every organisation."""
    statement = select(AlertRule).where(AlertRule.enabled.is_(True), AlertRule.kind.in_(list(kinds)))
    return (await session.scalars(statement.order_by(AlertRule.organization_id, AlertRule.id))).all()


async def monitored_tool_spellings(
    *, session: AsyncSession, organization_ids: Collection[str]
) -> dict[str, frozenset[str]]:
    """Each organisation's monitored tool names as configured, trimmed (the defaults for one without a
    config row); case-fold them to compare as rules do."""
    found: dict[str, frozenset[str]] = {}
    if organization_ids:
        rows = await session.execute(
            select(FirewallConfig.organization_id, FirewallConfig.monitored_tools).where(
                FirewallConfig.organization_id.in_(list(organization_ids))
            )
        )
        for organization_id, tools in rows.all():
            names = (t.get("name") for t in tools or [] if isinstance(t, dict))
            found[organization_id] = frozenset(n.strip() for n in names if isinstance(n, str))
    defaults = frozenset(name for name, _ in DEFAULT_MONITORED_TOOLS)
    return {organization_id: found.get(organization_id, defaults) for organization_id in organization_ids}


async def _live_alerts(
    session: AsyncSession, rule_ids: Collection[uuid.UUID], group_keys: Collection[str]
) -> dict[tuple[uuid.UUID, str], Alert]:
    statement = (
        select(Alert)
        .where(
            Alert.rule_id.in_(list(rule_ids)),
            Alert.group_key.in_(list(group_keys)),
            Alert.state != "resolved",
        )
        .execution_options(populate_existing=True)
    )
    if is_postgresql(session):
        statement = statement.with_for_update()
    return {(a.rule_id, a.group_key): a for a in (await session.scalars(statement)).all()}


async def _history(
    session: AsyncSession, rule_ids: Collection[uuid.UUID], group_keys: Collection[str]
) -> dict[tuple[uuid.UUID, str], datetime | None]:
    """For each (rule, group) that ever had an alert: when the last one was resolved."""
    rows = await session.execute(
        select(Alert.rule_id, Alert.group_key, func.max(Alert.resolved_at))
        .where(Alert.rule_id.in_(list(rule_ids)), Alert.group_key.in_(list(group_keys)))
        .group_by(Alert.rule_id, Alert.group_key)
    )
    return {(rule_id, key): (as_utc(at) if at is not None else None) for rule_id, key, at in rows.all()}


async def _opened_since(session: AsyncSession, rule_id: uuid.UUID, since: datetime) -> int:
    return int(
        await session.scalar(
            select(func.count()).select_from(Alert).where(Alert.rule_id == rule_id, Alert.opened_at >= since)
        )
        or 0
    )


def _cooled_down(trigger: Trigger, resolved_at: datetime | None, cooldown_seconds: int) -> bool:
    return resolved_at is None or trigger.at >= resolved_at + timedelta(seconds=cooldown_seconds)


async def apply_hits(
    *,
    session: AsyncSession,
    hits: Sequence[AlertHit],
    rules: Mapping[uuid.UUID, AlertRule],
    now: datetime | None = None,
) -> list[Alert]:
    """Open or update the alerts the hits call for, in the caller's (fenced) transaction.

    - a live alert of the rule and group takes the page's live matches: one revision;
    - otherwise a trigger opens one, unless the last alert of that group was resolved less than
      the rule's cooldown before the trigger's event time; for a new tool, unless the tool ever
      had an alert (once per tool) or the rule raised ``threshold`` alerts in the last hour.

    Returns the alerts opened or updated.
    """
    hits = [hit for hit in hits if hit.rule_id in rules]
    if not hits:
        return []
    now = now or utcnow()
    rule_ids = {hit.rule_id for hit in hits}
    group_keys = {hit.group_key for hit in hits}
    live = await _live_alerts(session, rule_ids, group_keys)
    raising = [hit for hit in hits if (hit.rule_id, hit.group_key) not in live and hit.first_trigger]
    history = (
        await _history(session, {h.rule_id for h in raising}, {h.group_key for h in raising})
        if raising
        else {}
    )
    opened_this_hour: dict[uuid.UUID, int] = {}
    changed: list[Alert] = []
    recorded: list[tuple[Alert, AlertActivity]] = []
    for hit in hits:
        rule = rules[hit.rule_id]
        key = (hit.rule_id, hit.group_key)
        alert = live.get(key)
        if alert is not None:
            if hit.matches.count == 0 or hit.matches.last_at is None:
                continue
            alert.event_count = int(alert.event_count) + hit.matches.count
            alert.last_event_at = max(as_utc(alert.last_event_at), hit.matches.last_at)
            ids = list(alert.event_ids or [])
            room = MAX_ALERT_EVENT_IDS - len(ids)
            if room > 0:
                alert.event_ids = ids + [i for i in hit.matches.ids if i not in ids][:room]
            # Every update sets the same columns, so the page's updates go as one statement (an
            # executemany), not one per combination of columns that happened to change.
            flag_modified(alert, "last_event_at")
            flag_modified(alert, "event_ids")
            _next_revision(alert, now)
            recorded.append((alert, "update"))
            changed.append(alert)
            continue
        if hit.first_trigger is None:
            continue
        trigger: Trigger | None = None
        if rule.kind == "new_tool":
            if key in history:
                continue  # once per tool: it raised before, whatever became of that alert
            if rule.id not in opened_this_hour:
                opened_this_hour[rule.id] = await _opened_since(session, rule.id, now - timedelta(hours=1))
            if opened_this_hour[rule.id] >= rule.threshold:
                continue  # the hourly cap: a later event of the tool may raise it once there is room
            trigger = hit.first_trigger
        else:
            resolved_at = history.get(key)
            for candidate in (hit.first_trigger, hit.last_trigger):
                if candidate is not None and _cooled_down(candidate, resolved_at, rule.cooldown_seconds):
                    trigger = candidate
                    break
        if trigger is None or trigger.window.first_at is None:
            continue
        later = trigger.later
        last_at = max(at for at in (trigger.window.last_at, later.last_at) if at is not None)
        alert = _new_alert(
            rule,
            hit.group_key,
            first_at=trigger.window.first_at,
            last_at=last_at,
            count=trigger.window.count + later.count,
            event_ids=[*trigger.window.ids, *later.ids],
            details={},
            now=now,
        )
        session.add(alert)
        recorded.append((alert, "create"))
        if rule.kind == "new_tool":
            opened_this_hour[rule.id] += 1
        live[key] = alert
        changed.append(alert)
    # One flush and one insert of revisions for the whole page, not two round trips per alert.
    await session.flush()
    await record_alert_changes(session=session, changes=recorded)
    return changed


async def sync_silent_agents(
    *, session: AsyncSession, rule: AlertRule, now: datetime | None = None
) -> Alert | None:
    """Bring the organisation's silent-agent alert in line with its devices, in a (fenced) transaction.

    Active devices not heard from for the rule's ``window_seconds`` are silent. One alert per
    organisation lists them (the first :data:`MAX_SILENT_DEVICE_IDS` by id, and how many): opened
    when some are, updated when the list changes, resolved by ``system`` when none is left.
    Returns the alert if it was opened, updated or resolved.
    """
    now = now or utcnow()
    silent = and_(
        Device.organization_id == rule.organization_id,
        Device.is_active.is_(True),
        Device.last_seen < now - timedelta(seconds=rule.window_seconds),
    )
    total = int(await session.scalar(select(func.count()).select_from(Device).where(silent)) or 0)
    group_key = rule.organization_id
    alert = (await _live_alerts(session, [rule.id], [group_key])).get((rule.id, group_key))
    if total == 0:
        if alert is None:
            return None
        _resolve(alert, SYSTEM_ACTOR, now)
        await _new_revision(session, alert, "close", now)
        return alert
    rows = await session.execute(
        select(Device.device_id, Device.last_seen)
        .where(silent)
        .order_by(Device.device_id)
        .limit(MAX_SILENT_DEVICE_IDS)
    )
    listed = rows.all()
    details = {
        "silent_device_ids": [device_id for device_id, _ in listed],
        "silent_devices": total,
        "silent_hours": round(rule.window_seconds / HOUR, 2),
    }
    if alert is not None:
        if alert.details == details:
            return None
        alert.details = details
        alert.event_count = total
        alert.last_event_at = now
        await _new_revision(session, alert, "update", now)
        return alert
    resolved_at = (await _history(session, [rule.id], [group_key])).get((rule.id, group_key))
    if resolved_at is not None and now < resolved_at + timedelta(seconds=rule.cooldown_seconds):
        return None
    oldest = min(as_utc(seen) for _, seen in listed)
    return await _open(
        session,
        _new_alert(
            rule, group_key, first_at=oldest, last_at=now, count=total, event_ids=[], details=details, now=now
        ),
    )


# --- system alerts (the forwarders') ----------------------------------------------------------------


async def _system_rule(session: AsyncSession, organization_id: str, kind: str) -> AlertRule | None:
    return await session.scalar(
        select(AlertRule)
        .where(
            AlertRule.organization_id == organization_id, AlertRule.kind == kind, AlertRule.enabled.is_(True)
        )
        .order_by(AlertRule.created_at, AlertRule.id)
        .limit(1)
    )


async def raise_or_update_system_alert(
    *,
    session: AsyncSession,
    organization_id: str,
    kind: Literal["forwarding"],
    group_key: str,
    details: dict[str, Any],
) -> Alert | None:
    """Open (or update) the alert of the organisation's enabled rule of ``kind`` for ``group_key``
    (for ``forwarding``: the destination's name); None when no such rule is enabled or its cooldown runs.

    A live alert is updated (one more occurrence) only when ``details`` differ from what it holds,
    so a forwarder retrying the same fault adds no revision per retry.
    """
    rule = await _system_rule(session, organization_id, kind)
    if rule is None:
        return None
    now = utcnow()
    group_key = group_key[:255]
    alert = (await _live_alerts(session, [rule.id], [group_key])).get((rule.id, group_key))
    if alert is not None:
        if alert.details == details:
            return alert
        alert.details = details
        alert.event_count = int(alert.event_count) + 1
        alert.last_event_at = now
        await _new_revision(session, alert, "update", now)
        return alert
    resolved_at = (await _history(session, [rule.id], [group_key])).get((rule.id, group_key))
    if resolved_at is not None and now < resolved_at + timedelta(seconds=rule.cooldown_seconds):
        return None
    return await _open(
        session,
        _new_alert(
            rule, group_key, first_at=now, last_at=now, count=1, event_ids=[], details=details, now=now
        ),
    )


async def resolve_system_alert(
    *, session: AsyncSession, organization_id: str, kind: Literal["forwarding"], group_key: str
) -> Alert | None:
    """Resolve that alert, if live (the fault has cleared); the actor recorded is ``system``.

    Found by kind rather than by rule, so an alert outlives its rule being switched off or deleted.
    """
    statement = (
        select(Alert)
        .where(
            Alert.organization_id == organization_id,
            Alert.rule_kind == kind,
            Alert.group_key == group_key[:255],
            Alert.state != "resolved",
        )
        .execution_options(populate_existing=True)
    )
    if is_postgresql(session):
        statement = statement.with_for_update()
    alerts = (await session.scalars(statement)).all()
    now = utcnow()
    for alert in alerts:
        _resolve(alert, SYSTEM_ACTOR, now)
        await _new_revision(session, alert, "close", now)
    return alerts[0] if alerts else None


# --- the evaluator's catch-up after a takeover ---------------------------------------------------------


def _not_after(position: Position) -> Any:
    """Rows at or before ``position`` in commit order (the complement of db/streams.py's "after")."""
    seq, org, item = LogEntry.commit_seq, LogEntry.organization_id, LogEntry.id
    before_in_seq = org < position.organization_id
    if position.item_id:
        before_in_seq = or_(
            before_in_seq, and_(org == position.organization_id, item <= uuid.UUID(position.item_id))
        )
    return or_(seq < position.seq, and_(seq == position.seq, before_in_seq))


async def recent_events(
    *,
    session: AsyncSession,
    up_to: Position,
    since: datetime,
    organization_ids: Collection[str],
    risk_levels: Collection[str] | None,
    columns: Sequence[Any],
    limit: int,
) -> Sequence[Any]:
    """Committed events the evaluator already read (at or before ``up_to``) with ``timestamp >= since``,
    oldest first: what a new holder of the lease counts into its windows again."""
    if not organization_ids:
        return []
    statement = (
        select(*columns)
        .where(
            LogEntry.timestamp >= since,
            LogEntry.commit_seq.is_not(None),
            LogEntry.organization_id.in_(list(organization_ids)),
            _not_after(up_to),
        )
        .order_by(LogEntry.timestamp)
        .limit(limit)
    )
    if risk_levels is not None:
        statement = statement.where(LogEntry.risk_level.in_(list(risk_levels)))
    return (await session.execute(statement)).all()
