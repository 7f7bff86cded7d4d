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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.base import utcnow
from db.field_lengths import length_problem
from db.models import FirewallConfig
from db.regex_engine import PatternSyntaxError, compile_pattern
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
    red_types: list[str] = list(DEFAULT_SENSITIVITY_THRESHOLDS["red_entity_types"])  # type: ignore[call-overload]
    return {**DEFAULT_SENSITIVITY_THRESHOLDS, "red_entity_types": red_types}


def validate_monitored_tools(tools: object) -> list[dict[str, Any]]:
    """Each tool is ``{"name": str, "tool_type": web|desktop|cli, "enabled": bool}``; names unique."""
    if not isinstance(tools, list):
        raise ConfigError("monitored_tools must be a list")
    seen: set[str] = set()
    cleaned = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise ConfigError(f"monitored_tools[{index}] must be an object")
        name = tool.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise ConfigError(f"monitored_tools[{index}].name must be 1-100 characters")
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
    if not isinstance(types, list) or not all(isinstance(t, str) and 0 < len(t) <= 64 for t in types):
        raise ConfigError("sensitivity_thresholds.red_entity_types must be a list of names up to 64 characters")
    return merged


def validate_custom_patterns(patterns: object) -> list[dict[str, Any]]:
    """Each pattern is ``{"name", "regex", "entity_type", "severity"}``; the regex must compile as RE2."""
    if not isinstance(patterns, list):
        raise ConfigError("custom_patterns must be a list")
    cleaned = []
    for index, pattern in enumerate(patterns):
        if not isinstance(pattern, dict):
            raise ConfigError(f"custom_patterns[{index}] must be an object")
        name = pattern.get("name")
        if not isinstance(name, str) or not name.strip() or len(name.strip()) > MAX_PATTERN_NAME_CHARS:
            got = f"; got {len(name.strip()):,}" if isinstance(name, str) and name.strip() else ""
            raise ConfigError(
                f"custom_patterns[{index}].name must be 1-{MAX_PATTERN_NAME_CHARS} characters{got}"
            )
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


def _validate_updated_by(updated_by: str | None) -> str | None:
    if updated_by is not None and (problem := length_problem(FirewallConfig.updated_by, updated_by)):
        raise ConfigError(problem)
    return updated_by


async def get_config(*, session: AsyncSession, organization_id: str) -> FirewallConfig | None:
    """The organisation's config row, whatever the case of ``organization_id``, or None if it has none."""
    if not organization_id.isascii():
        # Ids are ASCII; lowering other text could fold it onto one (the Kelvin sign lowers to "k").
        return None
    return await session.scalar(
        select(FirewallConfig).where(func.lower(FirewallConfig.organization_id) == organization_id.lower())
    )


async def list_configs(*, session: AsyncSession) -> Sequence[FirewallConfig]:
    return (await session.scalars(select(FirewallConfig).order_by(FirewallConfig.organization_id))).all()


async def create_organization(
    *,
    session: AsyncSession,
    organization_id: str,
    updated_by: str | None,
    log_retention_days: int = DEFAULT_RETENTION_DAYS,
) -> FirewallConfig:
    """Create an organisation's config with the defaults; ConfigError if it exists (in any case) or is invalid."""
    organization_id = validate_organization_id(organization_id)
    updated_by = _validate_updated_by(updated_by)
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
    return row


async def update_config(
    *,
    session: AsyncSession,
    organization_id: str,
    updated_by: str | None,
    monitored_tools: object | None = None,
    sensitivity_thresholds: object | None = None,
    custom_patterns: object | None = None,
    log_retention_days: object | None = None,
) -> tuple[FirewallConfig, dict[str, dict[str, Any]]]:
    """Validate and apply the given fields; return the row and the before/after of what changed."""
    row = await get_config(session=session, organization_id=organization_id)
    if row is None:
        raise ConfigError(f"organisation {organization_id!r} does not exist")
    updated_by = _validate_updated_by(updated_by)
    new_values: dict[str, Any] = {}
    if monitored_tools is not None:
        new_values["monitored_tools"] = validate_monitored_tools(monitored_tools)
    if sensitivity_thresholds is not None:
        new_values["sensitivity_thresholds"] = validate_sensitivity_thresholds(sensitivity_thresholds)
    if custom_patterns is not None:
        new_values["custom_patterns"] = validate_custom_patterns(custom_patterns)
    if log_retention_days is not None:
        new_values["log_retention_days"] = validate_retention_days(log_retention_days)
    changes = {}
    for name, value in new_values.items():
        before = getattr(row, name)
        if before != value:
            changes[name] = {"before": before, "after": value}
            setattr(row, name, value)
    if changes:
        row.updated_at = utcnow()
        row.updated_by = updated_by
        await session.flush()
    return row, changes

