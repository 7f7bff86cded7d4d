"""The overview's chart: events per risk level over time, as stacked bars we draw ourselves.

No plotting library: plotext took 63–91 ms for one 168-bucket stacked bar, and the three
overview charts must draw within 20 ms at 200×50 (``bench/console.py`` measures it). Drawing
is a pure function (:func:`draw`) from a :class:`db.overview.Timeline` and a size to rows of
``(text, role)`` runs, which :class:`RiskChart` turns into styled strips once per size, data
and scale.

What it shows: one bar per span of hours (as many hours per bar as the width needs, never a
bucket dropped: neighbouring hours are added up and the title says how many a bar holds), red at
the bottom, amber, then green, each with its own fill character and glyph so the chart reads
without colour; a y axis labelled up to the peak bar, on a log scale by default (a burst
beside quiet history leaves the history visible) or a linear one; a time axis in UTC with ticks
on round hours. A bar's height is its total on the scale and its levels share that height in
proportion, each level with events getting at least one cell (so a bar with events is never
empty, and a few red events beside thousands of green ones still show).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, ClassVar

from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget

from console.widgets.risk import RISK_GLYPHS
from console.widgets.time_format import when
from db.base import as_utc

if TYPE_CHECKING:
    from db.overview import Timeline

#: The stack, bottom up: red on the baseline, where it is easiest to compare.
STACK: tuple[str, ...] = ("red", "amber", "green")
#: A fill per level, denser as the risk rises, so bars read without colour (``NO_COLOR``, monochrome).
RISK_FILLS: dict[str, str] = {"red": "█", "amber": "▒", "green": "░"}
#: The hours a bar may hold, fewest first: each divides a day or is whole days (bars start on round hours).
BAR_HOURS: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 24, 48, 72, 168, 336, 720)
#: The hours between two time ticks, fewest first.
TICK_HOURS: tuple[int, ...] = (1, 2, 3, 6, 12, 24, 48, 72, 168, 336, 720)
#: A role of a run of text: a risk level, or one of these.
ROLES: tuple[str, ...] = ("title", "muted", "axis", *STACK)

Run = tuple[str, str]
Row = list[Run]


@dataclass(frozen=True)
class Bars:
    """A timeline regrouped for a width: ``hours`` per bar, bars starting on multiples of ``hours`` (UTC)."""

    hours: int
    starts: list[datetime]
    series: dict[str, list[int]]

    @property
    def totals(self) -> list[int]:
        """Events per bar, every level together."""
        return [sum(values) for values in zip(*(self.series[level] for level in STACK), strict=True)]


def _epoch_hour(moment: datetime) -> int:
    return int(as_utc(moment).timestamp()) // 3600


def regroup(timeline: Timeline, columns: int) -> Bars:
    """``timeline`` in at most ``columns`` bars: the fewest hours per bar (of :data:`BAR_HOURS`) that fit.

    Bars hold whole multiples of the timeline's bins and start on UTC multiples of their span
    (00:00, 06:00, …), so the first and the last bar may hold fewer hours than the others; every
    event of the timeline is in exactly one bar.
    """
    bins = len(timeline.starts)
    # The bins are evenly spaced: one conversion, then arithmetic.
    origin_hour = _epoch_hour(timeline.starts[0]) if bins else 0
    first = [origin_hour + index * timeline.bin_hours for index in range(bins)]
    spans = [hours for hours in BAR_HOURS if hours % timeline.bin_hours == 0]
    hours = spans[-1] if spans else timeline.bin_hours
    for candidate in spans:
        if bins and first[-1] // candidate - first[0] // candidate + 1 <= max(columns, 1):
            hours = candidate
            break
    else:
        while bins and first[-1] // hours - first[0] // hours + 1 > max(columns, 1) and hours < 24 * 366:
            hours *= 2
    if not bins:
        return Bars(hours=hours, starts=[], series={level: [] for level in STACK})
    origin = first[0] // hours
    count = first[-1] // hours - origin + 1
    series = {level: [0] * count for level in STACK}
    slots = [hour // hours - origin for hour in first]
    for level in STACK:
        target = series[level]
        for slot, value in zip(slots, timeline.series.get(level, []), strict=False):
            if value:
                target[slot] += value
    starts = [datetime.fromtimestamp((origin + index) * hours * 3600, tz=UTC) for index in range(count)]
    return Bars(hours=hours, starts=starts, series=series)


@dataclass(frozen=True)
class Scale:
    """How many of ``rows`` cells a count fills, on a log or a linear scale up to ``peak``."""

    peak: int
    rows: int
    log: bool

    def cells(self, value: int) -> int:
        """Cells filled by ``value``: at least one for any event, all of them for the peak."""
        if value <= 0 or self.peak <= 0:
            return 0
        if self.log:
            share = math.log1p(value) / math.log1p(self.peak)
        else:
            share = value / self.peak
        return min(self.rows, max(1, round(share * self.rows)))

    def ticks(self) -> list[int]:
        """The counts the y axis names, peak first: powers of ten (log) or round steps (linear)."""
        values = [self.peak]
        if self.log:
            candidates = [10**power for power in range(len(str(self.peak)))]
        else:
            step = _round_step(self.peak / max(1, self.rows // 3))
            candidates = list(range(step, self.peak, step))
        taken = {self.cells(self.peak)}
        for value in reversed(candidates):
            cell = self.cells(value)
            if value < self.peak and cell not in taken and cell > 0:
                taken.add(cell)
                values.append(value)
        return values


def split_cells(cells: int, values: Sequence[int]) -> list[int]:
    """``cells`` shared by ``values`` (the levels of one bar, in :data:`STACK` order) in proportion.

    Every level with events gets a cell while there are cells to give (red first), so a
    handful of red events beside thousands of green ones still shows.
    """
    total = sum(values)
    shares = [0] * len(values)
    if cells <= 0 or total <= 0:
        return shares
    if total in values:  # one level alone: the common case, made cheap
        shares[values.index(total)] = cells
        return shares
    present = [index for index, value in enumerate(values) if value]
    if cells <= len(present):
        for index in present[:cells]:
            shares[index] = 1
        return shares
    ideal = [value * cells / total for value in values]
    for index in present:
        shares[index] = max(1, int(ideal[index]))
    while sum(shares) > cells:
        index = max((i for i in present if shares[i] > 1), key=lambda i: shares[i] - ideal[i])
        shares[index] -= 1
    while sum(shares) < cells:
        index = max(present, key=lambda i: ideal[i] - shares[i])
        shares[index] += 1
    return shares


def _round_step(raw: float) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, … at least ``raw``."""
    power = 1
    while True:
        for factor in (1, 2, 5):
            if factor * power >= raw:
                return factor * power
        power *= 10


