"""Schedules at fixed instants: weekly hours across daylight-saving changes, holidays in the schedule's zone."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from crmroute.routing.schedules import Schedule, check_timezone, format_hours, parse_hours


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


LONDON = Schedule("Office hours", "Europe/London", parse_hours({"mon-fri": ["09:00-17:00"]}))


@pytest.mark.parametrize(
    ("instant", "open_"),
    [
        # Spring forward (Sunday 2026-03-29 01:00 UTC): 08:30 UTC is 08:30 GMT before, 09:30 BST after.
        ("2026-03-27T08:30:00", False),
        ("2026-03-27T09:00:00", True),
        ("2026-03-30T07:59:00", False),  # 08:59 BST
        ("2026-03-30T08:00:00", True),  # 09:00 BST
        ("2026-03-30T08:30:00", True),
        ("2026-03-30T15:59:00", True),  # 16:59 BST
        ("2026-03-30T16:00:00", False),  # 17:00 BST: the end is excluded
        # Fall back (Sunday 2026-10-25 01:00 UTC): 08:30 UTC is 09:30 BST before, 08:30 GMT after.
        ("2026-10-23T08:30:00", True),
        ("2026-10-26T08:30:00", False),
        ("2026-10-26T09:00:00", True),
        ("2026-10-26T16:59:00", True),
        ("2026-10-26T17:00:00", False),
        ("2026-10-24T12:00:00", False),  # Saturday
    ],
)
def test_hours_are_local_wall_clock_across_dst(instant: str, open_: bool) -> None:
    assert LONDON.is_open(utc(instant)) is open_, LONDON.check(utc(instant))


def test_skipped_and_repeated_hours() -> None:
    night = Schedule("Night", "Europe/London", parse_hours({"sun": "01:00-02:00"}))
    assert not night.is_open(utc("2026-03-29T00:30:00"))  # 00:30 GMT
    assert not night.is_open(utc("2026-03-29T01:00:00"))  # 02:00 BST: 01:00-02:00 local never happened
    assert night.is_open(utc("2026-10-25T00:30:00"))  # 01:30 BST
    assert night.is_open(utc("2026-10-25T01:30:00"))  # 01:30 GMT: the same local hour, again


def test_new_york_dst_in_march() -> None:
    ny = Schedule("NY", "America/New_York", parse_hours({"mon-fri": "09:00-17:00"}))
    assert ny.is_open(utc("2026-03-06T14:00:00"))  # Friday 09:00 EST
    assert not ny.is_open(utc("2026-03-09T12:30:00"))  # Monday 08:30 EDT
    assert ny.is_open(utc("2026-03-09T13:00:00"))  # Monday 09:00 EDT


def test_holiday_is_the_date_in_the_schedules_zone() -> None:
    always = parse_hours({"mon-sun": "00:00-24:00"})
    la = Schedule("LA", "America/Los_Angeles", always, {date(2026, 12, 25): "Christmas"})
    assert la.is_open(utc("2026-12-25T07:30:00"))  # still the 24th, 23:30 PST (the 25th in UTC)
    closed, why = la.check(utc("2026-12-25T08:30:00"))  # 00:30 PST on the 25th
    assert not closed and "holiday (Christmas)" in why and "2026-12-25 00:30 America/Los_Angeles" in why
    assert not la.is_open(utc("2026-12-26T07:59:00"))  # 23:59 PST, still the 25th
    assert la.is_open(utc("2026-12-26T08:00:00"))  # 00:00 PST on the 26th


def test_a_naive_instant_is_utc() -> None:
    assert LONDON.is_open(datetime(2026, 3, 30, 8, 0)) == LONDON.is_open(utc("2026-03-30T08:00:00"))


def test_trace_says_why() -> None:
    held, why = LONDON.check(utc("2026-03-28T10:00:00"))
    assert not held and why == "closed: Saturday 2026-03-28 10:00 Europe/London is outside the hours (closed all day)"
    held, why = LONDON.check(utc("2026-03-30T08:00:00"))
    assert held and why == "open: Monday 2026-03-30 09:00 Europe/London is within 09:00-17:00"


def test_written_hours_round_trip_grouped() -> None:
    week = parse_hours({"mon": "09:00-17:00", "tue-fri": ["13:00-17:00", "09:00-12:00"], "sun": []})
    assert format_hours(week) == {"mon": ["09:00-17:00"], "tue-fri": ["09:00-12:00", "13:00-17:00"]}
    assert parse_hours(format_hours(week)) == week
    assert format_hours(parse_hours({"fri-mon": "10:00-11:00"})) == {"mon": ["10:00-11:00"], "fri-sun": ["10:00-11:00"]}


@pytest.mark.parametrize(
    ("hours", "message"),
    [
        ({"mon": "17:00-09:00"}, "ends before it starts"),
        ({"mon": "9-17"}, "not a time range"),
        ({"mon": "09:00-24:30"}, "does not exist"),
        ({"funday": "09:00-17:00"}, "is not a day"),
        ({"mon-fri": "09:00-17:00", "fri": "10:00-11:00"}, "fri is given twice"),
        ({"mon": ["09:00-12:00", "11:00-13:00"]}, "overlap"),
    ],
)
def test_bad_hours_say_what_is_wrong(hours: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_hours(hours)


def test_time_zone_names() -> None:
    assert check_timezone("Europe/London") is None
    assert "unknown time zone" in (check_timezone("Mars/Olympus") or "")
    assert check_timezone("../etc/passwd")
