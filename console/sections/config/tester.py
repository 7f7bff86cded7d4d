"""The Tester tab of the Config section: the saved patterns run on a sample typed here, never stored."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Static, TextArea

from console.sections.config.pane import ConfigHost, ConfigPane
from console.untrusted import plain
from db.pattern_tester import MAX_SAMPLE_CHARS, PatternTestError, PatternTestResult, try_organization_patterns
from db.wording import counted

if TYPE_CHECKING:
    from db.models import FirewallConfig


class PatternTesterPane(ConfigPane[None]):
    """Runs the organisation's saved patterns on a sample in a separate process (RE2, linear time)."""

    def __init__(self, host: ConfigHost) -> None:
        super().__init__("Tester", host, id="pane-tester")
        self.result: PatternTestResult | None = None

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                f"Type a sample (at most {MAX_SAMPLE_CHARS:,} characters): the saved patterns run on it "
                "in a separate process; the text is never stored.",
                classes="admin-hint",
            )
            yield TextArea(id="tester-sample")
            with Horizontal(classes="buttons"):
                yield Button("Run the patterns", variant="primary", id="tester-run")
            yield Static("", id="tester-result")

    def read(self, row: FirewallConfig) -> None:
        """The tester reads the saved patterns itself, when it runs."""

    def forget_result(self) -> None:
        """Drop the result shown (another organisation was chosen)."""
        self.result = None
        self.query_one("#tester-result", Static).update("")

    @on(Button.Pressed, "#tester-run")
    def run_sample(self) -> None:
        if self.host.organization_id is None:
            self.host.context.notify("Create an organisation first (o).", severity="warning")
            return
        self.run_tester(self.query_one("#tester-sample", TextArea).text)

    @work(exclusive=True, group="config-tester", exit_on_error=False)
    async def run_tester(self, sample: str) -> None:
        assert self.host.organization_id is not None
        output = self.query_one("#tester-result", Static)
        output.update("Running…")
        try:
            async with self.host.context.sessions() as session:
                result = await try_organization_patterns(
                    session=session, organization_id=self.host.organization_id, sample=sample
                )
        except PatternTestError as error:
            self.result = None
            output.update(plain(error, "bold"))
            return
        self.result = result
        output.update(describe_result(result))


def describe_result(result: PatternTestResult) -> Text:
    """The tester's output: one line per pattern, then its first matches (names and samples as plain text)."""
    if not result.matched:
        text = Text("No pattern matched.", style="bold")
    else:
        text = Text.assemble(
            (f"{counted(len(result.matched), 'pattern')} matched", "bold"),
            plain(f"; highest severity: {result.highest_severity}"),
        )
    for hit in result.hits:
        if hit.error:
            text.append("\n  ").append(plain(hit.name)).append(": ").append("regex error", style="bold")
            text.append(": ").append(plain(hit.error))
            continue
        found = f"{hit.name} ({hit.entity_type}, {hit.severity}): {counted(hit.count, 'match', 'matches')}"
        text.append("\n  ").append(plain(found))
        for start, end, sample in hit.matches[:5]:
            text.append(f"\n      {start}–{end}: ").append(plain(repr(sample)))
    return text
