"""Sign-in: username and password (bcrypt), a growing delay after failures, or the first administrator.

The check, the delay and the record of failures are db/sign_in.py's (in the
database, so they hold across consoles and restarts); this screen shows the
outcome. With no users in the database the screen offers to create the first
administrator instead. Inactive users are refused with their own message
(only once the password is right, so the message reveals nothing to a guesser).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, cast

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Center, Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, Static

from console.context import SignedInUser
from console.dialogs.help import HelpScreen, keys_in_force
from console.messages import ForwardsWorkerFailures
from console.untrusted import plain
from db.sign_in import SignInOutcome, sign_in
from db.users import UserError, UsersExist, count_users, create_administrator

if TYPE_CHECKING:
    from console.app import FirewallConsole


class UsernameInput(Input):
    """The username field: a username cannot hold "?", so there ``?`` opens the help instead of being typed
    (in the password it is typed: a password may hold one)."""

    def check_consume_key(self, key: str, character: str | None) -> bool:
        return character != "?" and super().check_consume_key(key, character)


class LoginScreen(ForwardsWorkerFailures, Screen[None]):
    """Signs a user in (or creates the first administrator) and hands the user to the app."""

    BINDINGS = [
        # Priority: before the app's own (hidden) ctrl+q, so the footer shows it.
        Binding("ctrl+q", "app.quit", "Quit", priority=True),
        # In the username field (see UsernameInput) and on the button; typed in the other fields, which
        # consume it (Textual then leaves the binding out). Priority: before the field's own key handler.
        Binding("question_mark", "help", "Help", priority=True),
        Binding("f1", "help_anywhere", "Help, from any field (? is typed in the password)", show=False),
        Binding("escape", "leave_field", "Leave the field for the button (then ? help, q quit)", show=False),
    ]
    HELP = (
        "Sign in with your console account: **Tab** or **Enter** moves to the next field, **Enter** in "
        "the last one signs in. After a few wrong passwords the screen asks you to wait a few seconds "
        "before the next try, longer after each failure (kept in the database, for every console).\n\n"
        "No account yet? An administrator makes one in Users, or on the server: "
        "`python -m console create-admin NAME --email ADDRESS`. On an empty database this screen "
        "creates the first administrator instead."
    )

    def __init__(self) -> None:
        super().__init__()
        self.first_admin = False

    @property
    def console(self) -> FirewallConsole:
        """The app, as the console it is (its sessions, settings and :meth:`signed_in`)."""
        return cast("FirewallConsole", self.app)

    def compose(self) -> ComposeResult:
        yield Header()
        with Center(), Vertical(id="login-box"):
            yield Static("[b]Sign in[/b]", id="login-title")
            yield Static("", id="login-intro")
            yield UsernameInput(placeholder="username", id="username")
            yield Input(placeholder="email", id="email", classes="first-admin")
            yield Input(placeholder="full name (optional)", id="full-name", classes="first-admin")
            yield Input(placeholder="password", password=True, id="password")
            yield Input(
                placeholder="repeat password", password=True, id="password-again", classes="first-admin"
            )
            yield Button("Sign in", id="sign-in", variant="primary", compact=True)
            yield Label("", id="login-message")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "sign in"
        self._show_first_admin(False)
        self.query_one("#login-intro", Static).update("Checking the database…")
        self.check_users()

    def _show_first_admin(self, on: bool) -> None:
        self.first_admin = on
        for widget in self.query(".first-admin"):
            widget.display = on
        self.query_one("#login-title", Static).update(
            "[b]Create the first administrator[/b]" if on else "[b]Sign in[/b]"
        )
        self.query_one("#sign-in", Button).label = "Create administrator" if on else "Sign in"

    def message(self, text: str, *, error: bool = True) -> None:
        label = self.query_one("#login-message", Label)
        label.update(plain(text))  # it may quote what was typed, or the database's refusal
        label.set_class(error, "error")

    # -- workers -------------------------------------------------------------------------------

    @work(exclusive=True, group="login-check", exit_on_error=False)
    async def check_users(self) -> None:
        async with self.console.sessions() as session:
            users = await count_users(session=session)
        self._show_first_admin(users == 0)
        intro = (
            "No users yet: create the first administrator. Passwords (at least 12 characters, not a common"
            " one) are stored as bcrypt hashes."
            if users == 0
            else self.console.settings.describe_database()
        )
        self.query_one("#login-intro", Static).update(plain(intro))
        self.query_one("#username", Input).focus()

    @work(exclusive=True, group="login-submit", exit_on_error=False)
    async def attempt_sign_in(self, username: str, password: str) -> None:
        app = self.console
        async with app.sessions() as session:
            result = await sign_in(
                session=session,
                username=username,
                password=password,
                bcrypt_rounds=app.settings.bcrypt_rounds,
            )
            await session.commit()
        if result.outcome is SignInOutcome.OK and result.user is not None:
            user = result.user
            app.signed_in(SignedInUser(user.username, user.is_admin, user.full_name))
        elif result.outcome is SignInOutcome.LOCKED:
            self.message(self._wait_text(result.wait_seconds))
        elif result.outcome is SignInOutcome.DISABLED:
            self._clear_password()
            self.message(f"The account {username!r} is disabled: ask an administrator to re-activate it.")
        else:
            self._clear_password()
            wait = f" {self._wait_text(result.wait_seconds)}" if result.wait_seconds > 0 else ""
            self.message(f"Wrong username or password.{wait}")

    @work(exclusive=True, group="login-submit", exit_on_error=False)
    async def create_first_admin(self, username: str, email: str, full_name: str, password: str) -> None:
        app = self.console
        async with app.sessions() as session:
            try:
                user = await create_administrator(
                    session=session,
                    username=username,
                    email=email,
                    password=password,
                    full_name=full_name or None,
                    bcrypt_rounds=app.settings.bcrypt_rounds,
                    actor=None,
                    source="console",
                )
            except UsersExist:
                self._show_first_admin(False)
                self.message("Someone created a user meanwhile: sign in instead.")
                return
            except UserError as error:
                self.message(str(error))
                return
            await session.commit()
        app.notify(f"Administrator {user.username!r} created.")
        app.signed_in(SignedInUser(user.username, True, user.full_name))

    def worker_failed(self, error: BaseException) -> None:
        self.message("The database cannot be reached; try again in a moment.")

    # -- keys ----------------------------------------------------------------------------------

    def action_help(self) -> None:
        """``?`` (F1 in any field): what this screen is for and its keys."""
        # keys_in_force reads any screen; Screen is invariant in its result type, this one's is None.
        keys = keys_in_force(cast("Screen[object]", self), anywhere_from=(self.app,))
        title = "Create the first administrator" if self.first_admin else "Sign in"
        self.app.push_screen(HelpScreen(title, self.HELP, keys))

    def action_help_anywhere(self) -> None:
        self.action_help()

    def action_leave_field(self) -> None:
        """Esc: from a field to the button, where ``?`` and ``q`` work again (the field keeps its text)."""
        if isinstance(self.focused, Input):
            self.query_one("#sign-in", Button).focus()

    # -- input ---------------------------------------------------------------------------------

    @staticmethod
    def _wait_text(seconds: float) -> str:
        # Rounded up: "wait 0 s" for a wait that is not over would read as a refusal without reason.
        return f"Too many failures: wait {math.ceil(seconds)} s before trying again."

    def _clear_password(self) -> None:
        self.query_one("#password", Input).value = ""

    @on(Input.Submitted)
    def _next_field(self, event: Input.Submitted) -> None:
        visible = [widget for widget in self.query(Input) if widget.display]
        index = visible.index(event.input)
        if index + 1 < len(visible):
            visible[index + 1].focus()
        else:
            self.submit()

    @on(Button.Pressed, "#sign-in")
    def submit(self) -> None:
        values = {widget.id: widget.value for widget in self.query(Input)}
        username = (values["username"] or "").strip()
        password = values["password"] or ""
        if self.first_admin:
            if password != values["password-again"]:
                self.message("The two passwords differ.")
                return
            self.message("Creating…", error=False)
            self.create_first_admin(username, values["email"] or "", values["full-name"] or "", password)
            return
        if not username or not password:
            self.message("Enter a username and a password.")
            return
        self.message("Signing in…", error=False)
        self.attempt_sign_in(username, password)
