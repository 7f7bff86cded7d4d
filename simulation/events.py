"""A realistic event generator: popular tools, mostly green, some amber, few red, fitting entity types.

Deterministic for a seed; never any prompt content. The fleet, the tests and the benchmark use it.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime
from typing import Any

from db.base import utcnow
from db.vocabulary import DEFAULT_MONITORED_TOOLS, DEVICE_TYPES
from ingest.client import AgentIdentity

#: Which tool types an agent of each device type watches.
TOOL_TYPE_OF_DEVICE = {"browser": "web", "desktop": "desktop", "cli": "cli"}
#: Relative popularity of the well-known tools (others weigh 1).
TOOL_WEIGHTS = {
    "ChatGPT": 10,
    "Claude": 6,
    "Microsoft Copilot": 5,
    "Gemini": 4,
    "GitHub Copilot": 6,
    "Cursor": 4,
}
RISK_WEIGHTS = {"green": 80, "amber": 15, "red": 5}
AMBER_ENTITY_TYPES = ("EMAIL", "PHONE", "PERSON", "ADDRESS", "IP_ADDRESS", "IBAN", "DATE_OF_BIRTH")
RED_ENTITY_TYPES = ("API_KEY", "PASSWORD", "PRIVATE_KEY", "CREDIT_CARD", "SSN")
SANITISED_SHARE = {"green": 0.0, "amber": 0.6, "red": 0.85}
OPERATING_SYSTEMS = ("macOS 15", "Windows 11", "Ubuntu 24.04", "Fedora 41")
BROWSERS = ("Chrome 131", "Firefox 133", "Edge 131", "Safari 18")
SHELLS = ("bash", "zsh", "fish", "pwsh")


class EventGenerator:
    """Realistic log events: popular tools, mostly green, some amber, few red, fitting entity types.

    Deterministic for a given ``seed``. Never generates any prompt content.
    """

    def __init__(self, *, seed: int | None = None, risk_weights: dict[str, int] | None = None) -> None:
        self._random = random.Random(seed)
        weights = risk_weights or RISK_WEIGHTS
        self._risks = list(weights)
        self._risk_weights = [weights[name] for name in self._risks]
        self._tools: dict[str, list[str]] = {}
        self._tool_weights: dict[str, list[int]] = {}
        for name, tool_type in DEFAULT_MONITORED_TOOLS:
            self._tools.setdefault(tool_type, []).append(name)
            self._tool_weights.setdefault(tool_type, []).append(TOOL_WEIGHTS.get(name, 1))

    def event_id(self) -> str:
        return str(uuid.UUID(int=self._random.getrandbits(128), version=4))

    def event(
        self,
        *,
        device_type: str = "browser",
        timestamp: datetime | None = None,
        user_id: str | None = None,
        risk_level: str | None = None,
    ) -> dict[str, Any]:
        """One ``log`` message, ready to send (``user_id`` only if given: it defaults to the hello's);
        ``risk_level`` forces the risk (a red burst), otherwise it is drawn."""
        rnd = self._random
        tool_type = TOOL_TYPE_OF_DEVICE.get(device_type, "web")
        tool = rnd.choices(self._tools[tool_type], self._tool_weights[tool_type])[0]
        risk = rnd.choices(self._risks, self._risk_weights)[0]
        if risk_level is not None:
            risk = risk_level
        if risk == "green":
            types: list[str] = []
        elif risk == "amber":
            types = rnd.sample(AMBER_ENTITY_TYPES, rnd.randint(1, 3))
        else:
            types = rnd.sample(RED_ENTITY_TYPES, rnd.randint(1, 2)) + rnd.sample(
                AMBER_ENTITY_TYPES, rnd.randint(0, 2)
            )
        entity_count = len(types) + (rnd.randint(0, 4) if types else 0)
        event: dict[str, Any] = {
            "type": "log",
            "id": self.event_id(),
            "timestamp": (timestamp or utcnow()).isoformat().replace("+00:00", "Z"),
            "tool_name": tool,
            "tool_type": tool_type,
            "risk_level": risk,
            "prompt_length": max(1, int(rnd.lognormvariate(6.0, 1.0))),
            "detected_entity_types": types,
            "entity_count": entity_count,
            "was_sanitized": rnd.random() < SANITISED_SHARE[risk],
            "log_metadata": self._metadata(tool_type),
        }
        if user_id is not None:
            event["user_id"] = user_id
        return event

    def _metadata(self, tool_type: str) -> dict[str, Any]:
        rnd = self._random
        metadata: dict[str, Any] = {"os": rnd.choice(OPERATING_SYSTEMS)}
        if tool_type == "web":
            metadata["browser"] = rnd.choice(BROWSERS)
        elif tool_type == "cli":
            metadata["shell"] = rnd.choice(SHELLS)
        else:
            metadata["app_version"] = f"{rnd.randint(1, 3)}.{rnd.randint(0, 20)}"
        return metadata

    def identity(
        self, organization_id: str, token: str, index: int, *, domain: str | None = None
    ) -> AgentIdentity:
        """A plausible agent identity number ``index`` of an organisation."""
        device_type = DEVICE_TYPES[index % len(DEVICE_TYPES)]
        return AgentIdentity(
            organization_id=organization_id,
            token=token,
            device_id=f"sim-{organization_id}-{index:04d}",
            user_id=f"user{index % 97:02d}@{domain or organization_id + '.example'}",
            device_type=device_type,
        )
