"""Agents: the people calls may go to, and who they are in each CRM.

Pure data, no I/O (the store builds an :class:`AgentDirectory` from its rows;
the routing engine asks it "integration X's user Y is which agent?").

An agent has a ``name``, an ``extension`` (the number the dialplan rings,
e.g. ``201``) and the ``devices`` whose Asterisk device state says whether
the agent is free; with none given, the device is ``PJSIP/{extension}``
(:data:`DEFAULT_DEVICE`). ``identities`` maps an integration id to the
agent's CRM user id and/or e-mail there. E-mails match ignoring case; user
ids match exactly (vendors' ids are case-sensitive: Salesforce).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

DEFAULT_DEVICE = "PJSIP/{extension}"


@dataclass(frozen=True)
class Identity:
    """Who the agent is in one integration: the CRM user id, the e-mail, or both."""

    user_id: str = ""
    email: str = ""

    def describe(self) -> str:
        return ", ".join(part for part in (self.email, self.user_id and f"user id {self.user_id}") if part)


@dataclass(frozen=True)
class Agent:
    name: str
    extension: str
    devices: tuple[str, ...] = ()  # as configured; empty: the default device
    identities: Mapping[int, Identity] = field(default_factory=dict)  # integration id -> identity
    id: int | None = None

    @property
    def watched_devices(self) -> tuple[str, ...]:
        """The devices whose state tells whether the agent is free."""
        return self.devices or (default_device(self.extension),)


def default_device(extension: str) -> str:
    return DEFAULT_DEVICE.format(extension=extension)


@dataclass(frozen=True)
class Match:
    """An agent found for a CRM user, and how (for the trace and the UI)."""

    agent: Agent
    by: str  # "user_id" or "email"
    value: str

    def explain(self, user_name: str = "") -> str:
        """``Olivia Owner, olivia.owner@example.com → extension 201 (agent Olivia)``."""
        who = ", ".join(part for part in (user_name, self.value) if part)
        return f"{who} → extension {self.agent.extension} (agent {self.agent.name})"


class AgentDirectory:
    """Every agent, indexed for the call path: a lookup is two dictionary reads."""

    def __init__(self, agents: Iterable[Agent] = ()) -> None:
        self.agents: tuple[Agent, ...] = tuple(agents)
        self._by_id: dict[tuple[int, str], Agent] = {}
        self._by_email: dict[tuple[int, str], Agent] = {}
        for agent in self.agents:
            for integration_id, identity in agent.identities.items():
                if identity.user_id:
                    self._by_id.setdefault((integration_id, identity.user_id), agent)
                if identity.email:
                    self._by_email.setdefault((integration_id, identity.email.casefold()), agent)

    def __len__(self) -> int:
        return len(self.agents)

    def resolve(self, integration_id: int, user: str = "", *, email: str = "") -> Match | None:
        """The agent integration ``integration_id`` knows as ``user`` (a CRM user id, or an e-mail), or ``email``.

        A value containing ``@`` is taken as an e-mail (case-insensitive);
        anything else as a user id (exact), then as an e-mail.
        """
        user, email = (user or "").strip(), (email or "").strip()
        if user and "@" not in user:
            agent = self._by_id.get((integration_id, user))
            if agent is not None:
                return Match(agent, "user_id", user)
        for candidate in (user if "@" in user else "", email):
            if candidate:
                agent = self._by_email.get((integration_id, candidate.casefold()))
                if agent is not None:
                    return Match(agent, "email", candidate)
        return None

    def by_extension(self, extension: str) -> Agent | None:
        return next((a for a in self.agents if a.extension == extension), None)
