"""Agents: who calls may go to, their extension and devices, who they are in each CRM, and whether they are free."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy import select
from starlette.datastructures import FormData

from crmroute.agentsync import sync_agents
from crmroute.connectors import registry
from crmroute.errors import ConfigError, Conflict, ConnectorError, NotFound
from crmroute.schemas import AgentIn
from crmroute.store import agents
from crmroute.store.models import Integration
from crmroute.web.deps import FormUser, PageUser, Principal, SessionDep
from crmroute.web.templating import redirect, render
from crmroute.web.ui._common import PAGE_SIZE, FormDep, Page, clamp_offset, filters, indexed, problems_of, text

router = APIRouter()


def availability_of(request: Request) -> Any:
    call_logger = getattr(request.app.state, "call_logger", None)
    return getattr(call_logger, "availability", None)


def integration_names(session: Any) -> list[tuple[str, str]]:
    """(name, kind) of every integration, by name."""
    return [(n, k) for n, k in session.execute(select(Integration.name, Integration.kind).order_by(Integration.name))]


def syncable(session: Any) -> list[tuple[str, str]]:
    """Integrations whose CRM kind can list its users (the Sync select)."""
    kinds = registry()
    return [(n, f"{n} ({k})") for n, k in integration_names(session) if k in kinds and kinds[k].supports_users()]


@router.get("/agents", response_class=HTMLResponse)
def agent_list(
    request: Request, principal: PageUser, session: SessionDep, search: str = "", offset: int = 0,
    integration: str = "", user: str = "",
) -> Response:  # fmt: skip
    offset = clamp_offset(offset)
    total, rows = agents.search(session, search=search, offset=offset, limit=PAGE_SIZE)
    availability = availability_of(request)
    items = [{"row": row, "public": agents.to_public(row, availability), "explained": agents.explain(row)}
             for row in rows]  # fmt: skip
    resolved: dict[str, Any] | None = None
    if integration and user:  # "which agent is this CRM user?"
        try:
            found = agents.resolve(session, integration[:128], user[:255])
        except NotFound as exc:  # an unknown integration
            resolved = {"ok": False, "text": str(exc)}
        else:
            resolved = ({"ok": True, "text": found[0].explain()} if found is not None
                        else {"ok": False, "text": f"No agent is {user!r} in {integration}."})  # fmt: skip
    page = Page(total, offset, PAGE_SIZE, filters(search=search))
    names = integration_names(session)
    return render(request, "agents/list.html", principal, items=items, search=search, page=page,
                  ami=availability is not None, integrations=[(n, n) for n, _ in names], syncable=syncable(session),
                  integration=integration, user=user, resolved=resolved)  # fmt: skip


@router.get("/agents/new", response_class=HTMLResponse)
def agent_new(request: Request, principal: PageUser, session: SessionDep) -> Response:
    values = {"name": "", "extension": "", "devices": "", "identities": {}}
    return form_page(request, principal, session, values)


@router.post("/agents/new", response_class=HTMLResponse)
def agent_create(request: Request, principal: FormUser, session: SessionDep, form: FormDep) -> Response:
    data, values = read_form(form)
    try:
        row = agents.create(session, AgentIn.model_validate(data))
    except (ValidationError, ConfigError, Conflict) as exc:
        session.rollback()
        return form_page(request, principal, session, values, failure=exc)
    session.commit()
    return redirect("/agents", f"Saved agent {row.name} (extension {row.extension}).")


@router.get("/agents/{agent_id}/edit", response_class=HTMLResponse)
def agent_edit(request: Request, agent_id: int, principal: PageUser, session: SessionDep) -> Response:
    row = agents.get(session, agent_id)
    values = {"name": row.name, "extension": row.extension, "devices": ", ".join(row.devices or ()),
              "identities": {n: {"user_id": i.user_id, "email": i.email}
                             for n, i in agents.identities_of(row).items()}}  # fmt: skip
    return form_page(request, principal, session, values, agent_id=agent_id)


@router.post("/agents/{agent_id}/edit", response_class=HTMLResponse)
def agent_update(request: Request, agent_id: int, principal: FormUser, session: SessionDep, form: FormDep) -> Response:
    agents.get(session, agent_id)
    data, values = read_form(form)
    try:
        row = agents.update(session, agent_id, AgentIn.model_validate(data))
    except (ValidationError, ConfigError, Conflict) as exc:
        session.rollback()
        return form_page(request, principal, session, values, agent_id=agent_id, failure=exc)
    session.commit()
    return redirect("/agents", f"Saved agent {row.name} (extension {row.extension}).")


@router.post("/agents/{agent_id}/delete")
def agent_delete(agent_id: int, principal: FormUser, session: SessionDep) -> Response:
    row = agents.get(session, agent_id)
    name = row.name
    agents.delete(session, agent_id)
    session.commit()
    return redirect("/agents", f"Removed agent {name}.")


@router.post("/agents/sync")
async def agent_sync(request: Request, principal: FormUser, form: FormDep) -> Response:
    """The Sync button: the integration's CRM users matched to agents by e-mail."""
    name = text(form, "integration")
    app = request.app
    try:
        result = await sync_agents(app.state.store.factory, app.state.store.box, app.state.router.http, name,
                                   region=app.state.router.settings.default_region)  # fmt: skip
    except (ConfigError, ConnectorError) as exc:
        return redirect("/agents", f"Not synced from {name or '(no integration)'}: {exc}", error=True)
    message = (f"Synced from {name}: {result.users} CRM users, {len(result.matched)} agents matched by e-mail, "
               f"{result.updated} updated.")  # fmt: skip
    if result.matched:
        message += " " + "; ".join(result.matched[:5]) + ("; …" if len(result.matched) > 5 else "") + "."
    if result.unmatched_agents:
        message += " No CRM user has the e-mail of: " + ", ".join(result.unmatched_agents[:5]) + "."
    return redirect("/agents", message)