def _fit(variants: Sequence[Row], width: int) -> Row:
    """The first of ``variants`` that fits ``width`` cells, else the last one cut to it."""
    for row in variants:
        if sum(len(text) for text, _ in row) <= width:
            return row
    cut: Row = []
    room = width
    for text, role in variants[-1]:
        if room <= 0:
            break
        cut.append((text[:room], role))
        room -= len(text[:room])
    return cut


def _header(bars: Bars, window: str, log: bool, width: int, lines: int) -> list[Row]:
    scale, other = ("log", "linear") if log else ("linear", "log")
    per_bar = f"{bars.hours} h per bar" if bars.hours < 24 else f"{bars.hours // 24} d per bar"
    title = [
        [
            ("Events by risk, last ", "title"),
            (window, "title"),
            (f" · {per_bar}, UTC · ", "muted"),
            (f"{scale} scale", "title"),
            (f" (l: {other})", "muted"),
        ],
        [
            (f"Last {window}", "title"),
            (f" · {per_bar} · ", "muted"),
            (f"{scale} scale", "title"),
            (" (l)", "muted"),
        ],
        [(window, "title"), (f" · {per_bar} · {scale}", "muted")],
    ]
    totals = {level: sum(bars.series[level]) for level in STACK}
    legend: Row = []
    short: Row = []
    for level in STACK:
        fill, glyph = RISK_FILLS[level], RISK_GLYPHS[level]
        legend += [(fill * 2, level), (f" {glyph} {level} {totals[level]:,}", level), ("  ", "")]
        short += [(fill, level), (f" {level} {totals[level]:,}", level), (" ", "")]
    legend, short = legend[:-1], short[:-1]
    peaks = bars.totals
    peak = max(peaks, default=0)
    if peak:
        at = bars.starts[peaks.index(peak)]
        key = [
            legend + [(f"  · peak {peak:,} at {when(at, precision='short')}", "muted")],
            legend + [(f"  · peak {peak:,}", "muted")],
            legend,
            short + [(f" · peak {peak:,}", "muted")],
            short,
        ]
    else:
        key = [legend + [("  · no events in this window", "muted")], legend, short]
    if lines == 1:
        return [_fit(title[1:], width)]
    return [_fit(title, width), _fit(key, width)]


