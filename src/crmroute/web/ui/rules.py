"""Routing rules: the list (search, edit, delete) and the Add/Edit Rule form of the seed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from crmroute.errors import ConfigError, Conflict
from crmroute.routing.compare import Operator
from crmroute.schemas import DestinationIn, RuleIn
from crmroute.sounds import list_sounds
from crmroute.store import destinations, integrations, rules
from crmroute.store.secrets import MASK
from crmroute.web.deps import FormUser, PageUser, SessionDep
from crmroute.web.templating import redirect, render
from crmroute.web.ui import conditions as condition_text
from crmroute.web.ui._common import PAGE_SIZE, FormDep, Page, clamp_offset, filters, indexed, problems_of, secret, text

router = APIRouter()

OPERATOR_LABELS = {
    Operator.EQ: "= (equals)", Operator.NE: "!= (not equal)", Operator.LT: "< (less than)",
    Operator.GT: "> (greater than)", Operator.LE: "<= (at most)", Operator.GE: ">= (at least)",
    Operator.CONTAINS: "contains", Operator.STARTS_WITH: "starts with", Operator.REGEX: "regex",
    Operator.EMPTY: "is empty", Operator.NOT_EMPTY: "is not empty",
}  # fmt: skip
ROW_DESTINATIONS = [("queue", "Queue"), ("ivr", "IVR"), ("recording", "Play recording"),
                    ("owner", "Record owner (agent)"), ("last_agent", "Last agent")]  # fmt: skip
DEFAULT_AGENT = [("", "No: the default destination"), ("owner", "The record owner's agent"),
                 ("last_agent", "The caller's last agent")]  # fmt: skip
KEEP_COMPANY = [("none", "Nothing (silence)"), ("ringing", "Ringing"), ("moh", "Music on hold")]


@router.get("/rules", response_class=HTMLResponse)
def rule_list(request: Request, principal: PageUser, session: SessionDep, search: str = "", offset: int = 0) -> Response:
    offset = clamp_offset(offset)
    total, found = rules.search(session, search=search, offset=offset, limit=PAGE_SIZE)
    page = Page(total, offset, PAGE_SIZE, filters(search=search))
    return render(request, "rules/list.html", principal, rules=found, search=search, page=page)


@router.post("/rules/{rule_id}/delete")
def rule_delete(rule_id: int, principal: FormUser, session: SessionDep) -> Response:
    rule = rules.get(session, rule_id)
    name = rule.name
    try:
        rules.delete(session, rule_id)
    except Conflict as exc:
        session.rollback()
        return redirect("/rules", f"The rule {name!r} was not removed: {exc}.", error=True)
    session.commit()
    return redirect("/rules", f"Removed the rule {name!r}.")


@router.get("/rules/new", response_class=HTMLResponse)
def rule_new(request: Request, principal: PageUser, session: SessionDep) -> Response:
    values = blank_values()
    return form_page(request, principal, session, values=values)


@router.post("/rules/new", response_class=HTMLResponse)
def rule_create(request: Request, principal: FormUser, session: SessionDep, form: FormDep) -> Response:
    data, values = read_form(form, stored=None)
    box = request.app.state.store.box
    try:
        refuse_unreadable(values)
        added = add_typed_destinations(session, data["rows"])
        rule = rules.create(session, box, RuleIn.model_validate(data), license_key=request.app.state.settings.license_key)
    except (ValidationError, ConfigError, Conflict) as exc:
        session.rollback()
        return form_page(request, principal, session, values=values, failure=exc, status_code=422)
    session.commit()
    return redirect("/rules", saved_message(rule.name, added))


@router.get("/rules/{rule_id}/edit", response_class=HTMLResponse)
def rule_edit(request: Request, rule_id: int, principal: PageUser, session: SessionDep) -> Response:
    stored = rules.to_public(rules.get(session, rule_id), request.app.state.store.box)
    return form_page(request, principal, session, values=values_of(stored), stored=stored)


@router.post("/rules/{rule_id}/edit", response_class=HTMLResponse)
def rule_update(request: Request, rule_id: int, principal: FormUser, session: SessionDep, form: FormDep) -> Response:
    box = request.app.state.store.box
    stored = rules.to_public(rules.get(session, rule_id), box)
    data, values = read_form(form, stored=stored)
    try:
        refuse_unreadable(values)
        added = add_typed_destinations(session, data["rows"])
        rule = rules.update(session, box, rule_id, RuleIn.model_validate(data))
    except (ValidationError, ConfigError, Conflict) as exc:
        session.rollback()
        return form_page(request, principal, session, values=values, stored=stored, failure=exc, status_code=422)
    session.commit()
    return redirect("/rules", saved_message(rule.name, added))


def add_typed_destinations(session: Session, rows: list[dict[str, str]]) -> list[str]:
    """Add the destinations rows name that are not stored yet (a typed queue or IVR number, a recording name).

    In the rule's transaction: a rule that is refused adds nothing. An option that is not a valid
    destination is left for the rule's own check to name.
    """
    known = {(d.type, d.ref) for d in destinations.list_all(session)}
    labels = dict(ROW_DESTINATIONS)
    added = []
    for row in rows:
        kind, option = row.get("destination", ""), row.get("option", "")
        if kind not in labels or not option or (kind, option) in known:
            continue
        try:
            data = DestinationIn.model_validate({"type": kind, "name" if kind == "recording" else "number": option})
        except ValidationError:
            continue
        destinations.create(session, data)
        known.add((kind, option))
        added.append(f"{labels[kind].removeprefix('Play ').lower() if kind == 'recording' else labels[kind]} {option}")
    return added


def saved_message(name: str, added: list[str]) -> str:
    if not added:
        return f"Saved the rule {name!r}."
    return f"Saved the rule {name!r}. Added to Destinations: {', '.join(added)}."


# --- the form -------------------------------------------------------------------------


def blank_values() -> dict[str, Any]:
    return {
        "name": "", "crm_field": "", "location": "did", "greeting": "", "dtmf_timeout_ms": 5000,
        "dtmf_max_digits": 10, "crm_source": "integration", "integration": "", "crm_module": "",
        "crm_username": "", "custom_url": "", "custom_post": False, "custom_headers": [],
        "default_destination": "", "default_voicemail": "not_set", "deadline_ms": "", "cache_ttl_s": "",
        "keep_company": "none", "moh_class": "default", "rows": [], "default_agent": "",
        "check_availability": True, "last_agent_days": 30, "last_agent_outbound": False, "last_agent_min_talk_s": 5,
    }  # fmt: skip


def values_of(stored: dict[str, Any]) -> dict[str, Any]:
    """What the form shows for a stored rule: never a secret, only whether one is stored."""
    values = blank_values() | {k: v for k, v in stored.items() if k in blank_values() and v is not None}
    values["custom_headers"] = [{"name": h["name"], "stored": True} for h in stored.get("custom_headers", [])]
    values["rows"] = [dict(row) | {"conditions": condition_text.format(row.get("conditions") or [])}
                      for row in stored.get("rows", [])]  # fmt: skip
    values["deadline_ms"] = stored.get("deadline_ms") or ""
    values["cache_ttl_s"] = "" if stored.get("cache_ttl_s") is None else stored["cache_ttl_s"]  # 0 is a value
    return values


def read_form(form: FormData, stored: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The rule as ``RuleIn`` takes it, and the values to show again if it is refused.

    Fields that do not apply (a greeting on a DID rule, Custom CRM fields on an
    integration rule ...) are left out, whatever hidden inputs held. Empty
    secret fields keep the stored secret (sent as the mask).
    """
    stored_headers = {h["name"].lower() for h in (stored or {}).get("custom_headers", [])}
    has_password = bool(stored and stored.get("crm_password") == MASK)
    values: dict[str, Any] = {
        name: text(form, name)
        for name in ("name", "crm_field", "location", "greeting", "dtmf_timeout_ms", "dtmf_max_digits",
                     "crm_source", "integration", "crm_module", "crm_username", "custom_url",
                     "default_destination", "default_voicemail", "deadline_ms", "cache_ttl_s", "keep_company",
                     "moh_class", "default_agent", "last_agent_days", "last_agent_min_talk_s")
    }  # fmt: skip
    values["check_availability"] = text(form, "check_availability") == "on"
    values["last_agent_outbound"] = text(form, "last_agent_outbound") == "on"
    values["default_voicemail"] = values["default_voicemail"] or "not_set"  # no radio chosen
    values["custom_post"] = text(form, "custom_post") == "yes"
    headers = [h for h in indexed(form, "custom_headers", untrimmed=("value",)) if h.get("name") or h.get("value")]
    values["custom_headers"] = [{"name": h.get("name", ""), "stored": h.get("name", "").lower() in stored_headers}
                                for h in headers]  # fmt: skip
    values["rows"] = [
        {k: row.get(k, "") for k in ("operator", "value", "destination", "option", "conditions")}
        for row in indexed(form, "rows")
    ]
    values["unreadable"] = []
    rows = []  # as RuleIn takes them; values["rows"] keep the conditions as typed, to show again
    for i, row in enumerate(values["rows"]):
        written, unreadable = condition_text.parse(row["conditions"])
        values["unreadable"] += [(f"rows[{i}].conditions", message) for message in unreadable]
        rows.append({k: v for k, v in row.items() if k != "conditions"} | ({"conditions": written} if written else {}))
    typed_password = secret(form, "crm_password")
    values["retype_secrets"] = bool(typed_password) or any(h.get("value") for h in headers)

    data: dict[str, Any] = {
        k: values[k] for k in ("name", "crm_field", "location", "crm_source", "default_destination", "default_voicemail")
    }
    if values["location"] == "ivr":
        data["greeting"] = values["greeting"]
        for name in ("dtmf_timeout_ms", "dtmf_max_digits"):
            if values[name]:
                data[name] = values[name]
    if values["deadline_ms"]:
        data["deadline_ms"] = values["deadline_ms"]
    if values["cache_ttl_s"] != "":
        data["cache_ttl_s"] = values["cache_ttl_s"]
    values["keep_company"] = values["keep_company"] or "none"
    data["keep_company"] = values["keep_company"]
    if values["keep_company"] == "moh":
        data["moh_class"] = values["moh_class"] or "default"
    if values["crm_source"] == "custom":
        data["custom_url"] = values["custom_url"]
        data["custom_post"] = values["custom_post"]
        data["custom_headers"] = [
            {"name": h.get("name", ""),
             "value": h.get("value") or (MASK if h.get("name", "").lower() in stored_headers else "")}
            for h in headers
        ]  # fmt: skip
    elif values["crm_source"] == "integration":
        data["integration"] = values["integration"] or None
        data["crm_module"] = values["crm_module"]
        data["crm_username"] = values["crm_username"]
        if typed_password:
            data["crm_password"] = typed_password
        elif has_password and not text(form, "clear_password"):
            data["crm_password"] = MASK
    data["default_agent"] = values["default_agent"]
    data["check_availability"] = values["check_availability"]
    data["last_agent_outbound"] = values["last_agent_outbound"]
    for name in ("last_agent_days", "last_agent_min_talk_s"):
        if values[name] != "":
            data[name] = values[name]
    data["rows"] = rows
    return data, values


