"""A rule row's extra conditions (pure, no I/O, no clock): all must hold for the row to match.

A row matches when its comparison of the rule's CRM field holds *and* each of
its conditions does; a row whose conditions fail is skipped exactly like a
row whose comparison fails. The kinds:

``field``     another CRM field of the same record: ``{field: Region, operator: "=", value: EU}``
              (read in the same request as the rule's field where the CRM allows it)
``schedule``  a named schedule is open at the call's time: ``{schedule: Office hours}``
``did``       the DID called is one of these numbers or Asterisk patterns: ``{did: ["5551000", "_5552XXX"]}``
``country``   the caller's number is from one of these countries (ISO 3166 codes, read by
              ``phonenumbers``; withheld or unparsable numbers have no country): ``{country: [GB, IE]}``
``matches``   how many CRM records matched the key: ``none``, ``one`` or ``many`` (``{matches: many}``
              routes "several records matched" explicitly)

Any condition takes ``not: true`` to hold when it otherwise would not
(``{schedule: Office hours, not: true}``: outside office hours).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import phonenumbers

from crmroute.routing.compare import Operator, compare
from crmroute.routing.patterns import DialPattern, compile_pattern
from crmroute.routing.schedules import Schedule

MATCH_COUNTS = ("none", "one", "many")


@dataclass(frozen=True)
class CallFacts:
    """What conditions are checked against: the record's values and the call."""

    values: Mapping[str, str] = field(default_factory=dict)  # CRM field API name -> value ("" when none)
    matches: int = 0  # records that matched the key (0: none found)
    at: datetime | None = None  # the call's instant (aware); None: schedule conditions fail
    did: str = ""  # the DID called
    caller: str = ""  # the caller's number as Asterisk sent it
    region: str = "US"  # for numbers written without a country code

    @property
    def country(self) -> str:
        return caller_country(self.caller, self.region)


@dataclass(frozen=True)
class Condition:
    """One condition; subclasses say what holds and how it reads in a trace."""

    negate: bool = False

    def test(self, facts: CallFacts) -> tuple[bool, str]:
        """Whether the condition holds, and what was seen (for the trace)."""
        held, seen = self._test(facts)
        if self.negate:
            return not held, f"not ({seen})"
        return held, seen

    def _test(self, facts: CallFacts) -> tuple[bool, str]:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class FieldCondition(Condition):
    field: str = ""
    operator: Operator = Operator.EQ
    value: str = ""

    def _test(self, facts: CallFacts) -> tuple[bool, str]:
        actual = facts.values.get(self.field, "")
        held = compare(actual, self.operator, self.value)
        return held, f"{self.field} is {actual!r}, {self.operator} {self.value!r}"

    def describe(self) -> str:
        return f"{self.field} {self.operator} {self.value!r}"


@dataclass(frozen=True)
class ScheduleCondition(Condition):
    schedule: Schedule | None = None
    name: str = ""  # as written (a schedule that no longer exists never holds)

    def _test(self, facts: CallFacts) -> tuple[bool, str]:
        if self.schedule is None:
            return False, f"no schedule named {self.name!r}"
        if facts.at is None:
            return False, "no call time"
        held, why = self.schedule.check(facts.at)
        return held, f"schedule {self.name!r} {why}"

    def describe(self) -> str:
        return f"schedule {self.name!r}"


@dataclass(frozen=True)
class DidCondition(Condition):
    numbers: tuple[str, ...] = ()  # numbers and _patterns, as written

    def _test(self, facts: CallFacts) -> tuple[bool, str]:
        held = did_matches(facts.did, self.numbers)
        return held, f"DID {facts.did or '(none)'!s} {'is' if held else 'is not'} {', '.join(self.numbers)}"

    def describe(self) -> str:
        return f"DID {', '.join(self.numbers)}"


@dataclass(frozen=True)
class CountryCondition(Condition):
    countries: tuple[str, ...] = ()  # ISO 3166 alpha-2, upper case

    def _test(self, facts: CallFacts) -> tuple[bool, str]:
        country = facts.country
        return country in self.countries, f"caller country {country or 'unknown'}, wanted {', '.join(self.countries)}"

    def describe(self) -> str:
        return f"country {', '.join(self.countries)}"


@dataclass(frozen=True)
class MatchesCondition(Condition):
    count: str = "one"  # none, one or many

    def _test(self, facts: CallFacts) -> tuple[bool, str]:
        found = match_count(facts.matches)
        return found == self.count, f"{facts.matches} record{'' if facts.matches == 1 else 's'} matched ({found})"

    def describe(self) -> str:
        return f"matches {self.count}"


def check_all(conditions: tuple[Condition, ...], facts: CallFacts) -> tuple[int, str] | None:
    """``None`` when every condition holds, else the first failing one (1-based) and what was seen."""
    for index, condition in enumerate(conditions, start=1):
        held, seen = condition.test(facts)
        if not held:
            return index, seen
    return None


def match_count(matches: int) -> str:
    return "none" if matches <= 0 else "one" if matches == 1 else "many"


def did_matches(did: str, numbers: tuple[str, ...]) -> bool:
    did = (did or "").strip()
    if not did:
        return False
    forms = {did, did.lstrip("+"), "+" + did.lstrip("+")}
    for number in numbers:
        if number.startswith("_"):
            if any(_pattern(number).matches(form) for form in forms):
                return True
        elif number in forms:
            return True
    return False


_PATTERNS: dict[str, DialPattern] = {}


def _pattern(text: str) -> DialPattern:
    found = _PATTERNS.get(text)
    if found is None:
        if len(_PATTERNS) > 10_000:
            _PATTERNS.clear()
        found = _PATTERNS[text] = compile_pattern(text)
    return found


def caller_country(caller: str, region: str = "US") -> str:
    """The ISO 3166 code of the country the number belongs to, ``""`` when unknown (withheld, not a number)."""
    text = (caller or "").strip()
    if not text or not any(ch.isdigit() for ch in text):
        return ""
    try:
        number = phonenumbers.parse(text, region or "US")
    except phonenumbers.NumberParseException:
        return ""
    code = phonenumbers.region_code_for_number(number)
    return "" if not code or code == "ZZ" else code


def valid_country(code: str) -> bool:
    return code.upper() in phonenumbers.SUPPORTED_REGIONS
