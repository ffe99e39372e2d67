"""Agents from a CRM's user list: list the users, match them to agents by e-mail, record their ids.

Shared by ``POST /api/v1/agents/sync``, the agents page's Sync button and
``crmroute agents sync INTEGRATION``. One connector is built for the sync (as
the Test action does) and closed after it; the matching is one transaction.
"""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from crmroute.connectors.pool import ConnectorPool, ConnectorSpec
from crmroute.deadline import Deadline
from crmroute.errors import ConfigError
from crmroute.store import agents
from crmroute.store.db import transaction
from crmroute.store.models import Integration
from crmroute.store.secrets import SecretBox

SYNC_TIMEOUT_MS = 60_000  # listing every user may take several pages


def _spec(factory: sessionmaker[Session], name: str) -> ConnectorSpec:
    with transaction(factory) as session:
        row = session.scalar(select(Integration).where(Integration.name == name))
        if row is None:
            raise ConfigError(f"no integration named {name!r}", field="integration")
        return ConnectorSpec(row.id, row.name, row.kind, row.enabled, dict(row.settings), row.secrets_enc)


async def sync_agents(
    factory: sessionmaker[Session], box: SecretBox, http: httpx.AsyncClient, name: str, *, region: str = "US",
    timeout_ms: float = SYNC_TIMEOUT_MS,
) -> agents.SyncResult:  # fmt: skip
    """List integration ``name``'s CRM users and record each one's id on the agent with its e-mail.

    ``ConfigError`` (field ``integration``) when the integration is unknown or
    its CRM kind has no user list; ``ConnectorError`` when the CRM fails.
    """
    spec = await asyncio.to_thread(_spec, factory, name)
    connector = ConnectorPool(http, box, region).build(spec)
    try:
        if not connector.supports_users():
            raise ConfigError(f"{connector.title} integrations cannot list their users yet; "
                              "give each agent's CRM user id by hand", field="integration")  # fmt: skip
        users = await connector.list_users(deadline=Deadline.after_ms(timeout_ms))
    finally:
        await connector.aclose()

    def match() -> agents.SyncResult:
        with transaction(factory) as session:
            integration = session.scalar(select(Integration).where(Integration.name == name))
            if integration is None:  # removed meanwhile
                raise ConfigError(f"no integration named {name!r}", field="integration")
            return agents.match_users(session, integration, users)

    return await asyncio.to_thread(match)
