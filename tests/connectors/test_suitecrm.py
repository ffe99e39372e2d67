"""SuiteCRM against a strict loopback fake of its V8 JSON:API and its v4.1 REST API.

The fake serves, for SuiteCRM 7 at ``/`` and SuiteCRM 8 under ``/legacy`` (reference
section 8, checked against ``Api/V8`` in salesagility/SuiteCRM):
``POST /Api/access_token`` (league/oauth2-server: client_credentials, password and
refresh_token grants; refresh tokens rotate; errors ``{"error", "error_description",
"message", "hint"}``), ``GET /Api/V8/module/{Module}`` (``filter[operator]``,
``filter[field][op]`` with ``eq``/``neq``/``gt``/``gte``/``lt``/``lte``/``like`` (SQL LIKE, ``%``
and ``_``, case-insensitive; refused as "Filter operator like is invalid" when
``fake.state["version"]`` is before 7.11.19), one value per field and operator, ANDed with
``deleted = 0``; ``fields[Module]``, ``page``, ``sort``),
``GET /Api/V8/module/{Module}/{id}``, ``GET .../{id}/relationships/{link}``,
``POST /Api/V8/module`` (client ids allowed, a duplicate id refused),
``POST .../{id}/relationships``, and ``POST /service/v4_1/rest.php`` (``login`` with an MD5
password, ``get_entry_list`` with a small SQL ``WHERE`` evaluator: ``=``, ``LIKE``,
``REPLACE()``, ``AND``/``OR``/parentheses, ``table.column`` and ``table_cstm.column``;
``set_entry``; ``set_relationship``). It is strict like the real parameter resolver:
unknown query options, fields, filter fields and operators, array filter values and
attributes are refused with SuiteCRM's messages (HTTP 400 ``{"errors": {...}}``).
How v4.1 answers a broken SQL query is unconfirmed (here: HTTP 500, "Database failure").
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs

import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from crmroute.connectors._phone import digits_of, phone_forms
from crmroute.connectors.base import CrmUser, Record
from crmroute.connectors.suitecrm import CALL_IDS, SuiteCrmSettings, like_pattern, stored_forms
from crmroute.errors import AuthError, UnexpectedResponse
from crmroute.routing.engine import LookupKey
from crmroute.schemas import LogOptions
from tests.connectors.contract import CALLER, DECOY_PHONE, STORED_FORMATS, ConnectorContract
from tests.connectors.fakecrm import FakeRecord, VendorFake, vendor_fixtures

CLIENT_ID = "a4f0026f-7587-c416-4ae8-5d3796013a4e"
CLIENT_SECRET = "suite-client-s3cret"
USERNAME, PASSWORD = "api.user", "suite-pa55word"
RULE_USER, RULE_PASSWORD = "agent.smith", "rule-pa55"
USERS = {USERNAME: PASSWORD, RULE_USER: RULE_PASSWORD}

MODULES = {"contacts": "Contacts", "leads": "Leads", "accounts": "Accounts"}
OBJECT = {"Contacts": "Contact", "Leads": "Lead", "Accounts": "Account", "Calls": "Call", "Users": "User"}
TABLE = {"Contacts": "contacts", "Leads": "leads", "Accounts": "accounts", "Calls": "calls", "Users": "users"}
PERSON = {"id", "first_name", "last_name", "name", "title", "email1", "phone_work", "phone_mobile", "phone_home",
          "phone_other", "phone_fax", "account_name", "account_id", "date_entered", "date_modified", "deleted",
          "assigned_user_id", "description", "lead_source"}  # fmt: skip
CUSTOM = {"tier_c", "account_number_c", "mobile2_c"}
SCHEMA = {
    "Contacts": PERSON | CUSTOM,
    "Leads": PERSON | CUSTOM | {"status", "account_description"},
    "Accounts": {"id", "name", "phone_office", "phone_alternate", "phone_fax", "industry", "account_type",
                 "date_entered", "date_modified", "deleted", "assigned_user_id", "description"} | CUSTOM,
    "Calls": {"id", "name", "date_start", "date_end", "duration_hours", "duration_minutes", "status", "direction",
              "parent_type", "parent_id", "description", "assigned_user_id", "date_entered", "date_modified",
              "deleted", "contact_id"},
    "Users": {"id", "user_name", "first_name", "last_name", "full_name", "email1", "status", "is_group", "deleted",
              "date_entered", "date_modified"},
}  # fmt: skip
PRIMARY_PHONE = {"Contacts": "phone_work", "Leads": "phone_work", "Accounts": "phone_office"}
OPERATORS = {"eq", "neq", "gt", "gte", "lt", "lte", "like"}
LIKE_SINCE = (7, 11, 19)  # SuiteCRM PR #9093 ("Add additional api filter option like"), the 7.11.19 release notes
GET_OPTIONS = {"fields", "page", "sort", "filter"}


def errors(detail: str, status: int = 400, title: str | None = None) -> JSONResponse:
    return JSONResponse({"errors": {"status": status, "title": title, "detail": detail}}, status_code=status)


def oauth_error(status: int, error: str, message: str, hint: str = "") -> JSONResponse:
    return JSONResponse({"error": error, "error_description": message, "hint": hint, "message": message}, status)


def iso(moment: str) -> str:
    return datetime.fromisoformat(moment.replace("Z", "+00:00")).astimezone(timezone.utc).isoformat()


def like(pattern: str, value: str) -> bool:
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.S | re.I) is not None


def brackets(key: str) -> list[str] | None:
    """``filter[phone_work][eq]`` as ``["filter", "phone_work", "eq"]`` (PHP's query-string arrays)."""
    found = re.fullmatch(r"([A-Za-z_]+)((?:\[[^\[\]]*\])*)", key)
    if not found:
        return None
    return [found[1], *re.findall(r"\[([^\[\]]*)\]", found[2])]


def related_id(record_id: str, link: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{record_id}/{link}"))


def make_app(fake: VendorFake) -> Starlette:
    fake.auth_paths = ("/Api/access_token", "/legacy/Api/access_token")

    # --- the data ----------------------------------------------------------------------------

    def module_of(record: FakeRecord) -> str:
        return MODULES[record.module]

    def attributes(record: FakeRecord) -> dict[str, Any]:
        module = module_of(record)
        first, _, last = record.name.partition(" ")
        base: dict[str, Any] = {name: "" for name in SCHEMA[module] if name != "id"}
        base |= {"id": record.id, "date_modified": iso(record.modified), "deleted": "0", PRIMARY_PHONE[module]: record.phone}
        if module == "Accounts":
            base["name"] = record.name
        else:
            base |= {"first_name": first, "last_name": last or first, "name": record.name}
        for key, value in record.fields.items():
            if not isinstance(value, dict):
                base[key] = value
        return base

    def links(record: FakeRecord) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in record.fields.items() if isinstance(v, dict)}

    def rows(module: str) -> list[tuple[str, dict[str, Any]]]:
        if module == "Users":  # fake.state["users"]: id, user_name, first_name, last_name, email1, status
            return [(u["id"], {"deleted": "0"} | u) for u in fake.state.get("users", [])]
        if module == "Calls":
            return [(a["id"], a) for a in fake.activities]
        return [(r.id, attributes(r)) for r in fake.records if module_of(r) == module]

    def find(module: str, record_id: str) -> FakeRecord | dict | None:
        if module == "Calls":
            return next((a for a in fake.activities if a["id"] == record_id), None)
        for record in fake.records:
            if module_of(record) == module and record.id == record_id:
                return record
        for record in fake.records:  # related records (a contact's account) live in their parent's fields
            for link, values in links(record).items():
                if related_id(record.id, link) == record_id:
                    return values
        return None

    # --- OAuth ------------------------------------------------------------------------------------

    async def access_token(request: Request) -> Response:
        if request.method != "POST":
            return JSONResponse({"message": "Method not allowed. Must be one of: POST"}, 405)
        kind = request.headers.get("content-type", "")
        if kind.startswith("application/x-www-form-urlencoded"):
            form = dict(await request.form())
        elif "json" in kind:
            form = json.loads(await request.body())
        else:
            form = {}
        fake.state.setdefault("grants", []).append(form)
        grant = form.get("grant_type")
        if grant not in ("client_credentials", "password", "refresh_token"):
            return oauth_error(400, "unsupported_grant_type", "The authorization grant type is not supported by the authorization server.", "Check that all required parameters have been provided")  # fmt: skip
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET or (
                fake.reject_credentials and grant == "client_credentials"):  # fmt: skip
            return oauth_error(401, "invalid_client", "Client authentication failed")
        refresh = None
        if grant == "password":
            if USERS.get(str(form.get("username"))) != form.get("password") or fake.reject_credentials:
                return oauth_error(400, "invalid_grant", "The user credentials were incorrect.")
            refresh = True
        elif grant == "refresh_token":
            if form.get("refresh_token") not in fake.state.setdefault("refresh", set()) or fake.reject_credentials:
                return oauth_error(401, "invalid_request", "The refresh token is invalid.", "Token has been revoked")
            fake.state.setdefault("refresh", set()).discard(form.get("refresh_token"))  # rotated: single use
            refresh = True
        body = {"token_type": "Bearer", "expires_in": fake.state.get("expires_in", 3600),
                "access_token": fake.issue_token("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9")}  # fmt: skip
        if refresh:
            body["refresh_token"] = f"def50200{uuid.uuid4().hex}"
            fake.state.setdefault("refresh", set()).add(body["refresh_token"])
        return JSONResponse(body)

    def denied(request: Request) -> Response | None:
        if not fake.authorized(request):
            return JSONResponse({"error": "access_denied", "message": "The resource owner or authorization server "
                                 "denied the request.", "hint": "Access token could not be verified"}, 401)  # fmt: skip
        return None

    # --- V8 -------------------------------------------------------------------------------------------

    def parse_options(request: Request, allowed: set[str]) -> tuple[dict[str, Any], Response | None]:
        options: dict[str, Any] = {}
        for key, value in request.query_params.multi_items():
            parts = brackets(key)
            if parts is None or parts[0] not in allowed:
                name = parts[0] if parts else key
                return {}, errors(f'The option "{name}" does not exist. Defined options are: "{", ".join(sorted(allowed))}".')  # fmt: skip
            target = options
            for part in parts[:-1]:
                target = target.setdefault(part, {})
                if not isinstance(target, dict):
                    return {}, errors("Database failure. Please refer to suitecrm.log for details.")
            if parts[-1] == "":  # foo[] = array syntax: PHP would quote an array
                target.setdefault("__array__", []).append(value)
                continue
            target[parts[-1]] = value
        return options, None

    def check_fields(module: str, options: dict[str, Any]) -> tuple[list[str] | None, Response | None]:
        fields = options.get("fields")
        if fields is None:
            return None, None
        if not isinstance(fields, dict) or len(fields) != 1:
            return None, errors("The option \"fields\" with value array is invalid.")
        (name, value), = fields.items()
        if name not in (module, OBJECT[module]):
            return None, errors("The option \"fields\" with value array is invalid.")
        wanted = value.split(",")
        bad = [f for f in wanted if f not in SCHEMA[module]]
        if bad:
            return None, errors(f"The following field{'s' if len(bad) > 1 else ''} in {OBJECT[module]} module "
                                f"{'are' if len(bad) > 1 else 'is'} not found: {', '.join(bad)}")  # fmt: skip
        return wanted, None

    def render(module: str, record_id: str, values: dict[str, Any], wanted: list[str] | None) -> dict[str, Any]:
        shown = {k: v for k, v in values.items() if k != "id" and (wanted is None or k in wanted)}
        return {"type": OBJECT[module], "id": record_id, "attributes": shown,
                "relationships": {"AOS_Contracts": {"links": {"related": f"/V8/module/{module}/{record_id}/relationships/aos_contracts"}}}}  # fmt: skip

    def condition(module: str, field: str, op: str, value: Any) -> tuple[Any, Response | None]:
        known = {o.upper() for o in OPERATORS}
        if tuple(fake.state.get("version", LIKE_SINCE)) < LIKE_SINCE:
            known.discard("LIKE")  # Repository/Filter.php before PR #9093: no OP_LIKE constant
        if op.upper() not in known:
            return None, errors(f"Filter operator {op} is invalid")
        if isinstance(value, dict):
            return None, errors("Database failure. Please refer to suitecrm.log for details.")

        def test(row: dict[str, Any]) -> bool:
            stored = "" if row.get(field) is None else str(row.get(field))
            o = op.lower()
            if o == "eq":
                return stored.lower() == str(value).lower()
            if o == "neq":
                return stored.lower() != str(value).lower()
            if o == "like":  # SQL LIKE as MySQL's default collation runs it: % and _, case-insensitive
                return like(str(value), stored)
            return {"gt": stored > value, "gte": stored >= value, "lt": stored < value, "lte": stored <= value}[o]

        return test, None

    async def meta_modules(request: Request) -> Response:
        if (bad := denied(request)) is not None:
            return bad
        attributes = {name: {"label": name, "access": ["list", "view"]} for name in SCHEMA}
        return JSONResponse({"data": {"type": "modules", "attributes": attributes}}, media_type="application/vnd.api+json")

    async def module_list(request: Request) -> Response:
        module = request.path_params["module"]
        if (bad := denied(request)) is not None:
            return bad
        if module not in SCHEMA:
            return errors(f"Module {module} does not exist")
        options, bad = parse_options(request, GET_OPTIONS)
        if bad is not None:
            return bad
        wanted, bad = check_fields(module, options)
        if bad is not None:
            return bad
        filters = dict(options.get("filter") or {})
        operator = str(filters.pop("operator", "and"))
        if operator.upper() not in ("AND", "OR"):
            return errors(f"Filter operator {operator} is invalid")
        filters.pop("deleted", None)
        tests = []
        for field, expression in filters.items():
            if field not in SCHEMA[module]:
                return errors(f"Filter field {field} in {OBJECT[module]} module is not found")
            if not isinstance(expression, dict):
                return errors(f"Filter field {field} must be an array")
            for op, value in expression.items():
                if op == "__array__":
                    return errors("Database failure. Please refer to suitecrm.log for details.")
                test, bad = condition(module, field, op, value)
                if bad is not None:
                    return bad
                tests.append(test)
        found = [(i, r) for i, r in rows(module) if str(r.get("deleted", "0")) == "0"]
        if fake.state.get("ignore_or") and operator.upper() == "OR":
            tests = []  # SuiteCRM before PR #8492: "... OR deleted = 0" matched every record
        if module == "Calls" and fake.state.get("hide_calls", 0) > 0:
            fake.state["hide_calls"] -= 1
            found = []
        if tests:
            combine = any if operator.upper() == "OR" else all
            found = [(i, r) for i, r in found if combine(t(r) for t in tests)]
        sort = options.get("sort")
        if sort is not None:
            field = str(sort).lstrip("-")
            if field not in SCHEMA[module]:
                return errors(f"Sort field {field} in {OBJECT[module]} module is not found")
            found.sort(key=lambda item: str(item[1].get(field) or ""), reverse=str(sort).startswith("-"))
        page = options.get("page") or {}
        if not isinstance(page, dict) or not all(str(v).isdigit() for v in page.values()) or set(page) - {"size", "number"}:
            return errors("The option \"page\" with value array is invalid.")
        size, number = int(page.get("size", 20)), int(page.get("number", 1))
        total = len(found)
        found = found[(number - 1) * size:(number - 1) * size + size] if number else found[:size]
        fake.state["list_requests"] = fake.state.get("list_requests", 0) + 1
        if not found:
            return JSONResponse({"data": []}, media_type="application/vnd.api+json")
        return JSONResponse({"meta": {"total-pages": -(-total // size), "records-on-this-page": len(found)},
                             "data": [render(module, i, r, wanted) for i, r in found],
                             "links": {"first": f"/V8/module/{module}?page[number]=1&page[size]={size}"}},
                            media_type="application/vnd.api+json")  # fmt: skip

    async def module_record(request: Request) -> Response:
        module, record_id = request.path_params["module"], request.path_params["id"]
        module = {v: k for k, v in OBJECT.items()}.get(module, module)  # the self links name the object
        if (bad := denied(request)) is not None:
            return bad
        if module not in SCHEMA:
            return errors(f"Module with name {module} is not found")
        options, bad = parse_options(request, {"fields"})
        if bad is not None:
            return bad
        wanted, bad = check_fields(module, options)
        if bad is not None:
            return bad
        found = find(module, record_id)
        if found is None:
            return errors(f"{module} module with id {record_id} is not found")
        values = attributes(found) if isinstance(found, FakeRecord) else dict(found)
        return JSONResponse({"data": render(module, record_id, values, wanted)}, media_type="application/vnd.api+json")

    async def relationships(request: Request) -> Response:
        module, record_id, link = (request.path_params[k] for k in ("module", "id", "link"))
        if (bad := denied(request)) is not None:
            return bad
        record = find(module, record_id)
        if not isinstance(record, FakeRecord):
            return errors(f"{module} module with id {record_id} is not found")
        if link not in ("accounts", "contacts", "leads", "calls", "aos_contracts"):
            return errors(f"Link field {link} is not found in {OBJECT[module]}")
        values = links(record).get(link)
        if not values:
            return JSONResponse({"meta": {"message": f"There is no relationship set in {OBJECT[module]} module with {link} link field"}, "data": []})  # fmt: skip
        other = related_id(record.id, link)
        return JSONResponse({"data": [{"type": "Account", "id": other, "links": {"self": f"/V8/module/Account/{other}"}}]})  # fmt: skip

    async def create(request: Request) -> Response:
        if request.method != "POST":
            return errors("Method not allowed", 405)
        if (bad := denied(request)) is not None:
            return bad
        if "json" not in request.headers.get("content-type", ""):
            return errors("The option \"data\" is missing.")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return errors("Syntax error, malformed JSON")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            return errors("The required option \"data\" is missing.")
        module, new_id, values = data["type"], data.get("id"), data.get("attributes") or {}
        if module not in SCHEMA:
            return errors(f"Module {module} does not exist")
        for name, value in values.items():
            if name not in SCHEMA[module]:
                return errors(f"Property {name} in {OBJECT[module]} module is invalid")
            if value is None or value is False or value == "":
                return errors("This value should not be blank.")
        if new_id is not None and find(module, new_id) is not None:
            return errors(f"Bean {module} with id {new_id} is already exist")
        new_id = new_id or str(uuid.uuid4())
        if module == "Calls":
            problem = check_call(values)
            if problem:
                return errors(problem)
            fake.activities.append({"id": new_id, "deleted": "0"} | values)
        else:
            fake.created.append({"id": new_id, "module": module} | values)
            fake.records.append(FakeRecord(module={v: k for k, v in MODULES.items()}[module], id=new_id,
                                           phone=str(values.get(PRIMARY_PHONE[module], "")),
                                           name=str(values.get("last_name") or values.get("name") or ""),
                                           modified=datetime.now(timezone.utc).isoformat()))  # fmt: skip
        return JSONResponse({"data": {"type": OBJECT[module], "id": new_id, "attributes": values}}, 201)

    def check_call(values: dict[str, Any]) -> str:
        if values.get("direction") not in ("Inbound", "Outbound", None):
            return f"Invalid direction {values['direction']}"
        if values.get("status") not in ("Planned", "Held", "Not Held", None):
            return f"Invalid status {values['status']}"
        if "date_start" in values and not re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", str(values["date_start"])):
            return f"Invalid date_start {values['date_start']}"
        parent = values.get("parent_type")
        if parent is not None and (parent not in MODULES.values() or find(parent, str(values.get("parent_id"))) is None):
            return f"{parent} module with id {values.get('parent_id')} is not found"
        return ""

    async def relate(request: Request) -> Response:
        module, record_id = request.path_params["module"], request.path_params["id"]
        if (bad := denied(request)) is not None:
            return bad
        body = json.loads(await request.body())
        data = body.get("data") or {}
        source, target = find(module, record_id), find(str(data.get("type")), str(data.get("id")))
        if source is None or target is None:
            return errors(f"{data.get('type')} module with id {data.get('id')} is not found")
        if module == "Calls" and isinstance(source, dict):
            source.setdefault(str(data["type"]).lower(), []).append(data["id"])
        return JSONResponse({"meta": {"message": f"{OBJECT.get(str(data['type']))} with id {data['id']} has been added to {OBJECT[module]} with id {record_id}"}})  # fmt: skip

    # --- v4.1 ------------------------------------------------------------------------------------------

    async def rest(request: Request) -> Response:
        if request.method != "POST":
            return PlainTextResponse("")
        form = dict(await request.form())
        if form.get("input_type") != "JSON" or form.get("response_type") != "JSON":
            return PlainTextResponse("", 200)
        try:
            args = list(json.loads(str(form.get("rest_data"))).values())  # positional, as SugarRestJSON reads it
        except (ValueError, AttributeError):
            return PlainTextResponse("", 200)
        method = form.get("method")
        fake.state.setdefault("v41", []).append(method)
        if method == "login":
            auth = args[0] if args else {}
            if not isinstance(auth, dict) or fake.reject_credentials or \
                    hashlib.md5(USERS.get(str(auth.get("user_name")), "\0").encode()).hexdigest() != auth.get("password"):  # fmt: skip
                return JSONResponse({"name": "Invalid Login", "number": 10,
                                     "description": "Login attempt failed please check the username and password"})  # fmt: skip
            fake.state["v41_user"] = auth.get("user_name")
            return JSONResponse({"id": fake.issue_token("v41sess"), "module_name": "Users",
                                 "name_value_list": {"user_id": {"name": "user_id", "value": "1"}}})  # fmt: skip
        if not args or args[0] not in fake.tokens:
            return JSONResponse({"name": "Invalid Session ID", "number": 11, "description": "The session ID is invalid"})
        if method == "get_entry_list":
            return entry_list(*args[1:])
        if method == "set_entry":
            return set_entry(*args[1:])
        if method == "set_relationship":
            return set_relationship(*args[1:])
        if method == "get_user_id":
            return JSONResponse("1")
        return JSONResponse({"name": "Invalid Method", "number": 0, "description": "No such method"})

    def entry_list(module: str, query: str, order_by: str, offset: int, select_fields: list, link_fields: list,
                   max_results: int, deleted: int, favorites: bool = False) -> Response:  # fmt: skip
        if module not in SCHEMA:
            return JSONResponse({"name": "Module Does Not Exist", "number": 20, "description": "This module is not available on this server"})  # fmt: skip
        bad = [f for f in select_fields if f not in SCHEMA[module]]
        if bad:  # Sugar drops unknown select fields silently
            select_fields = [f for f in select_fields if f in SCHEMA[module]]
        try:
            where = SqlWhere(query, TABLE[module], SCHEMA[module]) if query else None
        except ValueError:
            return PlainTextResponse("Database failure. Please refer to suitecrm.log for details.", 500)
        found = [(i, r) for i, r in rows(module) if str(r.get("deleted", "0")) == str(int(bool(deleted)))]
        if where is not None:
            found = [(i, r) for i, r in found if where.test(r)]
        found = found[offset:offset + max_results]
        entries, related = [], []
        for record_id, values in found:
            shown = {f: {"name": f, "value": record_id if f == "id" else "" if values.get(f) is None else str(values.get(f))}
                     for f in (select_fields or values)}  # fmt: skip
            entries.append({"id": record_id, "module_name": module, "name_value_list": shown})
            record = find(module, record_id)
            link_list = []
            for link in link_fields:
                target = links(record).get(link["name"]) if isinstance(record, FakeRecord) else None
                records = [{"link_value": {f: {"name": f, "value": str(target.get(f, ""))} for f in link["value"]}}] if target else []  # fmt: skip
                link_list.append({"name": link["name"], "records": records})
            related.append({"link_list": link_list})
        return JSONResponse({"result_count": len(entries), "total_count": str(len(entries)), "next_offset": offset + len(entries),
                             "entry_list": entries, "relationship_list": related})  # fmt: skip

    def set_entry(module: str, name_value_list: list) -> Response:
        given = {v["name"]: v["value"] for v in name_value_list}
        new_id = str(given.get("id") or uuid.uuid4())
        values = {k: v for k, v in given.items() if k in SCHEMA[module] and k != "id"}  # Sugar ignores the rest
        if module == "Calls":
            if (problem := check_call(values)):
                return JSONResponse({"name": "Error", "number": 0, "description": problem})
            existing = find("Calls", new_id)
            if existing is not None:
                existing.update(values)
            else:
                fake.activities.append({"id": new_id, "deleted": "0"} | values)
        else:
            fake.created.append({"id": new_id, "module": module} | values)
            fake.records.append(FakeRecord(module={v: k for k, v in MODULES.items()}[module], id=new_id,
                                           phone=str(values.get(PRIMARY_PHONE[module], "")),
                                           name=str(values.get("last_name") or "")))  # fmt: skip
        return JSONResponse({"id": new_id, "entry_list": {k: {"name": k, "value": v} for k, v in values.items()}})

    def set_relationship(module: str, module_id: str, link: str, related_ids: list, name_value_list: list,
                         delete: int) -> Response:  # fmt: skip
        source = find(module, module_id)
        if source is None or not all(find(link.capitalize(), r) for r in related_ids):
            return JSONResponse({"created": 0, "failed": 1, "deleted": 0})
        source.setdefault(link, []).extend(related_ids)
        return JSONResponse({"created": 1, "failed": 0, "deleted": 0})

    async def not_found(request: Request) -> Response:
        return PlainTextResponse("Not Found", 404)

    routes = []
    for root in ("", "/legacy"):
        routes += [
            Route(f"{root}/Api/access_token", access_token, methods=["GET", "POST"]),
            Route(f"{root}/Api/V8/meta/modules", meta_modules, methods=["GET"]),
            Route(f"{root}/Api/V8/module", create, methods=["GET", "POST", "PATCH"]),
            Route(f"{root}/Api/V8/module/{{module}}", module_list, methods=["GET"]),
            Route(f"{root}/Api/V8/module/{{module}}/{{id}}", module_record, methods=["GET"]),
            Route(f"{root}/Api/V8/module/{{module}}/{{id}}/relationships", relate, methods=["POST"]),
            Route(f"{root}/Api/V8/module/{{module}}/{{id}}/relationships/{{link}}", relationships, methods=["GET"]),
            Route(f"{root}/service/v4_1/rest.php", rest, methods=["GET", "POST"]),
        ]
    return Starlette(routes=[*routes, Route("/{path:path}", not_found, methods=["GET", "POST", "PATCH", "DELETE"])])


class SqlWhere:
    """The few SQL ``WHERE`` shapes the v4.1 fake evaluates: ``=``, ``LIKE``, ``REPLACE``, ``AND``/``OR``, ``()``."""

    TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<word>[A-Za-z_][A-Za-z0-9_.]*)|(?P<op>=|\(|\)|,))")

    def __init__(self, text: str, table: str, columns: set[str]) -> None:
        self.table, self.columns = table, columns
        self.tokens: list[tuple[str, str]] = []
        position = 0
        while position < len(text.rstrip()):
            found = self.TOKEN.match(text, position)
            if not found:
                raise ValueError(f"SQL syntax error near {text[position:position + 10]!r}")
            kind = found.lastgroup or ""
            self.tokens.append((kind, found[kind]))
            position = found.end()
        self.position = 0
        self.tree = self._or()
        if self.position != len(self.tokens):
            raise ValueError("trailing SQL")

    def _peek(self) -> tuple[str, str]:
        return self.tokens[self.position] if self.position < len(self.tokens) else ("", "")

    def _take(self, value: str | None = None) -> tuple[str, str]:
        token = self._peek()
        if value is not None and token[1].upper() != value:
            raise ValueError(f"expected {value}")
        self.position += 1
        return token

    def _or(self) -> Any:
        parts = [self._and()]
        while self._peek()[1].upper() == "OR":
            self._take()
            parts.append(self._and())
        return ("or", parts)

    def _and(self) -> Any:
        parts = [self._atom()]
        while self._peek()[1].upper() == "AND":
            self._take()
            parts.append(self._atom())
        return ("and", parts)

    def _atom(self) -> Any:
        if self._peek()[1] == "(":
            self._take()
            inner = self._or()
            self._take(")")
            return inner
        left = self._value()
        op = self._take()[1].upper()
        if op not in ("=", "LIKE"):
            raise ValueError(f"unsupported operator {op}")
        return (op, left, self._value())

    def _value(self) -> Any:
        kind, text = self._take()
        if kind == "str":
            return ("str", re.sub(r"\\(.)", r"\1", text[1:-1]))
        if kind == "word" and text.upper() == "REPLACE":
            self._take("(")
            inner = self._value()
            self._take(",")
            old = self._value()
            self._take(",")
            new = self._value()
            self._take(")")
            return ("replace", inner, old, new)
        if kind == "word" and "." in text:
            table, column = text.split(".", 1)
            if table not in (self.table, f"{self.table}_cstm") or column not in self.columns:
                raise ValueError(f"Unknown column '{text}'")
            if (table == f"{self.table}_cstm") != column.endswith("_c"):
                raise ValueError(f"Unknown column '{text}'")
            return ("col", column)
        raise ValueError(f"unexpected {text!r}")

    def test(self, row: dict[str, Any]) -> bool:
        return bool(self._eval(self.tree, row))

    def _eval(self, node: Any, row: dict[str, Any]) -> Any:
        kind = node[0]
        if kind == "or":
            return any(self._eval(n, row) for n in node[1])
        if kind == "and":
            return all(self._eval(n, row) for n in node[1])
        if kind == "str":
            return node[1]
        if kind == "col":
            return "" if row.get(node[1]) is None else str(row.get(node[1]))
        if kind == "replace":
            return self._eval(node[1], row).replace(self._eval(node[2], row), self._eval(node[3], row))
        left, right = self._eval(node[1], row), self._eval(node[2], row)
        return left.lower() == right.lower() if kind == "=" else like(right, left)


fake_server, fake = vendor_fixtures(make_app)

CONTACT_IDS = ("8f3c2d1e-0b9a-4c7d-8e6f-5a4b3c2d1e0f", "9a4d3e2f-1c0b-4d8e-9f70-6b5c4d3e2f10",
               "ab5e4f30-2d1c-4e9f-a081-7c6d5e4f3021")  # fmt: skip


class SuiteContract(ConnectorContract):
    OWNER_FIELDS = {"assigned_user_id": "1"}
    OWNER_ID = "1"
    kind = "suitecrm"
    MODULE = "contacts"
    FIELD = "tier_c"
    NESTED_FIELD = "accounts.name"  # a link to the related Account (relate attributes such as account_name are flat)
    NESTED_FIELDS = {"accounts": {"name": "Acme Corp", "industry": "Banking"}}
    NESTED_VALUE = "Acme Corp"
    IDS = CONTACT_IDS
    KEY_FIELD = "account_number_c"
    MOBILE_FIELDS = {"contacts": "phone_mobile", "leads": "phone_mobile"}  # Accounts: office and alternate only


class TestSuiteCrmV8(SuiteContract):
    def settings(self, fake: VendorFake) -> dict[str, Any]:
        return {"site_url": fake.base_url, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}

    # --- where the API is -----------------------------------------------------------------------

    async def test_suitecrm8_goes_through_legacy(self, fake, http):
        connector = self.build(fake, http, version="8")
        fake.records = [self.record()]
        assert await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "tier_c", deadline=self.deadline()) == "GOLD"  # fmt: skip
        assert {r.path for r in fake.requests} == {"/legacy/Api/access_token", "/legacy/Api/V8/module/Contacts"}

    def test_settings_are_checked(self, fake):
        with pytest.raises(ValidationError, match="https"):
            SuiteCrmSettings(site_url="http://crm.example.com", client_id=CLIENT_ID, client_secret="x")
        with pytest.raises(ValidationError, match="the v8 API needs client_secret"):
            SuiteCrmSettings(site_url="https://crm.example.com", client_id=CLIENT_ID)
        with pytest.raises(ValidationError, match="not field names"):
            SuiteCrmSettings(site_url="https://crm.example.com", api="v4_1", phone_fields="phone_work, x y")
        assert SuiteCrmSettings(site_url="https://crm.example.com/suite/", api="v4_1").site_url == "https://crm.example.com/suite"  # fmt: skip

    # --- auth flows ---------------------------------------------------------------------------------

    async def test_client_credentials_grant(self, fake, connector):
        token = await connector.authenticate(deadline=self.deadline())
        assert fake.state["grants"] == [{"grant_type": "client_credentials", "client_id": CLIENT_ID,
                                         "client_secret": CLIENT_SECRET}]  # fmt: skip
        first = fake.requests[0]
        assert first.method == "POST" and first.path == "/Api/access_token"
        assert first.headers["content-type"].startswith("application/x-www-form-urlencoded")
        assert 3500 < token.expires_at - time.monotonic() <= 3600

    async def test_password_grant_uses_the_rules_credentials(self, fake, http):
        cls = type(self.build(fake, http))
        settings = cls.Settings.model_validate(self.settings(fake) | {"auth_flow": "password", "username": USERNAME,
                                                                       "password": PASSWORD})  # fmt: skip
        connector = cls(settings, http, username=RULE_USER, password=RULE_PASSWORD)
        await connector.authenticate(deadline=self.deadline())
        assert fake.state["grants"][0] == {"grant_type": "password", "username": RULE_USER, "password": RULE_PASSWORD,
                                           "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}  # fmt: skip

    async def test_password_grant_without_credentials_says_so(self, fake, http):
        connector = self.build(fake, http, auth_flow="password")
        with pytest.raises(AuthError, match="needs a username and password"):
            await connector.authenticate(deadline=self.deadline())
        assert fake.requests == []

    async def test_wrong_user_password_is_explained(self, fake, http):
        connector = self.build(fake, http, auth_flow="password", username=USERNAME, password="wrong")
        with pytest.raises(AuthError, match="refused the password grant: invalid_grant.*credentials were incorrect"):
            await connector.authenticate(deadline=self.deadline())

    async def test_wrong_client_secret_names_the_client(self, fake, http):
        connector = self.build(fake, http, client_secret="nope")
        with pytest.raises(AuthError, match="refused the OAuth2 client.*check client_id and client_secret"):
            await connector.authenticate(deadline=self.deadline())

    async def test_expiry_is_read_and_the_refresh_token_used_before_it(self, fake, http):
        connector = self.build(fake, http, auth_flow="password", username=USERNAME, password=PASSWORD)
        fake.records = [self.record()]
        key = LookupKey(CALLER, "caller_id")
        fake.state["expires_in"] = 600
        await connector.fetch(key, "contacts", "tier_c", deadline=self.deadline())
        token = connector._token
        assert 500 < token.expires_at - time.monotonic() <= 600
        token.issued_at, token.expires_at = time.monotonic() - 570, time.monotonic() + 30  # inside the margin
        calls = len(fake.api_requests())
        await connector.fetch(key, "contacts", "tier_c", deadline=self.deadline())
        assert [g["grant_type"] for g in fake.state["grants"]] == ["password", "refresh_token"]
        assert not any(r.headers.get("authorization") == f"Bearer {token.value}" for r in fake.api_requests()[calls:])

    async def test_a_revoked_refresh_token_falls_back_to_the_grant(self, fake, http):
        connector = self.build(fake, http, auth_flow="password", username=USERNAME, password=PASSWORD)
        await connector.authenticate(deadline=self.deadline())
        fake.state.setdefault("refresh", set()).clear()  # an admin revoked it
        await connector.authenticate(deadline=self.deadline(), force=True)
        assert [g["grant_type"] for g in fake.state["grants"]] == ["password", "refresh_token", "password"]

    async def test_a_revoked_refresh_token_with_no_way_back_is_an_auth_error(self, fake, http):
        connector = self.build(fake, http, auth_flow="password", username=USERNAME, password=PASSWORD)
        await connector.authenticate(deadline=self.deadline())
        fake.reject_credentials = True  # the refresh token is revoked and the password changed
        with pytest.raises(AuthError) as caught:
            await connector.authenticate(deadline=self.deadline(), force=True)
        assert "token rejected: refresh token revoked or expired (The refresh token is invalid." in str(caught.value)
        assert "the password grant failed too" in str(caught.value) and "credentials were incorrect" in str(caught.value)
        self.assert_no_secrets(str(caught.value))

    async def test_client_credentials_tokens_have_no_refresh_token(self, fake, connector):
        await connector.authenticate(deadline=self.deadline())
        assert connector._refresh_state == ""
        await connector.authenticate(deadline=self.deadline(), force=True)
        assert [g["grant_type"] for g in fake.state["grants"]] == ["client_credentials", "client_credentials"]

    async def test_concurrent_refusals_log_in_once(self, fake, http):
        connector = self.build(fake, http, phone_match="exact")
        fake.records = [self.record()]
        key = LookupKey(CALLER, "caller_id")
        await connector.fetch(key, "contacts", "tier_c", deadline=self.deadline())
        fake.expire_tokens()
        assert await connector.fetch(key, "contacts", "tier_c", deadline=self.deadline()) == "GOLD"
        assert fake.token_requests == 2  # six searches refused at once, one new token

    # --- search shapes ----------------------------------------------------------------------------------

    async def test_like_is_one_request_with_the_digits_in_order(self, fake, connector):
        fake.records = [self.record()]
        assert await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "tier_c", deadline=self.deadline()) == "GOLD"  # fmt: skip
        [search] = fake.api_requests()
        assert search.method == "GET" and search.path == "/Api/V8/module/Contacts"
        assert search.headers["authorization"].startswith("Bearer eyJ")
        assert search.headers["accept"] == "application/vnd.api+json"
        pattern = "%4%1%5%5%5%5%2%6%7%1"
        assert search.param_list == [
            ("filter[operator]", "or"), ("filter[phone_work][like]", pattern), ("filter[phone_mobile][like]", pattern),
            ("filter[phone_home][like]", pattern), ("filter[phone_other][like]", pattern),
            ("fields[Contacts]", "first_name,last_name,date_modified,phone_work,phone_mobile,phone_home,phone_other,"
                                 "tier_c"),
            ("page[size]", "20"), ("page[number]", "1"), ("sort", "-date_modified")]  # fmt: skip

    async def test_one_request_per_uncached_call(self, fake, connector):
        callers = [f"+1415555{n:04d}" for n in range(10)]
        fake.records = [self.record(0, phone="(415) 555-0003"), self.record(1, phone="415.555.0007")]
        values = [await connector.fetch(LookupKey(c, "caller_id"), "contacts", "tier_c", deadline=self.deadline())
                  for c in callers]  # fmt: skip
        assert values.count("GOLD") == 2
        assert len(fake.api_requests()) == len(callers) and fake.token_requests == 1  # <= 1.1 per call, auth aside

    @pytest.mark.parametrize("stored", ["+14155552671", "(415) 555-2671", "+1 415-555-2671", "415-555-2671",
                                        "14155552671", "4155552671", "415.555.2671", "1-415-555-2671",
                                        "+1 (415) 555-2671", "415 555 2671", "+1.415.555.2671", "001 415 555 2671"])
    async def test_like_finds_any_punctuation_and_prefix(self, fake, connector, stored):
        fake.records = [self.record(phone="", fields={"tier_c": "GOLD", "phone_mobile": stored})]
        assert await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "tier_c", deadline=self.deadline()) == "GOLD"  # fmt: skip

    async def test_exact_mode_asks_each_of_nine_stored_forms(self, fake, http):
        connector = self.build(fake, http, phone_match="exact")
        fake.records = [self.record()]
        await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "tier_c", deadline=self.deadline())
        searches = fake.api_requests()
        forms = ["+14155552671", "(415) 555-2671", "+1 415-555-2671", "415-555-2671", "14155552671", "4155552671",
                 "415.555.2671", "1-415-555-2671", "+1 (415) 555-2671"]  # fmt: skip
        assert sorted(r.params["filter[phone_work][eq]"] for r in searches) == sorted(forms)
        for search in searches:
            form = search.params["filter[phone_work][eq]"]
            assert [k for k, _ in search.param_list if k.startswith("filter")] == [
                "filter[operator]", "filter[phone_work][eq]", "filter[phone_mobile][eq]", "filter[phone_home][eq]",
                "filter[phone_other][eq]"]  # fmt: skip
            assert search.params["filter[phone_other][eq]"] == form
        for stored in forms:
            fake.records = [self.record(phone="", fields={"tier_c": "GOLD", "phone_mobile": stored})]
            assert await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "tier_c", deadline=self.deadline()) == "GOLD", stored  # fmt: skip
        fake.records = [self.record(phone="415 555 2671")]  # a format exact mode does not ask
        assert await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "tier_c", deadline=self.deadline()) is None  # fmt: skip

    async def test_like_keeps_only_the_callers_number(self, fake, connector):
        fake.records = [self.record(0, phone="(212) 555-2671"), self.record(1, phone="415 555 2671"),
                        self.record(2, phone="(415) 555-2671 x1")]  # fmt: skip
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline())
        assert record.id == CONTACT_IDS[1] and record.matches == 1

    async def test_auto_falls_back_to_exact_forms_on_a_suitecrm_before_7_11_19(self, fake, connector, caplog):
        fake.state["version"] = (7, 11, 18)
        fake.records = [self.record()]
        key = LookupKey(CALLER, "caller_id")
        assert await connector.fetch(key, "contacts", "tier_c", deadline=self.deadline()) == "GOLD"
        first = fake.api_requests()
        assert "filter[phone_work][like]" in first[0].params and len(first) == 1 + 9
        assert "no like filter" in caplog.text
        assert await connector.fetch(key, "contacts", "tier_c", deadline=self.deadline()) == "GOLD"
        later = fake.api_requests()[len(first):]
        assert len(later) == 9 and all("filter[phone_work][eq]" in r.params for r in later)  # like not asked again

    @pytest.mark.parametrize("version", [(7, 11, 18), (7, 14, 6)])
    async def test_the_shared_formats_are_found_before_and_after_7_11_19(self, fake, connector, version):
        fake.state["version"] = version
        for style, (phone, mobile, caller) in STORED_FORMATS.items():
            found = self.record(0, phone=phone, fields={"tier_c": "GOLD", "phone_mobile": mobile})
            fake.records = [self.record(1, phone=DECOY_PHONE, fields={"tier_c": "DECOY"}), found]
            key = LookupKey(caller, "caller_id")
            assert await connector.fetch(key, "contacts", "tier_c", deadline=self.deadline()) == "GOLD", (version, style)
        asked = {k.rsplit("[", 1)[1] for r in fake.api_requests() for k in r.params if k.startswith("filter[phone_")}
        assert asked == ({"like]", "eq]"} if version < (7, 11, 19) else {"like]"})

    async def test_like_mode_on_an_old_suitecrm_says_what_to_do(self, fake, http):
        connector = self.build(fake, http, phone_match="like")
        fake.state["version"] = (7, 11, 18)
        with pytest.raises(UnexpectedResponse, match="no like filter.*set phone_match to exact or auto"):
            await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline())

    async def test_an_old_or_filter_that_matches_everything_is_filtered_here(self, fake, connector):
        fake.records = [self.record(0, phone="(212) 555-0000"), self.record(1)]
        fake.state["ignore_or"] = True
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline())
        assert record.id == CONTACT_IDS[1] and record.matches == 1

    async def test_custom_phone_fields(self, fake, http):
        connector = self.build(fake, http, phone_fields="mobile2_c")
        fake.records = [self.record(phone="", fields={"tier_c": "GOLD", "mobile2_c": "+1 415-555-2671"})]
        assert await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "tier_c", deadline=self.deadline()) == "GOLD"  # fmt: skip
        filters = {"filter[operator]", "filter[mobile2_c][like]"}
        assert all(set(k for k, _ in r.param_list if k.startswith("filter[")) == filters for r in fake.api_requests())

    async def test_a_gb_number_stored_with_its_trunk_prefix(self, fake, connector):
        connector.region = "GB"
        fake.records = [self.record(phone="020 7946 0958")]
        assert await connector.fetch(LookupKey("+442079460958", "caller_id"), "contacts", "tier_c", deadline=self.deadline()) == "GOLD"  # fmt: skip

    @pytest.mark.parametrize("module, name, phone_field, record_id", [
        ("accounts", "Accounts", "phone_office", "11a71596-83e7-624d-c792-5ab9006dd493"),
        ("leads", "Leads", "phone_work", "22b82607-94f8-735e-d803-6bc0117ee504")])  # fmt: skip
    async def test_each_module_maps_to_its_module(self, fake, connector, module, name, phone_field, record_id):
        fake.records = [FakeRecord(module=module, id=record_id, phone="(415) 555-2671", fields={"tier_c": "SILVER"}),
                        self.record()]  # fmt: skip
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), module, fields=["tier_c"],
                                             deadline=self.deadline())  # fmt: skip
        assert (record.module, record.id, record.fields["tier_c"]) == (name, record_id, "SILVER")
        assert record.url.endswith(f"/index.php?module={name}&action=DetailView&record={record_id}")
        assert all(r.path == f"/Api/V8/module/{name}" and f"filter[{phone_field}][like]" in r.params
                   for r in fake.api_requests())  # fmt: skip

    async def test_pick_setting_orders_the_search(self, fake, http):
        connector = self.build(fake, http, match_pick="first")
        await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline())
        assert all("sort" not in r.params for r in fake.api_requests())
        connector = self.build(fake, http, match_pick="oldest")
        fake.requests.clear()
        await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline())
        assert all(r.params["sort"] == "date_modified" for r in fake.api_requests())

    async def test_typed_key_without_key_field_is_the_id(self, fake, connector):
        fake.records = [self.record(phone="")]
        assert await connector.fetch(LookupKey(CONTACT_IDS[0], "dtmf"), "contacts", "tier_c", deadline=self.deadline()) == "GOLD"  # fmt: skip
        [search] = fake.api_requests()
        assert search.params["filter[id][eq]"] == CONTACT_IDS[0] and "filter[operator]" not in search.params

    async def test_nested_field_costs_two_requests_then_nothing(self, fake, connector):
        fake.records = [self.record()]
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", fields=["accounts.name"],
                                             deadline=self.deadline())  # fmt: skip
        before = len(fake.api_requests())
        assert await connector.read_field(record, "accounts.name", deadline=self.deadline()) == "Acme Corp"
        relation, account = fake.api_requests()[before:]
        assert relation.path == f"/Api/V8/module/Contacts/{CONTACT_IDS[0]}/relationships/accounts"
        assert account.path.startswith("/Api/V8/module/Account") and account.params == {"fields[Accounts]": "name"}
        assert await connector.read_field(record, "accounts.name", deadline=self.deadline()) == "Acme Corp"
        assert len(fake.api_requests()) == before + 2

    async def test_no_related_record_is_none(self, fake, connector):
        fake.records = [self.record(fields={"tier_c": "GOLD"})]
        assert await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "accounts.name", deadline=self.deadline()) is None  # fmt: skip

    async def test_a_missing_field_says_which(self, fake, connector):
        fake.records = [self.record()]
        with pytest.raises(UnexpectedResponse) as caught:
            await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "tier_x", deadline=self.deadline())
        assert str(caught.value) == "field tier_x does not exist on Contacts" and caught.value.reason == "unknown_field"

    async def test_a_missing_key_field_says_which(self, fake, http):
        connector = self.build(fake, http, key_field="acct_no_c")
        with pytest.raises(UnexpectedResponse, match="^field acct_no_c does not exist on Contacts$"):
            await connector.fetch(LookupKey("12345", "dtmf"), "contacts", "tier_c", deadline=self.deadline())

    async def test_field_names_cannot_inject(self, fake, connector):
        with pytest.raises(UnexpectedResponse, match="not a SuiteCRM field name"):
            await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "tier_c]&x[", deadline=self.deadline())
        assert fake.api_requests() == []

    async def test_withheld_or_garbage_numbers_ask_nothing(self, fake, connector):
        assert await connector.find_record(LookupKey("ab", "caller_id"), "contacts", deadline=self.deadline()) is None
        assert fake.requests == []

    # --- call logging ---------------------------------------------------------------------------------

    async def test_call_body_link_and_id(self, fake, connector):
        fake.records = [self.record()]
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline())
        call_id = await connector.log_call(self.call(record), LogOptions(inbound_answered=True), deadline=self.deadline())  # fmt: skip
        assert call_id == str(uuid.uuid5(CALL_IDS, "1795657573.1"))
        [call] = fake.activities
        assert {k: v for k, v in call.items() if k != "description"} == {
            "id": call_id, "deleted": "0", "name": f"Inbound call from {CALLER}", "direction": "Inbound",
            "status": "Held", "date_start": "2026-11-26 09:30:00", "duration_hours": 0, "duration_minutes": 2,
            "parent_type": "Contacts", "parent_id": CONTACT_IDS[0], "contacts": [CONTACT_IDS[0]]}  # fmt: skip
        assert "Asterisk call id: 1795657573.1" in call["description"] and "Extension: 201" in call["description"]
        check, create, relate = fake.api_requests()[-3:]
        assert check.params == {"filter[id][eq]": call_id, "fields[Calls]": "name"}
        assert create.method == "POST" and create.path == "/Api/V8/module"
        assert create.headers["content-type"] == "application/vnd.api+json"
        assert create.json()["data"]["type"] == "Calls" and create.json()["data"]["id"] == call_id
        assert relate.path == f"/Api/V8/module/Calls/{call_id}/relationships"
        assert relate.json() == {"data": {"type": "Contacts", "id": CONTACT_IDS[0]}}

    async def test_a_missed_outbound_call_to_an_account(self, fake, connector):
        account = Record(module="Accounts", id="11a71596-83e7-624d-c792-5ab9006dd493", fields={})
        fake.records = [FakeRecord(module="accounts", id=account.id, phone="(415) 555-2671")]
        call = self.call(account, "c-9")
        call.direction, call.outcome, call.subject, call.talk_seconds = "outbound", "missed", "", 0
        await connector.log_call(call, LogOptions(), deadline=self.deadline())
        [logged] = fake.activities
        assert (logged["direction"], logged["status"], logged["parent_type"]) == ("Outbound", "Not Held", "Accounts")
        assert logged["name"] == f"Outbound call to {CALLER}" and "contacts" not in logged
        assert (logged["duration_hours"], logged["duration_minutes"]) == (0, 0)

    async def test_a_duplicate_create_is_the_same_call(self, fake, connector):
        fake.records = [self.record()]
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline())
        first = await connector.log_call(self.call(record), LogOptions(), deadline=self.deadline())
        fake.state["hide_calls"] = 1  # a concurrent logger created it between our check and our create
        assert await connector.log_call(self.call(record), LogOptions(), deadline=self.deadline()) == first
        assert len(fake.activities) == 1

    async def test_logging_by_number_prefers_a_contact_then_a_lead(self, fake, connector):
        lead = FakeRecord(module="leads", id="22b82607-94f8-735e-d803-6bc0117ee504", phone="415-555-2671")
        fake.records = [lead]
        await connector.log_call(self.call(None, "c-1"), LogOptions(), deadline=self.deadline())
        fake.records = [lead, self.record()]
        await connector.log_call(self.call(None, "c-2"), LogOptions(), deadline=self.deadline())
        assert [(a["parent_type"], a["parent_id"]) for a in fake.activities] == [("Leads", lead.id), ("Contacts", CONTACT_IDS[0])]  # fmt: skip

    async def test_an_unknown_caller_is_logged_unlinked_without_create_unknown(self, fake, connector):
        await connector.log_call(self.call(None, "c-3"), LogOptions(), deadline=self.deadline())
        assert fake.created == [] and "parent_id" not in fake.activities[0]

    async def test_unknown_caller_becomes_a_lead_or_contact(self, fake, http):
        connector = self.build(fake, http, assigned_user_id="seed_sally_id")
        await connector.log_call(self.call(None, "c-4"), LogOptions(create_unknown=True), deadline=self.deadline())
        [lead] = fake.created
        assert lead["module"] == "Leads" and lead["phone_work"] == CALLER and lead["last_name"] == f"Caller {CALLER}"
        assert fake.activities[0]["parent_id"] == lead["id"] and fake.activities[0]["assigned_user_id"] == "seed_sally_id"
        fake.records = []  # else the new lead is found by number
        connector = self.build(fake, http, create_as="contacts")
        await connector.log_call(self.call(None, "c-5"), LogOptions(create_unknown=True), deadline=self.deadline())
        assert fake.created[1]["module"] == "Contacts" and fake.activities[1]["contacts"] == [fake.created[1]["id"]]


