"""The user forms (modals): create or edit a user, and reset a password.

Shape checks run before anything is sent (the same validators ``db/`` uses);
uniqueness and the self / last-administrator guards come back from
:mod:`db.users` as a :class:`~db.users.UserError` naming its field, and are
shown under that field. Unticking "active" asks first, as the users list's
``a`` key does.
"""

from __future__ import annotations

from collections.abc import Sequence

from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input, Label

from console.context import ConsoleContext
from console.dialogs.admin_form import AdminForm, form_title
from console.dialogs.confirm import confirm_then
from console.widgets.tick_box import TickBox
from db.models import User
from db.security import validate_password
from db.users import (
    UserError,
    create_user,
    list_users,
    reset_password,
    update_user,
    validate_email,
    validate_username,
)


def still_administrator(users: Sequence[User], actor: str) -> bool:
    """Whether ``actor`` is an active administrator among ``users`` (read now).

    When they are not, ``db/`` refuses any change of theirs (NotAllowed, which signs them out or
    drops them to a viewer's keys): the console then asks no question and lets ``db/`` refuse.
    """
    return any(
        user.username.casefold() == actor.casefold() and user.is_admin and user.is_active for user in users
    )


def admin_loss_refusal(users: Sequence[User], *, username: str, actor: str, what: str) -> str | None:
    """Why ``db/`` would refuse to ``what`` (deactivate, demote, delete) ``username``, asked by ``actor``,
    given every user as ``users``; None if it would not.

    The console asks this before any "are you sure?", so a refusal comes first and alone;
    :mod:`db.users` still refuses on its own when the change is made.
    """
    if username.casefold() == actor.casefold():
        return f"You cannot {what} yourself; ask another administrator."
    target = next((user for user in users if user.username.casefold() == username.casefold()), None)
    if target is None or not (target.is_admin and target.is_active):
        return None
    if not any(user.is_admin and user.is_active for user in users if user is not target):
        return (
            f"{target.username!r} is the last active administrator: make someone else an administrator first."
        )
    return None


def _password_errors(
    password: str, again: str, *, user_inputs: tuple[str, ...] = ()
) -> dict[str | None, str]:
    try:
        validate_password(password, user_inputs=user_inputs)
    except ValueError as error:
        return {"password": str(error)}
    if password != again:
        return {"password_again": "the two passwords differ"}
    return {}


