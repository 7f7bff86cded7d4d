"""The dead letters of one forwarding destination (a dialog): messages its receiver refused on their own
(a HEC 400, a 413 for one event), with the receiver's reason — retry or discard, confirmed.

Retrying marks the letters for the destination's forwarder, which sends them again; discarding
deletes them for good. Both are admin-only (checked again in :mod:`db.destinations`, which audits
them); a viewer is shown neither key. What cannot be done is said before anything is asked (a
letter already marked to be sent again). The receiver's reasons are untrusted text.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.widgets import DataTable, Label, Static

from console.context import ConsoleContext
from console.dialogs.confirm import confirm_then
from console.dialogs.dialog import Dialog
from console.messages import ForwardsWorkerFailures
from console.untrusted import plain
from console.widgets.keyed_table import KeyedTable, TableColumn
from console.widgets.time_format import when
from db.destinations import discard_dead_letters, list_dead_letters, retry_dead_letters
from db.models import DeadLetter
from db.wording import counted

COLUMNS = (
    TableColumn("Refused (UTC)", width=11, key="refused"),
    TableColumn("Stream", key="stream"),
    TableColumn("Item", width=8, key="item"),
    TableColumn("Rev", key="revision"),
    TableColumn("Tries", key="tries"),
    TableColumn("Retry", key="retry"),
    TableColumn("Error", width=10, stretch=True, key="error"),
)
ADMIN_ACTIONS = frozenset({"retry_selected", "retry_all", "discard_selected", "discard_all"})
#: The keys line under the title, for administrators and for viewers.
ADMIN_KEYS = "r retry · R retry all · del discard · X discard all · ? help · esc close"
VIEWER_KEYS = "↑/↓ choose a letter · y copy a cell · ? help · esc close"


class DeadLettersScreen(ForwardsWorkerFailures, Dialog[None]):
    """One destination's dead letters, newest first."""

    HELP = """\
Messages this destination's receiver refused one by one (a Splunk HEC 400 for a malformed event, a
413 for an event too large), newest first, with the receiver's reason below the list. The rest of
the stream went on: a dead letter holds nothing back.

Administrators: `r` marks the selected letter to be **sent again** by the destination's forwarder
(`R`: every letter listed), `del` **discards** it for good (`X`: every letter listed); both are
asked first and audited. *Retry* says "asked" for a letter waiting to be sent again.
"""
    HELP_TITLE = "Dead letters"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close_dialog", "Close"),
        Binding("r", "retry_selected", "Retry"),
        Binding("R", "retry_all", "Retry all"),
        Binding("delete", "discard_selected", "Discard"),
        Binding("X", "discard_all", "Discard all"),
        # A modal screen does not see the app's keys: ? is bound here to the app's help.
        Binding("question_mark", "app.help", "Help: these keys", show=False),
    ]

    def __init__(self, context: ConsoleContext, destination_id: uuid.UUID, name: str) -> None:
        super().__init__()
        self.context = context
        self.destination_id = destination_id
        self.destination_name = name
        self.letters: dict[str, DeadLetter] = {}

    def compose(self) -> ComposeResult:
        keys = ADMIN_KEYS if self.context.user.is_admin else VIEWER_KEYS
        with Vertical(id="dead-letters", classes="dialog"):
            yield Label(
                Text.assemble("Dead letters of ", plain(self.destination_name, "bold")),
                id="dead-letters-title",
            )
            yield Static(keys, id="dead-letters-keys", markup=False)
            yield KeyedTable(*COLUMNS, id="dead-letters-table")
            with VerticalScroll(id="dead-letter-reason"):
                yield Static("", id="dead-letter-error")

    def on_mount(self) -> None:
        self.load()

    @property
    def table(self) -> KeyedTable:
        return self.query_one("#dead-letters-table", KeyedTable)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Viewers see only what they can do: the keys that change letters are neither shown nor run.
        if action in ADMIN_ACTIONS and not self.context.user.is_admin:
            return False
        return super().check_action(action, parameters)

    @work(exclusive=True, group="dead-letters-load", exit_on_error=False)
    async def load(self) -> None:
        async with self.context.sessions() as session:
            rows = await list_dead_letters(session=session, destination_id=self.destination_id)
        self.show(rows)

    def show(self, rows: Sequence[DeadLetter]) -> None:
        self.letters = {str(letter.id): letter for letter in rows}
        self.table.show(
            (
                (
                    str(letter.id),
                    (
                        when(letter.created_at, precision="second")[5:],
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

    @on(DataTable.RowHighlighted, "#dead-letters-table")
    def _highlighted(self) -> None:
        self._show_error()

    def _show_error(self) -> None:
        key = self.table.selected_key
        letter = self.letters.get(key) if key is not None else None
        line = self.query_one("#dead-letter-error", Static)
        if letter is None:
            line.update("No dead letters: every message this destination refused was retried or discarded.")
        else:
            line.update(Text.assemble(("Refused: ", "bold"), plain(letter.error)))

    def _chosen(self, every: bool) -> list[DeadLetter]:
        if every:
            return list(self.letters.values())
        key = self.table.selected_key
        return [self.letters[key]] if key is not None and key in self.letters else []

    def _ask(self, verb: str, every: bool) -> None:
        if not self.context.require_admin(f"{verb} dead letters"):
            return
        letters = self._chosen(every)
        if not letters:
            self.context.notify("There is no dead letter to " + verb + ".", severity="warning")
            return
        if verb == "retry":
            letters = [letter for letter in letters if not letter.retry_requested]
            if not letters:
                already = "Every letter listed is" if every else "That letter is"
                self.context.notify(f"{already} already waiting to be sent again.", severity="warning")
                return
        what = counted(len(letters), "dead letter") if every else "the selected dead letter"
        if verb == "retry":
            question = f"Send {what} of {self.destination_name!r} again?"
        else:
            gone = "They are" if len(letters) > 1 else "It is"
            question = f"Discard {what} of {self.destination_name!r} for good? {gone} not sent."
        ids = [letter.id for letter in letters]
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
        self.context.notify(f"{counted(count, 'dead letter')} {done}.")
        self.load()