def read_form(form: FormData) -> tuple[dict[str, Any], dict[str, Any]]:
    """What ``AgentIn`` takes: devices split at commas or spaces, identities from the per-integration rows."""
    devices = [part for part in text(form, "devices").replace(",", " ").split() if part]
    identities: dict[str, dict[str, str]] = {}
    shown: dict[str, dict[str, str]] = {}
    for item in indexed(form, "identity"):
        name = item.get("integration", "")
        if not name:
            continue
        entry = {"user_id": item.get("user_id", ""), "email": item.get("email", "")}
        shown[name] = entry
        if entry["user_id"] or entry["email"]:
            identities[name] = {k: v for k, v in entry.items() if v}
    values = {"name": text(form, "name"), "extension": text(form, "extension"), "devices": text(form, "devices"),
              "identities": shown}  # fmt: skip
    return {"name": values["name"], "extension": values["extension"], "devices": devices,
            "identities": identities}, values  # fmt: skip


def form_page(
    request: Request, principal: Principal, session: Any, values: dict[str, Any], *, agent_id: int | None = None,
    failure: Exception | None = None,
) -> Response:  # fmt: skip
    names = [n for n, _ in integration_names(session)]
    names += [n for n in values["identities"] if n not in names]  # one removed meanwhile: shown with its error
    errors: dict[str, str] = {}
    if isinstance(failure, (ValidationError, ConfigError)):
        for path, message in problems_of(failure).items():  # identities.NAME.field -> identity[i].field
            if path.startswith("identities."):
                rest = path.removeprefix("identities.")
                for i, name in enumerate(names):
                    if rest == name or rest.startswith(name + "."):
                        field = rest[len(name) + 1:] or ("email" if "@" in str(values["identities"].get(name)) else "user_id")
                        path = f"identity[{i}].{field}"
                        break
            errors[path] = f"{errors[path]}; {message}" if path in errors else message
    elif isinstance(failure, Conflict):
        errors = {"extension" if "extension" in str(failure) else "name": str(failure)}
    return render(request, "agents/form.html", principal, status_code=422 if failure else 200, agent_id=agent_id,
                  values=values, errors=errors, integrations=names)  # fmt: skip
