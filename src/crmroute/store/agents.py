"""Agents: name, extension, watched devices, and who each is in every integration's CRM.

Names and extensions are unique. Identities name integrations (by name in
the API and the rules file, by id in the table): deleting an integration
deletes the identities it held. :func:`directory` is the in-memory
:class:`~crmroute.routing.agents.AgentDirectory` routing uses;
:func:`match_users` pairs a CRM's users with agents by e-mail (the sync).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from crmroute.errors import ConfigError, Conflict, NotFound
from crmroute.routing import agents as routing_agents
from crmroute.schemas import AgentIn, IdentityIn
from crmroute.store.db import bump_config_version, is_id
from crmroute.store.models import Agent, AgentIdentity, Integration


def get(session: Session, agent_id: int) -> Agent:
    row = session.get(Agent, agent_id) if is_id(agent_id) else None
    if row is None:
        raise NotFound(f"no agent with id {agent_id}")
    return row


def search(session: Session, *, search: str = "", offset: int = 0, limit: int = 50) -> tuple[int, list[Agent]]:
    """Agents whose name or extension contains ``search``, by name."""
    query = select(Agent)
    if search.strip():
        text = search.strip()
        query = query.where(or_(Agent.name.icontains(text, autoescape=True),
                                Agent.extension.icontains(text, autoescape=True)))  # fmt: skip
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.options(selectinload(Agent.identities).selectinload(AgentIdentity.integration))
                           .order_by(Agent.name).offset(offset).limit(limit))  # fmt: skip
    return total, list(rows)


def list_all(session: Session) -> list[Agent]:
    return list(session.scalars(select(Agent).options(selectinload(Agent.identities)
                                                      .selectinload(AgentIdentity.integration))
                                .order_by(Agent.name)))  # fmt: skip


def create(session: Session, data: AgentIn) -> Agent:
    _refuse_duplicate(session, data, None)
    row = Agent(name=data.name, extension=data.extension)
    session.add(row)
    _set(session, row, data)
    _flush(session, data)
    bump_config_version(session)
    return row


def update(session: Session, agent_id: int, data: AgentIn) -> Agent:
    """Replace the agent (identities left out are removed)."""
    row = get(session, agent_id)
    _refuse_duplicate(session, data, row.id)
    _set(session, row, data)
    _flush(session, data)
    bump_config_version(session)
    return row


def delete(session: Session, agent_id: int) -> None:
    session.delete(get(session, agent_id))
    session.flush()
    bump_config_version(session)


def upsert(session: Session, data: AgentIn) -> Agent:
    """Create or update by name (the rules file)."""
    row = session.scalar(select(Agent).where(Agent.name == data.name))
    if row is None:
        row = Agent(name=data.name)
        session.add(row)
    row.extension = data.extension
    _set(session, row, data)
    return row


def identity_problems(session: Session, data: AgentIn, integrations: Iterable[str] = ()) -> list[tuple[str, str]]:
    """Identities must name integrations that exist (stored, or in ``integrations``: the same rules file)."""
    known = set(session.scalars(select(Integration.name))) | set(integrations)
    return [(f"identities.{name}", f"no integration named {name!r}") for name in data.identities if name not in known]


def _set(session: Session, row: Agent, data: AgentIn) -> None:
    found = identity_problems(session, data)
    if found:
        raise ConfigError(found)
    row.name, row.extension, row.devices = data.name, data.extension, list(data.devices)
    ids = dict(session.execute(select(Integration.name, Integration.id)).all())
    wanted = {ids[name]: identity for name, identity in data.identities.items()}
    for held in list(row.identities):
        if held.integration_id not in wanted:
            row.identities.remove(held)
    by_integration = {held.integration_id: held for held in row.identities}
    for integration_id, identity in wanted.items():
        held = by_integration.get(integration_id)
        if held is None:
            held = AgentIdentity(integration_id=integration_id)
            row.identities.append(held)
        held.user_id, held.email = identity.user_id, identity.email


def _duplicate(session: Session, data: AgentIn, agent_id: int | None) -> Conflict | None:
    for column, value, what in ((Agent.name, data.name, "named"), (Agent.extension, data.extension, "with extension")):
        found = session.scalar(select(Agent.id).where(column == value))
        if found is not None and found != agent_id:
            return Conflict(f"an agent {what} {value!r} already exists")
    return None


def _refuse_duplicate(session: Session, data: AgentIn, agent_id: int | None) -> None:
    conflict = _duplicate(session, data, agent_id)
    if conflict is not None:
        raise conflict


def _flush(session: Session, data: AgentIn) -> None:
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"an agent named {data.name!r} or with extension {data.extension!r} already exists") from None


# --- shapes -------------------------------------------------------------------------------


def identities_of(row: Agent) -> dict[str, IdentityIn]:
    return {held.integration.name: IdentityIn(user_id=held.user_id, email=held.email)
            for held in sorted(row.identities, key=lambda h: h.integration.name)}  # fmt: skip


def to_data(row: Agent) -> dict[str, Any]:
    """The rules-file shape: an identity is its user id or e-mail as text, ``{user_id, email}`` when both."""
    identities: dict[str, Any] = {}
    for name, identity in identities_of(row).items():
        if identity.user_id and identity.email:
            identities[name] = {"user_id": identity.user_id, "email": identity.email}
        else:
            identities[name] = identity.user_id or identity.email
    data: dict[str, Any] = {"name": row.name, "extension": row.extension}
    if row.devices:
        data["devices"] = list(row.devices)
    data["identities"] = identities
    return data


def to_agent(row: Agent) -> routing_agents.Agent:
    """The routing view of a stored agent."""
    return routing_agents.Agent(
        name=row.name, extension=row.extension, devices=tuple(row.devices or ()), id=row.id,
        identities={h.integration_id: routing_agents.Identity(h.user_id, h.email) for h in row.identities},
    )  # fmt: skip


def to_public(row: Agent, availability: Any = None) -> dict[str, Any]:
    agent = to_agent(row)
    return {
        "id": row.id, "name": row.name, "extension": row.extension, "devices": list(row.devices or ()),
        "watched_devices": list(agent.watched_devices),
        "identities": {name: {"user_id": i.user_id, "email": i.email} for name, i in identities_of(row).items()},
        "availability": describe_availability(agent, availability),
    }  # fmt: skip


def describe_availability(agent: routing_agents.Agent, availability: Any) -> dict[str, Any]:
    """The agent's state from the AMI map; ``unknown`` (routing assumes available) without one."""
    if availability is None:
        return {"state": "unknown", "sources": [], "note": "AMI is not connected in this process: assumed available"}
    return availability.describe(agent)