def refuse_unreadable(values: dict[str, Any]) -> None:
    """Condition lines the form could not read are refused like any invalid field."""
    if values.get("unreadable"):
        raise ConfigError(values["unreadable"])


def form_page(
    request: Request,
    principal: Any,
    session: Session,
    *,
    values: dict[str, Any],
    stored: dict[str, Any] | None = None,
    failure: Exception | None = None,
    status_code: int = 200,
) -> Response:
    errors: dict[str, str] = {}
    if isinstance(failure, (ValidationError, ConfigError)):
        errors = problems_of(failure)
    elif isinstance(failure, Conflict):
        errors = {"name": str(failure)}
    for path, message in list(errors.items()):  # a condition's own field: shown at the row's conditions box
        head, found, rest = path.partition(".conditions[")
        if found:
            line = rest.split("]", 1)[0]
            where = f"{head}.conditions"
            told = f"condition {int(line) + 1}: {message}" if line.isdigit() else message
            errors[where] = f"{errors[where]}; {told}" if where in errors else told
    dests = destinations.list_all(session)
    extensions = [(d.ref, f"{d.ref} – {d.name}" if d.name else d.ref) for d in dests if d.type == "extension"]
    dest_options = {
        kind: [(d.ref, f"{d.ref} – {d.name}" if d.name and d.type != "recording" else d.ref) for d in dests if d.type == kind]
        for kind, _ in ROW_DESTINATIONS
    }  # fmt: skip
    names = [row.name for row in integrations.list_all(session)]
    return render(
        request, "rules/form.html", principal, status_code=status_code,
        rule_id=stored["id"] if stored else None, original_name=stored["name"] if stored else "",
        used_by=stored.get("used_by") if stored else None,
        values=values, errors=errors, retype_secrets=bool(failure) and values.get("retype_secrets"),
        has_password=bool(stored and stored.get("crm_password") == MASK),
        integrations=[(n, n) for n in names], extensions=extensions, dest_options=dest_options,
        operators=[(op.value, OPERATOR_LABELS[op]) for op in Operator], row_destinations=ROW_DESTINATIONS,
        default_deadline_ms=request.app.state.settings.deadline_ms,
        default_cache_ttl_s=request.app.state.settings.cache_ttl_s, keep_company_choices=KEEP_COMPANY,
        sounds=list_sounds(request.app.state.settings.sounds_dir), sounds_dir=request.app.state.settings.sounds_dir,
        default_agent_choices=DEFAULT_AGENT,
    )  # fmt: skip