class TestSuiteCrmV41(SuiteContract):
    """The same contract through the v4.1 REST API (session login, SQL where clauses)."""

    def settings(self, fake: VendorFake) -> dict[str, Any]:
        return {"site_url": fake.base_url, "api": "v4_1", "username": USERNAME, "password": PASSWORD}

    async def test_login_sends_the_md5_of_the_password(self, fake, connector):
        await connector.authenticate(deadline=self.deadline())
        [login] = fake.requests
        assert login.method == "POST" and login.path == "/service/v4_1/rest.php"
        form = parse_qs(login.body.decode())
        assert (form["method"], form["input_type"], form["response_type"]) == (["login"], ["JSON"], ["JSON"])
        args = v41_args(login)
        assert args["user_auth"] == {"user_name": USERNAME, "password": hashlib.md5(PASSWORD.encode()).hexdigest()}
        assert PASSWORD not in login.body.decode()

    async def test_rule_credentials_win(self, fake, http):
        cls = type(self.build(fake, http))
        connector = cls(cls.Settings.model_validate(self.settings(fake)), http, username=RULE_USER,
                        password=RULE_PASSWORD)  # fmt: skip
        await connector.authenticate(deadline=self.deadline())
        assert fake.state["v41_user"] == RULE_USER

    async def test_one_get_entry_list_with_every_phone_column(self, fake, connector):
        fake.records = [self.record(phone="+1 (415) 555.2671")]
        assert await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "tier_c", deadline=self.deadline()) == "GOLD"  # fmt: skip
        login, search = fake.requests
        args = v41_args(search)
        assert args["module_name"] == "Contacts" and args["max_results"] == 50 and args["deleted"] == 0
        assert list(args) == ["session", "module_name", "query", "order_by", "offset", "select_fields",
                              "link_name_to_fields_array", "max_results", "deleted", "favorites"]  # fmt: skip
        stripped = "REPLACE(REPLACE(REPLACE(REPLACE(REPLACE(REPLACE(contacts.phone_work,' ',''),'-',''),'(',''),')',''),'.',''),'+','')"  # fmt: skip
        assert args["query"].startswith(f"({stripped} LIKE '%4155552671' OR ")
        assert args["select_fields"] == ["id", "first_name", "last_name", "date_modified", "phone_work",
                                         "phone_mobile", "phone_home", "phone_other", "tier_c"]  # fmt: skip

    async def test_nested_field_comes_in_the_same_call(self, fake, connector):
        fake.records = [self.record()]
        assert await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "accounts.industry", deadline=self.deadline()) == "Banking"  # fmt: skip
        search = fake.requests[-1]
        assert v41_args(search)["link_name_to_fields_array"] == [{"name": "accounts", "value": ["industry"]}]

    async def test_typed_key_on_a_custom_field_uses_the_cstm_table(self, fake, http):
        connector = self.build(fake, http, key_field="account_number_c")
        fake.records = [self.record(phone="", fields={"tier_c": "GOLD", "account_number_c": "1' OR '1"})]
        assert await connector.fetch(LookupKey("1' OR '1", "dtmf"), "contacts", "tier_c", deadline=self.deadline()) == "GOLD"  # fmt: skip
        assert v41_args(fake.requests[-1])["query"] == "contacts_cstm.account_number_c = '1\\' OR \\'1'"

    async def test_an_expired_session_logs_in_again(self, fake, connector):
        fake.records = [self.record()]
        await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "tier_c", deadline=self.deadline())
        fake.expire_tokens()
        await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "tier_c", deadline=self.deadline())
        assert fake.state["v41"] == ["login", "get_entry_list", "get_entry_list", "login", "get_entry_list"]

    async def test_wrong_password_is_an_auth_error(self, fake, http):
        connector = self.build(fake, http, password="wrong")
        with pytest.raises(AuthError, match="Invalid Login: Login attempt failed"):
            await connector.authenticate(deadline=self.deadline())

    async def test_call_is_set_with_its_id_and_related_to_the_contact(self, fake, connector):
        fake.records = [self.record()]
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline())
        call_id = await connector.log_call(self.call(record), LogOptions(), deadline=self.deadline())
        assert call_id == str(uuid.uuid5(CALL_IDS, "1795657573.1"))
        assert fake.activities[0]["contacts"] == [CONTACT_IDS[0]] and fake.activities[0]["parent_type"] == "Contacts"
        assert fake.state["v41"][-3:] == ["get_entry_list", "set_entry", "set_relationship"]
        set_entry = v41_args(fake.requests[-2])
        assert {"name": "new_with_id", "value": True} in set_entry["name_value_list"]


