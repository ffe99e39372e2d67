"""How a rule row compares the CRM value with its own value (pure, no I/O).

``compare(value, operator, operand)`` holds when ``<value> <operator> <operand>``
does, ``value`` being what the CRM returned ("" when nothing came back) and
``operand`` the row's value. The rules, in order:

* ``empty`` / ``not_empty``: the value is / is not empty once surrounding
  whitespace is trimmed; the operand is ignored.
* ``contains`` / ``starts_with``: always text (trimmed, case-insensitive), so
  ``"1500" contains "50"`` holds.
* ``regex``: Python ``re.search`` of the operand in the trimmed value,
  case-sensitive as written (write ``(?i)`` for case-insensitive). Only
  patterns :func:`check_operand` accepts are run (see `Regex guard`_); any
  other pattern never matches.
* ``=``, ``!=``, ``<``, ``>``, ``<=``, ``>=``:

  - both sides numbers: compared as exact decimals (``50`` = ``50.0`` =
    ``050`` = ``+5e1``);
  - both sides ISO-8601 dates or date-times: compared as points in time;
  - otherwise text: ``=`` compares trimmed text case-insensitively and the
    ordering operators never match.

  ``!=`` is always exactly ``not =``.

Numbers
    After trimming: an optional sign, ASCII digits with an optional decimal
    point (``5``, ``-5.25``, ``.5``, ``5.``), an optional exponent of at most
    four digits (``1e3``, ``1.5E-05``: how JSON floats come out of
    ``str(float)``). Not numbers: thousands separators (``1,000``, ``1 000``),
    underscores, ``nan``, ``inf``, non-ASCII digits, currency signs. Compared
    as :class:`decimal.Decimal`, so long IDs that floats would round together
    stay distinct.

Dates
    After trimming, case-insensitive: ``YYYY-MM-DD``, optionally followed by
    ``T`` or a space, ``HH:MM``, optional ``:SS`` and fraction (``.`` or ``,``,
    up to 9 digits, kept to the microsecond), and an optional ``Z`` or
    ``±HH[:MM]`` offset. The compact (``20240115``, which is a number), week
    and ordinal forms are not recognised. A naive date-time is taken as UTC.
    When either side is a date only, both sides are compared by the calendar
    date as written (a date-time's own date, before any offset is applied):
    ``2024-01-15T23:30-05:00`` = ``2024-01-15``. Two date-times compare as
    instants.

Text
    Trimmed, NFC-normalised and case-folded (``straße`` = ``STRASSE``).

Regex guard
    Python's ``re`` has no timeout, so a pattern is refused (by
    :func:`check_operand` on save, and by :func:`compare` at call time) when
    it is longer than :data:`MAX_PATTERN_LENGTH` or nests one unbounded
    repetition inside another (``(a+)+``, ``(\\w+\\s?)*``), the shape behind
    catastrophic backtracking; and only the first :data:`MAX_REGEX_VALUE_LENGTH`
    characters of a value are searched.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from enum import StrEnum

__all__ = [
    "MAX_PATTERN_LENGTH",
    "MAX_REGEX_VALUE_LENGTH",
    "ORDERING_OPERATORS",
    "Operator",
    "check_operand",
    "compare",
    "parse_operator",
]

MAX_REGEX_VALUE_LENGTH = 4096  # characters of a value a regex is run against
MAX_PATTERN_LENGTH = 1000  # characters in a row's regex


class Operator(StrEnum):
    EQ = "="
    NE = "!="
    LT = "<"
    GT = ">"
    LE = "<="
    GE = ">="
    CONTAINS = "contains"
    STARTS_WITH = "starts_with"
    REGEX = "regex"
    EMPTY = "empty"
    NOT_EMPTY = "not_empty"


ORDERING_OPERATORS = frozenset({Operator.LT, Operator.GT, Operator.LE, Operator.GE})

# Accepted spellings besides each operator's value and name (lower-cased,
# spaces and hyphens as underscores).
_ALIASES: dict[str, Operator] = {
    "==": Operator.EQ,
    "eq": Operator.EQ,
    "equals": Operator.EQ,
    "<>": Operator.NE,
    "ne": Operator.NE,
    "≠": Operator.NE,
    "lt": Operator.LT,
    "gt": Operator.GT,
    "le": Operator.LE,
    "lte": Operator.LE,
    "≤": Operator.LE,
    "ge": Operator.GE,
    "gte": Operator.GE,
    "≥": Operator.GE,
    "startswith": Operator.STARTS_WITH,
    "is_empty": Operator.EMPTY,
    "is_not_empty": Operator.NOT_EMPTY,
    "notempty": Operator.NOT_EMPTY,
}


def parse_operator(text: str) -> Operator:
    """The operator spelled ``text`` (``=``, ``eq``, ``==``, ``starts with`` ...).

    Raises ``ValueError`` naming the valid operators.
    """
    key = " ".join(str(text).split()).lower().replace(" ", "_").replace("-", "_")
    for op in Operator:
        if key in (op.value, op.name.lower()):
            return op
    if key in _ALIASES:
        return _ALIASES[key]
    valid = ", ".join(op.value for op in Operator)
    raise ValueError(f"unknown operator {text!r}; valid operators: {valid}")


def compare(value: str, operator: Operator, operand: str) -> bool:
    """Whether ``<value> <operator> <operand>`` holds (see the module docstring)."""
    operator = Operator(operator)
    value = "" if value is None else str(value)
    operand = "" if operand is None else str(operand)

    if operator is Operator.EMPTY:
        return value.strip() == ""
    if operator is Operator.NOT_EMPTY:
        return value.strip() != ""
    if operator is Operator.CONTAINS:
        return _fold(operand) in _fold(value)
    if operator is Operator.STARTS_WITH:
        return _fold(value).startswith(_fold(operand))
    if operator is Operator.REGEX:
        pattern = _compile(operand)
        return pattern is not None and pattern.search(value.strip()[:MAX_REGEX_VALUE_LENGTH]) is not None
    if operator is Operator.NE:
        return not _equal(value, operand)
    if operator is Operator.EQ:
        return _equal(value, operand)

    order = _order(value, operand)
    if order is None:
        return False
    if operator is Operator.LT:
        return order < 0
    if operator is Operator.GT:
        return order > 0
    if operator is Operator.LE:
        return order <= 0
    return order >= 0  # GE


def check_operand(operator: Operator, operand: str) -> str | None:
    """Why ``operand`` is no good for ``operator`` (a message for the admin), or ``None``."""
    operator = Operator(operator)
    operand = "" if operand is None else str(operand)
    if operator in (Operator.EMPTY, Operator.NOT_EMPTY, Operator.EQ, Operator.NE):
        return None
    if operator in ORDERING_OPERATORS:
        if _number(operand) is None and _date(operand) is None:
            return (
                f"{operator.value} needs a number (e.g. 50 or -2.5) or an ISO-8601 date "
                f"(e.g. 2024-01-31 or 2024-01-31T09:00Z), not {operand!r}"
            )
        return None
    if operator in (Operator.CONTAINS, Operator.STARTS_WITH):
        if operand.strip() == "":
            return f"{operator.value} needs some text to look for (use not_empty to match any value)"
        return None
    # REGEX
    if operand == "":
        return "regex needs a pattern (use not_empty to match any value)"
    return _regex_problem(operand)


# --- text -------------------------------------------------------------------


def _fold(text: str) -> str:
    """Trimmed text in a form where case and Unicode composition do not matter."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", text.strip()).casefold())


