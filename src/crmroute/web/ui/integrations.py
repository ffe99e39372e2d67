"""CRM integrations: list, add, edit, delete, and the Test action.

The connection part of the form is drawn from the chosen kind's connector
settings (``Connector.Settings``), laid out per CRM by ``_crm_forms``: one
fieldset per kind, shown when that kind is chosen; in it the sign-in method
first and only its fields. Secrets are write-only: an empty secret field keeps
the stored value. Changing the kind of an integration rules use needs a
confirmation (``confirm_kind``) naming those rules.
"""

from __future__ import annotations

from typing import Any

import anyio.from_thread
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from starlette.datastructures import FormData

from crmroute.connectors import registry
from crmroute.connectors.base import MODULE_NAMES, SettingSpec, setting_specs
from crmroute.connectors.pool import ConnectorSpec
from crmroute.errors import ConfigError, Conflict, ConnectorError
from crmroute.schemas import CALL_FIELDS, IntegrationIn, LogOptions
from crmroute.store import credentials
from crmroute.store import calllog, integrations
from crmroute.store.secrets import MASK
from crmroute.web.deps import FormUser, PageUser, Principal, SessionDep
from crmroute.web.templating import redirect, render
from crmroute.web.ui import _crm_forms
from crmroute.web.ui._common import PAGE_SIZE, FormDep, Page, checked, clamp_offset, filters, problems_of, secret, text

router = APIRouter()

LOG_FLAGS = [
    ("inbound_answered", "Log inbound answered calls"), ("inbound_missed", "Log inbound missed calls"),
    ("outbound", "Log outbound calls"), ("create_unknown", "Create a contact/lead for unknown numbers"),
]  # fmt: skip
LINK_CHOICES = [("routed", "The record found while routing, else a lookup by number"),
                ("lookup", "Always a fresh lookup by number")]
LOG_LEVELS = [("debug", "Debug (requests and responses, secrets redacted)"), ("info", "Info"),
              ("warning", "Warning"), ("error", "Error")]  # fmt: skip


def recent_deliveries(request: Request, integration_id: int) -> list[dict[str, Any]]:
    """The integration's latest call log deliveries, for its edit page."""
    with request.app.state.store.factory() as session:
        return calllog.recent(session, integration_id)


def kind_titles() -> dict[str, str]:
    return {kind: cls.title for kind, cls in registry().items()}


def kind_specs() -> dict[str, list[SettingSpec]]:
    return {kind: setting_specs(cls.Settings) for kind, cls in registry().items()}


def stored_fields(stored: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The form's values for a stored integration, with its sign-in method recognised."""
    kind = stored["kind"]
    shown = {k: "" if v is None else v for k, v in stored["settings"].items()}
    crm = _crm_forms.form_of(kind)
    if crm is not None:
        defaults = {s.name: s.default for s in kind_specs().get(kind, [])}
        shown["auth_method"] = crm.chosen(defaults | stored["settings"], set(stored["secrets"]))
    return {kind: shown}


@router.get("/integrations", response_class=HTMLResponse)
def integration_list(request: Request, principal: PageUser, session: SessionDep, search: str = "",
                     offset: int = 0) -> Response:  # fmt: skip
    offset = clamp_offset(offset)
    total, rows = integrations.search(session, search=search, offset=offset, limit=PAGE_SIZE)
    page = Page(total, offset, PAGE_SIZE, filters(search=search))
    guards = request.app.state.router.guards  # serving calls in this process: each integration's circuit
    circuits = {row.id: guards.circuit(f"integration:{row.id}") for row in rows}
    refused = refused_credentials(request, session)
    return render(request, "integrations/list.html", principal, rows=rows, search=search, page=page,
                  titles=kind_titles(), circuits=circuits, refused=refused,
                  refused_by_id={r["integration_id"]: r for r in refused})  # fmt: skip


def refused_credentials(request: Request, session: Any) -> list[dict[str, Any]]:
    """Integrations whose credentials the CRM refused (every process's calls fall back until fixed)."""
    return credentials.refused(session, request.app.state.store.box)


@router.get("/integrations/new", response_class=HTMLResponse)
def integration_new(request: Request, principal: PageUser) -> Response:
    values = {"name": "", "kind": "", "enabled": True, "fields": {}, "log_options": LogOptions().model_dump()}
    return form_page(request, principal, values)


@router.post("/integrations/new", response_class=HTMLResponse)
def integration_create(request: Request, principal: FormUser, session: SessionDep, form: FormDep) -> Response:
    data, values = read_form(form, stored=None)
    box = request.app.state.store.box
    try:
        row = integrations.create(session, box, IntegrationIn.model_validate(data))
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
        "fields": stored_fields(stored), "log_options": LogOptions().model_dump() | stored["log_options"],
    }  # fmt: skip
    return form_page(request, principal, values, stored=stored)