def directory(session: Session) -> routing_agents.AgentDirectory:
    """Every agent, for routing: ``directory(session).resolve(integration_id, owner_id)``."""
    return routing_agents.AgentDirectory(to_agent(row) for row in list_all(session))


def resolve(session: Session, integration: str, user: str) -> tuple[routing_agents.Match, Agent] | None:
    """The agent integration ``integration`` (a name) knows as ``user`` (CRM user id or e-mail), or None."""
    integration_id = session.scalar(select(Integration.id).where(Integration.name == integration))
    if integration_id is None:
        raise NotFound(f"no integration named {integration!r}")
    match = directory(session).resolve(integration_id, user)
    if match is None:
        return None
    return match, get(session, match.agent.id)  # type: ignore[arg-type]


def explain(row: Agent) -> list[str]:
    """One line per identity, as the UI shows them: ``Main SF: olivia.owner@example.com → extension 201``."""
    return [f"{name}: {identity.describe()} → extension {row.extension}"
            for name, identity in ((n, routing_agents.Identity(i.user_id, i.email))
                                   for n, i in identities_of(row).items())]  # fmt: skip


# --- sync from a CRM's user list ------------------------------------------------------------


@dataclass
class SyncResult:
    integration: str
    users: int = 0
    matched: list[str] = field(default_factory=list)
    updated: int = 0
    unmatched_agents: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"integration": self.integration, "users": self.users, "matched": self.matched,
                "updated": self.updated, "unmatched_agents": self.unmatched_agents}  # fmt: skip


def match_users(session: Session, integration: Integration, users: Sequence[Any]) -> SyncResult:
    """Record each CRM user's id on the agent with the same e-mail in this integration (ignoring case).

    An agent's e-mail is the one its identity in this integration holds, else
    one it has in any other integration. Agents no user matches are listed.
    Users without an e-mail, and e-mails two users share, match nobody.
    """
    result = SyncResult(integration.name, users=len(users))
    counts: dict[str, int] = {}
    for user in users:
        if user.email:
            counts[user.email.casefold()] = counts.get(user.email.casefold(), 0) + 1
    by_email = {u.email.casefold(): u for u in users if u.email and counts[u.email.casefold()] == 1}
    changed = False
    for row in list_all(session):
        held = next((h for h in row.identities if h.integration_id == integration.id), None)
        emails = ([held.email] if held is not None and held.email else []) + [
            h.email for h in row.identities if h.email and h is not held]
        user = next((by_email[e.casefold()] for e in emails if e.casefold() in by_email), None)
        if user is None:
            if emails:
                result.unmatched_agents.append(f"{row.name} ({emails[0]})")
            continue
        if held is None:
            held = AgentIdentity(integration_id=integration.id)
            row.identities.append(held)
        if (held.user_id, held.email) != (str(user.id), user.email):
            held.user_id, held.email = str(user.id), user.email
            result.updated += 1
            changed = True
        result.matched.append(f"{user.name}, {user.email} → extension {row.extension} (agent {row.name})"
                              if user.name else f"{user.email} → extension {row.extension} (agent {row.name})")  # fmt: skip
    session.flush()
    if changed:
        bump_config_version(session)
    return result
