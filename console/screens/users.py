"""Users section: console users — search, create, edit, activate/deactivate, reset password, delete.

Reads and writes go through :mod:`db.users`; the self and last-administrator
guards are enforced there and shown here. Every change is admin-only (checked
in ``db/`` as of now), audited there, and deletion and deactivation are confirmed first.
"""

from __future__ import annotations

from collections.abc import Sequence

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Input, Static

from console.screens.confirm import ConfirmScreen
from console.screens.section import Section, SectionCommand
from console.screens.user_forms import PasswordFormScreen, UserFormScreen
from console.untrusted import plain
from db.models import User
from db.users import UserError, delete_user, list_users, update_user


def _when(moment: object) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment is not None else "never"  # type: ignore[attr-defined]


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
        Binding("r", "reload", "Reload"),
    ]

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.users: dict[str, User] = {}
        self.search = ""

    def compose(self) -> ComposeResult:
        with Horizontal(classes="admin-bar"):
            yield Input(placeholder="/ search: username, email or name", id="users-search")
            yield Static("", id="users-summary", classes="admin-summary")
        table: DataTable[str] = DataTable(id="users-table", cursor_type="row", zebra_stripes=True)
        table.add_columns("Username", "Full name", "Email", "Role", "State", "Created", "Last sign-in")
        yield table

    def focus_first(self) -> None:
        self.query_one("#users-table", DataTable).focus()

    def reload(self) -> None:
        self.load_users()

    def action_reload(self) -> None:
        self.load_users()

    def action_focus_search(self) -> None:
        self.query_one("#users-search", Input).focus()

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
        table = self.query_one("#users-table", DataTable)
        keep = select or self.selected_username()
        table.clear()
        self.users = {user.username: user for user in rows}
        for user in rows:
            table.add_row(
                plain(user.username),
                plain(user.full_name or ""),
                plain(user.email),
                "admin" if user.is_admin else "viewer",
                "active" if user.is_active else "[b]inactive[/b]",
                _when(user.created_at),
                _when(user.last_login),
                key=user.username,
            )
        if keep in self.users:
            table.move_cursor(row=table.get_row_index(keep))
        found = f"{len(rows)} users" + (f" matching {self.search!r}" if self.search else "")
        self.query_one("#users-summary", Static).update(
            plain(f"{found} · n new · e edit · a (de)activate · p password · del delete")
        )

    def selected_username(self) -> str | None:
        table = self.query_one("#users-table", DataTable)
        if table.row_count == 0:
            return None
        return str(table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value)

    def _selected(self, what: str) -> User | None:
        username = self.selected_username()
        if username is None or username not in self.users:
            self.context.notify(f"Select a user to {what}.", severity="warning")
            return None
        return self.users[username]

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
            self.app.push_screen(
                ConfirmScreen(question), lambda yes: self.set_active(user.username, False) if yes else None
            )
        else:
            self.set_active(user.username, True)

    def action_delete_user(self) -> None:
        if not self.context.require_admin("delete users"):
            return
        user = self._selected("delete")
        if user is not None:
            question = f"Delete the user {user.username!r}? This cannot be undone."
            self.app.push_screen(
                ConfirmScreen(question), lambda yes: self.remove(user.username) if yes else None
            )

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
    async def remove(self, username: str) -> None:
        async with self.context.sessions() as session:
            try:
                await delete_user(session=session, username=username, actor=self.context.actor)
            except UserError as error:
                self.context.notify(str(error), severity="error", markup=False)
                return
            await session.commit()
        self.context.notify(f"User {username!r} deleted.")
        self.load_users()