@router.post("/integrations/{integration_id}/edit", response_class=HTMLResponse)
def integration_update(request: Request, integration_id: int, principal: FormUser, session: SessionDep,
                       form: FormDep) -> Response:  # fmt: skip
    box = request.app.state.store.box
    stored = integrations.to_public(integrations.get(session, integration_id), box)
    data, values = read_form(form, stored=stored)
    if data["kind"] != stored["kind"] and stored["used_by"]["rules"] and text(form, "confirm_kind") != data["kind"]:
        return form_page(request, principal, values, stored=stored, confirm_kind=data["kind"])
    try:
        row = integrations.update(session, box, integration_id, IntegrationIn.model_validate(data))
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


@router.post("/integrations/{integration_id}/test", response_class=HTMLResponse)
def integration_test(request: Request, integration_id: int, principal: FormUser, session: SessionDep,
                     form: FormDep) -> Response:  # fmt: skip
    """The Test action: log in, optionally look a number up and read fields; shown on the edit page."""
    row = integrations.get(session, integration_id)
    box = request.app.state.store.box
    stored = integrations.to_public(row, box)
    asked = {"key": text(form, "test-key"), "module": text(form, "test-module") or "contacts",
             "fields": text(form, "test-fields")}  # fmt: skip
    spec = ConnectorSpec(row.id, row.name, row.kind, True, dict(row.settings), row.secrets_enc)
    app_router = request.app.state.router

    async def run() -> dict:
        try:  # a fresh connector on the shared credential store; credentials refused before are tried once more
            connector = app_router.pool.build(spec, for_test=True)
        except ConnectorError as exc:
            return {"ok": False, "steps": [], "record": None, "error": {"code": exc.reason, "message": str(exc)}}
        try:
            fields = [f.strip() for f in asked["fields"].split(",") if f.strip()]
            module = asked["module"] if asked["module"] in MODULE_NAMES else "contacts"
            return (await connector.test(asked["key"] or None, module=module, fields=fields)).as_dict()
        finally:
            await connector.aclose()

    report = anyio.from_thread.run(run)
    values = {
        "name": stored["name"], "kind": stored["kind"], "enabled": stored["enabled"],
        "fields": stored_fields(stored), "log_options": LogOptions().model_dump() | stored["log_options"],
    }  # fmt: skip
    return form_page(request, principal, values, stored=stored, report=report, asked=asked)


