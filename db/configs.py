"""Organisation configuration: validation, defaults, reading and saving.

Retention bounds and the shape of thresholds and patterns are checked here
and only here; the console, the CLI and the scheduler all call these functions.

Organisation ids are stored as first spelled and are unique and looked up
regardless of case (``ACME`` finds ``acme``; a unique index on
``lower(organization_id)``). The ingest server resolves an agent's hello to the
id as created, so logs, devices and rollups are kept under one spelling.
Custom patterns are RE2 (:mod:`db.regex_engine`): they run on every agent.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.alerts import create_default_rules
from db.audit import apply_changes, record_change
from db.base import utcnow
from db.field_lengths import length_problem
from db.models import FirewallConfig
from db.regex_engine import PatternSyntaxError, compile_pattern
from db.rights import Actor, require_admin
from db.settings import IngestLimits
from db.vocabulary import (
    DEFAULT_MONITORED_TOOLS,
    DEFAULT_RETENTION_DAYS,
    DEFAULT_SENSITIVITY_THRESHOLDS,
    MAX_RETENTION_DAYS,
    MIN_RETENTION_DAYS,
    RISK_LEVELS,
    TOOL_TYPES,
)

ORGANIZATION_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: Bounds of a custom pattern's fields (they live in JSON, so no column says it).
MAX_PATTERN_NAME_CHARS = 100
MAX_PATTERN_REGEX_CHARS = 1000
MAX_PATTERN_ENTITY_TYPE_CHARS = 64
MAX_TOOL_NAME_CHARS = 100
MAX_RED_ENTITY_TYPE_CHARS = 64

# The whole configuration travels to agents on ONE line of the ingest protocol (``welcome`` and
# ``config``), and that line must fit the limit the welcome announces: the server's default
# INGEST_MAX_LINE_BYTES. Each part has a budget in bytes of compact UTF-8 JSON, as the server writes
# it (a character costs 1-4 bytes, a control character escaped as \u00XX 6), and a count bound
# sized so typical entries never meet the byte budget first:
#
#        1,024  the envelope: type, limits, organization_id (<= 64 ASCII), version, retention, field names
#       24,576  config.metadata_keys: the standard keys (~1.5 KB) and the organisation's own
#               (db/metadata_keys.allow_key refuses a key that would pass this)
#        3,072  sensitivity_thresholds: two numbers, <= 32 red entity types (32 x 67 B = 2,144 B in ASCII)
#        8,192  monitored_tools: <= 64 tools (~55 B each typically; 128 B each on average at the maximum)
#       28,672  custom_patterns: <= 64 patterns (~150-300 B each typically; 448 B each on average at most)
#     --------
#       65,536  = db.settings.MIN_MAX_LINE_BYTES, the smallest INGEST_MAX_LINE_BYTES allowed
#
# A configuration written around these checks (by SQL) may still pass the line: the server then
# answers with the error ``config_too_large`` instead of an oversized line (ingest/protocol.py).
AGENT_LINE_BYTES = IngestLimits().max_line_bytes
AGENT_ENVELOPE_BYTES = 1024
METADATA_KEYS_MAX_BYTES = 24 * 1024
SENSITIVITY_THRESHOLDS_MAX_BYTES = 3 * 1024
MONITORED_TOOLS_MAX_BYTES = 8 * 1024
CUSTOM_PATTERNS_MAX_BYTES = 28 * 1024
MAX_RED_ENTITY_TYPES = 32
MAX_MONITORED_TOOLS = 64
MAX_CUSTOM_PATTERNS = 64


class ConfigError(ValueError):
    """A configuration value is out of range or malformed; the message says which and why."""


def validate_retention_days(value: object) -> int:
    """Return value as retention days, or raise ConfigError if outside 30–365."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(
            f"log_retention_days must be a whole number from {MIN_RETENTION_DAYS} to {MAX_RETENTION_DAYS}"
        )
    try:
        days = int(value)
    except ValueError:
        raise ConfigError(f"log_retention_days must be a whole number; got {value!r}") from None
    if not MIN_RETENTION_DAYS <= days <= MAX_RETENTION_DAYS:
        raise ConfigError(
            f"log_retention_days must be between {MIN_RETENTION_DAYS} and {MAX_RETENTION_DAYS}; got {days}"
        )
    return days