# --- numbers and dates --------------------------------------------------------

_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?")


def _number(text: str) -> Decimal | None:
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        return None
    try:
        return Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid literals
        return None


_DATE = re.compile(
    r"(?P<y>[0-9]{4})-(?P<m>[0-9]{2})-(?P<d>[0-9]{2})"
    r"(?:[T ](?P<H>[0-9]{2}):(?P<M>[0-9]{2})"
    r"(?::(?P<S>[0-9]{2})(?:[.,](?P<f>[0-9]{1,9}))?)?"
    r"(?P<tz>Z|[+-][0-9]{2}(?::?[0-9]{2})?)?)?",
    re.IGNORECASE,
)


class _When:
    """A parsed ISO-8601 date (``instant`` None) or date-time (``instant`` aware)."""

    __slots__ = ("day", "instant")

    def __init__(self, day: date, instant: datetime | None) -> None:
        self.day = day  # the calendar date as written
        self.instant = instant


def _date(text: str) -> _When | None:
    match = _DATE.fullmatch(text.strip())
    if match is None:
        return None
    g = match.groupdict()
    try:
        day = date(int(g["y"]), int(g["m"]), int(g["d"]))
        if g["H"] is None:
            return _When(day, None)
        zone = timezone.utc
        tz = g["tz"]
        if tz and tz.upper() != "Z":
            digits = tz[1:].replace(":", "")
            hours, minutes = int(digits[:2]), int(digits[2:] or 0)
            if hours > 23 or minutes > 59:
                return None
            offset = timedelta(hours=hours, minutes=minutes)
            zone = timezone(-offset if tz[0] == "-" else offset)
        micro = int((g["f"] or "").ljust(6, "0")[:6])
        instant = datetime(day.year, day.month, day.day, int(g["H"]), int(g["M"]), int(g["S"] or 0), micro, zone)
    except ValueError:  # 2024-02-30, 25:00 ...
        return None
    return _When(day, instant)


