"""Schedules: weekly opening hours with holidays in a time zone, named by rows' conditions.

Names are unique. Renaming a schedule renames it in every row condition that
uses it; deleting one that a row uses is refused (``Conflict``).
:func:`compiled` gives the routing engine's :class:`~crmroute.routing.schedules.Schedule`.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crmroute.errors import Conflict, NotFound
from crmroute.routing import schedules as routing_schedules
from crmroute.schemas import ScheduleIn
from crmroute.store.db import bump_config_version, is_id
from crmroute.store.models import Rule, RuleRow, Schedule


def get(session: Session, schedule_id: int) -> Schedule:
    row = session.get(Schedule, schedule_id) if is_id(schedule_id) else None
    if row is None:
        raise NotFound(f"no schedule with id {schedule_id}")
    return row


def search(session: Session, *, search: str = "", offset: int = 0, limit: int = 50) -> tuple[int, list[Schedule]]:
    """Schedules whose name or time zone contains ``search`` (any case), by name."""
    query = select(Schedule)
    if search.strip():
        text = search.strip()
        query = query.where(Schedule.name.icontains(text, autoescape=True)
                            | Schedule.timezone.icontains(text, autoescape=True))  # fmt: skip
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(func.lower(Schedule.name), Schedule.name).offset(offset).limit(limit))
    return total, list(rows)


def list_all(session: Session) -> list[Schedule]:
    return list(session.scalars(select(Schedule).order_by(Schedule.name)))


def names(session: Session) -> set[str]:
    return set(session.scalars(select(Schedule.name)))


def create(session: Session, data: ScheduleIn) -> Schedule:
    _refuse_duplicate(session, data.name, None)
    row = Schedule(name=data.name)
    _set(row, data)
    session.add(row)
    _flush(session, data.name)
    bump_config_version(session)
    return row


def update(session: Session, schedule_id: int, data: ScheduleIn) -> Schedule:
    """Replace the schedule; a new name is written into the row conditions that used the old one."""
    row = get(session, schedule_id)
    if data.name != row.name:
        _refuse_duplicate(session, data.name, row.id)
        rename_in_rules(session, row.name, data.name)
    _set(row, data)
    _flush(session, data.name)
    bump_config_version(session)
    return row


def delete(session: Session, schedule_id: int) -> None:
    row = get(session, schedule_id)
    used = rules_using(session, row.name)
    if used:
        quoted = ", ".join(repr(n) for n in used)
        raise Conflict(f"schedule {row.name!r} is used by rule{'s' if len(used) > 1 else ''} {quoted}; "
                       "remove it from their rows first")  # fmt: skip
    session.delete(row)
    session.flush()
    bump_config_version(session)


def upsert(session: Session, data: ScheduleIn) -> Schedule:
    """Create or update by name (the rules file)."""
    row = session.scalar(select(Schedule).where(Schedule.name == data.name))
    if row is None:
        row = Schedule(name=data.name)
        session.add(row)
    _set(row, data)
    return row


def _set(row: Schedule, data: ScheduleIn) -> None:
    written = data.to_data()
    row.name, row.timezone, row.hours, row.holidays = data.name, data.timezone, written["hours"], written["holidays"]


def rules_using(session: Session, name: str) -> list[str]:
    """Names of the rules with a row condition naming this schedule."""
    found = set()
    for rule_name, conditions in session.execute(select(Rule.name, RuleRow.conditions).join(RuleRow.rule)):
        if any(isinstance(c, dict) and c.get("schedule") == name for c in conditions or ()):
            found.add(rule_name)
    return sorted(found)


def rename_in_rules(session: Session, old: str, new: str) -> None:
    for row in session.scalars(select(RuleRow)):
        if any(isinstance(c, dict) and c.get("schedule") == old for c in row.conditions or ()):
            row.conditions = [c | {"schedule": new} if c.get("schedule") == old else c for c in row.conditions]


def compiled(row: Schedule) -> routing_schedules.Schedule:
    holidays: dict[date, str] = {}
    for item in row.holidays or ():
        when, name = (item, "") if isinstance(item, str) else (item.get("date", ""), item.get("name", ""))
        holidays[date.fromisoformat(when)] = name
    return routing_schedules.Schedule(row.name, row.timezone, routing_schedules.parse_hours(row.hours or {}), holidays)


def to_data(row: Schedule) -> dict:
    return {"name": row.name, "timezone": row.timezone, "hours": dict(row.hours or {}),
            "holidays": list(row.holidays or [])}  # fmt: skip


def to_public(session: Session, row: Schedule) -> dict:
    return {"id": row.id, **to_data(row), "used_by": rules_using(session, row.name)}


def _refuse_duplicate(session: Session, name: str, schedule_id: int | None) -> None:
    found = session.scalar(select(Schedule.id).where(Schedule.name == name))
    if found is not None and found != schedule_id:
        raise Conflict(f"a schedule named {name!r} already exists")


def _flush(session: Session, name: str) -> None:
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"a schedule named {name!r} already exists") from None
