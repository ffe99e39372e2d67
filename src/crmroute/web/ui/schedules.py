"""Schedules: office hours with holidays in a time zone, which rule rows' conditions name."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from crmroute.errors import ConfigError, Conflict
from crmroute.routing.schedules import DAY_NAMES, DAYS, parse_days
from crmroute.schemas import ScheduleIn
from crmroute.store import schedules
from crmroute.web.deps import FormUser, PageUser, Principal, SessionDep
from crmroute.web.templating import redirect, render
from crmroute.web.ui._common import PAGE_SIZE, FormDep, Page, clamp_offset, filters, problems_of, text

router = APIRouter()


@router.get("/schedules", response_class=HTMLResponse)
def schedule_list(request: Request, principal: PageUser, session: SessionDep, search: str = "", offset: int = 0) -> Response:
    offset = clamp_offset(offset)
    total, rows = schedules.search(session, search=search, offset=offset, limit=PAGE_SIZE)
    page = Page(total, offset, PAGE_SIZE, filters(search=search))
    used = {row.name: schedules.rules_using(session, row.name) for row in rows}
    return render(request, "schedules/list.html", principal, rows=rows, search=search, page=page, used=used,
                  hours_text=hours_text)  # fmt: skip


@router.get("/schedules/new", response_class=HTMLResponse)
def schedule_new(request: Request, principal: PageUser) -> Response:
    values = {"name": "", "timezone": "", "holidays": ""} | {day: "" for day in DAYS}
    values |= {day: "09:00-17:00" for day in DAYS[:5]}
    return form_page(request, principal, values)


@router.post("/schedules/new", response_class=HTMLResponse)
def schedule_create(request: Request, principal: FormUser, session: SessionDep, form: FormDep) -> Response:
    data, values = read_form(form)
    try:
        row = schedules.create(session, ScheduleIn.model_validate(data))
    except (ValidationError, ConfigError, Conflict) as exc:
        session.rollback()
        return form_page(request, principal, values, failure=exc)
    session.commit()
    return redirect("/schedules", f"Saved the schedule {row.name!r}.")


@router.get("/schedules/{schedule_id}/edit", response_class=HTMLResponse)
def schedule_edit(request: Request, schedule_id: int, principal: PageUser, session: SessionDep) -> Response:
    row = schedules.get(session, schedule_id)
    return form_page(request, principal, values_of(row), schedule_id=schedule_id,
                     used_by=schedules.rules_using(session, row.name))  # fmt: skip


@router.post("/schedules/{schedule_id}/edit", response_class=HTMLResponse)
def schedule_update(request: Request, schedule_id: int, principal: FormUser, session: SessionDep,
                    form: FormDep) -> Response:  # fmt: skip
    schedules.get(session, schedule_id)
    data, values = read_form(form)
    try:
        row = schedules.update(session, schedule_id, ScheduleIn.model_validate(data))
    except (ValidationError, ConfigError, Conflict) as exc:
        session.rollback()
        return form_page(request, principal, values, schedule_id=schedule_id, failure=exc)
    session.commit()
    return redirect("/schedules", f"Saved the schedule {row.name!r}.")


@router.post("/schedules/{schedule_id}/delete")
def schedule_delete(schedule_id: int, principal: FormUser, session: SessionDep) -> Response:
    row = schedules.get(session, schedule_id)
    name = row.name
    try:
        schedules.delete(session, schedule_id)
    except Conflict as exc:
        session.rollback()
        return redirect("/schedules", f"The schedule {name!r} was not removed: {exc}.", error=True)
    session.commit()
    return redirect("/schedules", f"Removed the schedule {name!r}.")


def hours_text(hours: dict[str, list[str]]) -> str:
    """``Mon-Fri 09:00-17:00; Sat 10:00-12:00`` for the list."""
    return "; ".join(f"{key.title()} {', '.join(ranges)}" for key, ranges in hours.items()) or "closed"


def values_of(row: Any) -> dict[str, str]:
    values = {"name": row.name, "timezone": row.timezone} | {day: "" for day in DAYS}
    for key, ranges in (row.hours or {}).items():
        for day in parse_days(key):
            values[DAYS[day]] = ", ".join(ranges)
    values["holidays"] = "\n".join(h if isinstance(h, str) else f"{h['date']} {h.get('name', '')}".strip()
                                   for h in row.holidays or [])  # fmt: skip
    return values


def read_form(form: FormData) -> tuple[dict[str, Any], dict[str, str]]:
    """``ScheduleIn``'s shape: a time-ranges text per day, one holiday per line (``2026-12-25 Christmas``)."""
    values = {name: text(form, name) for name in ("name", "timezone", *DAYS)}
    values["holidays"] = str(form.get("holidays") or "")
    holidays = []
    for line in values["holidays"].splitlines():
        when, _, name = line.strip().partition(" ")
        if when:
            holidays.append({"date": when, "name": name.strip()} if name.strip() else when)
    data = {"name": values["name"], "timezone": values["timezone"],
            "hours": {day: values[day] for day in DAYS if values[day]}, "holidays": holidays}  # fmt: skip
    return data, values


def form_page(request: Request, principal: Principal, values: dict[str, str], *, schedule_id: int | None = None,
              failure: Exception | None = None, used_by: list[str] | None = None) -> Response:  # fmt: skip
    errors: dict[str, str] = {}
    if isinstance(failure, (ValidationError, ConfigError)):
        errors = problems_of(failure)
        for path in list(errors):  # holidays[3].date -> the holidays box
            if path.startswith("holidays["):
                errors["holidays"] = f"line {int(path[9:].split(']')[0]) + 1}: {errors.pop(path)}"
    elif isinstance(failure, Conflict):
        errors = {"name": str(failure)}
    return render(request, "schedules/form.html", principal, status_code=422 if failure else 200,
                  schedule_id=schedule_id, values=values, errors=errors, days=list(zip(DAYS, DAY_NAMES)),
                  used_by=used_by or [])  # fmt: skip