def validate_organization_id(value: object) -> str:
    """Return the organisation id, or raise ConfigError if it is not 1–64 safe characters."""
    if isinstance(value, str) and (problem := length_problem(FirewallConfig.organization_id, value)):
        raise ConfigError(problem)
    if not isinstance(value, str) or not ORGANIZATION_ID_PATTERN.match(value):
        raise ConfigError(
            "organization_id must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit;"
            f" got {value!r}"
        )
    return value


def default_monitored_tools() -> list[dict[str, Any]]:
    return [{"name": name, "tool_type": kind, "enabled": True} for name, kind in DEFAULT_MONITORED_TOOLS]


def default_sensitivity_thresholds() -> dict[str, Any]:
    red_types: list[str] = list(
        DEFAULT_SENSITIVITY_THRESHOLDS["red_entity_types"]  # type: ignore[call-overload]
    )
    return {**DEFAULT_SENSITIVITY_THRESHOLDS, "red_entity_types": red_types}


def agent_json_bytes(value: object, *, field: str) -> int:
    """Bytes of ``value`` as the ingest server sends it to agents (orjson: compact UTF-8 JSON).

    ConfigError if it cannot be sent at all (a lone surrogate is not UTF-8).
    """
    try:
        return len(orjson.dumps(value))
    except (TypeError, orjson.JSONEncodeError):
        raise ConfigError(f"{field} holds text that is not valid Unicode; retype it") from None


def _within_budget(value: object, *, field: str, budget: int, advice: str) -> None:
    size = agent_json_bytes(value, field=field)
    if size > budget:
        raise ConfigError(
            f"{field} take {size:,} bytes as sent to agents, more than {budget:,} "
            f"(the whole configuration must fit one {AGENT_LINE_BYTES:,}-byte protocol line); {advice}"
        )


def validate_monitored_tools(tools: object) -> list[dict[str, Any]]:
    """Each tool is ``{"name": str, "tool_type": web|desktop|cli, "enabled": bool}``; names unique.

    At most :data:`MAX_MONITORED_TOOLS`, within :data:`MONITORED_TOOLS_MAX_BYTES` as sent to agents.
    """
    if not isinstance(tools, list):
        raise ConfigError("monitored_tools must be a list")
    if len(tools) > MAX_MONITORED_TOOLS:
        raise ConfigError(f"at most {MAX_MONITORED_TOOLS} monitored tools; got {len(tools):,}")
    seen: set[str] = set()
    cleaned = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise ConfigError(f"monitored_tools[{index}] must be an object")
        name = tool.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_TOOL_NAME_CHARS:
            raise ConfigError(f"monitored_tools[{index}].name must be 1-{MAX_TOOL_NAME_CHARS} characters")
        if name.strip().lower() in seen:
            raise ConfigError(f"monitored_tools has {name!r} twice")
        seen.add(name.strip().lower())
        tool_type = tool.get("tool_type", "web")
        if tool_type not in TOOL_TYPES:
            raise ConfigError(f"monitored_tools[{index}].tool_type must be one of {', '.join(TOOL_TYPES)}")
        enabled = tool.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(f"monitored_tools[{index}].enabled must be true or false")
        cleaned.append({"name": name.strip(), "tool_type": tool_type, "enabled": enabled})
    _within_budget(
        cleaned, field="monitored tools", budget=MONITORED_TOOLS_MAX_BYTES, advice="remove or shorten some"
    )
    return cleaned


