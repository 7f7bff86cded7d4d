"""Cleanup section: retention per organisation — what a cleanup would delete now (a dry-run count),
running it for one organisation or all with a progress bar and cancel, past runs, and the scheduler.

Everything goes through :mod:`db.retention`: the run holds the retention lock
(another cleanup running elsewhere is reported, not waited for), deletes in
batches and checks the cancel flag between batches, so stopping leaves every
run record exact. Runs are admin-only and confirmed; ``run_retention`` audits
each organisation as it goes, so a run stopped early is audited too. The
confirmation counts with a pinned ``now`` that the run then uses, so the number
asked about is the number deleted. Quitting or signing out during a run asks
first, then stops it after its current batch and waits for its records.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Button, Label, ProgressBar, Static

from console.dialogs.confirm import confirm_then
from console.sections.section import Section, SectionCommand
from console.untrusted import plain
from console.widgets.keyed_table import KeyedTable, TableColumn
from console.widgets.time_format import when
from db.base import utcnow
from db.models import RetentionRun
from db.retention import (
    SCHEDULER_TRIGGER,
    RetentionAlreadyRunning,
    RetentionPreview,
    RetentionSummary,
    UnknownOrganization,
    last_run_started,
    recent_runs,
    retention_preview,
    run_retention,
)
from db.wording import counted

#: How long quitting or signing out waits for a stopped cleanup to finish its batch and records.
STOP_WAIT_SECONDS = 15.0
PREVIEW_COLUMNS = (
    TableColumn("Organisation", width=8),
    TableColumn("Retention"),
    TableColumn("Cutoff (UTC)", width=16),
    TableColumn("Would delete"),
    TableColumn("Undelivered"),
    TableColumn("Config"),
)
#: At 80 columns the dates stay readable (titles give way); wider, every value whole.
HISTORY_COLUMNS = (
    TableColumn("Started", width=10),
    TableColumn("Organisation", width=6),
    TableColumn("Kind"),
    TableColumn("Trigger"),
    TableColumn("Status"),
    TableColumn("Rows"),
    TableColumn("Undelivered expired", width=5),
    TableColumn("Cutoff", width=10),
    TableColumn("Error", stretch=True),
)


class CleanupSection(Section):
    """Retention: preview and run the log cleanup, past runs, the scheduler."""

    @property
    def forward_hold_days(self) -> int:
        """Days past retention that events wait for a destination yet to receive them (FORWARD_HOLD_DAYS)."""
        return self.context.settings.dispatch.forward_hold_days

    TITLE = "Cleanup"
    KEY = "6"
    COMMANDS = (
        SectionCommand(
            "Cleanup: run retention now",
            "Delete logs older than each organisation's retention (administrators only)",
            "run_cleanup",
            admin_only=True,
        ),
        SectionCommand(
            "Cleanup: clean the selected organisation",
            "Delete its expired logs (administrators only)",
            "clean_selected",
            admin_only=True,
        ),
        SectionCommand(
            "Cleanup: stop the running cleanup",
            "Stop after the current batch",
            "cancel_cleanup",
            admin_only=True,
        ),
        SectionCommand("Cleanup: count again", "How many rows a cleanup would delete now", "reload"),
    )
    BINDINGS = [
        Binding("c", "clean_selected", "Clean org"),
        Binding("A", "run_cleanup", "Clean all"),
        Binding("x", "cancel_cleanup", "Stop"),
        Binding("r", "reload", "Count again"),
    ]
    ADMIN_ACTIONS = frozenset({"clean_selected", "run_cleanup", "cancel_cleanup"})
    HELP = """\
