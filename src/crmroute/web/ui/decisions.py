"""The decision log (SPEC 8): every call's decision, filterable, newest first, each with its trace."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from crmroute.routing.trace import Status
from crmroute.store import decisions, rules
from crmroute.web.deps import PageUser, SessionDep
from crmroute.web.templating import render
from crmroute.web.ui._common import PAGE_SIZE, Page, clamp_offset, filters

router = APIRouter()


def day_start(text: str, field: str, errors: dict[str, str], *, after: bool = False) -> datetime | None:
    """Midnight UTC of a ``YYYY-MM-DD`` day (of the next day with ``after``: ``until`` includes its day)."""
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        errors[field] = "must be a date like 2026-01-31"
        return None
    return datetime.combine(day + timedelta(days=1 if after else 0), time(), tzinfo=timezone.utc)


@router.get("/decisions", response_class=HTMLResponse)
def decision_list(
    request: Request, principal: PageUser, session: SessionDep, caller: str = "", rule: str = "", status: str = "",
    since: str = "", until: str = "", offset: int = 0,
) -> Response:  # fmt: skip
    offset = clamp_offset(offset)
    errors: dict[str, str] = {}
    if status and status not in set(Status):
        errors["status"] = f"must be one of {', '.join(Status)}"
        status = ""
    start = day_start(since.strip(), "since", errors)
    end = day_start(until.strip(), "until", errors, after=True)
    total, rows = decisions.search(session, caller=caller.strip(), rule=rule, status=status, since=start, until=end,
                                   offset=offset, limit=PAGE_SIZE)  # fmt: skip
    page = Page(total, offset, PAGE_SIZE, filters(caller=caller, rule=rule, status=status, since=since, until=until))
    values = {"caller": caller, "rule": rule, "status": status, "since": since, "until": until}
    return render(request, "decisions/list.html", principal, rows=[decisions.to_public(r, trace=False) for r in rows],
                  page=page, values=values, errors=errors, statuses=[(s.value, s.value) for s in Status],
                  rules=[(r.name, r.name) for r in rules.list_all(session)])  # fmt: skip


@router.get("/decisions/{decision_id}", response_class=HTMLResponse)
def decision_show(request: Request, decision_id: int, principal: PageUser, session: SessionDep) -> Response:
    row = decisions.to_public(decisions.get(session, decision_id), trace=True)
    return render(request, "decisions/show.html", principal, d=row)
