"""decide() with stub fetchers: matches, defaults, fallbacks and the deadline."""

from __future__ import annotations

import asyncio
import time

import pytest

from crmroute.deadline import Deadline
from crmroute.errors import ConnectorError, ConnectorTimeout, ConnectorUnavailable
from crmroute.routing.compare import Operator
from crmroute.routing.engine import LookupKey, Row, RuleSpec, decide, lookup_key, walk
from crmroute.routing.trace import Decision, DestType, Destination, Status

GOLD_QUEUE = Destination(DestType.QUEUE, "103")
SILVER_IVR = Destination(DestType.IVR, "5")
CLOSED = Destination(DestType.RECORDING, "closed-today")
NOBODY = Destination(DestType.RECORDING, "no-record")
DEFAULT = Destination(DestType.EXTENSION, "100")

RULE = RuleSpec(
    name="VIP",
    crm_field="Status",
    rows=(
        Row(Operator.EQ, "GOLD", GOLD_QUEUE),
        Row(Operator.STARTS_WITH, "SIL", SILVER_IVR),
        Row(Operator.CONTAINS, "ver", CLOSED),  # "Silver" matches row 2 first
        Row(Operator.EMPTY, "", NOBODY),
    ),
    default=DEFAULT,
)
NO_EMPTY_ROW = RuleSpec(name="Plain", crm_field="Status", rows=RULE.rows[:3], default=DEFAULT)
CALLER = LookupKey("+15551230000", "caller_id")


class Stub:
    """A fetch callable that answers ``value`` (or raises ``error``) after ``delay`` seconds."""

    def __init__(self, value: str | None = None, *, error: Exception | None = None, delay: float = 0.0) -> None:
        self.value, self.error, self.delay = value, error, delay
        self.keys: list[LookupKey] = []

    async def __call__(self, key: LookupKey) -> str | None:
        self.keys.append(key)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return self.value


def soon() -> Deadline:
    return Deadline.after_ms(2500)


async def test_matched_row_gives_its_destination_and_index() -> None:
    fetch = Stub("GOLD")
    decision = await decide(RULE, CALLER, fetch, soon())
    assert decision.status is Status.MATCHED
    assert decision.destination == GOLD_QUEUE
    assert decision.row == 1
    assert decision.rule == "VIP"
    assert decision.value == "GOLD"
    assert (decision.key, decision.key_source) == ("+15551230000", "caller_id")
    assert fetch.keys == [CALLER]


async def test_comparison_is_case_insensitive_and_trimmed() -> None:
    decision = await decide(RULE, CALLER, Stub("  gold "), soon())
    assert (decision.status, decision.row) == (Status.MATCHED, 1)


async def test_first_matching_row_wins() -> None:
    decision = await decide(RULE, CALLER, Stub("Silver"), soon())  # rows 2 and 3 both hold
    assert (decision.status, decision.row, decision.destination) == (Status.MATCHED, 2, SILVER_IVR)


async def test_later_row_matches_when_earlier_do_not() -> None:
    decision = await decide(RULE, CALLER, Stub("Forever"), soon())
    assert (decision.row, decision.destination) == (3, CLOSED)


async def test_no_match_gives_default() -> None:
    decision = await decide(RULE, CALLER, Stub("BRONZE"), soon())
    assert decision.status is Status.DEFAULT
    assert decision.destination == DEFAULT
    assert decision.reason == "no_match"
    assert decision.row is None
    assert decision.value == "BRONZE"


@pytest.mark.parametrize("value", [None, ""])
async def test_no_value_is_empty_and_empty_row_matches(value: str | None) -> None:
    decision = await decide(RULE, CALLER, Stub(value), soon())
    assert decision.status is Status.MATCHED
    assert (decision.row, decision.destination) == (4, NOBODY)
    assert decision.value == ""


async def test_no_value_without_empty_row_gives_default() -> None:
    decision = await decide(NO_EMPTY_ROW, CALLER, Stub(None), soon())
    assert decision.status is Status.DEFAULT
    assert decision.destination == DEFAULT
    assert decision.reason == "no_value"


