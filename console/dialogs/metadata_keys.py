"""The organisation's extra ``log_metadata`` keys: the list (a modal over the Config section) and the form
that allows one more.

Agents may send the standard keys (db/metadata_keys.py) and the keys listed
here, each with its declared shape. Vetting (canonical spelling, not named for
content, a shape of number, boolean, enum or token) and the audit rows live in
:mod:`db.metadata_keys`; this module only shows and asks. Keys, values and
actors come from the database, so they reach the screen as plain text.
"""

from __future__ import annotations

from collections.abc import Sequence

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Select, Static

from console.context import ConsoleContext
from console.dialogs.admin_form import AdminForm, form_title
from console.dialogs.confirm import confirm_then
from console.dialogs.dialog import Dialog
from console.messages import ForwardsWorkerFailures
from console.untrusted import plain
from console.widgets.keyed_table import KeyedTable, TableColumn
from console.widgets.time_format import when
from db.metadata_keys import (
    ADMIN_SHAPES,
    STANDARD_KEYS,
    MetadataKeyError,
    allow_key,
    list_keys,
    remove_key,
    vet_key,
)
from db.models import OrganizationMetadataKey

KEY_FIELDS = ("values", "shape", "key")
SHAPE_HELP = (
    "number: a number · boolean: true/false · enum: one of the values listed (comma-separated tokens) · "
    "token: at most 64 of A-Z a-z 0-9 . _ -"
)
COLUMNS = (
    TableColumn("Key"),
    TableColumn("Shape"),
    TableColumn("Values", stretch=True),
    TableColumn("Added by"),
    TableColumn("Added"),
)


class MetadataKeysScreen(ForwardsWorkerFailures, Dialog[None]):
    """The keys an organisation added to the standard ones; ``a`` adds one, ``delete`` removes one."""

    DEFAULT_CSS = """
    #metadata-keys-dialog { width: 100; height: 80%; }
    #metadata-keys-table { height: 1fr; }
    """
    BINDINGS = [
        Binding("a", "add", "Add"),
        Binding("delete", "remove_key", "Remove"),
    ]
    HELP = (
        "The `log_metadata` keys this organisation's agents may send besides the standard ones. "
        "`a` allows one more (administrators), `del` removes the selected one, Esc closes."
    )
    HELP_TITLE = "metadata keys"

    def __init__(self, context: ConsoleContext, organization_id: str) -> None:
        super().__init__()
        self.context = context
        self.organization_id = organization_id
        self.add_class("admin-form")

    def compose(self) -> ComposeResult:
        with Vertical(id="metadata-keys-dialog", classes="dialog"):
            keys = "a add · del remove · escape close" if self.context.user.is_admin else "escape close"
            yield Label(form_title(f"Metadata keys of {self.organization_id}", keys))
            yield Static(
                plain(
                    "Standard keys, always accepted: " + ", ".join(STANDARD_KEYS) + ". Agents get the list "
                    "in welcome and config; anything else in log_metadata is refused."
                ),
                classes="admin-hint",
            )
            yield KeyedTable(*COLUMNS, id="metadata-keys-table")
            with Horizontal(classes="buttons"):
                yield Button("Add (a)", variant="primary", id="metadata-keys-add")
                yield Button("Close", id="metadata-keys-close")

    def on_mount(self) -> None:
        self.load()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Viewers see only what they can do: adding and removing keys are an administrator's.
        if action in ("add", "remove_key") and not self.context.user.is_admin:
            return False
        return super().check_action(action, parameters)

    @work(exclusive=True, group="metadata-keys-load", exit_on_error=False)
    async def load(self) -> None:
        async with self.context.sessions() as session:
            rows = await list_keys(session=session, organization_id=self.organization_id)
        self.show_keys(rows)

    def show_keys(self, rows: Sequence[OrganizationMetadataKey]) -> None:
        table = self.query_one("#metadata-keys-table", KeyedTable)
        table.show(
            (
                (
                    row.key,
                    (
                        plain(row.key),
                        plain(row.shape),
                        plain(", ".join(row.enum_values or [])),
                        plain(row.created_by or "—"),
                        when(row.created_at),
                    ),
                )
                for row in rows
            ),
            keep="top",
        )

    @on(Button.Pressed, "#metadata-keys-add")
    def action_add(self) -> None:
        if self.context.require_admin("allow metadata keys"):
            self.app.push_screen(MetadataKeyFormScreen(self.context, self.organization_id), self._added)

    def _added(self, key: str | None) -> None:
        if key:
            self.load()

    def action_remove_key(self) -> None:
        key = self.query_one("#metadata-keys-table", KeyedTable).selected_key
        if key is None or not self.context.require_admin("remove metadata keys"):
            return
        confirm_then(
            self.app,
            f"Stop accepting the metadata key {key!r} in {self.organization_id}'s events? "
            "Agents sending it get invalid_event from their next config.",
            lambda: self.forget(key),
        )

    @work(exclusive=True, group="metadata-keys-change", exit_on_error=False)
    async def forget(self, key: str) -> None:
        async with self.context.sessions() as session:
            removed = await remove_key(
                session=session, organization_id=self.organization_id, key=key, actor=self.context.actor
            )
            await session.commit()
        self.context.notify(
            f"Metadata key {key!r} removed." if removed else f"{key!r} was already gone.", markup=False
        )
        self.load()

    @on(Button.Pressed, "#metadata-keys-close")
    def action_close(self) -> None:
        self.dismiss(None)


