"""Destinations: the extensions, queues, IVRs and recordings rules send calls to."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from crmroute.schemas import DestinationIn
from crmroute.store.models import Destination


def upsert(session: Session, data: DestinationIn) -> Destination:
    """Create or update the destination with this type and number (or recording name)."""
    row = session.scalar(select(Destination).where(Destination.type == data.type, Destination.ref == data.ref))
    if row is None:
        row = Destination(type=data.type, ref=data.ref)
        session.add(row)
    row.name = data.name
    row.voicemail = data.voicemail
    return row


def refs(session: Session) -> set[tuple[str, str]]:
    """Every stored ``(type, ref)`` pair."""
    return {(t, r) for t, r in session.execute(select(Destination.type, Destination.ref))}


def to_data(row: Destination) -> dict:
    if row.type == "recording":
        return {"type": row.type, "name": row.ref}
    data: dict = {"type": row.type, "number": row.ref, "name": row.name}
    if row.type == "extension":
        data["voicemail"] = row.voicemail
    return data


def list_all(session: Session) -> list[Destination]:
    return list(session.scalars(select(Destination).order_by(Destination.type, Destination.ref)))
