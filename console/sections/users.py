"""Users section: console users — search, create, edit, activate/deactivate, reset password, delete.

Reads and writes go through :mod:`db.users`; the self and last-administrator
guards are enforced there and shown here. Every change is admin-only (checked
in ``db/`` as of now), audited there, and deletion and deactivation are confirmed first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Input, Static

from console.dialogs.confirm import confirm_then
from console.dialogs.user_forms import (
    PasswordFormScreen,
    UserFormScreen,
    admin_loss_refusal,
    still_administrator,
)
from console.sections.section import Section, SectionCommand
from console.untrusted import plain
from console.widgets.keyed_table import KeyedTable, TableColumn
from console.widgets.time_format import when
from db.models import User
from db.users import UserError, delete_user, list_users, update_user
from db.wording import counted

#: At 80 columns the date of creation and the sign-in time stay readable; wider, every value whole.
COLUMNS = (
    TableColumn("Username", width=10),
    TableColumn("Full name", width=4, stretch=True),
    TableColumn("Email", width=12, stretch=True),
    TableColumn("Role", width=6),
    TableColumn("State", width=6),
    TableColumn("Created", width=10),
    TableColumn("Last sign-in", width=16),
)


class UsersSection(Section):
    """Console users: list, create, edit, deactivate, reset passwords, change roles, delete."""

    TITLE = "Users"
    KEY = "3"
    COMMANDS = (
        SectionCommand(
            "Users: create a user", "Add a console user (administrators only)", "create_user", admin_only=True
        ),
        SectionCommand(
            "Users: edit the selected user", "Email, name, role, state", "edit_user", admin_only=True
        ),
        SectionCommand(
            "Users: activate / deactivate",
            "Switch the selected user on or off",
            "toggle_active",
            admin_only=True,
        ),
        SectionCommand(
            "Users: reset password",
            "Set a new password for the selected user",
            "reset_password",
            admin_only=True,
        ),
        SectionCommand(
            "Users: delete the selected user",
            "Remove a console user (confirmed)",
            "delete_user",
            admin_only=True,
        ),
        SectionCommand("Users: search", "Focus the search box", "focus_search"),
    )
    BINDINGS = [
        Binding("n", "create_user", "New"),
        Binding("e", "edit_user", "Edit"),
        Binding("a", "toggle_active", "(De)activate"),
        Binding("p", "reset_password", "Password"),
        Binding("delete", "delete_user", "Delete"),
        Binding("slash", "focus_search", "Search"),
        Binding("r", "reload", "Reload", show=False),
    ]
    ADMIN_ACTIONS = frozenset({"create_user", "edit_user", "toggle_active", "reset_password", "delete_user"})
    HELP = """\
