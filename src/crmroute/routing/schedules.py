"""Schedules: weekly opening hours with holidays, in a time zone (pure, no I/O, no clock).

A schedule is *open* at an instant when, in the schedule's time zone, that
instant's date is not a holiday and its local time of day falls in one of
the weekday's ranges (start included, end excluded). Ranges are local
wall-clock times, so ``09:00-17:30`` stays ``09:00-17:30`` across a
daylight-saving change; a local hour that is skipped in spring is never
reached, and one that happens twice in autumn is inside a range both times.

The instant is always given (``is_open(at)``): the router passes the call's
time, tests pass fixed instants.

Written form (rules file, API, UI)::

    hours: {mon-fri: ["09:00-12:30", "13:30-17:30"], sat: "10:00-13:00"}
    holidays: ["2026-12-25", {date: "2026-12-26", name: Boxing Day}]

Keys are a day (``mon`` .. ``sun``) or a range of days (``mon-fri``); a day
not named is closed all day. ``24:00`` ends a range at midnight; a range
may not run past midnight (write it on both days).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True, order=True)
class TimeRange:
    """Local time of day from ``start`` to ``end`` minutes after midnight (``end`` excluded, at most 1440)."""

    start: int
    end: int

    def __contains__(self, minute: float) -> bool:
        return self.start <= minute < self.end

    def __str__(self) -> str:
        return f"{_hhmm(self.start)}-{_hhmm(self.end)}"


@dataclass(frozen=True)
class Schedule:
    name: str
    timezone: str
    hours: tuple[tuple[TimeRange, ...], ...] = ((),) * 7  # Monday first
    holidays: Mapping[date, str] = field(default_factory=dict)  # date -> name ("" when unnamed)

    @property
    def zone(self) -> ZoneInfo:
        return zone(self.timezone)

    def local(self, at: datetime) -> datetime:
        if at.tzinfo is None:  # a naive instant is taken as UTC
            at = at.replace(tzinfo=timezone.utc)
        return at.astimezone(self.zone)

    def is_open(self, at: datetime) -> bool:
        return self.check(at)[0]

    def check(self, at: datetime) -> tuple[bool, str]:
        """Whether the schedule is open at ``at``, and why, for the trace."""
        local = self.local(at)
        when = f"{DAY_NAMES[local.weekday()]} {local:%Y-%m-%d %H:%M} {self.timezone}"
        if local.date() in self.holidays:
            name = self.holidays[local.date()]
            return False, f"closed: {when} is a holiday" + (f" ({name})" if name else "")
        minute = local.hour * 60 + local.minute + local.second / 60
        ranges = self.hours[local.weekday()]
        for hours in ranges:
            if minute in hours:
                return True, f"open: {when} is within {hours}"
        shown = ", ".join(str(r) for r in ranges) or "closed all day"
        return False, f"closed: {when} is outside the hours ({shown})"


@functools.lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def check_timezone(name: str) -> str | None:
    """Why ``name`` is not an IANA time zone, or ``None``."""
    if not name or name.startswith(("/", ".")) or ".." in name:
        return "must be an IANA time zone such as Europe/London or America/New_York"
    try:
        zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return f"unknown time zone {name!r}; use an IANA name such as Europe/London or America/New_York"
    return None


def parse_range(text: str) -> TimeRange:
    """``"09:00-17:30"`` -> ``TimeRange(540, 1050)``; ``ValueError`` saying what is wrong."""
    match = _RANGE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a time range such as 09:00-17:30")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2):
        raise ValueError(f"{text!r} has a time that does not exist (use 00:00 to 24:00)")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if end <= start:
        raise ValueError(f"{text!r} ends before it starts; a range past midnight is written on both days")
    return TimeRange(start, end)


def parse_days(key: str) -> list[int]:
    """``"mon"`` -> ``[0]``, ``"mon-fri"`` -> ``[0, 1, 2, 3, 4]``, ``"fri-mon"`` -> ``[4, 5, 6, 0]``."""
    parts = [p.strip().lower()[:3] for p in key.split("-")]
    if len(parts) > 2 or any(p not in DAYS for p in parts) or any(len(p.strip()) < 3 for p in key.split("-")):
        raise ValueError(f"{key!r} is not a day (mon, tue, wed, thu, fri, sat, sun) or a range of days (mon-fri)")
    first, last = DAYS.index(parts[0]), DAYS.index(parts[-1])
    return [(first + i) % 7 for i in range((last - first) % 7 + 1)]


def parse_hours(hours: Mapping[str, Iterable[str] | str | None]) -> tuple[tuple[TimeRange, ...], ...]:
    """The written weekly hours as seven tuples of ranges (Monday first); ``ValueError`` on any problem."""
    week: list[list[TimeRange] | None] = [None] * 7
    for key, value in hours.items():
        days = parse_days(str(key))
        texts = [t for t in (value.split(",") if isinstance(value, str) else (value or [])) if str(t).strip()]
        ranges = sorted(parse_range(str(t)) for t in texts)
        for a, b in zip(ranges, ranges[1:]):
            if b.start < a.end:
                raise ValueError(f"{key}: {a} and {b} overlap")
        for day in days:
            if week[day] is not None:
                raise ValueError(f"{DAYS[day]} is given twice (in {key!r} and before)")
            week[day] = ranges
    return tuple(tuple(day or ()) for day in week)


def format_hours(week: tuple[tuple[TimeRange, ...], ...]) -> dict[str, list[str]]:
    """The written form: consecutive days with the same hours grouped (``mon-fri``); closed days left out."""
    out: dict[str, list[str]] = {}
    day = 0
    while day < 7:
        last = day
        while last + 1 < 7 and week[last + 1] == week[day]:
            last += 1
        if week[day]:
            key = DAYS[day] if last == day else f"{DAYS[day]}-{DAYS[last]}"
            out[key] = [str(r) for r in week[day]]
        day = last + 1
    return out


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