def _time_labels(bars: Bars, edges: list[int], width: int) -> tuple[list[int], Row]:
    """The tick columns of the time axis and the labels under them, in UTC.

    Ticks fall on round hours (every 1, 2, 3, 6, 12 hours or whole days, as the room allows); a
    midnight is named by its date (``12-05``), other ticks by their hour (``06:00``), and the
    first label by both when it is not a midnight (``12-04 22:00``).
    """
    spans = [hours for hours in TICK_HOURS if hours % bars.hours == 0] or [bars.hours]
    bar_width = width / max(1, len(bars.starts))
    every = spans[-1]
    for hours in spans:
        if hours // bars.hours * bar_width >= 7:
            every = hours
            break
    # Whole weeks start on Mondays (1970-01-01, hour 0, was a Thursday).
    offset = 72 if every % 168 == 0 else 0
    marks = [
        (edges[index], as_utc(start))
        for index, start in enumerate(bars.starts)
        if (_epoch_hour(start) + offset) % every == 0
    ]
    ticks: list[int] = []
    row: Row = []
    end = 0
    for position, (column, moment) in enumerate(marks):
        midnight = moment.hour == 0
        if midnight:
            label = moment.strftime("%m-%d")
        else:
            label = moment.strftime("%H:%M")
            # The first tick names its day too, unless that would hide the next midnight's date.
            midnights = [later for later, when in marks[position + 1 :] if when.hour == 0]
            if not ticks and column + 12 <= (midnights[0] if midnights else width):
                label = moment.strftime("%m-%d %H:%M")
        if column < end or column + len(label) > width:
            continue
        ticks.append(column)
        row += [(" " * (column - end), ""), (label, "title" if midnight else "axis"), (" ", "")]
        end = column + len(label) + 1
    return ticks, row


#: A run of one fill in a row of the plot, with the blanks after it (a blank shows no colour, so it
#: may take any: fewer, longer runs), or a run of blanks.
_RUNS = re.compile("|".join(f"{fill}[{fill} ]*" for fill in RISK_FILLS.values()) + "| +")