def validate_sensitivity_thresholds(thresholds: object) -> dict[str, Any]:
    """``amber_min_entities`` ≤ ``red_min_entities``, both 1–1000; ``red_entity_types`` short names."""
    if not isinstance(thresholds, dict):
        raise ConfigError("sensitivity_thresholds must be an object")
    unknown = set(thresholds) - set(DEFAULT_SENSITIVITY_THRESHOLDS)
    if unknown:
        raise ConfigError(f"sensitivity_thresholds has unknown keys: {', '.join(sorted(unknown))}")
    merged = {**default_sensitivity_thresholds(), **thresholds}
    for key in ("amber_min_entities", "red_min_entities"):
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
            raise ConfigError(f"sensitivity_thresholds.{key} must be a whole number from 1 to 1000")
    if merged["amber_min_entities"] > merged["red_min_entities"]:
        raise ConfigError("sensitivity_thresholds.amber_min_entities must not exceed red_min_entities")
    types = merged["red_entity_types"]
    if not isinstance(types, list) or not all(
        isinstance(t, str) and 0 < len(t) <= MAX_RED_ENTITY_TYPE_CHARS for t in types
    ):
        raise ConfigError(
            "sensitivity_thresholds.red_entity_types must be a list of names "
            f"up to {MAX_RED_ENTITY_TYPE_CHARS} characters"
        )
    if len(types) > MAX_RED_ENTITY_TYPES:
        raise ConfigError(
            f"sensitivity_thresholds.red_entity_types: at most {MAX_RED_ENTITY_TYPES} entity types; "
            f"got {len(types):,}"
        )
    _within_budget(
        merged,
        field="sensitivity thresholds",
        budget=SENSITIVITY_THRESHOLDS_MAX_BYTES,
        advice="remove or shorten some red_entity_types",
    )
    return merged


def pattern_name_key(name: str) -> str:
    """What makes two custom pattern names the same: their stripped, case-folded text."""
    return name.strip().casefold()


def custom_pattern_name_taken(patterns: Sequence[Mapping[str, Any]], name: str) -> bool:
    """Whether one of ``patterns`` already has ``name`` (regardless of case): what
    :func:`validate_custom_patterns` refuses, for a form to say before saving."""
    key = pattern_name_key(name)
    return any(isinstance(p.get("name"), str) and pattern_name_key(p["name"]) == key for p in patterns)


def validate_custom_patterns(patterns: object) -> list[dict[str, Any]]:
    """Each pattern is ``{"name", "regex", "entity_type", "severity"}``; the regex must compile as RE2.

    Names are unique regardless of case; at most :data:`MAX_CUSTOM_PATTERNS` patterns, within
    :data:`CUSTOM_PATTERNS_MAX_BYTES` as sent to agents.
    """
    if not isinstance(patterns, list):
        raise ConfigError("custom_patterns must be a list")
    if len(patterns) > MAX_CUSTOM_PATTERNS:
        # Counted before anything is compiled: thousands of regexes would take seconds to refuse.
        raise ConfigError(f"at most {MAX_CUSTOM_PATTERNS} custom patterns; got {len(patterns):,}")
    cleaned = []
    seen: set[str] = set()
    for index, pattern in enumerate(patterns):
        if not isinstance(pattern, dict):
            raise ConfigError(f"custom_patterns[{index}] must be an object")
        name = pattern.get("name")
        if not isinstance(name, str) or not name.strip() or len(name.strip()) > MAX_PATTERN_NAME_CHARS:
            got = f"; got {len(name.strip()):,}" if isinstance(name, str) and name.strip() else ""
            raise ConfigError(
                f"custom_patterns[{index}].name must be 1-{MAX_PATTERN_NAME_CHARS} characters{got}"
            )
        if pattern_name_key(name) in seen:
            raise ConfigError(f"custom pattern name {name.strip()!r} is used twice")
        seen.add(pattern_name_key(name))
        regex = pattern.get("regex")
        if not isinstance(regex, str) or not regex or len(regex) > MAX_PATTERN_REGEX_CHARS:
            got = f"; got {len(regex):,}" if isinstance(regex, str) and regex else ""
            raise ConfigError(
                f"custom_patterns[{index}].regex must be 1-{MAX_PATTERN_REGEX_CHARS:,} characters{got}"
            )
        try:
            compile_pattern(regex)
        except PatternSyntaxError as error:
            raise ConfigError(
                f"custom pattern {name.strip()!r}: regex does not compile as RE2 (the linear-time engine "
                f"agents use): {error}"
            ) from None
        entity_type = pattern.get("entity_type")
        if (
            not isinstance(entity_type, str)
            or not entity_type.strip()
            or len(entity_type.strip()) > MAX_PATTERN_ENTITY_TYPE_CHARS
        ):
            raise ConfigError(
                f"custom_patterns[{index}].entity_type must be 1-{MAX_PATTERN_ENTITY_TYPE_CHARS} characters"
            )
        severity = pattern.get("severity", "amber")
        if severity not in RISK_LEVELS:
            raise ConfigError(f"custom_patterns[{index}].severity must be one of {', '.join(RISK_LEVELS)}")
        cleaned.append(
            {"name": name.strip(), "regex": regex, "entity_type": entity_type.strip(), "severity": severity}
        )
    _within_budget(
        cleaned, field="custom patterns", budget=CUSTOM_PATTERNS_MAX_BYTES, advice="remove or shorten some"
    )
    return cleaned