class MetadataKeyFormScreen(AdminForm[str | None]):
    """Allow one more metadata key for an organisation, with its shape; returns the key once saved."""

    FIELDS = KEY_FIELDS

    def __init__(self, context: ConsoleContext, organization_id: str) -> None:
        super().__init__(context)
        self.organization_id = organization_id

    def compose(self) -> ComposeResult:
        with Vertical(id="metadata-key-form", classes="dialog"):
            yield Label(
                form_title(f"Allow a metadata key in {self.organization_id}", "ctrl+s save · escape cancel")
            )
            yield Static(SHAPE_HELP, classes="admin-hint", markup=False)
            yield from self.field_row(
                "Key", "key", Input(id="key", placeholder="e.g. team (lower-case snake case)")
            )
            yield from self.field_row(
                "Shape",
                "shape",
                Select(
                    [(shape, shape) for shape in ADMIN_SHAPES], value="token", allow_blank=False, id="shape"
                ),
            )
            yield from self.field_row(
                "Values", "values", Input(id="values", placeholder="enum only: red, blue")
            )
            yield from self.form_buttons("Allow")

    def action_submit(self) -> None:
        key = self.query_one("#key", Input).value.strip()
        shape = str(self.query_one("#shape", Select).value)
        values = self.query_one("#values", Input).value.strip() or None
        try:
            vet_key(key, shape, values)
        except MetadataKeyError as error:
            self.show_errors({_error_field(str(error)): str(error)})
            return
        if self.context.require_admin("allow metadata keys"):
            self.save(key, shape, values)

    @work(exclusive=True, group="metadata-key-form", exit_on_error=False)
    async def save(self, key: str, shape: str, values: str | None) -> None:
        async with self.context.sessions() as session:
            try:
                await allow_key(
                    session=session,
                    organization_id=self.organization_id,
                    key=key,
                    shape=shape,
                    values=values,
                    actor=self.context.actor,
                )
            except MetadataKeyError as error:
                self.show_errors({_error_field(str(error)): str(error)})
                return
            await session.commit()
        self.dismiss(key)


def _error_field(message: str) -> str:
    """The field a MetadataKeyError is about: values and shape are named in their messages, the rest is the
    key."""
    if "enum" in message or "values" in message:
        return "values"
    if message.startswith("shape"):
        return "shape"
    return "key"
