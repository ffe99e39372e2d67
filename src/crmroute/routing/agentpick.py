"""Choosing the agent of an ``owner`` or ``last_agent`` destination for one call.

Pure and in memory (a few dictionary reads): the router gives an
:class:`AgentPicker` the agent directory, Asterisk's availability (from the
call logger's AMI connection; ``None`` when AMI is off), the last-agent index
(``routing/lastagent.py``), and how to get the found record's owner (the same
CRM request as the rule's value: no extra request). ``choose(type)`` answers
an :class:`~crmroute.routing.engine.AgentChoice`: the agent's extension, or
why there is none (no record, no owner, owner is no agent, no recent call,
busy, unreachable), for the trace.

Availability: an agent is skipped when Asterisk says it is ``busy`` (on a
call, ringing, on hold) or ``unavailable`` (not registered). ``unknown``
(AMI off, no event yet, connection down) counts as available. A rule may
turn the check off (``check_availability: false``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Protocol

from crmroute.routing.agents import Agent, AgentDirectory
from crmroute.routing.engine import AgentChoice, AgentOptions
from crmroute.routing.lastagent import LastAgents
from crmroute.routing.trace import DestType

UNKNOWN = "unknown"
FREE = frozenset({"available", UNKNOWN})


class Presence(Protocol):
    """What routing asks of ``calllog.presence.Availability``."""

    def state(self, agent: Agent) -> str: ...

    def sources(self, agent: Agent) -> list: ...


@dataclass(frozen=True)
class Owner:
    """The found record's owner as the connector read it (same request as the value)."""

    found: bool  # a record was found
    user: str = ""  # the CRM user id (or e-mail) of its owner; empty: the record has none
    record: str = ""  # "Contact 003..." for the trace


class AgentPicker:
    """One call's agent choices (see the module docstring)."""

    def __init__(
        self,
        directory: AgentDirectory,
        options: AgentOptions,
        *,
        presence: Presence | None = None,
        integration_id: int | None = None,  # None: a Custom CRM (no owners)
        owner: Callable[[], Owner] | None = None,
        last_agents: LastAgents | None = None,
        caller: str = "",
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.directory = directory
        self.options = options
        self.presence = presence
        self.integration_id = integration_id
        self.owner = owner
        self.last_agents = last_agents
        self.caller = caller
        self.now = now or (lambda: datetime.now(timezone.utc))

    def __call__(self, dest_type: DestType) -> AgentChoice:
        if dest_type == DestType.OWNER:
            agent, why = self._owner()
        else:
            agent, why = self._last_agent()
        if agent is None:
            return AgentChoice(note=f"{dest_type}: {why}")
        skip = self._unavailable(agent)
        if skip:
            return AgentChoice(note=f"{dest_type}: {why}, but {skip}")
        return AgentChoice(agent.extension, agent.name, f"{dest_type}: {why}")

    def _owner(self) -> tuple[Agent | None, str]:
        if self.integration_id is None or self.owner is None:
            return None, "a Custom CRM reports no record owner"
        owner = self.owner()
        if not owner.found:
            return None, "no record found, so no owner"
        if not owner.user:
            return None, f"{owner.record} has no owner"
        match = self.directory.resolve(self.integration_id, owner.user)
        if match is None:
            return None, f"owner {owner.user!r} of {owner.record} is no agent (add the identity under Agents)"
        return match.agent, match.explain()

    def _last_agent(self) -> tuple[Agent | None, str]:
        if not self.caller or self.last_agents is None:
            return None, "no caller number"
        options = self.options
        since = self.now() - timedelta(days=options.last_agent_days)
        hit = self.last_agents.find(self.caller, since=since, outbound=options.last_agent_outbound,
                                    min_talk_s=options.last_agent_min_talk_s)  # fmt: skip
        if hit is None:
            return None, (f"no connected call with {self.caller} in the last {options.last_agent_days} days "
                          f"(talk ≥ {options.last_agent_min_talk_s} s)")  # fmt: skip
        agent = self.directory.by_extension(hit.extension) or Agent(f"extension {hit.extension}", hit.extension)
        when = hit.at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        return agent, f"{hit.direction} call on {when} talked {hit.talk_s} s with extension {hit.extension} " \
                      f"(agent {agent.name})"  # fmt: skip

    def _unavailable(self, agent: Agent) -> str:
        """Why the agent may not take the call now (empty: it may)."""
        if not self.options.check_availability:
            return ""
        if self.presence is None:
            return ""  # AMI off: unknown, assumed available
        state = self.presence.state(agent)
        if state in FREE:
            return ""
        seen = ", ".join(f"{name} {seen.raw}" for name, seen in self.presence.sources(agent))
        return f"agent {agent.name} is {state} ({seen}): skipped"
