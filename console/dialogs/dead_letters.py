"""The dead letters of one forwarding destination (modal): messages its receiver refused on their own
(a HEC 400, a 413 for one event), with the receiver's reason — retry or discard, confirmed.

Retrying marks the letters for the destination's forwarder, which sends them again; discarding
deletes them for good. Both are admin-only (checked again in :mod:`db.destinations`, which audits
them). The receiver's reasons are untrusted text.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from console.context import ConsoleContext
from console.dialogs.admin_form import form_title
from console.dialogs.confirm import confirm_then
from console.messages import ForwardsWorkerFailures
from console.untrusted import plain
from console.widgets.keyed_table import KeyedTable, TableColumn
from console.widgets.time_format import when
from db.destinations import discard_dead_letters, list_dead_letters, retry_dead_letters
from db.models import DeadLetter

COLUMNS = (
    TableColumn("Refused"),
    TableColumn("Stream"),
    TableColumn("Item"),
    TableColumn("Rev"),
    TableColumn("Tries"),
    TableColumn("Retry"),
    TableColumn("Error", stretch=True),
)
ADMIN_ACTIONS = ("retry_selected", "retry_all", "discard_selected", "discard_all")


class DeadLettersScreen(ForwardsWorkerFailures, ModalScreen[None]):
    """One destination's dead letters, newest first."""

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("r", "retry_selected", "Retry"),
        Binding("R", "retry_all", "Retry all"),
        Binding("delete", "discard_selected", "Discard"),
        Binding("X", "discard_all", "Discard all"),
    ]

    def __init__(self, context: ConsoleContext, destination_id: uuid.UUID, name: str) -> None:
        super().__init__()
        self.context = context
        self.destination_id = destination_id
        self.destination_name = name
        self.letters: dict[str, DeadLetter] = {}

    def compose(self) -> ComposeResult:
        keys = "r retry · R retry all · del discard · X discard all · " if self.context.user.is_admin else ""
        with Vertical(id="dead-letters", classes="dialog"):
            yield Label(form_title(f"Dead letters of {self.destination_name}", f"{keys}escape close"))
            yield KeyedTable(*COLUMNS, id="dead-letters-table")
            yield Static("", id="dead-letter-error", classes="admin-detail-line")

    def on_mount(self) -> None:
        self.query_one(KeyedTable).focus()
        self.load()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ADMIN_ACTIONS and not self.context.user.is_admin:
            return False
        return True

    @work(exclusive=True, group="dead-letters-load", exit_on_error=False)
    async def load(self) -> None:
        async with self.context.sessions() as session:
            rows = await list_dead_letters(session=session, destination_id=self.destination_id)
        self.show(rows)

    def show(self, rows: Sequence[DeadLetter]) -> None:
        self.letters = {str(letter.id): letter for letter in rows}
        self.query_one(KeyedTable).show(
            (
                (
                    str(letter.id),
                    (
                        when(letter.created_at, precision="second"),
                        plain(letter.stream),
                        plain(letter.item_id),
                        "" if letter.revision is None else str(letter.revision),
                        str(letter.attempts),
                        "asked" if letter.retry_requested else "",
                        plain(" ".join(letter.error.split())),
                    ),
                )
                for letter in rows
            ),
            keep="row",
        )
        self._show_error()

    def on_data_table_row_highlighted(self) -> None:
        self._show_error()

    def _show_error(self) -> None:
        key = self.query_one(KeyedTable).selected_key
        letter = self.letters.get(key) if key is not None else None
        line = self.query_one("#dead-letter-error", Static)
        if letter is None:
            line.update("No dead letters: every message this destination refused was retried or discarded.")
        else:
            line.update(plain(letter.error))

    def _selected_ids(self, every: bool) -> list[uuid.UUID]:
        if every:
            return [letter.id for letter in self.letters.values()]
        key = self.query_one(KeyedTable).selected_key
        return [self.letters[key].id] if key is not None and key in self.letters else []

    def _ask(self, verb: str, every: bool) -> None:
        if not self.context.require_admin(f"{verb} dead letters"):
            return
        ids = self._selected_ids(every)
        if not ids:
            self.context.notify("No dead letter selected.", severity="warning")
            return
        what = f"all {len(ids)} dead letters" if every else "the selected dead letter"
        if verb == "retry":
            question = f"Send {what} of {self.destination_name!r} again?"
        else:
            question = f"Discard {what} of {self.destination_name!r} for good? They are not sent."
        confirm_then(self.app, question, lambda: self.change(verb, ids))

    def action_retry_selected(self) -> None:
        self._ask("retry", every=False)

    def action_retry_all(self) -> None:
        self._ask("retry", every=True)

    def action_discard_selected(self) -> None:
        self._ask("discard", every=False)

    def action_discard_all(self) -> None:
        self._ask("discard", every=True)

    @work(exclusive=True, group="dead-letters-change", exit_on_error=False)
    async def change(self, verb: str, ids: list[uuid.UUID]) -> None:
        async with self.context.sessions() as session:
            if verb == "retry":
                count = await retry_dead_letters(session=session, ids=ids, actor=self.context.actor)
            else:
                count = await discard_dead_letters(session=session, ids=ids, actor=self.context.actor)
            await session.commit()
        done = "marked to be sent again" if verb == "retry" else "discarded"
        self.context.notify(f"{count} dead letter(s) {done}.")
        self.load()

    def action_close(self) -> None:
        self.dismiss(None)