What the log cleanup would delete now, per organisation (a dry run: counted, nothing deleted),
and the past runs below, newest first. `r` counts again; `s` sorts a table by the cursor's
column. Administrators: `c` cleans the organisation under the cursor, `A` cleans all of them,
each after a question that gives the number of logs to delete; `x` stops a running cleanup
after its current batch. Events a forwarding destination has not received yet wait a few days
longer (the "Undelivered" column counts those that expire anyway).
"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.previews: dict[str, RetentionPreview] = {}
        self.runs: Sequence[RetentionRun] = ()
        self.last_summary: RetentionSummary | None = None
        #: Rows per delete transaction; None lets db.retention choose per engine (tests make it small).
        self.batch_size: int | None = None
        self.cancel_event: asyncio.Event | None = None
        self._done: dict[str, int] = {}
        #: When the newest successful scheduled run started (from retention_runs), if any.
        self.last_scheduled_run: datetime | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="cleanup-scheduler", classes="admin-summary")
        yield Label("[b]Would be deleted now[/b] (dry run: counted, nothing deleted)")
        yield KeyedTable(*PREVIEW_COLUMNS, id="cleanup-preview", sort_value=self._preview_sort_value)
        with Horizontal(id="cleanup-bar"):
            yield Label("", id="cleanup-label")
            yield ProgressBar(id="cleanup-progress", show_eta=False)
            yield Button("Stop (x)", id="cleanup-stop")
        yield Label("[b]Past runs[/b] (newest first)")
        yield KeyedTable(*HISTORY_COLUMNS, id="cleanup-history")

    def on_mount(self) -> None:
        self.query_one("#cleanup-bar").display = False

    def _preview_sort_value(self, column: str, key: str) -> Any:
        """The preview sorts by numbers where its cells are counts (\"90 days\" by 90)."""
        preview = self.previews.get(key)
        if preview is None:
            return (1, "")
        numbers = {
            "Retention": preview.retention_days,
            "Would delete": preview.rows_to_delete,
            "Undelivered": preview.undelivered_to_expire or 0,
        }
        if column in numbers:
            return (0, numbers[column])
        return (0, (self.query_one("#cleanup-preview", KeyedTable).cell_value(key, column) or "").casefold())

    def focus_first(self) -> None:
        self.query_one("#cleanup-preview", KeyedTable).focus()

    def reload(self) -> None:
        self.show_scheduler()
        self.load_preview()
        self.load_history()

    def action_reload(self) -> None:
        self.reload()

    def busy_with(self) -> str | None:
        return "a retention cleanup" if self.running else None

    async def stop_busy_work(self) -> None:
        """Stop a running cleanup after its current batch and wait until its records are final.

        Called once quitting or signing out is confirmed. If the batch does not end in
        time, unmounting cancels the worker, and ``run_retention`` still finishes the
        records (as cancelled) on its way out.
        """
        await self.stop_and_wait("cleanup-run", self.action_cancel_cleanup, seconds=STOP_WAIT_SECONDS)

    @property
    def running(self) -> bool:
        return bool(self.running_workers("cleanup-run"))

    # -- what is shown ---------------------------------------------------------------------------

    def show_scheduler(self) -> None:
        settings = self.context.settings
        scheduler = getattr(self.app, "retention_scheduler", None)
        if not settings.enable_retention_scheduler:
            text = (
                "Scheduler [b]off[/b] (ENABLE_RETENTION_SCHEDULER=false): clean here, with cleanup_logs.py "
                f"from cron, or turn it on (interval {settings.retention_cleanup_interval_hours:g} h)."
            )
        else:
            interval = settings.retention_cleanup_interval_hours
            text = f"Scheduler [b]on[/b]: every {interval:g} h"
            next_run = getattr(scheduler, "next_run_time", None)
            last = self.last_scheduled_run
            if next_run is not None:
                # The console's own scheduler (db.scheduler): its first check comes soon after start,
                # then it spaces runs from the last successful scheduled one.
                text += f" here, next check {when(next_run)} UTC"
                if last is not None:
                    text += f"; last scheduled run {when(last)} UTC"
            elif last is not None:
                # The scheduler spaces runs from the last successful scheduled one (db.scheduler).
                due = last + timedelta(hours=interval)
                text += (
                    f" in the ingest server; last scheduled run {when(last)} UTC, next due {when(due)} UTC"
                )
            else:
                text += " in the ingest server; no scheduled run yet (the first comes soon after it starts)"
        self.query_one("#cleanup-scheduler", Static).update(text)

    @work(exclusive=True, group="cleanup-preview", exit_on_error=False)
    async def load_preview(self) -> None:
        async with self.context.sessions() as session:
            previews = await retention_preview(session, forward_hold_days=self.forward_hold_days)
        self.previews = {preview.organization_id: preview for preview in previews}
        self.query_one("#cleanup-preview", KeyedTable).show(
            (
                (
                    preview.organization_id,
                    (
                        plain(preview.organization_id),
                        counted(preview.retention_days, "day"),
                        when(preview.cutoff),
                        f"{preview.rows_to_delete:,}",
                        _undelivered(preview.undelivered_to_expire),
                        "yes" if preview.has_config else "none (default retention)",
                    ),
                )
                for preview in previews
            ),
            keep="row",
        )

    @work(exclusive=True, group="cleanup-history", exit_on_error=False)
    async def load_history(self) -> None:
        async with self.context.sessions() as session:
            self.runs = await recent_runs(session, limit=100)
            self.last_scheduled_run = await last_run_started(session, trigger=SCHEDULER_TRIGGER)
        self.show_scheduler()
        self.query_one("#cleanup-history", KeyedTable).show(
            (
                (
                    str(run.id),
                    (
                        when(run.started_at),
                        plain(run.organization_id),
                        "dry run" if run.dry_run else "delete",
                        plain(run.trigger),
                        plain(run.status),
                        f"{run.rows_deleted:,}",
                        _undelivered(run.undelivered_expired),
                        when(run.cutoff),
                        plain(run.error or ""),
                    ),
                )
                for run in self.runs
            ),
            keep="top",
        )

    def selected_organization(self) -> str | None:
        return self.query_one("#cleanup-preview", KeyedTable).selected_key

    # -- running ---------------------------------------------------------------------------------

    def action_clean_selected(self) -> None:
        if not self.context.require_admin("run a retention cleanup"):
            return
        organization_id = self.selected_organization()
        if organization_id is None:
            self.context.notify("No organisation to clean.", severity="warning")
            return
        self.count_then_confirm(organization_id)

    def action_run_cleanup(self) -> None:
        if not self.context.require_admin("run a retention cleanup"):
            return
        self.count_then_confirm(None)

    @work(exclusive=True, group="cleanup-confirm", exit_on_error=False)
    async def count_then_confirm(self, organization_id: str | None) -> None:
        """Count what a cleanup would delete at a pinned ``now``, ask, and run with that same ``now``.

        Counting again here (not reusing the table, which may be minutes old) with the
        ``now`` the run then uses makes the number asked about the number deleted.
        """
        if self.running:
            self.context.notify("A cleanup is already running (x stops it).", severity="warning")
            return
        now = utcnow()
        try:
            async with self.context.sessions() as session:
                previews = await retention_preview(
                    session,
                    now=now,
                    organization_id=organization_id,
                    forward_hold_days=self.forward_hold_days,
                )
        except UnknownOrganization as error:
            self.context.notify(f"{error}; nothing to clean.", severity="warning", markup=False)
            return
        total = sum(preview.rows_to_delete for preview in previews)
        if organization_id is None:
            organisations = counted(len(previews), "organisation")
            question = f"Delete the {counted(total, 'expired log')} of all {organisations} now?"
        else:
            [preview] = previews
            question = (
                f"Delete the {counted(total, 'log')} of {organization_id!r} older than "
                f"{preview.retention_days} days (before {when(preview.cutoff)} UTC)?"
            )
        confirm_then(self.app, question, lambda: self.run_cleanup(organization_id, now=now, expected=total))

    def action_cancel_cleanup(self) -> None:
        if self.cancel_event is not None and self.running:
            self.cancel_event.set()
            self.query_one("#cleanup-label", Label).update("Stopping after the current batch…")

    @on(Button.Pressed, "#cleanup-stop")
    def _stop_pressed(self) -> None:
        self.action_cancel_cleanup()

    def on_progress(self, organization_id: str, rows: int) -> None:
        """Called after each batch with the organisation's rows deleted so far."""
        self._done[organization_id] = rows
        done = sum(self._done.values())
        progress = self.query_one("#cleanup-progress", ProgressBar)
        if progress.total is not None and done > progress.total:
            progress.update(total=done)
        progress.update(progress=done)
        label = self.query_one("#cleanup-label", Label)
        label.update(plain(f"Cleaning {organization_id}: {counted(done, 'row')} deleted"))

    @work(exclusive=True, group="cleanup-run", exit_on_error=False)
    async def run_cleanup(self, organization_id: str | None, *, now: datetime, expected: int) -> None:
        """Clean one organisation (or all, with None) as of ``now``; ``expected`` rows sizes the progress bar.

        ``run_retention`` audits each organisation itself, under the signed-in user, and
        checks again that they are an administrator (a refusal reaches the app's handler).
        """
        self.cancel_event = asyncio.Event()
        self._done = {}
        bar = self.query_one("#cleanup-bar")
        self.query_one("#cleanup-progress", ProgressBar).update(total=max(1, expected), progress=0)
        self.query_one("#cleanup-label", Label).update("Starting…")
        bar.display = True
        try:
            summary = await run_retention(
                sessions=self.context.sessions,
                actor=self.context.actor,
                organization_id=organization_id,
                progress=self.on_progress,
                cancel=self.cancel_event,
                batch_size=self.batch_size,
                now=now,
                forward_hold_days=self.forward_hold_days,
            )
        except (RetentionAlreadyRunning, UnknownOrganization) as error:
            self.context.notify(f"{error}; nothing was deleted.", severity="warning", markup=False)
            return
        finally:
            bar.display = False
        self.last_summary = summary
        severity = "information" if summary.status == "succeeded" else "warning"
        undelivered = sum(result.undelivered_expired for result in summary.results)
        unsent = f", {undelivered:,} of them never forwarded (the hold ran out)" if undelivered else ""
        self.context.notify(
            f"Cleanup {summary.status}: {counted(summary.total_rows, 'row')} deleted in "
            f"{counted(len(summary.results), 'organisation')}{unsent}.",
            severity="warning" if undelivered else severity,
        )
        self.load_preview()
        self.load_history()


def _undelivered(count: int | None) -> Text | str:
    """Events a forwarding destination never received, deleted anyway: shown in bold when there are any."""
    return Text(f"{count:,}", style="bold red", end="") if count else "0"
