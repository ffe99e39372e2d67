"""compare(): an operator table, then properties, then check_operand/parse_operator."""

from __future__ import annotations

import string
import time
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from crmroute.routing.compare import (
    MAX_REGEX_VALUE_LENGTH,
    ORDERING_OPERATORS,
    Operator,
    check_operand,
    compare,
    parse_operator,
)

EQ, NE, LT, GT, LE, GE = Operator.EQ, Operator.NE, Operator.LT, Operator.GT, Operator.LE, Operator.GE
CONTAINS, STARTS_WITH, REGEX = Operator.CONTAINS, Operator.STARTS_WITH, Operator.REGEX
EMPTY, NOT_EMPTY = Operator.EMPTY, Operator.NOT_EMPTY

# (CRM value, operator, row value, holds?)
TABLE = [
    # numbers
    ("50", EQ, "50.0", True),
    ("50", EQ, "050", True),
    (" 50 ", EQ, "50", True),
    ("+50", EQ, "50", True),
    ("-0", EQ, "0", True),
    ("5e1", EQ, "50", True),
    ("1.5E-05", EQ, "0.000015", True),
    (".5", EQ, "0.5", True),
    ("5.", EQ, "5", True),
    ("50", NE, "50.0", False),
    ("50", NE, "51", True),
    ("12345678901234567890", EQ, "12345678901234567891", False),  # floats would say equal
    ("9", LT, "10", True),  # numeric, not text order
    ("10", LT, "9", False),
    ("10", GT, "9", True),
    ("-3", LT, "-2.5", True),
    ("50", LE, "50.00", True),
    ("50", GE, "50.00", True),
    ("50.01", LE, "50", False),
    ("49.99", GE, "50", False),
    ("1e3", GT, "999", True),
    # not numbers: text rules, ordering never matches
    ("1,000", EQ, "1000", False),
    ("1,000", GT, "999", False),
    ("1 000", LT, "2000", False),
    ("1_000", EQ, "1000", False),
    ("nan", EQ, "nan", True),  # plain text, equal as text
    ("nan", LT, "1", False),
    ("inf", GT, "1", False),
    ("Infinity", GE, "Infinity", False),
    ("$50", GT, "10", False),
    ("٥٠", EQ, "50", False),  # Arabic-Indic digits are not numbers
    ("1e99999", GT, "1", False),  # exponent longer than 4 digits: text
    # dates
    ("2024-01-15", EQ, "2024-01-15", True),
    ("2024-01-15", LT, "2024-02-01", True),
    ("2024-01-15", GT, "2023-12-31", True),
    ("2024-01-15", LE, "2024-01-15", True),
    ("2024-01-15", GE, "2024-01-16", False),
    ("2024-01-15", NE, "2024-01-16", True),
    ("2024-01-15T10:00:00Z", EQ, "2024-01-15T11:00:00+01:00", True),  # same instant
    ("2024-01-15T10:00:00", EQ, "2024-01-15T10:00:00Z", True),  # naive is UTC
    ("2024-01-15 10:00", LT, "2024-01-15T10:00:01", True),
    ("2024-01-15T10:00:00.5Z", GT, "2024-01-15T10:00:00Z", True),
    ("2024-01-15T10:00:00,25+0000", LT, "2024-01-15T10:00:00.3Z", True),
    ("2024-01-15t10:00z", EQ, "2024-01-15T10:00Z", True),
    ("2024-01-15T09:00-05:00", GT, "2024-01-15T13:00Z", True),
    ("2024-01-15T09:00-05", EQ, "2024-01-15T14:00Z", True),
    # date-only against date-time: the calendar date as written
    ("2024-01-15T23:30-05:00", EQ, "2024-01-15", True),
    ("2024-01-15T00:00", EQ, "2024-01-15", True),
    ("2024-01-15T10:00Z", LT, "2024-01-15", False),
    ("2024-01-15T10:00Z", LE, "2024-01-15", True),
    ("2024-01-15T10:00Z", LT, "2024-01-16", True),
    ("2024-01-14", LT, "2024-01-15T00:00Z", True),
    # not dates
    ("2024-02-30", LT, "2024-03-01", False),
    ("2024-01-15T25:00", GT, "2024-01-15", False),
    ("15/01/2024", LT, "2024-02-01", False),
    ("2024-1-5", LT, "2024-02-01", False),
    ("2024-01-15T10:00+24:00", GT, "2024-01-01", False),
    ("2024-01-15", GT, "20240101", False),  # a number against a date: text, no order
    ("2024", LT, "2025", True),  # a number
    # text
    ("GOLD", EQ, "gold", True),
    ("  Gold\t", EQ, " GOLD ", True),
    ("straße", EQ, "STRASSE", True),
    ("Cafe\u0301", EQ, "CAFÉ", True),  # composed vs decomposed
    ("GOLD", EQ, "GOLDEN", False),
    ("GOLD", NE, "gold", False),
    ("GOLD", NE, "SILVER", True),
    ("GOLD", LT, "SILVER", False),
    ("GOLD", GT, "SILVER", False),
    ("GOLD", LE, "GOLD", False),
    ("GOLD", GE, "GOLD", False),
    ("50", EQ, "fifty", False),
    ("50", LT, "fifty", False),
    ("abc", EQ, "2024-01-01", False),
    # contains / starts_with: always text
    ("Gold Customer", CONTAINS, "gold", True),
    ("Gold Customer", CONTAINS, " CUSTOMER ", True),
    ("Gold Customer", CONTAINS, "silver", False),
    ("1500", CONTAINS, "50", True),
    ("", CONTAINS, "gold", False),
    ("Gold Customer", STARTS_WITH, "GOLD", True),
    ("  Gold Customer", STARTS_WITH, "gold", True),
    ("Gold Customer", STARTS_WITH, "Customer", False),
    ("050", STARTS_WITH, "0", True),
    ("", STARTS_WITH, "a", False),
    # regex: case-sensitive as written, trimmed value, re.search
    ("GOLD-123", REGEX, r"^GOLD-\d+$", True),
    (" GOLD-123 ", REGEX, r"^GOLD-\d+$", True),
    ("gold-123", REGEX, r"^GOLD-\d+$", False),
    ("gold-123", REGEX, r"(?i)^GOLD-\d+$", True),
    ("xx GOLD yy", REGEX, "GOLD", True),
    ("", REGEX, "^$", True),
    ("anything", REGEX, "[", False),  # invalid: never matches, never raises
    ("a" * 40 + "!", REGEX, r"^(a+)+$", False),  # refused by the guard, returns at once
    # empty / not_empty: operand ignored
    ("", EMPTY, "", True),
    ("   ", EMPTY, "", True),
    ("\t\n", EMPTY, "ignored", True),
    ("x", EMPTY, "", False),
    ("0", EMPTY, "", False),
    ("", NOT_EMPTY, "", False),
    (" ", NOT_EMPTY, "", False),
    ("x", NOT_EMPTY, "ignored", True),
    # the empty value with the comparison operators
    ("", EQ, "", True),
    ("", EQ, "  ", True),
    ("  ", EQ, "", True),
    ("", EQ, "0", False),
    ("", NE, "", False),
    ("", NE, "GOLD", True),
    ("GOLD", EQ, "", False),
    ("GOLD", NE, "", True),
    ("", LT, "1", False),
    ("", GT, "1", False),
    ("", LE, "1", False),
    ("", GE, "-1", False),
    ("", LT, "2024-01-01", False),
    ("", LE, "", False),
]


