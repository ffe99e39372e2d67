"""Test rule: the trace a call would produce (SPEC 8's dry run). The CRM is really asked; nothing is written."""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio.from_thread
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from crmroute.router import Target
from crmroute.schemas import RouteIn
from crmroute.store import rules
from crmroute.web.deps import FormUser, PageUser, Principal, SessionDep
from crmroute.web.templating import render
from crmroute.web.ui._common import FormDep, problems_of, text

router = APIRouter()

TARGETS = [("did", "A DID"), ("ivr", "An IVR"), ("rule", "A rule by name")]


@router.get("/test-rule", response_class=HTMLResponse)
def test_rule_page(request: Request, principal: PageUser, session: SessionDep, rule: str = "") -> Response:
    values = {"target": "rule" if rule else "did", "did": "", "ivr": "", "rule": rule, "caller": "", "dtmf": "", "at": ""}
    return page(request, principal, session, values)


@router.post("/test-rule", response_class=HTMLResponse)
def test_rule_run(request: Request, principal: FormUser, session: SessionDep, form: FormDep) -> Response:
    values = {name: text(form, name) for name in ("target", "did", "ivr", "rule", "caller", "dtmf", "at")}
    target = values["target"] if values["target"] in dict(TARGETS) else "did"
    try:
        data = RouteIn.model_validate({target: values[target] or None, "caller": values["caller"],
                                       "dtmf": values["dtmf"], "at": values["at"] or None})  # fmt: skip
    except ValidationError as exc:
        errors = {target if path in ("did", "ivr", "rule") else path: m for path, m in problems_of(exc).items()}
        return page(request, principal, session, values, errors=errors, status_code=422)
    kind = "did" if data.did else "ivr" if data.ivr else "rule"
    router = request.app.state.router
    trace = anyio.from_thread.run(partial(router.dry_run, Target(kind, getattr(data, kind) or ""),
                                          caller_id=data.caller, dtmf=data.dtmf, at=data.at))  # fmt: skip
    trace["matched"] = matched_row(session, trace.get("rule", ""), trace.get("row"))
    return page(request, principal, session, values, trace=trace)


def matched_row(session: Session, rule_name: str, row: int | None) -> dict[str, Any] | None:
    """The stored row a decision's 1-based ``row`` index names (as it is now)."""
    if not rule_name or not row:
        return None
    found = [r for r in rules.search(session, search=rule_name, limit=100)[1] if r.name == rule_name]
    if not found or row > len(found[0].rows):
        return None
    stored = found[0].rows[row - 1]
    return {"operator": stored.operator, "value": stored.value, "destination": stored.destination,
            "option": stored.option, "conditions": list(stored.conditions or [])}  # fmt: skip


def page(request: Request, principal: Principal, session: Session, values: dict[str, str], *,
         errors: dict[str, str] | None = None, trace: dict | None = None, status_code: int = 200) -> Response:  # fmt: skip
    names = [(r.name, f"{r.name} ({r.location.upper()})") for r in rules.list_all(session)]
    return render(request, "test_rule/form.html", principal, status_code=status_code, values=values,
                  errors=errors or {}, trace=trace, targets=TARGETS, rules=names)  # fmt: skip
