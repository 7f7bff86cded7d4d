"""The Retention tab of the Config section: how many days the organisation's logs are kept."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Static

from console.sections.config.pane import CHANGE_CONFIGURATION, ConfigHost, ConfigPane, form_field
from db.vocabulary import MAX_RETENTION_DAYS, MIN_RETENTION_DAYS

if TYPE_CHECKING:
    from db.models import FirewallConfig

FIELD = "log_retention_days"


class RetentionPane(ConfigPane[str]):
    """One number, saved as one audited edit of ``log_retention_days`` (``db/`` checks its range)."""

    def __init__(self, host: ConfigHost) -> None:
        super().__init__("Retention", host, id="pane-retention")

    def compose(self) -> ComposeResult:
        with Vertical(classes="compact-form"):
            yield Static(
                f"Logs older than this many days are deleted by the cleanup "
                f"({MIN_RETENTION_DAYS}–{MAX_RETENTION_DAYS}).",
                classes="admin-hint",
            )
            yield from form_field("Days", Input(id=FIELD))
            with Horizontal(classes="buttons"):
                yield Button("Save retention", variant="primary", id="save-retention")

    def read(self, row: FirewallConfig) -> str:
        return str(int(row.log_retention_days))

    def fill(self, shown: str) -> None:
        self.query_one(f"#{FIELD}", Input).value = shown

    def clear(self) -> None:
        self.fill("")

    def allow_saving(self, allowed: bool) -> None:
        self.query_one("#save-retention", Button).disabled = not allowed
        self.query_one(f"#{FIELD}", Input).disabled = not allowed

    @on(Button.Pressed, "#save-retention")
    @on(Input.Submitted, f"#{FIELD}")
    def save(self) -> None:
        if not self.host.ready(CHANGE_CONFIGURATION):
            return
        text = self.query_one(f"#{FIELD}", Input).value.strip()
        self.host.change_field(FIELD, lambda _: text, fields=(FIELD,))