The people who may sign in to this console. `/` searches usernames, emails and names (`F` on a
cell searches for its value); `s` sorts by the cursor's column. Administrators: Enter or `e`
edits the user under the cursor, `n` creates one, `a` deactivates (asked first) or activates,
`p` sets a new password, `del` deletes (asked first). Nobody can deactivate, demote or delete
themselves or the last active administrator: that is refused at once, with the reason.
"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.users: dict[str, User] = {}
        self.search = ""

    def compose(self) -> ComposeResult:
        with Horizontal(classes="admin-bar"):
            yield Input(placeholder="/ search: username, email or name", id="users-search")
            yield Static("", id="users-summary", classes="admin-summary")
        yield KeyedTable(*COLUMNS, id="users-table")

    @property
    def table(self) -> KeyedTable:
        return self.query_one("#users-table", KeyedTable)

    def focus_first(self) -> None:
        self.table.focus()

    def reload(self) -> None:
        self.load_users()

    def action_reload(self) -> None:
        self.load_users()

    def action_focus_search(self) -> None:
        self.query_one("#users-search", Input).focus()

    @on(DataTable.RowSelected, "#users-table")
    def _row_opened(self, event: DataTable.RowSelected) -> None:
        """Enter opens the user: the edit form for an administrator."""
        event.stop()
        if self.context.user.is_admin:
            self.action_edit_user()

    @on(Input.Submitted, "#users-search")
    def _search(self, event: Input.Submitted) -> None:
        self.search = event.value.strip()
        self.load_users()
        self.focus_first()

    @work(exclusive=True, group="users-load", exit_on_error=False)
    async def load_users(self, select: str | None = None) -> None:
        async with self.context.sessions() as session:
            rows = await list_users(session=session, search=self.search)
        self.show(rows, select=select)

    def show(self, rows: Sequence[User], *, select: str | None = None) -> None:
        self.users = {user.username: user for user in rows}
        self.table.show(
            (
                (
                    user.username,
                    (
                        plain(user.username),
                        plain(user.full_name or ""),
                        plain(user.email),
                        "admin" if user.is_admin else "viewer",
                        "active" if user.is_active else "[b]inactive[/b]",
                        when(user.created_at, missing="never"),
                        when(user.last_login, missing="never"),
                    ),
                )
                for user in rows
            ),
            select=select,
        )
        found = counted(len(rows), "user") + (f" matching {self.search!r}" if self.search else "")
        self.query_one("#users-summary", Static).update(plain(found))

    def _selected(self, what: str) -> User | None:
        return self.selected_row(self.table, self.users, f"a user to {what}")

    def _after_form(self, username: str | None) -> None:
        if username is not None:
            self.load_users(select=username)

    # -- actions -------------------------------------------------------------------------------

    def action_create_user(self) -> None:
        if self.context.require_admin("create users"):
            self.app.push_screen(UserFormScreen(self.context), self._after_form)

    def action_edit_user(self) -> None:
        if self.context.require_admin("change users") and (user := self._selected("edit")):
            self.app.push_screen(UserFormScreen(self.context, user), self._after_form)

    def action_reset_password(self) -> None:
        if self.context.require_admin("reset passwords") and (
            user := self._selected("reset the password of")
        ):
            self.app.push_screen(PasswordFormScreen(self.context, user.username), self._after_form)

    def action_toggle_active(self) -> None:
        if not self.context.require_admin("activate or deactivate users"):
            return
        user = self._selected("activate or deactivate")
        if user is None:
            return
        if user.is_active:
            question = f"Deactivate {user.username!r}? They can no longer sign in."
            self.refuse_or_confirm(
                user.username, "deactivate", question, lambda: self.set_active(user.username, False)
            )
        else:
            self.set_active(user.username, True)

    def action_delete_user(self) -> None:
        if not self.context.require_admin("delete users"):
            return
        user = self._selected("delete")
        if user is not None:
            question = f"Delete the user {user.username!r}? This cannot be undone."
            self.refuse_or_confirm(user.username, "delete", question, lambda: self.delete(user.username))

    @work(exclusive=True, group="users-check", exit_on_error=False)
    async def refuse_or_confirm(
        self, username: str, what: str, question: str, then: Callable[[], object]
    ) -> None:
        """Refuse at once what ``db/`` would refuse (``what`` yourself, the last administrator), with the
        reason; otherwise ask ``question`` and ``then`` act. ``db/`` still refuses on its own when acting."""
        async with self.context.sessions() as session:
            everyone = await list_users(session=session)
        if not still_administrator(everyone, self.context.user.username):
            then()  # db/ refuses it (NotAllowed): no question for a change that cannot happen
            return
        reason = admin_loss_refusal(everyone, username=username, actor=self.context.user.username, what=what)
        if reason is not None:
            self.context.notify(reason, severity="error", markup=False)
            return
        confirm_then(self.app, question, then)

    @work(exclusive=True, group="users-change", exit_on_error=False)
    async def set_active(self, username: str, active: bool) -> None:
        async with self.context.sessions() as session:
            try:
                await update_user(
                    session=session, username=username, actor=self.context.actor, is_active=active
                )
            except UserError as error:
                self.context.notify(str(error), severity="error", markup=False)
                return
            await session.commit()
        self.context.notify(f"{username!r} is now {'active' if active else 'inactive'}.")
        self.load_users(select=username)

    @work(exclusive=True, group="users-change", exit_on_error=False)
    async def delete(self, username: str) -> None:
        async with self.context.sessions() as session:
            try:
                await delete_user(session=session, username=username, actor=self.context.actor)
            except UserError as error:
                self.context.notify(str(error), severity="error", markup=False)
                return
            await session.commit()
        self.context.notify(f"User {username!r} deleted.")
        self.load_users()