async def test_numeric_rows() -> None:
    rule = RuleSpec(
        name="Balance",
        crm_field="Balance",
        rows=(Row(Operator.GE, "1000", GOLD_QUEUE), Row(Operator.GT, "0", SILVER_IVR)),
        default=DEFAULT,
    )
    assert (await decide(rule, CALLER, Stub("1000.00"), soon())).row == 1
    assert (await decide(rule, CALLER, Stub("999.5"), soon())).row == 2
    assert (await decide(rule, CALLER, Stub("0"), soon())).status is Status.DEFAULT
    assert (await decide(rule, CALLER, Stub("n/a"), soon())).status is Status.DEFAULT


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ConnectorUnavailable("CRM is down", kind="zoho", operation="find_record"), "unavailable"),
        (ConnectorTimeout("no answer", kind="zoho"), "timeout"),
        (ConnectorError("server said 500", kind="custom", reason="http_500"), "http_500"),
    ],
)
async def test_connector_error_gives_fallback_without_walking_rows(error: ConnectorError, reason: str) -> None:
    decision = await decide(RULE, CALLER, Stub("GOLD", error=error), soon())
    assert decision.status is Status.FALLBACK
    assert decision.destination == DEFAULT
    assert decision.reason == reason
    assert decision.error == str(error)
    assert decision.row is None
    assert decision.value == ""
    assert decision.crm_ms is not None


async def test_other_errors_are_not_swallowed() -> None:
    with pytest.raises(KeyError):
        await decide(RULE, CALLER, Stub(error=KeyError("bug")), soon())


async def test_slow_crm_gives_fallback_within_the_deadline() -> None:
    fetch = Stub("GOLD", delay=5.0)
    deadline = Deadline.after_ms(100)
    started = time.monotonic()
    decision = await decide(RULE, CALLER, fetch, deadline)
    returned = time.monotonic()
    assert decision.status is Status.FALLBACK
    assert decision.reason == "timeout"
    assert decision.destination == DEFAULT
    assert decision.row is None
    # The CRM would take 5 s: a second past the deadline leaves room for a loaded machine's scheduling.
    assert returned <= deadline.at + 1.0
    assert returned - started >= 0.095  # it did wait for the CRM
    assert decision.crm_ms is not None and 90 <= decision.crm_ms <= 1100
    assert 90 <= decision.total_ms <= 1100


async def test_expired_deadline_gives_fallback_at_once() -> None:
    started = time.monotonic()
    decision = await decide(RULE, CALLER, Stub("GOLD", delay=10.0), Deadline.after_ms(0))
    assert (decision.status, decision.reason) == (Status.FALLBACK, "timeout")
    assert time.monotonic() - started < 1.0  # not the stub's 10 s


async def test_answer_just_inside_the_deadline_is_used() -> None:
    decision = await decide(RULE, CALLER, Stub("GOLD", delay=0.02), Deadline.after_ms(2000))
    assert decision.status is Status.MATCHED


@pytest.mark.parametrize("caller_id", ["unknown", "anonymous", "", "Anonymous", " Unknown ", "private", "withheld"])
async def test_no_usable_key_does_not_ask_the_crm(caller_id: str) -> None:
    key = lookup_key(caller_id)
    assert key is None
    fetch = Stub("GOLD")
    decision = await decide(RULE, key, fetch, soon())
    assert decision.status is Status.DEFAULT
    assert decision.reason == "no_caller_id"
    assert decision.destination == DEFAULT
    assert decision.crm_ms is None
    assert decision.key_source == ""
    assert fetch.keys == []


def test_lookup_key_prefers_dtmf() -> None:
    assert lookup_key("+15551230000", "12345") == LookupKey("12345", "dtmf")
    assert lookup_key("anonymous", "12345") == LookupKey("12345", "dtmf")
    assert lookup_key("+15551230000", " ") == LookupKey("+15551230000", "caller_id")
    assert lookup_key(" 5551230000 ") == LookupKey("5551230000", "caller_id")


async def test_dtmf_key_is_what_the_crm_is_asked() -> None:
    fetch = Stub("GOLD")
    decision = await decide(RULE, lookup_key("+15551230000", "4711"), fetch, soon())
    assert fetch.keys == [LookupKey("4711", "dtmf")]
    assert (decision.key, decision.key_source) == ("4711", "dtmf")


async def test_timings_and_trace_are_filled_in() -> None:
    decision = await decide(RULE, CALLER, Stub("GOLD", delay=0.01), soon())
    assert decision.crm_ms is not None and decision.crm_ms >= 9
    assert decision.total_ms >= decision.crm_ms
    assert any("row 1 matched" in step for step in decision.steps)
    data = decision.as_dict()
    assert data["status"] == "matched"
    assert data["destination"] == {"type": "queue", "option": "103"}


def test_walk_returns_first_match() -> None:
    assert walk(RULE, "silver") == (2, RULE.rows[1])
    assert walk(RULE, "bronze") is None


async def test_decisions_are_independent() -> None:
    first = await decide(RULE, CALLER, Stub("GOLD"), soon())
    second = await decide(RULE, CALLER, Stub("BRONZE"), soon())
    assert isinstance(first, Decision) and first.steps is not second.steps
    assert first.status is Status.MATCHED and second.status is Status.DEFAULT