@dataclass(frozen=True)
class EffectiveConfig:
    """What agents of an organisation are told, whether or not it has a config row."""

    organization_id: str
    monitored_tools: list[dict[str, Any]]
    sensitivity_thresholds: dict[str, Any]
    custom_patterns: list[dict[str, Any]]
    log_retention_days: int
    version: str
    exists: bool

    def for_agent(self) -> dict[str, Any]:
        return {
            "organization_id": self.organization_id,
            "monitored_tools": self.monitored_tools,
            "sensitivity_thresholds": self.sensitivity_thresholds,
            "custom_patterns": self.custom_patterns,
            "log_retention_days": self.log_retention_days,
            "version": self.version,
        }


def effective_config(organization_id: str, row: FirewallConfig | None) -> EffectiveConfig:
    if row is None:
        return EffectiveConfig(
            organization_id=organization_id,
            monitored_tools=default_monitored_tools(),
            sensitivity_thresholds=default_sensitivity_thresholds(),
            custom_patterns=[],
            log_retention_days=DEFAULT_RETENTION_DAYS,
            version="default",
            exists=False,
        )
    return EffectiveConfig(
        organization_id=row.organization_id,
        monitored_tools=list(row.monitored_tools or []),
        sensitivity_thresholds=dict(row.sensitivity_thresholds or {}),
        custom_patterns=list(row.custom_patterns or []),
        log_retention_days=row.log_retention_days,
        version=row.updated_at.isoformat(),
        exists=True,
    )


def _validate_updated_by(actor: Actor) -> str:
    """The actor's name for ``updated_by``; ConfigError if it does not fit the column."""
    if problem := length_problem(FirewallConfig.updated_by, actor.name):
        raise ConfigError(problem)
    return actor.name


async def get_config(
    *, session: AsyncSession, organization_id: str, for_update: bool = False
) -> FirewallConfig | None:
    """The organisation's config row, whatever the case of ``organization_id``, or None if it has none.

    ``for_update`` reads the row as it is now and, on PostgreSQL, locks it until the transaction
    ends (on SQLite the caller holds the write lock already: :func:`db.rights.require_admin`).
    """
    if not organization_id.isascii():
        # Ids are ASCII; lowering other text could fold it onto one (the Kelvin sign lowers to "k").
        return None
    statement = select(FirewallConfig).where(
        func.lower(FirewallConfig.organization_id) == organization_id.lower()
    )
    if for_update:
        if session.get_bind().dialect.name == "postgresql":
            statement = statement.with_for_update()
        statement = statement.execution_options(populate_existing=True)
    return await session.scalar(statement)


