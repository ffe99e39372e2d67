"""CRM integrations: list, add, edit, delete (connection settings, write-only secrets, log options).

The Test action comes with the connectors; it is not offered until then.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from starlette.datastructures import FormData

from crmroute.errors import ConfigError, Conflict
from crmroute.schemas import CRM_KINDS, IntegrationIn, LogOptions, problems
from crmroute.store import integrations
from crmroute.store.secrets import MASK
from crmroute.web.deps import FormUser, PageUser, Principal, SessionDep
from crmroute.web.templating import redirect, render
from crmroute.web.ui._common import (
    PAGE_SIZE, FormDep, Page, checked, clamp_offset, filters, indexed, problems_of, text,
)  # fmt: skip

router = APIRouter()

KIND_TITLES = {
    "bullhorn": "Bullhorn", "dynamics2015": "Microsoft Dynamics CRM 2015", "hubspot": "HubSpot",
    "pipedrive": "Pipedrive", "proprietary": "Proprietary CRM", "proprietary1": "Proprietary CRM I",
    "salesforce": "Salesforce", "sugarcrm": "SugarCRM", "suitecrm": "SuiteCRM", "vtiger": "Vtiger CRM",
    "zendesk": "Zendesk", "zoho": "Zoho CRM",
}  # fmt: skip
LOG_FLAGS = [
    ("inbound_answered", "Log inbound answered calls"), ("inbound_missed", "Log inbound missed calls"),
    ("outbound", "Log outbound calls"), ("create_unknown", "Create a contact/lead for unknown numbers"),
]  # fmt: skip
LOG_LEVELS = [("debug", "Debug (requests and responses, secrets redacted)"), ("info", "Info"),
              ("warning", "Warning"), ("error", "Error")]  # fmt: skip


@router.get("/integrations", response_class=HTMLResponse)
def integration_list(request: Request, principal: PageUser, session: SessionDep, search: str = "",
                     offset: int = 0) -> Response:  # fmt: skip
    offset = clamp_offset(offset)
    total, rows = integrations.search(session, search=search, offset=offset, limit=PAGE_SIZE)
    page = Page(total, offset, PAGE_SIZE, filters(search=search))
    return render(request, "integrations/list.html", principal, rows=rows, search=search, page=page,
                  titles=KIND_TITLES)  # fmt: skip


@router.get("/integrations/new", response_class=HTMLResponse)
def integration_new(request: Request, principal: PageUser) -> Response:
    values = {"name": "", "kind": "", "enabled": True, "settings": [], "secrets": [],
              "log_options": LogOptions().model_dump()}  # fmt: skip
    return form_page(request, principal, values)


@router.post("/integrations/new", response_class=HTMLResponse)
def integration_create(request: Request, principal: FormUser, session: SessionDep, form: FormDep) -> Response:
    data, values, form_errors = read_form(form, stored_secrets=set())
    box = request.app.state.store.box
    try:
        row = integrations.create(session, box, validated(data, form_errors))
    except (ValidationError, ConfigError, Conflict) as exc:
        session.rollback()
        return form_page(request, principal, values, failure=exc)
    session.commit()
    return redirect("/integrations", f"Saved the integration {row.name!r}.")


@router.get("/integrations/{integration_id}/edit", response_class=HTMLResponse)
def integration_edit(request: Request, integration_id: int, principal: PageUser, session: SessionDep) -> Response:
    stored = integrations.to_public(integrations.get(session, integration_id), request.app.state.store.box)
    values = {
        "name": stored["name"], "kind": stored["kind"], "enabled": stored["enabled"],
        "settings": [{"key": k, "value": "" if v is None else str(v)} for k, v in stored["settings"].items()],
        "secrets": [{"key": k, "stored": True} for k in stored["secrets"]],
        "log_options": LogOptions().model_dump() | stored["log_options"],
    }  # fmt: skip
    return form_page(request, principal, values, stored=stored)


@router.post("/integrations/{integration_id}/edit", response_class=HTMLResponse)
def integration_update(request: Request, integration_id: int, principal: FormUser, session: SessionDep,
                       form: FormDep) -> Response:  # fmt: skip
    box = request.app.state.store.box
    stored = integrations.to_public(integrations.get(session, integration_id), box)
    data, values, form_errors = read_form(form, stored_secrets=set(stored["secrets"]))
    try:
        row = integrations.update(session, box, integration_id, validated(data, form_errors))
    except (ValidationError, ConfigError, Conflict) as exc:
        session.rollback()
        return form_page(request, principal, values, stored=stored, failure=exc)
    session.commit()
    return redirect("/integrations", f"Saved the integration {row.name!r}.")


@router.post("/integrations/{integration_id}/delete")
def integration_delete(integration_id: int, principal: FormUser, session: SessionDep) -> Response:
    name = integrations.get(session, integration_id).name
    try:
        integrations.delete(session, integration_id)
    except Conflict as exc:
        session.rollback()
        return redirect("/integrations", f"The integration {name!r} was not removed: {exc}.", error=True)
    session.commit()
    return redirect("/integrations", f"Removed the integration {name!r}.")


def validated(data: dict[str, Any], form_problems: list[tuple[str, str]]) -> IntegrationIn:
    """``IntegrationIn`` from ``data``; ``ConfigError`` with the form's problems and the schema's together."""
    try:
        found = IntegrationIn.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(form_problems + problems(exc)) from None
    if form_problems:
        raise ConfigError(form_problems)
    return found


def read_form(form: FormData, stored_secrets: set[str]) -> tuple[dict[str, Any], dict[str, Any], list]:
    """``IntegrationIn`` data, the values to show again, and problems of the form's own shape
    (a value without a name, a name given twice). Empty secret values keep the stored secret."""
    shape: list[tuple[str, str]] = []

    def pairs(prefix: str, untrimmed: tuple[str, ...] = ()) -> list[dict[str, str]]:
        rows = [{"key": r.get("key", ""), "value": r.get("value", "")} for r in indexed(form, prefix, untrimmed)]
        rows = [r for r in rows if r["key"] or r["value"]]
        seen: set[str] = set()
        for i, row in enumerate(rows):
            if not row["key"]:
                shape.append((f"{prefix}[{i}].key", "enter a name for this value"))
            elif row["key"] in seen:
                shape.append((f"{prefix}[{i}].key", f"{row['key']!r} is given twice"))
            seen.add(row["key"])
        return rows

    settings = pairs("settings")
    secrets = pairs("secrets", untrimmed=("value",))
    log_options: dict[str, Any] = {flag: checked(form, f"log_options-{flag}") for flag, _ in LOG_FLAGS}
    log_options["log_level"] = text(form, "log_options-log_level") or "info"
    values = {
        "name": text(form, "name"), "kind": text(form, "kind"), "enabled": checked(form, "enabled"),
        "settings": settings, "secrets": [{"key": r["key"], "stored": r["key"] in stored_secrets} for r in secrets],
        "log_options": log_options, "retype_secrets": any(r["value"] for r in secrets),
    }  # fmt: skip
    data = {
        "name": values["name"], "kind": values["kind"], "enabled": values["enabled"],
        "settings": {r["key"]: r["value"] for r in settings if r["key"]},
        "secrets": {r["key"]: r["value"] or (MASK if r["key"] in stored_secrets else "") for r in secrets if r["key"]},
        "log_options": log_options,
    }  # fmt: skip
    return data, values, shape


def form_page(request: Request, principal: Principal, values: dict[str, Any], *, stored: dict | None = None,
              failure: Exception | None = None) -> Response:  # fmt: skip
    errors: dict[str, str] = {}
    if isinstance(failure, (ValidationError, ConfigError)):
        errors = _row_paths(problems_of(failure), values)
    elif isinstance(failure, Conflict):
        errors = {"name": str(failure)}
    kinds = [(k, KIND_TITLES.get(k, k)) for k in CRM_KINDS]
    return render(request, "integrations/form.html", principal, status_code=422 if failure else 200,
                  integration_id=stored["id"] if stored else None, original_name=stored["name"] if stored else "",
                  used_by=stored["used_by"]["rules"] if stored else [], values=values, errors=errors, kinds=kinds,
                  log_flags=LOG_FLAGS, log_levels=LOG_LEVELS,
                  retype_secrets=bool(failure) and values.get("retype_secrets"))  # fmt: skip


def _row_paths(errors: dict[str, str], values: dict[str, Any]) -> dict[str, str]:
    """``settings.api_domain`` (a key of the dict) becomes the path of that key's row, ``settings[2].value``."""
    mapped: dict[str, str] = {}
    for path, message in errors.items():
        head, _, key = path.partition(".")
        if head in ("settings", "secrets") and key and "[" not in head:
            keys = [r["key"] for r in values[head]]
            if key in keys:
                path = f"{head}[{keys.index(key)}].value"
        mapped[path] = message
    return mapped
