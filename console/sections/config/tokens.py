"""The Tokens tab of the Config section: the organisation's ingest tokens — create (shown once), revoke."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from textual import work

from console.dialogs.config_forms import TokenFormScreen, TokenShownScreen
from console.dialogs.confirm import confirm_then
from console.sections.config.pane import ConfigHost, TablePane
from console.untrusted import plain
from console.widgets.keyed_table import TableColumn
from console.widgets.time_format import when
from db.tokens import TokenError, revoke_token

if TYPE_CHECKING:
    from db.models import FirewallConfig, IngestToken


class TokensPane(TablePane[None]):
    """Tokens agents say hello with; only their hash is stored, so a new one is shown once."""

    NAME = "tokens"
    TITLE = "Tokens"
    HINT = "a create (shown once) · del revoke"
    COLUMNS = (
        TableColumn("Prefix"),
        TableColumn("Name", stretch=True),
        TableColumn("Created"),
        TableColumn("By"),
        TableColumn("Last used"),
        TableColumn("State"),
    )

    def __init__(self, host: ConfigHost) -> None:
        super().__init__(host)
        self.tokens: dict[str, IngestToken] = {}

    def read(self, row: FirewallConfig) -> None:
        """Tokens are not part of the configuration row: the section reads them with it
        (:meth:`show_tokens`)."""

    def show_tokens(self, tokens: Sequence[IngestToken]) -> None:
        self.tokens = {str(token.id): token for token in tokens}
        self.table.show(
            (
                (
                    str(token.id),
                    (
                        plain(token.token_prefix + "…"),
                        plain(token.name),
                        when(token.created_at, missing="never"),
                        plain(token.created_by or ""),
                        when(token.last_used_at, missing="never"),
                        f"[b]revoked[/b] {when(token.revoked_at)}" if token.revoked_at else "active",
                    ),
                )
                for token in tokens
            ),
            keep="top",
        )

    def clear(self) -> None:
        self.show_tokens([])

    def add_entry(self) -> None:
        """Create a token (a form), then show it once."""
        if not self.host.ready("create ingest tokens"):
            return
        assert self.host.organization_id is not None
        organization_id = self.host.organization_id

        def created(result: tuple[str, str] | None) -> None:
            if result is not None:
                self.host.load_config()
                self.app.push_screen(TokenShownScreen(organization_id, result[1]))

        self.app.push_screen(TokenFormScreen(self.host.context, organization_id), created)

    def remove_entry(self) -> None:
        """Revoke the selected token (confirmed): agents using it are refused from their next hello."""
        token_id = self.selected_entry("revoke ingest tokens")
        if token_id is None:
            return
        token = self.tokens[token_id]
        if token.revoked_at is not None:
            self.host.context.notify("That token is already revoked.")
            return
        confirm_then(
            self.app,
            f"Revoke the token {token.token_prefix}… ({token.name or 'unnamed'})? "
            "Agents using it are refused from their next hello.",
            lambda: self.revoke(token_id),
        )

    @work(exclusive=True, group="config-change", exit_on_error=False)
    async def revoke(self, token_id: str) -> None:
        context = self.host.context
        async with context.sessions() as session:
            try:
                row = await revoke_token(session=session, token_id=uuid.UUID(token_id), actor=context.actor)
            except TokenError as error:
                context.notify(str(error), severity="error", markup=False)
                return
            await session.commit()
        context.notify(f"Token {row.token_prefix}… revoked.")
        self.host.load_config()