@pytest.mark.parametrize(("value", "operator", "operand", "expected"), TABLE)
def test_table(value: str, operator: Operator, operand: str, expected: bool) -> None:
    assert compare(value, operator, operand) is expected


def test_table_covers_every_operator() -> None:
    assert {row[1] for row in TABLE} == set(Operator)


def test_plain_strings_work_as_operators() -> None:
    assert compare("50", "=", "50.0") is True
    assert compare("a", "not_empty", "") is True


def test_regex_searches_at_most_the_value_cap() -> None:
    value = "a" * MAX_REGEX_VALUE_LENGTH + "NEEDLE"
    assert compare(value, REGEX, "NEEDLE") is False
    assert compare(value, REGEX, "^a+$") is True
    assert compare(value, CONTAINS, "needle") is True  # the cap is for regex only


def test_catastrophic_regex_is_not_run() -> None:
    started = time.monotonic()
    assert compare("a" * 5000 + "!", REGEX, r"^(\w+\s?)*$") is False
    assert time.monotonic() - started < 5  # backtracking over 5,000 characters would not end this century


# --- properties -----------------------------------------------------------------

FAST = settings(max_examples=200, deadline=None)
OPERATORS = st.sampled_from(list(Operator))
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
# Strings that are likely to hit every branch: numbers, dates, text, blanks.
interesting = st.one_of(
    st.text(max_size=12),
    finite_floats.map(repr),
    st.integers().map(str),
    st.dates().map(date.isoformat),
    st.sampled_from(["", " ", "GOLD", "gold", "50", "50.0", " 050 ", "2024-01-15", "2024-01-15T10:00Z", "nan"]),
)


@FAST
@given(interesting, interesting)
def test_eq_and_ne_are_complements(value: str, operand: str) -> None:
    assert compare(value, NE, operand) is (not compare(value, EQ, operand))


