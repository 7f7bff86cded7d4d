"""The overview's chart: stacked bars per risk with labelled axes, a log scale that keeps history readable
beside a burst, `l` for linear, the width used without losing an hour, and risk told without colour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rich.color import Color as RichColor
from sqlalchemy.ext.asyncio import AsyncEngine
from textual.geometry import Region

from console.sections.overview import OverviewSection
from console.widgets.risk_chart import RISK_FILLS, RiskChart, draw, regroup
from db.base import utcnow
from db.overview import Timeline
from tests.support.console import (
    add_console_user,
    open_section,
    press_and_settle,
    running,
    settle,
    sign_in,
    signed_in,
)
from tests.support.database import make_event, store_logs

#: The console tests here are about drawing and keys, not the engine: SQLite only.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

START = datetime(2026, 12, 4, 22, tzinfo=UTC)


def hourly(red: list[int], amber: list[int] | None = None, green: list[int] | None = None) -> Timeline:
    """A timeline of ``len(red)`` hourly bins from 2026-12-04 22:00 UTC."""
    bins = len(red)
    return Timeline(
        bin_hours=1,
        starts=[START + timedelta(hours=index) for index in range(bins)],
        series={"green": green or [0] * bins, "amber": amber or [0] * bins, "red": red},
    )


def text(rows: list[list[tuple[str, str]]]) -> list[str]:
    return ["".join(run for run, _ in row) for row in rows]


def plot(lines: list[str]) -> list[str]:
    """The rows of bars: between the two header lines and the time axis, without the y axis."""
    return [line.split("┤" if "┤" in line else "│", 1)[1] for line in lines[2:-2]]


def test_chart_names_the_peak_and_labels_both_axes_of_a_known_timeline() -> None:
    red = [0] * 24
    red[12] = 600  # 2026-12-05 10:00 UTC
    red[3] = 40
    lines = text(draw(hourly(red), window="24h", width=100, height=14))
    title, legend = lines[0], lines[1]
    assert "last 24h" in title
    assert "1 h per bar, UTC" in title
    assert "log scale" in title
    assert "● red 640" in legend
    assert "peak 600 at 12-05 10:00" in legend
    assert lines[2].strip().startswith("600 ┤"), lines[2]
    assert any(line.strip().startswith("100 ┤") for line in lines), lines
    assert lines[-2].strip().startswith("0 └")
    labels = lines[-1].split()
    assert "12-05" in labels  # midnight, named by its date
    assert "06:00" in labels
    wide = text(draw(hourly(red), window="24h", width=200, height=14))[-1].split()
    assert wide[:2] == ["12-04", "22:00"]  # the first tick names its day where there is room
    assert "12-05" in wide
    # Every tick mark of the axis has its label under it.
    axis, under = lines[-2], lines[-1]
    assert [i for i, c in enumerate(axis) if c == "┬"] == [
        i for i, c in enumerate(under) if c != " " and (i == 0 or under[i - 1] == " ")
    ]


def test_a_burst_beside_history_keeps_every_quiet_hour_visible_on_the_log_scale() -> None:
    red = [1, 2, 0, 3, 50, 1, 0, 2] * 3
    red[-1] = 100_000
    timeline = hourly(red)
    log = plot(text(draw(timeline, window="24h", width=100, height=20)))
    linear = plot(text(draw(timeline, window="24h", width=100, height=20, log=False)))

    def heights(rows: list[str]) -> list[int]:
        bars = regroup(timeline, 100)
        width = len(rows[0])
        edges = [index * width // len(bars.starts) for index in range(len(bars.starts))]
        return [sum(1 for row in rows if row[edge] != " ") for edge in edges]

    log_heights, linear_heights = heights(log), heights(linear)
    assert [height > 0 for height in log_heights] == [value > 0 for value in red]
    assert [height > 0 for height in linear_heights] == [value > 0 for value in red]
    # On the log scale 50 events stand well above 1; on the linear one both are a single row.
    assert log_heights[4] >= 3 * log_heights[0]
    assert linear_heights[4] == linear_heights[0] == 1
    assert log_heights[-1] == linear_heights[-1] == len(log)


def test_short_widths_add_neighbouring_hours_up_and_say_so() -> None:
    bins = 720
    red = [index % 7 for index in range(bins)]
    timeline = hourly(red, amber=[1] * bins, green=[index % 3 for index in range(bins)])
    bars = regroup(timeline, 70)
    assert bars.hours == 12
    assert len(bars.starts) <= 70
    for level in ("green", "amber", "red"):
        assert sum(bars.series[level]) == sum(timeline.series[level])
    assert all(start.hour % 12 == 0 for start in bars.starts)
    lines = text(draw(timeline, window="30d", width=80, height=10))
    assert "12 h per bar" in lines[0]
    wide = regroup(timeline, 1000)
    assert wide.hours == 1
    assert wide.series == timeline.series


def test_each_risk_has_its_own_fill_glyph_and_name() -> None:
    timeline = hourly([5, 0, 0], amber=[0, 5, 0], green=[0, 0, 5])
    lines = text(draw(timeline, window="24h", width=40, height=8))
    bottom = plot(lines)[-1]
    fills = [character for character in bottom if character != " "]
    assert fills[0] == RISK_FILLS["red"]
    assert fills[-1] == RISK_FILLS["green"]
    assert RISK_FILLS["amber"] in fills
    assert len(set(RISK_FILLS.values())) == 3
    for legend in ("● red 5", "◐ amber 5", "○ green 5"):
        assert legend in lines[1]


def test_a_bar_shows_each_level_it_holds_even_a_few_red_beside_thousands_of_green() -> None:
    timeline = hourly([3], amber=[0], green=[5000])
    column = "".join(row[0] for row in plot(text(draw(timeline, window="24h", width=30, height=12))))
    assert RISK_FILLS["red"] in column
    assert RISK_FILLS["green"] in column
    assert column.rstrip().endswith(RISK_FILLS["red"])  # red sits on the baseline


# -- in the console ----------------------------------------------------------------------------------


async def burst_and_history(engine: AsyncEngine) -> None:
    now = utcnow()
    events: list[dict[str, Any]] = [
        make_event(timestamp=now - timedelta(hours=hours), risk_level="green") for hours in range(2, 23, 3)
    ]
    events += [make_event(timestamp=now - timedelta(minutes=1), risk_level="red") for _ in range(300)]
    await store_logs(engine, events)


@sqlite_only
async def test_l_switches_the_chart_between_log_and_linear_and_says_which(
    engine: AsyncEngine, app_factory
) -> None:
    await burst_and_history(engine)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, OverviewSection)
        chart = section.query_one(RiskChart)
        assert chart.log_scale
        assert "log scale (l: linear)" in chart.text()
        await press_and_settle(pilot, "l")
        assert not chart.log_scale
        assert "linear scale (l: log)" in chart.text()
        await press_and_settle(pilot, "l")
        assert chart.log_scale


@sqlite_only
async def test_w_cycles_the_chart_through_the_three_windows(engine: AsyncEngine, app_factory) -> None:
    await burst_and_history(engine)
    async with signed_in(app_factory(), engine) as pilot:
        section = await open_section(pilot, OverviewSection)
        chart = section.query_one(RiskChart)
        seen = []
        for _ in range(3):
            seen.append(chart.text().splitlines()[0])
            await press_and_settle(pilot, "w")
        assert ["last 24h" in seen[0], "last 7d" in seen[1], "last 30d" in seen[2]] == [True] * 3


@sqlite_only
async def test_no_color_leaves_the_chart_grey_with_a_fill_per_risk(
    engine: AsyncEngine, app_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = utcnow()
    await store_logs(
        engine,
        [
            make_event(timestamp=now - timedelta(hours=hours), risk_level=level)
            for hours, level in ((1, "red"), (2, "amber"), (3, "green"))
        ],
    )
    monkeypatch.setenv("NO_COLOR", "1")
    app = app_factory()
    assert app.no_color  # Textual reads NO_COLOR and adds its monochrome filter
    await add_console_user(engine, "alice")
    async with running(app, size=(120, 36)) as pilot:
        await sign_in(pilot, "alice")
        chart = app.screen.query_one(RiskChart)
        await settle(pilot)
        width, height = chart.size
        strips = chart.render_lines(Region(0, 0, width, height))
        filters = app.get_line_filters()
        assert filters
        colours: set[tuple[int, int, int]] = set()
        for strip in strips:
            segments = list(strip)
            for line_filter in filters:
                segments = line_filter.apply(segments, chart.background_colors[1])
            for segment in segments:
                for colour in (segment.style.color, segment.style.bgcolor) if segment.style else ():
                    if isinstance(colour, RichColor) and not colour.is_default:
                        colours.add(tuple(colour.get_truecolor()))
        assert colours
        assert all(r == g == b for r, g, b in colours)
        drawn = chart.text()
        for level in ("red", "amber", "green"):
            assert RISK_FILLS[level] in drawn
