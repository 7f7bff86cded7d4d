"""Messages the console's screens, sections and dialogs post to the app, and the mixin that posts failures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message
from textual.message_pump import MessagePump
from textual.worker import Worker, WorkerState

if TYPE_CHECKING:
    from db.logs import LogFilter


@dataclass
class WorkerFailed(Message):
    """A worker raised: the app shows a lost database as a banner, anything else as a notification."""

    error: BaseException
    worker_name: str = ""


@dataclass
class DatabaseReachable(Message):
    """The database answered again after a failure (the shell hides its banner and reloads)."""


@dataclass
class ShowLogs(Message):
    """A section asks the shell to show Logs under ``filters`` (a device's events, an alert's events)."""

    filters: LogFilter


class ForwardsWorkerFailures(MessagePump):
    """Mixin of every section, screen and dialog that runs workers: a failed worker goes to the app.

    Workers do not catch database errors; the app decides what a failure means (banner,
    sign-out, notification). :meth:`worker_failed` lets the widget say something of its own first.
    """

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.worker_failed(event.worker.error)
            self.app.post_message(WorkerFailed(event.worker.error, event.worker.name))

    def worker_failed(self, error: BaseException) -> None:
        """What this widget shows of a failure before the app handles it (nothing by default)."""
