"""Decide where a call goes: fetch one CRM value under a deadline, walk the rows.

``decide()`` knows nothing of Asterisk, HTTP or the database: it is given the
rule, the lookup key, a ``fetch`` callable and a deadline. The AGI server,
``crmroute route`` and the UI's Test rule all call it.

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
from dataclasses import dataclass
from functools import cached_property

from crmroute.deadline import Deadline
from crmroute.errors import ConnectorError
from crmroute.routing.compare import Operator, compare
from crmroute.routing.trace import AGENT_DEST_TYPES, Decision, Destination, DestType, Status

logger = logging.getLogger(__name__)

# Caller IDs that Asterisk (or the carrier) uses for "no caller ID".
WITHHELD_CALLER_IDS = frozenset({"", "unknown", "anonymous", "private", "restricted", "withheld"})


@dataclass(frozen=True)
class Row:
    operator: Operator
    value: str
    destination: Destination


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


@dataclass(frozen=True)
class LookupKey:
    value: str
    source: str  # "dtmf" or "caller_id"


Fetch = Callable[[LookupKey], Awaitable[str | None]]


def lookup_key(caller_id: str, dtmf: str = "") -> LookupKey | None:
    """The typed digits if any, else the caller's number; ``None`` when neither is usable."""
    dtmf = (dtmf or "").strip()
    if dtmf:
        return LookupKey(dtmf, "dtmf")
    caller = (caller_id or "").strip()
    if caller.lower() in WITHHELD_CALLER_IDS:
        return None
    return LookupKey(caller, "caller_id")


def matching(rule: RuleSpec, value: str) -> Iterator[tuple[int, Row]]:
    """The rows (1-based index) whose comparison holds for ``value``, in order."""
    for index, row in enumerate(rule.rows, start=1):
        if compare(value, row.operator, row.value):
            yield index, row


def walk(rule: RuleSpec, value: str) -> tuple[int, Row] | None:
    """The first row (1-based index) whose comparison holds for ``value``."""
    return next(matching(rule, value), None)


async def decide(
    rule: RuleSpec, key: LookupKey | None, fetch: Fetch, deadline: Deadline, choose: ChooseAgent | None = None
) -> Decision:
    """Fetch the rule's field for ``key`` before ``deadline`` and pick a destination.

    Never raises for a CRM failure and never returns after ``deadline`` (bar
    scheduling jitter): a slow or failing CRM gives status ``fallback``.
    ``choose`` finds the agent of ``owner`` / ``last_agent`` destinations;
    without it those are skipped.
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
            value = await fetch(key)
    except TimeoutError:
        decision.status, decision.reason = Status.FALLBACK, "timeout"
        decision.error = "the CRM did not answer before the deadline"
    except ConnectorError as exc:
        decision.status, decision.reason = Status.FALLBACK, exc.reason
        decision.error = str(exc)
    else:
        value = "" if value is None else str(value)
        decision.value = value
        decision.crm_ms = round((time.monotonic() - asked) * 1000, 3)
        decision.steps.append(f"CRM value for {rule.crm_field}: {value!r}")
        for index, row in matching(rule, value):
            destination = row.destination
            if destination.type in AGENT_DEST_TYPES:
                destination = _agent(destination.type, choose, decision)
                if destination is None:
                    decision.steps.append(f"row {index} matched ({row.operator} {row.value!r}) but has no "
                                          f"{row.destination.type} agent: next row")  # fmt: skip
                    continue
            decision.status, decision.row, decision.destination = Status.MATCHED, index, destination
            decision.steps.append(f"row {index} matched: {row.operator} {row.value!r}")
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