def v41_args(recorded) -> dict[str, Any]:
    return json.loads(parse_qs(recorded.body.decode())["rest_data"][0])


def test_stored_forms():
    assert stored_forms(phone_forms("+14155552671")) == ["+14155552671", "(415) 555-2671", "+1 415-555-2671",
                                                         "415-555-2671", "14155552671", "4155552671", "415.555.2671",
                                                         "1-415-555-2671", "+1 (415) 555-2671"]  # fmt: skip
    assert like_pattern("4155552671") == "%4%1%5%5%5%5%2%6%7%1"
    assert stored_forms(phone_forms("12")) == ["12"]
    assert digits_of("x") == ""


# --- users (agents sync) ------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["v8", "v4_1"])
async def test_list_users_reads_the_active_users_page_by_page(fake, api):
    from crmroute.connectors._http import make_client
    from crmroute.settings import Settings

    fake.state["users"] = [{"id": f"u-{i:03d}", "user_name": f"agent{i:03d}", "first_name": "Agent", "last_name": f"{i:03d}",
                            "email1": f"agent{i}@example.com", "status": "Active"} for i in range(150)]  # fmt: skip
    fake.state["users"].append({"id": "u-gone", "user_name": "gone", "first_name": "", "last_name": "Gone",
                                "email1": "gone@example.com", "status": "Inactive"})  # fmt: skip
    http = make_client(Settings(ca_bundle=fake.ca_path))
    try:
        contract = TestSuiteCrmV41() if api == "v4_1" else TestSuiteCrmV8()
        users = await contract.build(fake, http).list_users(deadline=contract.deadline())
    finally:
        await http.aclose()
    assert len(users) == 150 and "u-gone" not in {u.id for u in users}
    assert users[0] == CrmUser("u-000", "Agent 000", "agent0@example.com")
    if api == "v8":
        pages = [r for r in fake.api_requests() if r.path.endswith("/Api/V8/module/Users")]
        assert [r.params["page[number]"] for r in pages] == ["1", "2"]
        assert pages[0].params["filter[status][eq]"] == "Active"
    else:
        listings = [v41_args(r) for r in fake.requests if b"get_entry_list" in r.body]
        assert [a["offset"] for a in listings] == [0, 100] and listings[0]["query"] == "users.status = 'Active'"
