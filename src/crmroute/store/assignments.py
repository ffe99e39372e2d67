"""DIDs and IVRs: where rules are attached.

A DID's rule must have location ``did``, an IVR's ``ivr``; numbers are
unique. Writes flush and bump the config version; the caller commits.
"""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from crmroute.errors import ConfigError, Conflict, NotFound
from crmroute.schemas import DidIn, IvrIn
from crmroute.store.db import bump_config_version, is_id
from crmroute.store.models import Did, Ivr, Rule
from crmroute.store.references import References, check_assignment

Row = TypeVar("Row", Did, Ivr)

# --- DIDs -------------------------------------------------------------------------


def get_did(session: Session, did_id: int) -> Did:
    return _get(session, Did, did_id)


def search_dids(session: Session, *, search: str = "", offset: int = 0, limit: int = 50) -> tuple[int, list[Did]]:
    """DIDs whose number, name or rule name contains ``search``, by number."""
    return _search(session, Did, search, offset, limit)


def create_did(session: Session, data: DidIn) -> Did:
    return _create(session, Did, data)


def update_did(session: Session, did_id: int, data: DidIn) -> Did:
    return _update(session, Did, did_id, data)


def delete_did(session: Session, did_id: int) -> None:
    _delete(session, Did, did_id)


def did_public(row: Did) -> dict:
    return _public(row)


# --- IVRs -------------------------------------------------------------------------


def get_ivr(session: Session, ivr_id: int) -> Ivr:
    return _get(session, Ivr, ivr_id)


def search_ivrs(session: Session, *, search: str = "", offset: int = 0, limit: int = 50) -> tuple[int, list[Ivr]]:
    """IVRs whose number, name or rule name contains ``search``, by number."""
    return _search(session, Ivr, search, offset, limit)


def create_ivr(session: Session, data: IvrIn) -> Ivr:
    return _create(session, Ivr, data)


def update_ivr(session: Session, ivr_id: int, data: IvrIn) -> Ivr:
    return _update(session, Ivr, ivr_id, data)


def delete_ivr(session: Session, ivr_id: int) -> None:
    _delete(session, Ivr, ivr_id)


def ivr_public(row: Ivr) -> dict:
    return _public(row)


# --- shared -----------------------------------------------------------------------

_WHAT = {Did: ("did", "DID", "a DID"), Ivr: ("ivr", "IVR", "an IVR")}


def _get(session: Session, model: type[Row], row_id: int) -> Row:
    query = select(model).where(model.id == row_id).options(selectinload(model.rule))
    row = session.scalar(query) if is_id(row_id) else None
    if row is None:
        raise NotFound(f"no {_WHAT[model][1]} with id {row_id}")
    return row


def _search(session: Session, model: type[Row], search: str, offset: int, limit: int) -> tuple[int, list[Row]]:
    query = select(model).join(model.rule)
    if search.strip():
        text = search.strip()
        query = query.where(or_(*(c.icontains(text, autoescape=True) for c in (model.number, model.name, Rule.name))))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    order = (func.length(model.number), model.number)  # 7 before 10
    rows = session.scalars(query.order_by(*order).offset(offset).limit(limit).options(selectinload(model.rule)))
    return total, list(rows)


def _check(session: Session, model: type[Row], data: DidIn | IvrIn) -> Rule:
    problems = check_assignment(References(rule_locations=_locations(session, data.rule)), _WHAT[model][0], data)
    if problems:
        raise ConfigError(problems)
    rule = session.scalar(select(Rule).where(Rule.name == data.rule))
    assert rule is not None
    return rule


def _locations(session: Session, name: str) -> dict[str, str]:
    return {n: loc for n, loc in session.execute(select(Rule.name, Rule.location).where(Rule.name == name))}


def _refuse_duplicate(session: Session, model: type[Row], number: str) -> None:
    if session.scalar(select(model.id).where(model.number == number)) is not None:
        raise _duplicate(model, number)


def _duplicate(model: type[Row], number: str) -> Conflict:
    return Conflict(f"{_WHAT[model][2]} numbered {number!r} already exists")


def _flush(session: Session, model: type[Row], number: str) -> None:
    try:
        session.flush()
    except IntegrityError:
        raise _duplicate(model, number) from None


def _create(session: Session, model: type[Row], data: DidIn | IvrIn) -> Row:
    _refuse_duplicate(session, model, data.number)
    rule = _check(session, model, data)
    row = model(number=data.number, name=data.name, rule=rule)
    session.add(row)
    _flush(session, model, data.number)
    bump_config_version(session)
    return row


def _update(session: Session, model: type[Row], row_id: int, data: DidIn | IvrIn) -> Row:
    row = _get(session, model, row_id)
    if data.number != row.number:
        _refuse_duplicate(session, model, data.number)
    row.rule = _check(session, model, data)
    row.number = data.number
    row.name = data.name
    _flush(session, model, data.number)
    bump_config_version(session)
    return row


def _delete(session: Session, model: type[Row], row_id: int) -> None:
    session.delete(_get(session, model, row_id))
    session.flush()
    bump_config_version(session)


def _public(row: Did | Ivr) -> dict:
    return {"id": row.id, "number": row.number, "name": row.name, "rule": row.rule.name, "rule_id": row.rule_id}


# --- the rules file ---------------------------------------------------------------


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
