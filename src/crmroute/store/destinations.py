"""Destinations: the extensions, queues, IVRs and recordings rules send calls to.

A destination is known by its type and ``ref`` (the number; for recordings
the sound name). Rules name destinations by ref, so a destination a rule
uses can be neither deleted nor renumbered.
"""

from __future__ import annotations

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crmroute.errors import ConfigError, Conflict, NotFound
from crmroute.schemas import DestinationIn
from crmroute.store.db import bump_config_version, is_id
from crmroute.store.models import Destination
from crmroute.store.references import describe_rules, rules_using_destination

_ARTICLE = {"extension": "an extension", "queue": "a queue", "ivr": "an IVR", "recording": "a recording"}


def get(session: Session, dest_id: int) -> Destination:
    row = session.get(Destination, dest_id) if is_id(dest_id) else None
    if row is None:
        raise NotFound(f"no destination with id {dest_id}")
    return row


def search(
    session: Session, *, search: str = "", type: str = "", offset: int = 0, limit: int = 50
) -> tuple[int, list[Destination]]:
    """Destinations whose number (or recording name) or name contains ``search``, by type and number."""
    query = select(Destination)
    if type:
        query = query.where(Destination.type == type)
    if search.strip():
        text = search.strip()
        query = query.where(or_(Destination.ref.icontains(text, autoescape=True),
                                Destination.name.icontains(text, autoescape=True)))  # fmt: skip
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    order = (Destination.type, func.length(Destination.ref), Destination.ref)  # 5 before 10
    return total, list(session.scalars(query.order_by(*order).offset(offset).limit(limit)))


def create(session: Session, data: DestinationIn) -> Destination:
    _refuse_duplicate(session, data)
    row = Destination(type=data.type, ref=data.ref)
    session.add(row)
    _set(row, data)
    _flush(session, data)
    bump_config_version(session)
    return row


def update(session: Session, dest_id: int, data: DestinationIn) -> Destination:
    """Replace the destination; changing the type or number of one a rule uses is refused."""
    row = get(session, dest_id)
    if (data.type, data.ref) != (row.type, row.ref):
        used = rules_using_destination(session, row.type, row.ref)
        if used:
            field = "type" if data.type != row.type else "name" if row.type == "recording" else "number"
            raise ConfigError(f"{_label(row.type, row.ref)} is used by {describe_rules(used)}; "
                              f"point {'it' if len(used) == 1 else 'them'} at another destination first",
                              field=field)  # fmt: skip
        _refuse_duplicate(session, data)
        row.type, row.ref = data.type, data.ref
    _set(row, data)
    _flush(session, data)
    bump_config_version(session)
    return row


def delete(session: Session, dest_id: int) -> None:
    """Refused (``Conflict``) while a rule's rows or default destination name it."""
    row = get(session, dest_id)
    used = rules_using_destination(session, row.type, row.ref)
    if used:
        raise Conflict(f"{_label(row.type, row.ref)} is used by {describe_rules(used)}; "
                       f"point {'it' if len(used) == 1 else 'them'} at another destination first")  # fmt: skip
    session.delete(row)
    session.flush()
    bump_config_version(session)


def upsert(session: Session, data: DestinationIn) -> Destination:
    """Create or update the destination with this type and number (or recording name)."""
    row = session.scalar(select(Destination).where(Destination.type == data.type, Destination.ref == data.ref))
    if row is None:
        row = Destination(type=data.type, ref=data.ref)
        session.add(row)
    _set(row, data)
    return row


def _set(row: Destination, data: DestinationIn) -> None:
    row.name = data.name
    row.voicemail = data.voicemail if data.type == "extension" else False


def _label(type: str, ref: str) -> str:
    return f"recording {ref!r}" if type == "recording" else f"{'IVR' if type == 'ivr' else type} {ref!r}"


def _duplicate(data: DestinationIn) -> Conflict:
    what = "named" if data.type == "recording" else "numbered"
    return Conflict(f"{_ARTICLE[data.type]} {what} {data.ref!r} already exists")


def _refuse_duplicate(session: Session, data: DestinationIn) -> None:
    found = session.scalar(select(Destination.id).where(Destination.type == data.type, Destination.ref == data.ref))
    if found is not None:
        raise _duplicate(data)


def _flush(session: Session, data: DestinationIn) -> None:
    try:
        session.flush()
    except IntegrityError:
        raise _duplicate(data) from None


def refs(session: Session) -> set[tuple[str, str]]:
    """Every stored ``(type, ref)`` pair."""
    return {(t, r) for t, r in session.execute(select(Destination.type, Destination.ref))}


def to_public(row: Destination) -> dict:
    return {"id": row.id, **to_data(row)}


def to_data(row: Destination) -> dict:
    if row.type == "recording":
        return {"type": row.type, "name": row.ref}
    data: dict = {"type": row.type, "number": row.ref, "name": row.name}
    if row.type == "extension":
        data["voicemail"] = row.voicemail
    return data


def list_all(session: Session) -> list[Destination]:
    return list(session.scalars(select(Destination).order_by(Destination.type, Destination.ref)))