@FAST
@given(interesting, OPERATORS, interesting)
def test_compare_never_raises_and_returns_bool(value: str, operator: Operator, operand: str) -> None:
    assert isinstance(compare(value, operator, operand), bool)


@FAST
@given(finite_floats, finite_floats)
def test_numbers_agree_with_float_comparison(x: float, y: float) -> None:
    a, b = repr(x), repr(y)
    assert compare(a, LT, b) is (x < y)
    assert compare(a, GT, b) is (x > y)
    assert compare(a, LE, b) is (x <= y)
    assert compare(a, GE, b) is (x >= y)
    assert compare(a, EQ, b) is (x == y)
    assert compare(a, LT, b) is (not compare(a, GE, b))
    assert compare(a, GT, b) is (not compare(a, LE, b))


@FAST
@given(interesting, interesting)
def test_lt_and_gt_are_antisymmetric(a: str, b: str) -> None:
    assert not (compare(a, LT, b) and compare(a, GT, b))
    assert compare(a, LT, b) is compare(b, GT, a)
    assert compare(a, LE, b) is compare(b, GE, a)


@FAST
@given(st.integers(min_value=-(10**30), max_value=10**30), st.integers(0, 5), st.sampled_from(["", " ", "\t", "  "]))
def test_numeric_equality_ignores_formatting(n: int, zeros: int, pad: str) -> None:
    sign, digits = ("-", str(-n)) if n < 0 else ("", str(n))
    forms = [str(n), f"{n}.0", f"{n}.000", f"{sign}{'0' * zeros}{digits}", f"{pad}{n}{pad}", f"{n}e0"]
    if n >= 0:
        forms.append(f"+{n}")
    for a in forms:
        for b in forms:
            assert compare(a, EQ, b), (a, b)
            assert compare(a, LE, b) and compare(a, GE, b)
            assert not compare(a, LT, b)
    assert not compare(str(n), EQ, str(n + 1))


@FAST
@given(st.decimals(allow_nan=False, allow_infinity=False, places=4), st.decimals(allow_nan=False, allow_infinity=False, places=4))
def test_decimals_compare_exactly(x: Decimal, y: Decimal) -> None:
    assert compare(f"{x:f}", LT, f"{y:f}") is (x < y)
    assert compare(f"{x:f}", EQ, f"{y:f}") is (x == y)


words = st.text(alphabet=string.ascii_letters + string.digits + " -_.éÉßøØ", max_size=20)
blank = st.text(alphabet=" \t\n\r\u00a0", max_size=3)


@FAST
@given(words)
def test_text_equality_ignores_case(s: str) -> None:
    assert compare(s, EQ, s.upper())
    assert compare(s.lower(), EQ, s)
    assert compare(s.swapcase(), EQ, s)


@FAST
@given(st.text(max_size=20), blank, blank, blank, blank)
def test_text_equality_ignores_surrounding_whitespace(s: str, a: str, b: str, c: str, d: str) -> None:
    assert compare(a + s + b, EQ, c + s + d)
    assert not compare(a + s + b, NE, c + s + d)


@FAST
@given(interesting, interesting)
def test_empty_and_not_empty_are_complements(value: str, operand: str) -> None:
    assert compare(value, EMPTY, operand) is (not compare(value, NOT_EMPTY, operand))
    assert compare(value, EMPTY, operand) is (value.strip() == "")


@FAST
@given(interesting, interesting)
def test_contains_a_nonempty_operand_implies_not_empty(value: str, operand: str) -> None:
    assume(operand.strip())
    if compare(value, CONTAINS, operand) or compare(value, STARTS_WITH, operand):
        assert compare(value, NOT_EMPTY, "")


@FAST
@given(words, words)
def test_starts_with_implies_contains(value: str, operand: str) -> None:
    if compare(value, STARTS_WITH, operand):
        assert compare(value, CONTAINS, operand)
    assert compare(value + operand, CONTAINS, operand)


offsets = st.one_of(
    st.none(),
    st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m))),
)
moments = st.builds(
    lambda naive, tz: naive.replace(tzinfo=tz),
    st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(2999, 12, 30)),
    offsets,
)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


@FAST
@given(moments, moments, st.sampled_from(["T", " "]))
def test_datetime_ordering_agrees_with_datetime(a: datetime, b: datetime, sep: str) -> None:
    x, y = a.isoformat(sep), b.isoformat(sep)
    assert compare(x, LT, y) is (_utc(a) < _utc(b))
    assert compare(x, GT, y) is (_utc(a) > _utc(b))
    assert compare(x, LE, y) is (_utc(a) <= _utc(b))
    assert compare(x, GE, y) is (_utc(a) >= _utc(b))
    assert compare(x, EQ, y) is (_utc(a) == _utc(b))


