"""Timestamps before the organisation's retention cutoff are refused with ``past_retention``, without a
socket or a database: the validator's window (db/event_schema.py ``AcceptedTimes``) and the connection's
view of it (ingest/protocol.py ``EventTimes``) driven by fake clocks."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from db.event_schema import (
    CLOSING_CODES,
    ERROR_CODES,
    MAX_EVENT_AGE,
    AcceptedTimes,
    EventError,
    Hello,
    parse_timestamp,
)
from ingest import protocol
from ingest.protocol import EventTimes, ProtocolError, check_log
from simulation.events import EventGenerator

HELLO = Hello("acme", "t0ken", "dev-1", "alice@acme.example", "browser", "1.0")
NOW = datetime(2026, 11, 20, 10, tzinfo=UTC)


def stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def days_ago(days: float, now: datetime = NOW) -> str:
    return stamp(now - timedelta(days=days))


def refused(value: str, accepted: AcceptedTimes) -> EventError:
    with pytest.raises(EventError) as error:
        parse_timestamp(value, accepted=accepted)
    return error.value


class Clocks:
    """A monotonic clock and a wall clock the test moves by hand, together."""

    def __init__(self) -> None:
        self.seconds = 1000.0
        self.now = NOW

    def monotonic(self) -> float:
        return self.seconds

    def wall(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.seconds += seconds
        self.now += timedelta(seconds=seconds)

    def times(self, config: Mapping[str, Any], refresh_seconds: float = 30.0) -> EventTimes:
        return EventTimes.from_config(
            config, clock=self.monotonic, wall=self.wall, refresh_seconds=refresh_seconds
        )


# --- the validator's window ------------------------------------------------------------------------


def test_past_retention_is_a_documented_code_that_skips_the_line_only() -> None:
    assert "past_retention" in ERROR_CODES
    assert "past_retention" not in CLOSING_CODES
    assert not ProtocolError("past_retention", "x").closes


def test_an_event_older_than_the_retention_is_past_retention_naming_cutoff_and_retention() -> None:
    error = refused(days_ago(100), AcceptedTimes.at(NOW, 90))
    assert error.code == "past_retention"
    assert "2026-08-22T10:00:00Z" in error.message  # NOW - 90 days
    assert "log_retention_days 90" in error.message


def test_an_event_within_the_retention_is_accepted() -> None:
    assert parse_timestamp(days_ago(80), accepted=AcceptedTimes.at(NOW, 90)) == NOW - timedelta(days=80)


def test_the_cutoff_itself_is_kept_as_retention_keeps_it() -> None:
    # db/retention.py deletes timestamp < now - days: an event exactly at the cutoff stays.
    accepted = AcceptedTimes.at(NOW, 90)
    assert parse_timestamp(days_ago(90), accepted=accepted) == accepted.earliest
    assert refused(stamp(accepted.earliest - timedelta(microseconds=1)), accepted).code == "past_retention"


def test_a_longer_retention_accepts_what_a_shorter_one_refuses() -> None:
    assert refused(days_ago(100), AcceptedTimes.at(NOW, 90)).code == "past_retention"
    assert parse_timestamp(days_ago(100), accepted=AcceptedTimes.at(NOW, 120))


def test_an_event_older_than_any_retention_is_still_invalid_event_as_a_wrong_clock() -> None:
    accepted = AcceptedTimes.at(NOW, 90)
    assert refused(days_ago(399), accepted).code == "past_retention"
    error = refused(days_ago(401), accepted)
    assert error.code == "invalid_event"
    assert f"{MAX_EVENT_AGE.days} days old" in error.message


def test_the_future_bound_is_unchanged_by_the_retention() -> None:
    accepted = AcceptedTimes.at(NOW, 90)
    assert parse_timestamp(stamp(NOW + timedelta(hours=23)), accepted=accepted)
    error = refused(stamp(NOW + timedelta(hours=25)), accepted)
    assert error.code == "invalid_event"
    assert "more than a day in the future" in error.message


def test_without_a_retention_the_old_bound_of_four_hundred_days_applies_as_invalid_event() -> None:
    accepted = AcceptedTimes.at(NOW)
    assert parse_timestamp(days_ago(399), accepted=accepted)
    error = refused(days_ago(401), accepted)
    assert error.code == "invalid_event"
    assert f"{MAX_EVENT_AGE.days} days old" in error.message


# --- the connection's view: one clock read per event, the retention re-read once a period -----------


def test_check_log_refuses_an_event_past_the_connection_retention_echoing_its_id() -> None:
    clocks = Clocks()
    times = clocks.times({"log_retention_days": 90})
    event = EventGenerator(seed=3).event(timestamp=NOW - timedelta(days=100))
    with pytest.raises(ProtocolError) as error:
        check_log(event, hello=HELLO, metadata_keys=None, times=times)
    assert (error.value.code, error.value.event_id, error.value.closes) == (
        "past_retention",
        event["id"],
        False,
    )


def test_check_log_stores_an_event_within_the_connection_retention() -> None:
    clocks = Clocks()
    times = clocks.times({"log_retention_days": 90})
    event = EventGenerator(seed=3).event(timestamp=NOW - timedelta(days=80))
    assert check_log(event, hello=HELLO, metadata_keys=None, times=times)["timestamp"] == NOW - timedelta(
        days=80
    )


def test_the_window_moves_with_the_clock_at_most_once_a_second() -> None:
    clocks = Clocks()
    times = clocks.times({"log_retention_days": 90})
    first = times.current()
    clocks.advance(0.5)
    assert times.current() is first  # the same window: no date arithmetic per event
    clocks.advance(0.6)
    moved = times.current()
    assert moved.earliest == first.earliest + timedelta(seconds=1.1)
    assert moved.latest == first.latest + timedelta(seconds=1.1)


def test_the_retention_is_due_for_a_reread_once_per_period() -> None:
    clocks = Clocks()
    times = clocks.times({"log_retention_days": 90}, refresh_seconds=30)
    assert not times.refresh_due()
    clocks.advance(30)
    assert times.refresh_due()
    assert not times.refresh_due()  # claimed: a failed re-read waits for the next period
    clocks.advance(30)
    assert times.refresh_due()


async def test_a_reread_follows_a_raised_retention() -> None:
    clocks = Clocks()
    times = clocks.times({"log_retention_days": 90})

    async def read_config() -> dict[str, Any]:
        return {"log_retention_days": 120}

    assert await times.refresh(read_config)
    assert times.retention_days == 120
    assert parse_timestamp(days_ago(100), accepted=times.current())


async def test_a_failed_reread_keeps_the_last_retention(monkeypatch: pytest.MonkeyPatch) -> None:
    clocks = Clocks()
    times = clocks.times({"log_retention_days": 90})

    async def database_away() -> dict[str, Any]:
        raise ConnectionRefusedError("the database is away")

    assert not await times.refresh(database_away)
    assert times.retention_days == 90


def test_a_config_answer_is_followed_at_once_and_restarts_the_period() -> None:
    clocks = Clocks()
    times = clocks.times({"log_retention_days": 90}, refresh_seconds=30)
    clocks.advance(29)
    times.follow({"log_retention_days": 30})
    assert refused(days_ago(31, clocks.now), times.current()).code == "past_retention"
    clocks.advance(29)
    assert not times.refresh_due()


@pytest.mark.parametrize("days", [None, "90", 0, -5, 90.0, True, 10_000])
def test_a_config_without_a_sane_retention_falls_back_to_the_four_hundred_day_bound(days: object) -> None:
    times = Clocks().times({} if days is None else {"log_retention_days": days})
    assert times.retention_days is None
    assert times.current().earliest == NOW - MAX_EVENT_AGE


def test_the_refresh_period_is_read_when_a_connection_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    # The socket tests shorten it this way; a connection keeps the period it started with.
    monkeypatch.setattr(protocol, "RETENTION_REFRESH_SECONDS", 0.25)
    clocks = Clocks()
    times = EventTimes.from_config({"log_retention_days": 90}, clock=clocks.monotonic, wall=clocks.wall)
    clocks.advance(0.25)
    assert times.refresh_due()
