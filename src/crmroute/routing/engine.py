"""Decide where a call goes: fetch the CRM values under a deadline, walk the rows.

``decide()`` knows nothing of Asterisk, HTTP or the database: it is given the
rule, the lookup key, a ``fetch`` callable, a deadline and the call's facts
(its time, DID and caller, for the rows' extra conditions). The AGI server,
``crmroute route`` and the UI's Test rule all call it.

``fetch`` returns the rule field's value, or a :class:`Fetched` with the
values of every field the rows' conditions read (asked in one request where
the CRM allows) and how many records matched.

Rows (and the default) of type ``owner`` or ``last_agent`` name no
destination: ``choose`` (given by the caller, see ``routing/agentpick.py``)
finds the agent for this call. When it finds none, or the agent is not
available, the walk goes on to the next row whose comparison holds (and then
to the default extension), and the trace says why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property

from crmroute.deadline import Deadline
from crmroute.errors import ConnectorError
from crmroute.routing.compare import Operator, compare
from crmroute.routing.conditions import CallFacts, Condition, FieldCondition, check_all
from crmroute.routing.trace import AGENT_DEST_TYPES, Decision, Destination, DestType, Status

logger = logging.getLogger(__name__)

# Caller IDs that Asterisk (or the carrier) uses for "no caller ID".
WITHHELD_CALLER_IDS = frozenset({"", "unknown", "anonymous", "private", "restricted", "withheld"})


@dataclass(frozen=True)
class Row:
    operator: Operator
    value: str
    destination: Destination
    conditions: tuple[Condition, ...] = ()  # all must hold too (routing/conditions.py)


@dataclass(frozen=True)
class AgentOptions:
    """How a rule's ``owner`` / ``last_agent`` destinations pick an agent."""

    check_availability: bool = True  # skip an agent Asterisk reports busy or unreachable
    last_agent_days: int = 30  # how far back the call log is searched
    last_agent_outbound: bool = False  # outbound calls to the caller count too
    last_agent_min_talk_s: int = 5  # shorter calls do not count


@dataclass(frozen=True)
class AgentChoice:
    """The agent found for one ``owner`` / ``last_agent`` destination, or why none (``extension`` empty)."""

    extension: str = ""
    agent: str = ""
    note: str = ""  # a trace line: who was chosen, or why nobody


ChooseAgent = Callable[[DestType], AgentChoice]


@dataclass(frozen=True)
class RuleSpec:
    """A rule as the engine needs it (no CRM connection details)."""

    name: str
    crm_field: str
    rows: tuple[Row, ...]
    default: Destination  # the extension, or its voicemail
    deadline_ms: int | None = None  # None: the global deadline
    cache_ttl_s: int | None = None  # None: the integration's, else the global one
    keep_company: str = "none"  # none, ringing or moh: what the caller hears while the CRM is asked
    moh_class: str = "default"
    greeting: str = ""  # IVR rules only: collect DTMF while playing this
    dtmf_timeout_ms: int = 5000
    dtmf_max_digits: int = 10
    default_agent: DestType | None = None  # owner / last_agent: try that agent before the default extension
    agents: AgentOptions = AgentOptions()

    @cached_property
    def agent_types(self) -> frozenset[DestType]:
        """The agent destination types the rows and the default use."""
        found = {row.destination.type for row in self.rows if row.destination.type in AGENT_DEST_TYPES}
        return frozenset(found | ({self.default_agent} if self.default_agent else set()))

    @cached_property  # read on every call: worked out once per rule book
    def extra_fields(self) -> tuple[str, ...]:
        """The other CRM fields the rows' conditions read, in order of first use."""
        names: dict[str, None] = {}
        for row in self.rows:
            for condition in row.conditions:
                if isinstance(condition, FieldCondition) and condition.field != self.crm_field:
                    names.setdefault(condition.field)
        return tuple(names)


@dataclass(frozen=True)
class LookupKey:
    value: str
    source: str  # "dtmf" or "caller_id"


@dataclass(frozen=True)
class Fetched:
    """What a fetch found: the rule field's value, the other fields' values, how many records matched."""

    value: str | None
    values: dict[str, str | None] = field(default_factory=dict)  # the rule's extra fields
    matches: int | None = None  # None: 1 when a value came back, else 0


Fetch = Callable[[LookupKey], Awaitable["str | None | Fetched"]]


def lookup_key(caller_id: str, dtmf: str = "") -> LookupKey | None:
    """The typed digits if any, else the caller's number; ``None`` when neither is usable."""
    dtmf = (dtmf or "").strip()
    if dtmf:
        return LookupKey(dtmf, "dtmf")
    caller = (caller_id or "").strip()
    if caller.lower() in WITHHELD_CALLER_IDS:
        return None
    return LookupKey(caller, "caller_id")