class UserFormScreen(AdminForm[str | None]):
    """Create a user (``user`` None) or edit one; returns the username once saved, None when cancelled."""

    def __init__(self, context: ConsoleContext, user: User | None = None) -> None:
        super().__init__(context)
        self.user = user

    @property
    def creating(self) -> bool:
        return self.user is None

    def compose(self) -> ComposeResult:
        user = self.user
        title = "Create a user" if user is None else f"Edit user {user.username}"
        with Vertical(id="user-form", classes="dialog"):
            yield Label(form_title(title, "ctrl+s save · escape cancel"))
            yield from self.field_row(
                "Username",
                "username",
                Input(value=user.username if user else "", id="username", disabled=user is not None),
            )
            yield from self.field_row("Email", "email", Input(value=user.email if user else "", id="email"))
            yield from self.field_row(
                "Full name", "full_name", Input(value=(user.full_name or "") if user else "", id="full_name")
            )
            if user is None:
                yield from self.field_row("Password", "password", Input(password=True, id="password"))
                yield from self.field_row(
                    "Again", "password_again", Input(password=True, id="password_again")
                )
            yield from self.field_row(
                "Role",
                "is_admin",
                TickBox("administrator", value=bool(user and user.is_admin), id="is_admin"),
            )
            if user is not None:
                yield from self.field_row(
                    "State", "is_active", TickBox("active", value=user.is_active, id="is_active")
                )
            yield from self.form_buttons("Save")

    def action_submit(self) -> None:
        values = {
            name: self.query_one(f"#{name}", Input).value for name in ("username", "email", "full_name")
        }
        errors: dict[str | None, str] = {}
        if self.creating:
            try:
                validate_username(values["username"].strip())
            except UserError as error:
                errors["username"] = str(error)
            errors.update(
                _password_errors(
                    self.query_one("#password", Input).value,
                    self.query_one("#password_again", Input).value,
                    user_inputs=(values["username"].strip(), values["email"].strip()),
                )
            )
        try:
            validate_email(values["email"])
        except UserError as error:
            errors["email"] = str(error)
        if errors:
            self.show_errors(errors)
            return
        self.clear_errors()
        if self.creating:
            if not self.context.require_admin("create users"):
                return
            self.create(
                values["username"].strip(),
                values["email"],
                values["full_name"],
                self.query_one("#password", Input).value,
                self.query_one("#is_admin", TickBox).value,
            )
        else:
            if not self.context.require_admin("change users"):
                return
            assert self.user is not None
            is_admin = self.query_one("#is_admin", TickBox).value
            is_active = self.query_one("#is_active", TickBox).value
            email, full_name = values["email"], values["full_name"]
            deactivating = self.user.is_active and not is_active
            if deactivating or (self.user.is_admin and not is_admin):
                # A refusal comes before the question; deactivation is asked as the list's ``a`` key asks.
                self.refuse_or_confirm(email, full_name, is_admin, is_active)
                return
            self.save(email, full_name, is_admin, is_active)

    @work(exclusive=True, group="user-form-check", exit_on_error=False)
    async def refuse_or_confirm(self, email: str, full_name: str, is_admin: bool, is_active: bool) -> None:
        """Refuse at once a demotion or deactivation ``db/`` would refuse; else ask before deactivating."""
        assert self.user is not None
        user = self.user
        async with self.context.sessions() as session:
            everyone = await list_users(session=session)
        actor = self.context.user.username
        if not still_administrator(everyone, actor):
            self.save(email, full_name, is_admin, is_active)  # db/ refuses it: NotAllowed
            return
        for field, what, losing in (
            ("is_active", "deactivate", user.is_active and not is_active),
            ("is_admin", "demote", user.is_admin and not is_admin),
        ):
            reason = (
                admin_loss_refusal(everyone, username=user.username, actor=actor, what=what)
                if losing
                else None
            )
            if reason is not None:
                self.show_errors({field: reason})
                return
        if user.is_active and not is_active:
            question = f"Deactivate {user.username!r}? They can no longer sign in."
            confirm_then(self.app, question, lambda: self.save(email, full_name, is_admin, is_active))
            return
        self.save(email, full_name, is_admin, is_active)

    @work(exclusive=True, group="user-form", exit_on_error=False)
    async def create(self, username: str, email: str, full_name: str, password: str, is_admin: bool) -> None:
        async with self.context.sessions() as session:
            try:
                await create_user(
                    session=session,
                    actor=self.context.actor,
                    username=username,
                    email=email,
                    password=password,
                    full_name=full_name,
                    is_admin=is_admin,
                    bcrypt_rounds=self.context.settings.bcrypt_rounds,
                )
            except UserError as error:
                self.show_errors({error.field: str(error)})
                return
            await session.commit()
        self.context.notify(f"User {username!r} created.")
        self.dismiss(username)

    @work(exclusive=True, group="user-form", exit_on_error=False)
    async def save(self, email: str, full_name: str, is_admin: bool, is_active: bool) -> None:
        assert self.user is not None
        username = self.user.username
        async with self.context.sessions() as session:
            try:
                _, changes = await update_user(
                    session=session,
                    username=username,
                    actor=self.context.actor,
                    email=email,
                    full_name=full_name,
                    is_admin=is_admin,
                    is_active=is_active,
                )
            except UserError as error:
                self.show_errors({error.field: str(error)})
                return
            await session.commit()
        self.context.notify(f"User {username!r} saved." if changes else "Nothing changed.")
        self.dismiss(username)


class PasswordFormScreen(AdminForm[str | None]):
    """Set a new password for a user; returns the username once saved."""

    def __init__(self, context: ConsoleContext, username: str) -> None:
        super().__init__(context)
        self.username = username

    def compose(self) -> ComposeResult:
        with Vertical(id="password-form", classes="dialog"):
            yield Label(form_title(f"Reset the password of {self.username}", "ctrl+s save · escape cancel"))
            yield from self.field_row("Password", "password", Input(password=True, id="password"))
            yield from self.field_row("Again", "password_again", Input(password=True, id="password_again"))
            yield from self.form_buttons("Save")

    def action_submit(self) -> None:
        password = self.query_one("#password", Input).value
        errors = _password_errors(password, self.query_one("#password_again", Input).value)
        if errors:
            self.show_errors(errors)
            return
        if self.context.require_admin("reset passwords"):
            self.save(password)

    @work(exclusive=True, group="password-form", exit_on_error=False)
    async def save(self, password: str) -> None:
        async with self.context.sessions() as session:
            try:
                await reset_password(
                    session=session,
                    username=self.username,
                    password=password,
                    actor=self.context.actor,
                    bcrypt_rounds=self.context.settings.bcrypt_rounds,
                )
            except UserError as error:
                self.show_errors({error.field: str(error)})
                return
            await session.commit()
        self.context.notify(f"The password of {self.username!r} was reset.")
        self.dismiss(self.username)
