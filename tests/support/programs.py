"""Outside programs the tests run for real (rsyslogd, haproxy): finding them, requiring them, free ports."""

from __future__ import annotations

import os
import shutil
import socket

import pytest


def program_path(name: str) -> str | None:
    """The program on the PATH (or in /usr/sbin, /sbin, where daemons live), or None."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def required_by(variable: str) -> bool:
    """True when ``variable`` is set true (CI): a missing program then fails the test, not skips it."""
    return os.environ.get(variable, "").lower() in {"1", "true", "yes"}


def require_program(name: str, *, required_variable: str, skip_reason: str) -> str:
    """The program's path; skip the test without it (``skip_reason``), or fail when it is required."""
    path = program_path(name)
    if path is None:
        if required_by(required_variable):
            pytest.fail(f"{name} is required ({required_variable}=1) and not installed")
        pytest.skip(skip_reason)
    return path


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free right now on 127.0.0.1 (the kernel picks; each xdist worker asks on its own)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
