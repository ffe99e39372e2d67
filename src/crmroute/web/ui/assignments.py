"""DIDs and IVRs: the numbers rules are attached to (the same pages for both)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from crmroute.errors import ConfigError, Conflict
from crmroute.schemas import DidIn, IvrIn
from crmroute.store import assignments, rules
from crmroute.web.deps import FormUser, PageUser, Principal, SessionDep
from crmroute.web.templating import redirect, render
from crmroute.web.ui._common import PAGE_SIZE, FormDep, Page, clamp_offset, filters, problems_of, text

router = APIRouter()


@dataclass(frozen=True)
class Kind:
    """One of the two kinds of number a rule is attached to."""

    slug: str  # "dids": the URL prefix
    location: str  # the location of the rules it takes
    title: str  # "DIDs"
    one: str  # "DID"
    number_hint: str
    model: type[BaseModel]
    get: Callable[..., Any]
    search: Callable[..., Any]
    create: Callable[..., Any]
    update: Callable[..., Any]
    delete: Callable[..., Any]


KINDS = (
    Kind("dids", "did", "DIDs", "DID",
         "The dialled number, or an Asterisk pattern such as _555XXXX (exact numbers win over patterns).",
         DidIn, assignments.get_did, assignments.search_dids, assignments.create_did, assignments.update_did,
         assignments.delete_did),
    Kind("ivrs", "ivr", "IVRs", "IVR",
         "The IVR number (or option) the dialplan calls agi://…/ivr/NUMBER with.",
         IvrIn, assignments.get_ivr, assignments.search_ivrs, assignments.create_ivr, assignments.update_ivr,
         assignments.delete_ivr),
)  # fmt: skip


def rule_choices(session: Session, location: str) -> list[tuple[str, str]]:
    return [(r.name, r.name) for r in rules.list_all(session) if r.location == location]


def form_page(
    request: Request, principal: Principal, session: Session, kind: Kind, values: dict[str, Any], *,
    item_id: int | None = None, failure: Exception | None = None,
) -> Response:  # fmt: skip
    errors: dict[str, str] = {}
    if isinstance(failure, (ValidationError, ConfigError)):
        errors = problems_of(failure)
    elif isinstance(failure, Conflict):
        errors = {"number": str(failure)}
    return render(request, "assignments/form.html", principal, status_code=422 if failure else 200, kind=kind,
                  item_id=item_id, values=values, errors=errors, rules=rule_choices(session, kind.location))  # fmt: skip


def read_form(form: Any) -> dict[str, str]:
    return {"number": text(form, "number"), "name": text(form, "name"), "rule": text(form, "rule")}


def add_routes(kind: Kind) -> None:
    base = f"/{kind.slug}"

    @router.get(base, response_class=HTMLResponse, name=f"{kind.slug}_list")
    def item_list(request: Request, principal: PageUser, session: SessionDep, search: str = "",
                  offset: int = 0) -> Response:  # fmt: skip
        offset = clamp_offset(offset)
        total, rows = kind.search(session, search=search, offset=offset, limit=PAGE_SIZE)
        page = Page(total, offset, PAGE_SIZE, filters(search=search))
        return render(request, "assignments/list.html", principal, kind=kind, rows=rows, search=search, page=page)

    @router.get(f"{base}/new", response_class=HTMLResponse, name=f"{kind.slug}_new")
    def item_new(request: Request, principal: PageUser, session: SessionDep) -> Response:
        return form_page(request, principal, session, kind, {"number": "", "name": "", "rule": ""})

    @router.post(f"{base}/new", response_class=HTMLResponse, name=f"{kind.slug}_create")
    def item_create(request: Request, principal: FormUser, session: SessionDep, form: FormDep) -> Response:
        values = read_form(form)
        try:
            row = kind.create(session, kind.model.model_validate(values))
        except (ValidationError, ConfigError, Conflict) as exc:
            session.rollback()
            return form_page(request, principal, session, kind, values, failure=exc)
        session.commit()
        return redirect(base, f"Saved {kind.one} {row.number}.")

    @router.get(f"{base}/{{item_id}}/edit", response_class=HTMLResponse, name=f"{kind.slug}_edit")
    def item_edit(request: Request, item_id: int, principal: PageUser, session: SessionDep) -> Response:
        row = kind.get(session, item_id)
        values = {"number": row.number, "name": row.name, "rule": row.rule.name}
        return form_page(request, principal, session, kind, values, item_id=item_id)

    @router.post(f"{base}/{{item_id}}/edit", response_class=HTMLResponse, name=f"{kind.slug}_update")
    def item_update(request: Request, item_id: int, principal: FormUser, session: SessionDep,
                    form: FormDep) -> Response:  # fmt: skip
        kind.get(session, item_id)
        values = read_form(form)
        try:
            row = kind.update(session, item_id, kind.model.model_validate(values))
        except (ValidationError, ConfigError, Conflict) as exc:
            session.rollback()
            return form_page(request, principal, session, kind, values, item_id=item_id, failure=exc)
        session.commit()
        return redirect(base, f"Saved {kind.one} {row.number}.")

    @router.post(f"{base}/{{item_id}}/delete", name=f"{kind.slug}_delete")
    def item_delete(item_id: int, principal: FormUser, session: SessionDep) -> Response:
        number = kind.get(session, item_id).number
        try:
            kind.delete(session, item_id)
        except Conflict as exc:
            session.rollback()
            return redirect(base, f"Not removed: {exc}.", error=True)
        session.commit()
        return redirect(base, f"Removed {kind.one} {number}.")


for _kind in KINDS:
    add_routes(_kind)
