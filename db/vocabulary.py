"""The fixed vocabulary of the product, defined once: risk levels, tool and device
types, retention bounds, the default organisation and the well-known AI tools.

The ingest validator, the console's choices, the database check constraints and
the tests all import these names rather than repeating the values.
"""

from __future__ import annotations

from typing import Final

RISK_LEVELS: Final = ("green", "amber", "red")
TOOL_TYPES: Final = ("web", "desktop", "cli")
DEVICE_TYPES: Final = ("browser", "desktop", "cli")

DEFAULT_ORGANIZATION_ID: Final = "default"

MIN_RETENTION_DAYS: Final = 30
MAX_RETENTION_DAYS: Final = 365
DEFAULT_RETENTION_DAYS: Final = 90

#: Where a run of the retention cleanup came from.
RETENTION_TRIGGERS: Final = ("scheduler", "console", "cli")

#: Tools an organisation monitors until it says otherwise.
DEFAULT_MONITORED_TOOLS: Final = (
    ("ChatGPT", "web"),
    ("Claude", "web"),
    ("Gemini", "web"),
    ("Microsoft Copilot", "web"),
    ("Perplexity", "web"),
    ("Mistral Le Chat", "web"),
    ("DeepSeek", "web"),
    ("GitHub Copilot", "desktop"),
    ("Cursor", "desktop"),
    ("ChatGPT Desktop", "desktop"),
    ("Claude Code", "cli"),
    ("Codex CLI", "cli"),
    ("Gemini CLI", "cli"),
    ("Aider", "cli"),
)

#: Shape of ``sensitivity_thresholds``: how many detected entities make an event
#: amber or red, and entity types that make an event red on their own.
DEFAULT_SENSITIVITY_THRESHOLDS: Final = {
    "amber_min_entities": 1,
    "red_min_entities": 5,
    "red_entity_types": ["API_KEY", "PASSWORD", "PRIVATE_KEY", "CREDIT_CARD", "SSN"],
}
