"""Rows' extra conditions in decide(): each kind, the trace naming the failed one, and two properties."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from crmroute.deadline import Deadline
from crmroute.routing.compare import Operator
from crmroute.routing.conditions import (
    CallFacts,
    CountryCondition,
    DidCondition,
    FieldCondition,
    MatchesCondition,
    ScheduleCondition,
    caller_country,
)
from crmroute.routing.engine import Fetched, LookupKey, Row, RuleSpec, decide
from crmroute.routing.schedules import Schedule, parse_hours
from crmroute.routing.trace import DestType, Destination, Status

GOLD = Destination(DestType.QUEUE, "103")
EU_DESK = Destination(DestType.QUEUE, "104")
AFTER_HOURS = Destination(DestType.RECORDING, "closed-today")
MANY = Destination(DestType.IVR, "5")
DEFAULT = Destination(DestType.EXTENSION, "100")
CALLER = LookupKey("+442079460006", "caller_id")
OFFICE = Schedule("Office hours", "Europe/London", parse_hours({"mon-fri": "09:00-17:00"}))
ALWAYS = Schedule("Always", "UTC", parse_hours({"mon-sun": "00:00-24:00"}))
MONDAY_10_BST = datetime(2026, 3, 30, 9, 0, tzinfo=timezone.utc)
SUNDAY_NIGHT = datetime(2026, 3, 29, 22, 0, tzinfo=timezone.utc)


def fetched(value: str | None, matches: int | None = None, **values: str | None):
    async def fetch(key: LookupKey) -> Fetched:
        return Fetched(value, dict(values), matches)

    return fetch


def soon() -> Deadline:
    return Deadline.after_ms(2500)


def facts(at: datetime = MONDAY_10_BST, did: str = "5551000", caller: str = CALLER.value) -> CallFacts:
    return CallFacts(at=at, did=did, caller=caller, region="US")


RULE = RuleSpec(
    name="Tiers",
    crm_field="Status",
    rows=(
        Row(Operator.EQ, "GOLD", MANY, (MatchesCondition(count="many"),)),
        Row(Operator.EQ, "GOLD", EU_DESK, (FieldCondition(field="Region", value="EU"),
                                           ScheduleCondition(schedule=OFFICE, name="Office hours"))),
        Row(Operator.EQ, "GOLD", AFTER_HOURS, (ScheduleCondition(negate=True, schedule=OFFICE, name="Office hours"),)),
        Row(Operator.EQ, "GOLD", GOLD),
    ),
    default=DEFAULT,
)


async def test_field_and_schedule_hold_together() -> None:
    decision = await decide(RULE, CALLER, fetched("gold", 1, Region="eu"), soon(), facts())
    assert (decision.status, decision.row, decision.destination) == (Status.MATCHED, 2, EU_DESK)
    assert "CRM value for Region: 'eu'" in decision.steps
    assert decision.steps[-1].startswith("row 2 matched: = 'GOLD'; conditions held: Region = 'EU', schedule")


async def test_the_trace_names_the_condition_that_failed() -> None:
    decision = await decide(RULE, CALLER, fetched("GOLD", 1, Region="EU"), soon(), facts(at=SUNDAY_NIGHT))
    assert (decision.row, decision.destination) == (3, AFTER_HOURS)
    assert ("row 1 skipped: = 'GOLD' held but condition 1 (matches many) failed: 1 record matched (one)"
            in decision.steps)  # fmt: skip
    skipped = next(s for s in decision.steps if s.startswith("row 2 skipped"))
    assert "condition 2 (schedule 'Office hours') failed" in skipped
    assert "closed: Sunday 2026-03-29 23:00 Europe/London" in skipped


async def test_other_field_fails_then_plain_row() -> None:
    decision = await decide(RULE, CALLER, fetched("GOLD", 1, Region="US"), soon(), facts())
    assert (decision.row, decision.destination) == (4, GOLD)
    assert any("condition 1 (Region = 'EU') failed: Region is 'US', = 'EU'" in s for s in decision.steps)


async def test_matches_many_is_routed_explicitly() -> None:
    decision = await decide(RULE, CALLER, fetched("GOLD", 3, Region="EU"), soon(), facts())
    assert (decision.row, decision.destination) == (1, MANY)


async def test_a_plain_value_fetch_counts_as_one_match() -> None:
    async def plain(key: LookupKey) -> str:
        return "GOLD"

    decision = await decide(RULE, CALLER, plain, soon(), facts(at=SUNDAY_NIGHT))
    assert decision.row == 3  # Region unknown: row 2 fails on it; outside hours: row 3


async def test_no_rows_walked_on_fallback_and_no_key() -> None:
    decision = await decide(RULE, None, fetched("GOLD"), soon(), facts())
    assert decision.reason == "no_caller_id"


def test_did_and_country_conditions() -> None:
    did = DidCondition(numbers=("5551000", "_5552XXX"))
    assert did.test(facts(did="5551000"))[0] and did.test(facts(did="+5551000"))[0]
    assert did.test(facts(did="5552123"))[0] and not did.test(facts(did="5553123"))[0]
    assert not did.test(facts(did=""))[0]
    uk = CountryCondition(countries=("GB", "IE"))
    assert uk.test(facts(caller="+442079460006"))[0]
    assert not uk.test(facts(caller="+14155552671"))[0]
    assert not uk.test(facts(caller="anonymous"))[0]
    assert CountryCondition(negate=True, countries=("GB",)).test(facts(caller="+14155552671"))[0]
    assert caller_country("4155552671", "US") == "US"
    assert caller_country("02079460006", "GB") == "GB"
    assert caller_country("", "US") == ""


def test_a_schedule_that_is_gone_never_holds() -> None:
    held, seen = ScheduleCondition(name="Gone").test(facts())
    assert not held and "no schedule named 'Gone'" in seen


# --- properties ---------------------------------------------------------------------------------------

VALUES = st.sampled_from(["", "GOLD", "gold", "SILVER", "50", "50.0", "7", "2026-01-01", "EU"])
OPERATORS = st.sampled_from(list(Operator))
DESTS = st.sampled_from([GOLD, EU_DESK, AFTER_HOURS, MANY])
ROWS = st.lists(st.tuples(OPERATORS, VALUES, DESTS), min_size=0, max_size=6)
INSTANTS = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(timezone.utc))
MATCHES = st.integers(min_value=0, max_value=4)
FAST = settings(max_examples=150, deadline=None)


def true_conditions(value: str, region: str, matches: int, did: str) -> st.SearchStrategy:
    """Conditions that hold for this call, whatever else is drawn."""
    count = "none" if matches == 0 else "one" if matches == 1 else "many"
    return st.lists(st.sampled_from([
        ScheduleCondition(schedule=ALWAYS, name="Always"),
        FieldCondition(field="Region", operator=Operator.EQ, value=region),
        FieldCondition(field="Status", operator=Operator.EQ, value=value) if value else
        FieldCondition(field="Status", operator=Operator.EMPTY),
        DidCondition(numbers=(did, "_X.")),
        MatchesCondition(count=count),
        CountryCondition(countries=("GB",)),
        MatchesCondition(negate=True, count="none" if count != "none" else "one"),
    ]), min_size=1, max_size=4)  # fmt: skip


def run(rule: RuleSpec, value: str, region: str, matches: int, at: datetime):
    fetch = fetched(value or None, matches, Region=region)
    return asyncio.run(decide(rule, CALLER, fetch, soon(), facts(at=at, did="5551000")))


def outcome(decision):
    return decision.status, decision.row, decision.destination, decision.value, decision.reason


@FAST
@given(ROWS, VALUES, VALUES, MATCHES, INSTANTS, st.data())
def test_conditions_that_always_hold_never_change_a_decision(rows, value, region, matches, at, data) -> None:
    plain = RuleSpec("P", "Status", tuple(Row(o, v, d) for o, v, d in rows), DEFAULT)
    extra = tuple(
        Row(o, v, d, data.draw(true_conditions(value, region, matches, "5551000")) if data.draw(st.booleans()) else ())
        for o, v, d in rows
    )
    conditioned = RuleSpec("P", "Status", extra, DEFAULT)
    assert outcome(run(conditioned, value, region, matches, at)) == outcome(run(plain, value, region, matches, at))


NEVER = Row(Operator.REGEX, "(?!)", GOLD)  # a comparison that never holds


@FAST
@given(ROWS, VALUES, VALUES, MATCHES, INSTANTS, st.data())
def test_a_row_whose_conditions_fail_is_skipped_like_a_non_matching_row(rows, value, region, matches, at, data) -> None:
    if not rows:
        rows = [(Operator.EQ, value, GOLD)]
    index = data.draw(st.integers(min_value=0, max_value=len(rows) - 1))
    failing = data.draw(st.sampled_from([
        FieldCondition(field="Region", operator=Operator.NE, value=region),
        ScheduleCondition(negate=True, schedule=ALWAYS, name="Always"),
        DidCondition(numbers=("5559999",)),
        CountryCondition(countries=("US",)),
        ScheduleCondition(name="Gone"),
    ]))  # fmt: skip
    kept = data.draw(true_conditions(value, region, matches, "5551000"))
    built = [Row(o, v, d) for o, v, d in rows]
    op, val, dest = rows[index]
    with_failing = list(built)
    with_failing[index] = Row(op, val, dest, (*kept, failing))
    not_matching = list(built)
    not_matching[index] = Row(NEVER.operator, NEVER.value, dest)
    a = run(RuleSpec("P", "Status", tuple(with_failing), DEFAULT), value, region, matches, at)
    b = run(RuleSpec("P", "Status", tuple(not_matching), DEFAULT), value, region, matches, at)
    assert outcome(a) == outcome(b)
