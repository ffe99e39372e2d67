"""DIDs and IVRs: where rules are attached."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from crmroute.schemas import DidIn, IvrIn
from crmroute.store.models import Did, Ivr, Rule


def upsert_did(session: Session, data: DidIn, rules: dict[str, Rule]) -> Did:
    row = session.scalar(select(Did).where(Did.number == data.number))
    if row is None:
        row = Did(number=data.number)
        session.add(row)
    row.name = data.name
    row.rule = rules[data.rule]
    return row


def upsert_ivr(session: Session, data: IvrIn, rules: dict[str, Rule]) -> Ivr:
    row = session.scalar(select(Ivr).where(Ivr.number == data.number))
    if row is None:
        row = Ivr(number=data.number)
        session.add(row)
    row.name = data.name
    row.rule = rules[data.rule]
    return row


def list_dids(session: Session) -> list[Did]:
    return list(session.scalars(select(Did).order_by(Did.number).options(selectinload(Did.rule))))


def list_ivrs(session: Session) -> list[Ivr]:
    return list(session.scalars(select(Ivr).order_by(Ivr.number).options(selectinload(Ivr.rule))))


def to_data(row: Did | Ivr) -> dict:
    data = {"number": row.number, "rule": row.rule.name}
    if row.name:
        data["name"] = row.name
    return data