def _order(value: str, operand: str) -> int | None:
    """-1, 0 or 1 when both sides are numbers or both dates; ``None`` otherwise."""
    left_n, right_n = _number(value), _number(operand)
    if left_n is not None and right_n is not None:
        return (left_n > right_n) - (left_n < right_n)
    if left_n is not None or right_n is not None:
        return None
    left_d, right_d = _date(value), _date(operand)
    if left_d is None or right_d is None:
        return None
    if left_d.instant is None or right_d.instant is None:
        left, right = left_d.day, right_d.day
        return (left > right) - (left < right)
    return (left_d.instant > right_d.instant) - (left_d.instant < right_d.instant)


def _equal(value: str, operand: str) -> bool:
    order = _order(value, operand)
    if order is not None:
        return order == 0
    return _fold(value) == _fold(operand)


# --- regex --------------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def _compile(pattern: str) -> re.Pattern[str] | None:
    """The compiled pattern, or ``None`` when it is invalid or refused by the guard."""
    if _regex_problem(pattern) is not None:
        return None
    return re.compile(pattern)


@functools.lru_cache(maxsize=512)
def _regex_problem(pattern: str) -> str | None:
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"regular expression too long ({len(pattern)} characters, at most {MAX_PATTERN_LENGTH})"
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"invalid regular expression: {exc}"
    except (OverflowError, RecursionError, ValueError) as exc:
        return f"invalid regular expression: {exc}"
    if _nested_repetition(pattern):
        return (
            "regular expression could take too long: a repeated group contains another "
            "unbounded repetition, e.g. (a+)+; simplify it"
        )
    return None


# A repetition allowing at least this many rounds counts as unbounded.
_BIG_REPEAT = 32


def _nested_repetition(pattern: str) -> bool:
    """Whether an unbounded repetition is nested inside another (catastrophic backtracking)."""
    try:
        from re import _constants, _parser  # CPython internals; the guard is best effort

        parsed = _parser.parse(pattern)
    except Exception:  # pragma: no cover - other interpreters, or internals moved
        return False
    backtracking = {_constants.MAX_REPEAT, _constants.MIN_REPEAT}

    def walk(items, inside_repeat: bool) -> bool:
        for op, arg in items:
            if op in backtracking:
                low, high, body = arg
                big = high >= _BIG_REPEAT
                if big and inside_repeat:
                    return True
                if walk(body, inside_repeat or big):
                    return True
            elif op is getattr(_constants, "ATOMIC_GROUP", None) or op is getattr(
                _constants, "POSSESSIVE_REPEAT", None
            ):
                continue  # no backtracking into these
            else:
                for sub in _subpatterns(arg, _parser.SubPattern):
                    if walk(sub, inside_repeat):
                        return True
        return False

    return walk(parsed, False)


def _subpatterns(arg, kind):
    """The sub-patterns inside one parsed node's argument (groups, branches, lookarounds)."""
    if isinstance(arg, kind):
        yield arg
    elif isinstance(arg, (tuple, list)):
        for item in arg:
            yield from _subpatterns(item, kind)