async def list_configs(*, session: AsyncSession) -> Sequence[FirewallConfig]:
    return (await session.scalars(select(FirewallConfig).order_by(FirewallConfig.organization_id))).all()


async def create_organization(
    *,
    session: AsyncSession,
    organization_id: str,
    actor: Actor,
    log_retention_days: int = DEFAULT_RETENTION_DAYS,
) -> FirewallConfig:
    """Create an organisation's config and its default alert rules on behalf of ``actor``, audited.

    Raises NotAllowed unless the actor is an administrator now; ConfigError if the
    organisation exists (in any case) or a value is invalid.
    """
    organization_id = validate_organization_id(organization_id)
    updated_by = _validate_updated_by(actor)
    await require_admin(session=session, actor=actor, what="create organisations")
    existing = await get_config(session=session, organization_id=organization_id)
    if existing is not None:
        spelled = "" if existing.organization_id == organization_id else f" as {existing.organization_id!r}"
        raise ConfigError(f"organisation {organization_id!r} already exists{spelled}")
    row = FirewallConfig(
        organization_id=organization_id,
        monitored_tools=default_monitored_tools(),
        sensitivity_thresholds=default_sensitivity_thresholds(),
        custom_patterns=[],
        log_retention_days=validate_retention_days(log_retention_days),
        updated_at=utcnow(),
        updated_by=updated_by,
    )
    session.add(row)
    await session.flush()
    rules = await create_default_rules(session=session, organization_id=row.organization_id)
    await record_change(
        session=session,
        actor=actor,
        action="organization.create",
        entity_type="organization",
        entity_id=row.organization_id,
        changes={
            "log_retention_days": {"after": row.log_retention_days},
            "alert_rules": {"after": [rule.name for rule in rules]},
        },
    )
    return row


async def update_config(
    *,
    session: AsyncSession,
    organization_id: str,
    actor: Actor,
    monitored_tools: object | None = None,
    sensitivity_thresholds: object | None = None,
    custom_patterns: object | None = None,
    log_retention_days: object | None = None,
    edits: Mapping[str, Callable[[Any], object]] | None = None,
) -> tuple[FirewallConfig, dict[str, dict[str, Any]]]:
    """Validate and apply the given fields on behalf of ``actor``; return the row and what changed.

    ``edits`` maps a field to a function of its current value giving the new one, applied
    to the row as read here, locked: two administrators editing different entries of a
    list (a tool each) serialise instead of one undoing the other. A change is audited
    (``config.update``). Raises NotAllowed unless the actor is an administrator now;
    ConfigError if a value is invalid or the organisation does not exist.
    """
    updated_by = _validate_updated_by(actor)
    await require_admin(session=session, actor=actor, what="change the configuration")
    row = await get_config(session=session, organization_id=organization_id, for_update=True)
    if row is None:
        raise ConfigError(f"organisation {organization_id!r} does not exist")
    values: dict[str, object | None] = {
        "monitored_tools": monitored_tools,
        "sensitivity_thresholds": sensitivity_thresholds,
        "custom_patterns": custom_patterns,
        "log_retention_days": log_retention_days,
    }
    for name, edit in (edits or {}).items():
        if name not in values:
            raise ConfigError(f"{name!r} is not a configuration field")
        values[name] = edit(getattr(row, name))
    validators: dict[str, Callable[[Any], Any]] = {
        "monitored_tools": validate_monitored_tools,
        "sensitivity_thresholds": validate_sensitivity_thresholds,
        "custom_patterns": validate_custom_patterns,
        "log_retention_days": validate_retention_days,
    }
    new_values = {name: validators[name](value) for name, value in values.items() if value is not None}
    changes = apply_changes(row, new_values)
    if changes:
        row.updated_at = utcnow()
        row.updated_by = updated_by
        await session.flush()
        await record_change(
            session=session,
            actor=actor,
            action="config.update",
            entity_type="config",
            entity_id=row.organization_id,
            changes=changes,
        )
    return row, changes