def draw(timeline: Timeline, *, window: str, width: int, height: int, log: bool = True) -> list[Row]:
    """The chart of ``timeline`` in ``width`` × ``height`` cells, row by row as ``(text, role)`` runs.

    Roles are the risk levels (bars and legend), ``title``, ``muted`` and ``axis``. Bars are as
    wide as the width allows (with a gap between them when they are three cells or more); the
    rows between the header and the time axis are the plot, so the chart grows with its height.
    """
    if width < 12 or height < 3:
        return [[("Widen the window to see the chart.", "muted")]][:height]
    header_lines = 2 if height >= 7 else 1
    rows = height - header_lines - 2
    # The y axis's labels: the peak is not known before the bars, nor the bars before the
    # gutter, so the gutter is sized for the largest count the timeline could make.
    largest = sum(sum(values) for values in timeline.series.values())
    gutter = len(f"{largest:,}") + 1
    plot_width = width - gutter - 1
    bars = regroup(timeline, plot_width)
    totals = bars.totals
    peak = max(totals, default=0)
    gutter = len(f"{peak:,}") + 1
    plot_width = width - gutter - 1
    scale = Scale(peak=peak, rows=rows, log=log)
    # Bars share the plot's width: bar j spans [edges[j], edges[j + 1]), widths differing by one at most.
    count = max(1, len(totals))
    edges = [index * plot_width // count for index in range(count + 1)]
    narrowest = min(b - a for a, b in zip(edges, edges[1:], strict=False))
    gap = 1 if narrowest >= 3 else 0
    # Each bar as a column of characters, top down; the rows are the columns read across.
    columns: list[str] = []
    blank = " " * rows
    for index, total in enumerate(totals):
        red, amber, green = split_cells(scale.cells(total), [bars.series[level][index] for level in STACK])
        column = (
            " " * (rows - red - amber - green)
            + RISK_FILLS["green"] * green
            + RISK_FILLS["amber"] * amber
            + RISK_FILLS["red"] * red
        )
        columns += [column] * (edges[index + 1] - edges[index] - gap) + [blank] * gap
    roles = {RISK_FILLS[level]: level for level in STACK}
    labels = {rows - scale.cells(value): f"{value:,}" for value in scale.ticks()} if peak else {}
    lines: list[Row] = _header(bars, window, log, width, header_lines)
    plot = ["".join(cells) for cells in zip(*columns, strict=True)] if columns else [""] * rows
    for position, text in enumerate(plot):
        label = labels.get(position)
        row: Row = [((label or "").rjust(gutter - 1) + " ", "axis"), ("┤" if label else "│", "axis")]
        row += [(run, roles.get(run[0], "")) for run in _RUNS.findall(text)]
        lines.append(row)
    ticks, time_row = _time_labels(bars, edges, plot_width)
    axis = ["─"] * plot_width
    for tick in ticks:
        axis[tick] = "┬"
    lines.append([("0".rjust(gutter - 1) + " └", "axis"), ("".join(axis), "axis")])
    lines.append([(" " * (gutter + 1), ""), *time_row])
    return lines


class RiskChart(Widget):
    """Events per risk level over time as stacked bars, with labelled axes (see :func:`draw`)."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {f"risk-chart--{role}" for role in ROLES}
    DEFAULT_CSS = """
    RiskChart > .risk-chart--red { color: $error; }
    RiskChart > .risk-chart--amber { color: $warning; }
    RiskChart > .risk-chart--green { color: $success; }
    RiskChart > .risk-chart--axis { color: $text-muted; }
    RiskChart > .risk-chart--muted { color: $text-muted; }
    RiskChart > .risk-chart--title { text-style: bold; }
    """

    #: On a log scale (the default) history stays readable beside a burst; ``l`` switches to linear.
    log_scale: reactive[bool] = reactive(True)

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id, classes=classes)
        self.timeline: Timeline | None = None
        self.window = ""
        self._strips: list[Strip] = []
        self._shown = 0  # counts calls of show: the strips are drawn again for new data
        self._drawn_for: tuple[object, ...] | None = None
        self._styles: dict[str, Style] = {}
        self._styles_for: str | None = None

    def show(self, timeline: Timeline, window: str) -> None:
        """Draw ``timeline`` (the last ``window``)."""
        self.timeline = timeline
        self.window = window
        self._shown += 1
        self.refresh()

    def watch_log_scale(self) -> None:
        self.refresh()

    def rows(self) -> list[Row]:
        """What the chart draws at its current size, as ``(text, role)`` runs."""
        if self.timeline is None:
            return [[("Loading…", "muted")]]
        width, height = self.size
        return draw(self.timeline, window=self.window, width=width, height=height, log=self.log_scale)

    def text(self) -> str:
        """The chart as plain text, line by line (what an operator reads of it)."""
        return "\n".join("".join(text for text, _ in row) for row in self.rows())

    def _role_styles(self) -> dict[str, Style]:
        """The Rich style of each role, read from the stylesheet once per theme."""
        theme = self.app.theme
        if self._styles_for != theme:
            base = self.rich_style
            self._styles = {"": base}
            for role in ROLES:
                self._styles[role] = base + self.get_component_rich_style(f"risk-chart--{role}", partial=True)
            self._styles_for = theme
        return self._styles

    def _draw_strips(self) -> list[Strip]:
        key = (self.size, self._shown, self.log_scale)
        if key == self._drawn_for and self._styles_for == self.app.theme:
            return self._strips
        styles = self._role_styles()
        base = styles[""]
        width = self.size.width
        strips = []
        for row in self.rows():
            # Every character drawn is one cell wide: the strip's length is the text's.
            length = sum(len(text) for text, _ in row)
            if length < width:
                row = [*row, (" " * (width - length), "")]
            segments = [Segment(text, styles.get(role, base)) for text, role in row if text]
            strip = Strip(segments, max(length, width))
            strips.append(strip.crop(0, width) if length > width else strip)
        self._strips = strips
        self._drawn_for = key
        return strips

    def render_line(self, y: int) -> Strip:
        strips = self._draw_strips()
        if y < len(strips):
            return strips[y]
        return Strip.blank(self.size.width, self.rich_style)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return 7
