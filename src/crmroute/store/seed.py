"""Whether a store holds any configuration: ``rules import --if-empty`` (the quick start's seeding) asks it."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from crmroute.store.models import Agent, Destination, Did, Integration, Ivr, Rule

CONFIGURATION = (Integration, Destination, Rule, Did, Ivr, Agent)


def is_empty(session: Session) -> bool:
    """No integration, destination, rule, DID, IVR or agent: nothing an import could overwrite or surprise."""
    return all(session.scalar(select(model.id).limit(1)) is None for model in CONFIGURATION)
