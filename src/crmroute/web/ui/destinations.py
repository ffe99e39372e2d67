"""Destinations: the extensions, queues, IVRs and recordings that fill the rule form's selects."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from starlette.datastructures import FormData

from crmroute.errors import ConfigError, Conflict
from crmroute.schemas import DestinationIn
from crmroute.store import destinations
from crmroute.web.deps import FormUser, PageUser, Principal, SessionDep
from crmroute.web.templating import redirect, render
from crmroute.web.ui._common import PAGE_SIZE, FormDep, Page, checked, clamp_offset, filters, problems_of, text

router = APIRouter()

TYPES = [("extension", "Extension"), ("queue", "Queue"), ("ivr", "IVR"), ("recording", "Recording")]
TYPE_LABELS = dict(TYPES)


def label(row: Any) -> str:
    return row.ref if row.type == "recording" else f"{TYPE_LABELS[row.type].lower()} {row.ref}"


@router.get("/destinations", response_class=HTMLResponse)
def destination_list(
    request: Request, principal: PageUser, session: SessionDep, search: str = "", type: str = "", offset: int = 0
) -> Response:
    offset = clamp_offset(offset)
    kind = type if type in TYPE_LABELS else ""
    total, rows = destinations.search(session, search=search, type=kind, offset=offset, limit=PAGE_SIZE)
    page = Page(total, offset, PAGE_SIZE, filters(search=search, type=kind))
    return render(request, "destinations/list.html", principal, rows=rows, search=search, type=kind, types=TYPES,
                  type_labels=TYPE_LABELS, page=page, label=label)  # fmt: skip


@router.get("/destinations/new", response_class=HTMLResponse)
def destination_new(request: Request, principal: PageUser, type: str = "extension") -> Response:
    values = {"type": type if type in TYPE_LABELS else "extension", "number": "", "name": "", "voicemail": False}
    return form_page(request, principal, values)


@router.post("/destinations/new", response_class=HTMLResponse)
def destination_create(request: Request, principal: FormUser, session: SessionDep, form: FormDep) -> Response:
    data, values = read_form(form)
    try:
        row = destinations.create(session, DestinationIn.model_validate(data))
    except (ValidationError, ConfigError, Conflict) as exc:
        session.rollback()
        return form_page(request, principal, values, failure=exc)
    session.commit()
    return redirect(f"/destinations?type={row.type}", f"Saved {label(row)}.")


@router.get("/destinations/{dest_id}/edit", response_class=HTMLResponse)
def destination_edit(request: Request, dest_id: int, principal: PageUser, session: SessionDep) -> Response:
    row = destinations.get(session, dest_id)
    values = {"type": row.type, "number": "" if row.type == "recording" else row.ref,
              "name": row.ref if row.type == "recording" else row.name, "voicemail": row.voicemail}  # fmt: skip
    return form_page(request, principal, values, dest_id=dest_id)


@router.post("/destinations/{dest_id}/edit", response_class=HTMLResponse)
def destination_update(
    request: Request, dest_id: int, principal: FormUser, session: SessionDep, form: FormDep
) -> Response:
    destinations.get(session, dest_id)
    data, values = read_form(form)
    try:
        row = destinations.update(session, dest_id, DestinationIn.model_validate(data))
    except (ValidationError, ConfigError, Conflict) as exc:
        session.rollback()
        return form_page(request, principal, values, dest_id=dest_id, failure=exc)
    session.commit()
    return redirect(f"/destinations?type={row.type}", f"Saved {label(row)}.")


@router.post("/destinations/{dest_id}/delete")
def destination_delete(dest_id: int, principal: FormUser, session: SessionDep) -> Response:
    row = destinations.get(session, dest_id)
    what = label(row)
    try:
        destinations.delete(session, dest_id)
    except Conflict as exc:
        session.rollback()
        return redirect("/destinations", f"Not removed: {exc}.", error=True)
    session.commit()
    return redirect("/destinations", f"Removed {what}.")


def read_form(form: FormData) -> tuple[dict[str, Any], dict[str, Any]]:
    """What ``DestinationIn`` takes (the number only for numbered types, voicemail only for extensions)."""
    values = {"type": text(form, "type"), "number": text(form, "number"), "name": text(form, "name"),
              "voicemail": checked(form, "voicemail")}  # fmt: skip
    data: dict[str, Any] = {"type": values["type"], "name": values["name"]}
    if values["type"] != "recording":
        data["number"] = values["number"]
    if values["type"] == "extension":
        data["voicemail"] = values["voicemail"]
    return data, values


def form_page(
    request: Request, principal: Principal, values: dict[str, Any], *, dest_id: int | None = None,
    failure: Exception | None = None,
) -> Response:  # fmt: skip
    errors: dict[str, str] = {}
    if isinstance(failure, (ValidationError, ConfigError)):
        errors = problems_of(failure)
    elif isinstance(failure, Conflict):
        errors = {"name" if values["type"] == "recording" else "number": str(failure)}
    return render(request, "destinations/form.html", principal, status_code=422 if failure else 200,
                  dest_id=dest_id, values=values, errors=errors, types=TYPES)  # fmt: skip