def matching(
    rule: RuleSpec, value: str, facts: CallFacts | None = None, skipped: list[str] | None = None
) -> Iterator[tuple[int, Row]]:
    """The rows (1-based index) whose comparison and conditions hold for ``value`` and ``facts``, in order.

    ``skipped`` gets a trace line for each row whose comparison held but a condition did not.
    """
    facts = facts if facts is not None else CallFacts(values={rule.crm_field: value})
    for index, row in enumerate(rule.rows, start=1):
        if not compare(value, row.operator, row.value):
            continue
        failed = check_all(row.conditions, facts) if row.conditions else None
        if failed is None:
            yield index, row
        elif skipped is not None:
            which, seen = failed
            skipped.append(f"row {index} skipped: {row.operator} {row.value!r} held but condition {which} "
                           f"({row.conditions[which - 1].describe()}) failed: {seen}")  # fmt: skip


def walk(
    rule: RuleSpec, value: str, facts: CallFacts | None = None, skipped: list[str] | None = None
) -> tuple[int, Row] | None:
    """The first row (1-based index) whose comparison and conditions hold for ``value`` and ``facts``."""
    return next(matching(rule, value, facts, skipped), None)


async def decide(
    rule: RuleSpec, key: LookupKey | None, fetch: Fetch, deadline: Deadline, facts: CallFacts | None = None,
    choose: ChooseAgent | None = None,
) -> Decision:
    """Fetch the rule's field(s) for ``key`` before ``deadline`` and pick a destination.

    ``facts`` is the call (its instant, DID and caller) the rows' conditions
    are checked against; the CRM's values are added to it here. ``choose``
    finds the agent of ``owner`` / ``last_agent`` destinations; without it
    those are skipped. Never raises for a CRM failure and never returns after
    ``deadline`` (bar scheduling jitter): a slow or failing CRM gives status
    ``fallback``.
    """
    started = time.monotonic()
    decision = Decision(status=Status.DEFAULT, rule=rule.name, destination=rule.default)

    def finish() -> Decision:
        if decision.status != Status.MATCHED and rule.default_agent is not None:
            agent = _agent(rule.default_agent, choose, decision)
            if agent is not None:
                decision.destination = agent
                decision.steps.append(f"default: {rule.default_agent} → extension {agent.option}")
            else:
                decision.steps.append(f"default: no {rule.default_agent} agent; extension {rule.default.option}")
        decision.total_ms = round((time.monotonic() - started) * 1000, 3)
        return decision

    if key is None:
        decision.reason = "no_caller_id"
        decision.steps.append("no caller ID and no digits: CRM not asked")
        return finish()

    decision.key, decision.key_source = key.value, key.source
    decision.steps.append(f"lookup key {key.value!r} from {key.source}")
    asked = time.monotonic()
    try:
        async with asyncio.timeout_at(_loop_time(deadline)):
            fetched = await fetch(key)
    except TimeoutError:
        decision.status, decision.reason = Status.FALLBACK, "timeout"
        decision.error = "the CRM did not answer before the deadline"
    except ConnectorError as exc:
        decision.status, decision.reason = Status.FALLBACK, exc.reason
        decision.error = str(exc)
    else:
        if not isinstance(fetched, Fetched):
            fetched = Fetched(fetched)
        value = "" if fetched.value is None else str(fetched.value)
        decision.value = value
        decision.crm_ms = round((time.monotonic() - asked) * 1000, 3)
        decision.steps.append(f"CRM value for {rule.crm_field}: {value!r}")
        values = {rule.crm_field: value}
        for name in rule.extra_fields:
            extra = fetched.values.get(name)
            values[name] = "" if extra is None else str(extra)
            decision.steps.append(f"CRM value for {name}: {values[name]!r}")
        matches = fetched.matches if fetched.matches is not None else (0 if fetched.value is None else 1)
        facts = replace(facts or CallFacts(), values=values, matches=matches)
        for index, row in matching(rule, value, facts, decision.steps):  # skipped rows say why in the trace
            destination = row.destination
            if destination.type in AGENT_DEST_TYPES:
                destination = _agent(destination.type, choose, decision)
                if destination is None:
                    decision.steps.append(f"row {index} matched ({row.operator} {row.value!r}) but has no "
                                          f"{row.destination.type} agent: next row")  # fmt: skip
                    continue
            decision.status, decision.row, decision.destination = Status.MATCHED, index, destination
            held = f"; conditions held: {', '.join(c.describe() for c in row.conditions)}" if row.conditions else ""
            decision.steps.append(f"row {index} matched: {row.operator} {row.value!r}{held}")
            return finish()
        decision.reason = "no_value" if value == "" else "no_match"
        decision.steps.append("no row matched: default destination")
        return finish()

    decision.crm_ms = round((time.monotonic() - asked) * 1000, 3)
    decision.steps.append(f"CRM failed ({decision.reason}): {decision.error}; default destination")
    return finish()


def _agent(dest_type: DestType, choose: ChooseAgent | None, decision: Decision) -> Destination | None:
    """The agent's extension as the destination, or ``None`` (the reason goes to the trace)."""
    choice = choose(dest_type) if choose is not None else AgentChoice(note=f"{dest_type}: no agent routing here")
    if choice.note:
        decision.steps.append(choice.note)
    if not choice.extension:
        return None
    decision.agent = choice.agent
    return Destination(dest_type, choice.extension)


def _loop_time(deadline: Deadline) -> float:
    """The event loop's clock value at ``deadline`` (both clocks are monotonic)."""
    loop = asyncio.get_running_loop()
    return loop.time() + deadline.remaining()
