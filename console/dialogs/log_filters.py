"""The filter form of the log browser (a dialog): returns a new LogFilter, or None when cancelled.

It opens with the cursor in its first field; every field is reached with Tab and scrolled into
view, the frame's edge saying when more is below; Esc asks before throwing away changed fields.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.suggester import SuggestFromList
from textual.widgets import Button, Input, Label, Select

from console.dialogs.dialog import Dialog
from console.untrusted import plain
from console.widgets.tick_box import TickBox
from console.widgets.time_format import when
from db.base import as_utc, utcnow
from db.logs import LogFilter
from db.vocabulary import RISK_LEVELS

TIME_PRESETS: dict[str, timedelta | None] = {
    "any time": None,
    "last hour": timedelta(hours=1),
    "last 24 hours": timedelta(days=1),
    "last 7 days": timedelta(days=7),
    "last 30 days": timedelta(days=30),
    "explicit range": None,
}
SANITISED_CHOICES = (("any", None), ("yes", True), ("no", False))
#: Rows of the dialog around its fields (title, a two-line error, buttons, frame): the fields get the rest.
AROUND_FIELDS = 12


def parse_moment(text: str, field: str) -> datetime | None:
    """``YYYY-MM-DD`` or ``YYYY-MM-DD HH:MM`` (UTC) or empty; ValueError naming the field otherwise."""
    text = text.strip()
    if not text:
        return None
    for pattern in ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            return as_utc(datetime.strptime(text, pattern))  # noqa: DTZ007 (UTC by definition)
        except ValueError:
            continue
    raise ValueError(f"{field}: write a UTC time as YYYY-MM-DD or YYYY-MM-DD HH:MM, not {text!r}")


class LogFilterScreen(Dialog[LogFilter | None]):
    """Edit every filter at once; Apply (ctrl+s) returns the filter, Escape cancels."""

    BINDINGS = [Binding("ctrl+s", "apply", "Apply")]
    GUARDS_UNSAVED = True
    HELP_TITLE = "Filter logs"
    HELP = (
        "Each field narrows the rows; empty fields and no ticked risk level mean any. Tool, user, device, "
        "organisation and entity type match exactly. **Time**: a preset fills From, or type From and "
        "Until as `YYYY-MM-DD` or `YYYY-MM-DD HH:MM` in UTC (From included, Until not). **Search**: a "
        "user, device or tool (a prefix with a trailing `*`), an organisation, an entity type or an event "
        "id. Tab moves between fields (the list scrolls); ctrl+s or Enter applies; Esc cancels."
    )

    def __init__(self, current: LogFilter, suggestions: dict[str, list[str]]) -> None:
        super().__init__()
        self.current = current
        self.suggestions = suggestions

    def _suggester(self, name: str) -> SuggestFromList | None:
        values = self.suggestions.get(name) or []
        return SuggestFromList(values, case_sensitive=False) if values else None

    def compose(self) -> ComposeResult:
        current = self.current
        with Vertical(id="filter-dialog", classes="dialog compact-form"):
            yield Label("[b]Filter logs[/b]  (ctrl+s apply · Esc cancel · times in UTC)", id="filter-title")
            with VerticalScroll(id="filter-fields"):
                with Horizontal(classes="form-row"):
                    yield Label("Risk", classes="form-label")
                    for level in RISK_LEVELS:
                        yield TickBox(
                            level, value=level in current.risk_levels, id=f"risk-{level}", classes="risk-box"
                        )
                for name, label, value in (
                    ("tool", "Tool", current.tool),
                    ("user", "User", current.user),
                    ("device", "Device", current.device),
                    ("organization", "Organisation", current.organization),
                    ("entity_type", "Entity type", current.entity_type),
                ):
                    with Horizontal(classes="form-row"):
                        yield Label(label, classes="form-label")
                        yield Input(value=value or "", id=f"filter-{name}", suggester=self._suggester(name))
                with Horizontal(classes="form-row"):
                    yield Label("Time", classes="form-label")
                    preset = "explicit range" if current.since or current.until else "any time"
                    yield Select(
                        [(name, name) for name in TIME_PRESETS],
                        value=preset,
                        allow_blank=False,
                        id="filter-time",
                    )
                with Horizontal(classes="form-row"):
                    yield Label("From", classes="form-label")
                    since = when(current.since, missing="")
                    yield Input(value=since, placeholder="YYYY-MM-DD [HH:MM]", id="filter-since")
                with Horizontal(classes="form-row"):
                    yield Label("Until", classes="form-label")
                    until = when(current.until, missing="")
                    yield Input(value=until, placeholder="YYYY-MM-DD [HH:MM]", id="filter-until")
                with Horizontal(classes="form-row"):
                    yield Label("Sanitised", classes="form-label")
                    yield Select(
                        [(label, label) for label, _ in SANITISED_CHOICES],
                        value=next(label for label, value in SANITISED_CHOICES if value == current.sanitized),
                        allow_blank=False,
                        id="filter-sanitized",
                    )
                with Horizontal(classes="form-row"):
                    yield Label("Search", classes="form-label")
                    yield Input(
                        value=current.search,
                        placeholder="user, device, tool (or prefix*), org, entity, id",
                        id="filter-search",
                    )
            yield Label("", id="filter-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Apply", variant="primary", id="filter-apply")
                yield Button("Clear all", id="filter-clear")
                yield Button("Cancel", id="filter-cancel")

    def on_resize(self, event: events.Resize) -> None:
        # The fields take the height the terminal leaves around the title, the error and the buttons.
        self.query_one("#filter-fields").styles.max_height = max(4, event.size.height - AROUND_FIELDS)

    @on(Select.Changed, "#filter-time")
    def _preset_chosen(self, event: Select.Changed) -> None:
        delta = TIME_PRESETS.get(str(event.value))
        if delta is not None:
            self.query_one("#filter-since", Input).value = when(utcnow() - delta)
            self.query_one("#filter-until", Input).value = ""
        elif event.value == "any time":
            self.query_one("#filter-since", Input).value = ""
            self.query_one("#filter-until", Input).value = ""

    def build(self) -> LogFilter:
        """The filter the form describes; ValueError with a one-line reason if a field is wrong."""
        text = {
            name: self.query_one(f"#filter-{name}", Input).value
            for name in ("tool", "user", "device", "organization", "entity_type", "search")
        }
        since = parse_moment(self.query_one("#filter-since", Input).value, "From")
        until = parse_moment(self.query_one("#filter-until", Input).value, "Until")
        if since and until and since >= until:
            raise ValueError("From must be before Until")
        sanitized_label = self.query_one("#filter-sanitized", Select).value
        return LogFilter(
            risk_levels=frozenset(
                level for level in RISK_LEVELS if self.query_one(f"#risk-{level}", TickBox).value
            ),
            since=since,
            until=until,
            sanitized=dict(SANITISED_CHOICES).get(str(sanitized_label)),
            **text,
        )

    @on(Button.Pressed, "#filter-apply")
    def action_apply(self) -> None:
        try:
            filters = self.build()
        except ValueError as error:
            self.query_one("#filter-error", Label).update(plain(error))  # it quotes what was typed
            return
        self.dismiss(filters)

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.action_apply()

    @on(Button.Pressed, "#filter-clear")
    def _clear(self) -> None:
        self.dismiss(LogFilter())

    @on(Button.Pressed, "#filter-cancel")
    def action_cancel(self) -> None:
        self.request_close()
