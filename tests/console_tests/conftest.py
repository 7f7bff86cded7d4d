"""Fixtures of the console tests; the helpers they use are in :mod:`tests.support.console`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from console.app import FirewallConsole
from db.settings import Settings


@pytest.fixture
def app_factory(settings: Settings) -> Callable[..., FirewallConsole]:
    """Builds the console on the test database, with any settings overridden."""

    def build(**overrides: Any) -> FirewallConsole:
        return FirewallConsole(replace(settings, **overrides) if overrides else settings)

    return build
