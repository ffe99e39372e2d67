"""Who last talked with a number: an in-memory index of crmroute's own call log.

The router fills it from ``calllog_calls`` (answered calls, inbound and
outbound, with the extension that talked and the talk time) at start and
every second after, reading only rows it has not seen, so a ``last_agent``
destination costs no query on the call path. Numbers are compared in E.164
(the default region's national forms included), else by their digits.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import datetime

import phonenumbers

PER_NUMBER = 32  # calls kept per number (the newest)


@dataclass(frozen=True, order=True)
class Talk:
    at: datetime  # when the call started
    extension: str
    direction: str  # inbound or outbound
    talk_s: int


def number_key(number: str, region: str = "US") -> str:
    """``+14155552671`` for ``(415) 555-2671``, ``14155552671`` and ``+1 415 555 2671``; digits otherwise."""
    text = (number or "").strip()
    digits = "".join(c for c in text if c.isdigit())
    if not digits:
        return ""
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return digits
    if not phonenumbers.is_possible_number(parsed):
        if not text.startswith("+") and len(digits) > 10:  # 14155552671: a country code without the +
            return number_key("+" + digits, region)
        return digits
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


class LastAgents:
    def __init__(self, region: str = "US") -> None:
        self.region = region
        self._calls: dict[str, list[Talk]] = {}
        self.last_id = 0  # the newest call-log row read

    def __len__(self) -> int:
        return sum(len(v) for v in self._calls.values())

    def add(self, number: str, talk: Talk) -> None:
        key = number_key(number, self.region)
        if not key or not talk.extension:
            return
        calls = self._calls.setdefault(key, [])
        bisect.insort(calls, talk)
        del calls[:-PER_NUMBER]

    def forget_before(self, when: datetime) -> None:
        for key in list(self._calls):
            calls = [t for t in self._calls[key] if t.at >= when]
            if calls:
                self._calls[key] = calls
            else:
                del self._calls[key]

    def find(self, number: str, *, since: datetime, outbound: bool = False, min_talk_s: int = 0) -> Talk | None:
        """The newest call with ``number`` since ``since`` that talked at least ``min_talk_s``."""
        for talk in reversed(self._calls.get(number_key(number, self.region), ())):
            if talk.at < since:
                return None
            if talk.talk_s >= min_talk_s and (outbound or talk.direction == "inbound"):
                return talk
        return None
