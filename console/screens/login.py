"""Sign-in: username and password (bcrypt), a growing delay after failures, or the first administrator.

With no users in the database the screen offers to create the first
administrator instead. Inactive users are refused with their own message
(only once the password is right, so the message reveals nothing to a guesser).
"""

from __future__ import annotations

import time

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Center, Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, Static
from textual.worker import Worker, WorkerState

from console.messages import WorkerFailed
from console.screens.section import SignedInUser
from console.untrusted import plain
from db.security import verify_password
from db.users import UserError, authenticate, count_users, create_administrator, get_by_username


class LoginScreen(Screen[None]):
    """Signs a user in (or creates the first administrator) and hands the user to the app."""

    #: Failures allowed before each further attempt waits, and how the wait grows.
    FREE_ATTEMPTS = 3
    BASE_DELAY_SECONDS = 2.0
    MAX_DELAY_SECONDS = 60.0

    BINDINGS = [("ctrl+q", "app.quit", "Quit")]

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0
        self.locked_until = 0.0
        self.first_admin = False

    def compose(self) -> ComposeResult:
        yield Header()
        with Center(), Vertical(id="login-box"):
            yield Static("[b]Sign in[/b]", id="login-title")
            yield Static("", id="login-intro")
            yield Input(placeholder="username", id="username")
            yield Input(placeholder="email", id="email", classes="first-admin")
            yield Input(placeholder="full name (optional)", id="full-name", classes="first-admin")
            yield Input(placeholder="password", password=True, id="password")
            yield Input(
                placeholder="repeat password", password=True, id="password-again", classes="first-admin"
            )
            yield Button("Sign in", id="sign-in", variant="primary")
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
        async with self.app.sessions() as session:  # type: ignore[attr-defined]
            users = await count_users(session=session)
        self._show_first_admin(users == 0)
        intro = (
            "No users yet: create the first administrator. Passwords (at least 12 characters, not a common"
            " one) are stored as bcrypt hashes."
            if users == 0
            else f"{self.app.settings.describe_database()}"  # type: ignore[attr-defined]
        )
        self.query_one("#login-intro", Static).update(plain(intro))
        self.query_one("#username", Input).focus()

    @work(exclusive=True, group="login-submit", exit_on_error=False)
    async def sign_in(self, username: str, password: str) -> None:
        app = self.app
        async with app.sessions() as session:  # type: ignore[attr-defined]
            user = await authenticate(session=session, username=username, password=password)
            if user is not None:
                await session.commit()
                self.failures = 0
                app.signed_in(SignedInUser(user.username, user.is_admin, user.full_name))  # type: ignore[attr-defined]
                return
            known = await get_by_username(session=session, username=username)
        if known is not None and not known.is_active and await verify_password(password, known.hashed_password):
            self.message(f"The account {username!r} is disabled: ask an administrator to re-activate it.")
            return
        self._failed("Wrong username or password.")

    @work(exclusive=True, group="login-submit", exit_on_error=False)
    async def create_first_admin(self, username: str, email: str, full_name: str, password: str) -> None:
        app = self.app
        async with app.sessions() as session:  # type: ignore[attr-defined]
            if await count_users(session=session) != 0:
                self._show_first_admin(False)
                self.message("Someone created a user meanwhile: sign in instead.")
                return
            try:
                user = await create_administrator(
                    session=session,
                    username=username,
                    email=email,
                    password=password,
                    full_name=full_name or None,
                    bcrypt_rounds=app.settings.bcrypt_rounds,  # type: ignore[attr-defined]
                    actor=None,
                    source="console",
                )
            except UserError as error:
                self.message(str(error))
                return
            await session.commit()
        app.notify(f"Administrator {user.username!r} created.")
        app.signed_in(SignedInUser(user.username, True, user.full_name))  # type: ignore[attr-defined]

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.message("The database cannot be reached; try again in a moment.")
            self.post_message(WorkerFailed(event.worker.error, event.worker.name))

    # -- input ---------------------------------------------------------------------------------

    def seconds_locked(self) -> float:
        """Seconds before another sign-in attempt is accepted (0 when not locked)."""
        return max(0.0, self.locked_until - time.monotonic())

    def _failed(self, text: str) -> None:
        self.failures += 1
        self.query_one("#password", Input).value = ""
        if self.failures >= self.FREE_ATTEMPTS:
            delay = min(
                self.MAX_DELAY_SECONDS, self.BASE_DELAY_SECONDS * 2 ** (self.failures - self.FREE_ATTEMPTS)
            )
            self.locked_until = time.monotonic() + delay
            text += f" Too many failures: wait {delay:.0f} s before trying again."
        self.message(text)

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
        wait = self.seconds_locked()
        if wait > 0:
            self.message(f"Too many failures: wait {wait:.0f} s before trying again.")
            return
        self.message("Signing in…", error=False)
        self.sign_in(username, password)