def read_form(form: FormData, stored: dict | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``IntegrationIn`` data and the values to show again.

    Only the chosen kind's fields are read, and of its credentials only those of
    the chosen sign-in method. An empty secret keeps the stored one (sent as
    the mask); ticking "remove" drops it.
    """
    kind = text(form, "kind")
    stored_secrets = set(stored["secrets"]) if stored and stored["kind"] == kind else set()
    method = text(form, f"{kind}-auth_method")
    specs, fixed = _crm_forms.read_fields(kind, kind_specs().get(kind, []), method)
    settings: dict[str, Any] = dict(fixed)
    secrets: dict[str, str] = {}
    shown: dict[str, Any] = {"auth_method": method} if method else {}
    for spec in specs:
        name = f"{kind}.{spec.name}"
        if spec.secret:
            value = secret(form, name.replace(".", "-"))
            if value:
                secrets[spec.name] = value
            elif spec.name in stored_secrets and not checked(form, f"{kind}-{spec.name}-clear"):
                secrets[spec.name] = MASK
        elif spec.type == "boolean":
            settings[spec.name] = shown[spec.name] = checked(form, name.replace(".", "-"))
        elif spec.type == "table":
            rows = read_table(form, name.replace(".", "-"))
            shown[spec.name] = rows
            if rows:
                settings[spec.name] = rows
        else:
            value = text(form, name.replace(".", "-"))
            shown[spec.name] = value
            if value != "":
                settings[spec.name] = value
    log_options: dict[str, Any] = {flag: checked(form, f"log_options-{flag}") for flag, _ in LOG_FLAGS}
    log_options["log_level"] = text(form, "log_options-log_level") or "info"
    log_options["link_record"] = text(form, "log_options-link_record") or "routed"
    for name in ("subject_template", "description_template"):
        log_options[name] = text(form, f"log_options-{name}") or LogOptions.model_fields[name].default
    values = {"name": text(form, "name"), "kind": kind, "enabled": checked(form, "enabled"),
              "fields": {kind: shown}, "log_options": log_options}  # fmt: skip
    data = {"name": values["name"], "kind": kind, "enabled": values["enabled"], "settings": settings,
            "secrets": secrets, "log_options": log_options}  # fmt: skip
    return data, values


def read_table(form: FormData, prefix: str) -> list[dict[str, str]]:
    """A table setting's grid (``prefix-col-J`` headers, ``prefix-I-J`` cells): the rows with a value, not removed."""
    try:
        row_count, column_count = (min(int(n), 10_000) for n in text(form, f"{prefix}-size").split(","))
    except ValueError:
        return []
    names = [text(form, f"{prefix}-col-{j}") for j in range(column_count)]
    rows = []
    for i in range(row_count):
        if checked(form, f"{prefix}-{i}-remove"):
            continue
        row = {name: value for j, name in enumerate(names) if name and (value := text(form, f"{prefix}-{i}-{j}"))}
        if row:
            rows.append(row)
    return rows


def form_page(request: Request, principal: Principal, values: dict[str, Any], *, stored: dict | None = None,
              failure: Exception | None = None, report: dict | None = None, asked: dict | None = None,
              confirm_kind: str = "") -> Response:  # fmt: skip
    errors: dict[str, str] = {}
    if isinstance(failure, (ValidationError, ConfigError)):
        kind = values.get("kind", "")
        crm = _crm_forms.form_of(kind)
        for path, message in problems_of(failure).items():  # settings.X / secrets.X: the kind's field X
            head, _, rest = path.partition(".")
            method = crm.method(values["fields"][kind].get("auth_method", "")) if crm else None
            if crm and method and rest and rest in (crm.auth_field, *method.sets):
                rest = "auth_method"  # the method's own setting has no input: its chooser has
            errors[f"{kind}.{rest}" if head in ("settings", "secrets") and rest else path] = message
    elif isinstance(failure, Conflict):
        errors = {"name": str(failure)}
    stored_secrets = set(stored["secrets"]) if stored else set()
    deliveries = recent_deliveries(request, stored["id"]) if stored else []
    refused: list[dict[str, Any]] = []
    if stored:
        with request.app.state.store.factory() as session:
            refused = [r for r in refused_credentials(request, session) if r["integration_id"] == stored["id"]]
    specs = kind_specs()
    layouts = {kind: _crm_forms.layout(kind, kind_specs) for kind, kind_specs in specs.items()}
    labels = {kind: {s.name: _crm_forms.label(_crm_forms.form_of(kind), s) for s in kind_specs}
              for kind, kind_specs in specs.items()}  # fmt: skip
    advanced_errors = {kind: [p.partition(".")[2] for p in errors if p.startswith(f"{kind}.")] for kind in specs}
    titles = kind_titles()
    return render(request, "integrations/form.html", principal, deliveries=deliveries,
                  status_code=422 if failure else 200, layouts=layouts, labels=labels,
                  advanced_errors=advanced_errors, confirm_kind=confirm_kind,
                  confirm_titles=(titles.get(stored["kind"], stored["kind"]) if stored else "",
                                  titles.get(confirm_kind, confirm_kind)),
                  integration_id=stored["id"] if stored else None, original_name=stored["name"] if stored else "",
                  stored_kind=stored["kind"] if stored else "", stored_secrets=stored_secrets,
                  used_by=stored["used_by"]["rules"] if stored else [], values=values, errors=errors,
                  kinds=list(titles.items()), specs=specs,
                  log_flags=LOG_FLAGS, log_levels=LOG_LEVELS, link_choices=LINK_CHOICES,
                  call_fields=CALL_FIELDS,
                  modules=[(m, m.capitalize()) for m in MODULE_NAMES], report=report,
                  asked=asked or {"key": "", "module": "contacts", "fields": ""},
                  retype_secrets=bool(failure or confirm_kind), refused=refused)  # fmt: skip
