"""Messages the console's screens and sections post to the app."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message


@dataclass
class WorkerFailed(Message):
    """A worker raised: the app shows a lost database as a banner, anything else as a notification."""

    error: BaseException
    worker_name: str = ""


@dataclass
class DatabaseReachable(Message):
    """The database answered again after a failure (the shell hides its banner and reloads)."""