@FAST
@given(st.dates(), st.dates())
def test_date_ordering_agrees_with_date(a: date, b: date) -> None:
    assert compare(a.isoformat(), LT, b.isoformat()) is (a < b)
    assert compare(a.isoformat(), GE, b.isoformat()) is (a >= b)
    assert compare(a.isoformat(), EQ, b.isoformat()) is (a == b)


@FAST
@given(moments, st.dates())
def test_date_only_side_compares_calendar_dates(moment: datetime, day: date) -> None:
    x = moment.isoformat()
    assert compare(x, LT, day.isoformat()) is (moment.date() < day)
    assert compare(x, EQ, day.isoformat()) is (moment.date() == day)
    assert compare(day.isoformat(), GT, x) is (day > moment.date())


not_orderable = st.text(max_size=15).filter(
    lambda s: s.strip() and not any(ch.isdigit() for ch in s)  # no number, no date
)


@FAST
@given(not_orderable, interesting, st.sampled_from(sorted(ORDERING_OPERATORS)))
def test_ordering_never_matches_text(text: str, other: str, operator: Operator) -> None:
    assert not compare(text, operator, other)
    assert not compare(other, operator, text)
    assert not compare(text, operator, text)


# --- check_operand ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("operator", "operand"),
    [
        (EQ, ""),
        (EQ, "GOLD"),
        (NE, ""),
        (LT, "50"),
        (GT, "-2.5"),
        (LE, " 1e3 "),
        (GE, "2024-01-31"),
        (LT, "2024-01-31T09:00Z"),
        (CONTAINS, "gold"),
        (STARTS_WITH, "0"),
        (REGEX, r"^GOLD-\d+$"),
        (REGEX, r"(\d{1,3}\.){3}\d{1,3}"),
        (REGEX, "(?i)gold|silver"),
        (EMPTY, ""),
        (EMPTY, "anything"),
        (NOT_EMPTY, "(["),
    ],
)
def test_check_operand_accepts(operator: Operator, operand: str) -> None:
    assert check_operand(operator, operand) is None


@pytest.mark.parametrize(
    ("operator", "operand", "message"),
    [
        (LT, "GOLD", "needs a number"),
        (GT, "", "needs a number"),
        (GE, "1,000", "ISO-8601 date"),
        (LE, "2024-02-30", "needs a number"),
        (CONTAINS, "", "needs some text"),
        (STARTS_WITH, "  ", "needs some text"),
        (REGEX, "", "needs a pattern"),
        (REGEX, "([", "invalid regular expression: "),
        (REGEX, "a{2,1}", "invalid regular expression: "),
        (REGEX, "(a+)+$", "could take too long"),
        (REGEX, r"^(\w+\s?)*$", "could take too long"),
        (REGEX, "x" * 1001, "too long"),
    ],
)
def test_check_operand_refuses(operator: Operator, operand: str, message: str) -> None:
    problem = check_operand(operator, operand)
    assert problem is not None and message in problem


def test_refused_regex_never_matches() -> None:
    assert compare("aaa", REGEX, "(a+)+") is False
    assert compare("aaa", REGEX, "(?>a+)+") is True  # atomic: no backtracking, allowed


# --- parse_operator ---------------------------------------------------------------


@pytest.mark.parametrize("operator", list(Operator))
def test_parse_operator_round_trips(operator: Operator) -> None:
    assert parse_operator(operator.value) is operator
    assert parse_operator(operator.name) is operator
    assert parse_operator(operator.name.lower()) is operator
    assert parse_operator(f" {operator.value} ") is operator


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("==", EQ),
        ("eq", EQ),
        ("EQ", EQ),
        ("ne", NE),
        ("<>", NE),
        ("lt", LT),
        ("gt", GT),
        ("le", LE),
        ("ge", GE),
        ("lte", LE),
        ("gte", GE),
        ("Contains", CONTAINS),
        ("starts with", STARTS_WITH),
        ("starts-with", STARTS_WITH),
        ("startswith", STARTS_WITH),
        ("not empty", NOT_EMPTY),
        ("NOT_EMPTY", NOT_EMPTY),
    ],
)
def test_parse_operator_aliases(text: str, expected: Operator) -> None:
    assert parse_operator(text) is expected


@pytest.mark.parametrize("text", ["", "===", "like", "=<", "in", "equalz"])
def test_parse_operator_refuses(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_operator(text)
    message = str(info.value)
    assert repr(text) in message
    for operator in Operator:
        assert operator.value in message
