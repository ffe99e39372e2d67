"""Proprietary CRM against a strict fake in-house REST/JSON API ("people", "companies", "prospects").

There is no vendor (reference section 12), so the fake is a realistic in-house CRM
designed for these tests, JSON:API-flavoured:

- ``POST /oauth/token``: RFC 6749 client credentials (Basic client auth with
  form-encoded id and secret, form body, ``scope`` checked, ``expires_in``);
  OAuth error bodies (``invalid_client`` 401, ``unsupported_grant_type`` ...).
- ``GET /api/v2/{collection}/search?phone=``: the CRM normalises stored numbers
  and wants E.164 (anything else is a 400); ``fields`` (sparse fieldsets,
  unknown names refused), ``sort`` and ``page[size]``/``page[number]`` paging with
  ``meta.total``.
- ``GET /api/v2/{collection}?filter[<field>]=``: exact comparison with the
  stored text (so a number must be sent as stored); ``GET .../{id}``;
  ``POST .../query`` (JSON body, ``application/json`` only).
- ``POST /api/v2/{collection}`` creates people/prospects; activities:
  ``GET /api/v2/activities?filter[external_id]=``, ``POST`` (strict schema,
  409 on a duplicate ``external_id``, 422 on an unknown related record) and
  ``PUT /api/v2/activities/{external_id}`` (upsert).
- Auth: the Bearer tokens it issued, static Bearer tokens, Basic users and
  ``X-Api-Key``/other header keys as ``fake.state`` says; 401 with
  ``WWW-Authenticate`` otherwise. Errors are ``{"errors": [{"status", "code",
  "title", "detail"}]}``; unknown routes and methods too.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import phonenumbers
import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from crmroute.connectors._http import make_client
from crmroute.connectors.base import CallActivity, Record, setting_specs
from crmroute.connectors.proprietary import (
    ProprietaryConnector,
    ProprietarySettings,
    fill_json,
    fill_url,
    get_path,
    parse_path,
)
from crmroute.errors import AuthError, ConnectorUnavailable, RateLimited, UnexpectedResponse
from crmroute.routing.engine import LookupKey
from crmroute.schemas import LogOptions
from crmroute.settings import Settings
from tests.connectors.contract import CALLER, ConnectorContract
from tests.connectors.fakecrm import FakeRecord, VendorFake, vendor_fixtures

CLIENT_ID = "crmroute pbx&1"  # characters RFC 6749 2.3.1 makes us form-encode before Basic
CLIENT_SECRET = "s3cret:client+secret/9"
STATIC_TOKEN = "in-house-static-token-5b7d"
API_KEY = "key-77a1c9e0f4"
BASIC_USER, BASIC_PASSWORD = "pbx-service", "b4sic-passw0rd"
SCOPES = {"crm.read", "crm.write"}

COLLECTIONS = {"accounts": "companies", "contacts": "people", "leads": "prospects"}
SCHEMA = {"name", "phone", "mobile", "email", "vip_status", "account_number", "account", "owner", "tags", "score"}
FILTERABLE = {"id", "phone", "mobile", "email", "account_number"}
ACTIVITY_KEYS = {"type", "external_id", "subject", "direction", "status", "phone", "started_at", "ring_seconds",
                 "duration", "agent", "recording_url", "notes", "related"}  # fmt: skip
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

LOG_BODY = json.dumps({
    "type": "call", "external_id": "{call_id}", "subject": "{subject}", "direction": "{direction}",
    "status": "{outcome}", "phone": "{number}", "started_at": "{started_at}", "ring_seconds": "{ring_seconds}",
    "duration": "{talk_seconds}", "agent": "{extension}", "recording_url": "{recording}", "notes": "{description}",
    "related": {"type": "{module}", "id": "{record_id}"},
})  # fmt: skip


# --- the fake ---------------------------------------------------------------------------------------


def error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    title = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
             409: "Conflict", 415: "Unsupported Media Type", 422: "Unprocessable Entity"}.get(status, "Error")  # fmt: skip
    body = {"errors": [{"status": str(status), "code": code, "title": title, "detail": detail}]}
    return JSONResponse(body, status_code=status, headers=headers)


def e164_of(text: Any) -> str:
    try:
        parsed = phonenumbers.parse(str(text or ""), "US")
    except phonenumbers.NumberParseException:
        return ""
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def attributes_of(rec: FakeRecord) -> dict[str, Any]:
    attributes = {"name": rec.name, "phone": rec.phone or None} | rec.fields
    unknown = set(attributes) - SCHEMA
    assert not unknown, f"test bug: the fake CRM has no field {sorted(unknown)}"
    return attributes


def render(rec: FakeRecord, only: list[str] | None) -> dict[str, Any]:
    attributes = attributes_of(rec)
    if only:
        attributes = {k: v for k, v in attributes.items() if k in only}
    return {"id": rec.id, "type": COLLECTIONS[rec.module], "attributes": attributes, "updated_at": rec.modified,
            "links": {"self": f"/api/v2/{COLLECTIONS[rec.module]}/{rec.id}"}}  # fmt: skip


def make_app(fake: VendorFake) -> Starlette:
    fake.auth_paths = ("/oauth/",)

    def next_id(counter: str, start: int) -> int:  # in fake.state: reset for each test
        value = fake.state.get(counter, start)
        fake.state[counter] = value + 1
        return value

    def authorized(request: Request) -> bool:
        if fake.state.get("open"):
            return True
        header = request.headers.get("authorization", "")
        if header.startswith("Bearer "):
            token = header[7:]
            return token in fake.tokens or token in fake.state.get("static_tokens", set())
        if header.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except ValueError:
                return False
            return (user, password) in fake.state.get("basic", set())
        key = request.headers.get(fake.state.get("api_key_header", "x-api-key"))
        return bool(key) and key in fake.state.get("api_keys", set())

    def guard(request: Request, allowed: set[str] | None = None) -> JSONResponse | None:
        if not authorized(request):
            fake.state["unauthorized"] = fake.state.get("unauthorized", 0) + 1
            return error(401, "unauthorized", "missing or invalid credentials",
                         headers={"WWW-Authenticate": 'Bearer realm="crm"'})  # fmt: skip
        if allowed is not None:
            for name in request.query_params:
                if name not in allowed and not (name.startswith("filter[") and "filter[*]" in allowed):
                    return error(400, "unknown_parameter", f"unknown query parameter {name}")
        return None

    def collection(request: Request) -> tuple[str, str] | JSONResponse:
        name = request.path_params["collection"]
        for module, obj in COLLECTIONS.items():
            if obj == name:
                return module, obj
        return error(404, "not_found", f"no collection named {name}")

    def fields_of(raw: Any, obj: str) -> list[str] | JSONResponse:
        if raw is None or raw == "":
            return []
        names = raw.split(",") if isinstance(raw, str) else raw
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return error(400, "invalid_fields", "fields must be a list of field names")
        for name in names:
            if name not in SCHEMA:
                return error(400, "unknown_field", f"field {name} does not exist on {obj}")
        return names

    def page(request: Request, rows: list[FakeRecord], obj: str) -> JSONResponse:
        params = request.query_params
        only = fields_of(params.get("fields"), obj)
        if isinstance(only, JSONResponse):
            return only
        sort = params.get("sort", "id")
        if sort.lstrip("-") not in ("id", "updated_at", "name"):
            return error(400, "invalid_sort", f"cannot sort by {sort}")
        key = {"id": lambda r: r.id, "updated_at": lambda r: r.modified, "name": lambda r: r.name}[sort.lstrip("-")]
        rows = sorted(rows, key=key, reverse=sort.startswith("-"))
        size, number = params.get("page[size]", "20"), params.get("page[number]", "1")
        if not size.isdigit() or not 1 <= int(size) <= 100 or not number.isdigit() or int(number) < 1:
            return error(400, "invalid_page", "page[size] is 1 to 100, page[number] from 1")
        start = (int(number) - 1) * int(size)
        chunk = rows[start:start + int(size)]
        fake.state.setdefault("lookups", []).append((request.url.path, dict(params)))
        return JSONResponse({"data": [render(r, only) for r in chunk],
                             "meta": {"total": len(rows), "page": int(number), "per_page": int(size)}})  # fmt: skip

    def in_module(module: str) -> list[FakeRecord]:
        return [r for r in fake.records if r.module == module]

    async def token(request: Request) -> JSONResponse:
        header = request.headers.get("authorization", "")
        client = ("", "")
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            client = (unquote_plus(user), unquote_plus(password))
        if fake.reject_credentials or client != (CLIENT_ID, CLIENT_SECRET):
            return JSONResponse({"error": "invalid_client", "error_description": "Client authentication failed"},
                                status_code=401, headers={"WWW-Authenticate": 'Basic realm="crm"'})  # fmt: skip
        if request.headers.get("content-type", "").split(";")[0] != "application/x-www-form-urlencoded":
            return JSONResponse({"error": "invalid_request", "error_description": "form body expected"}, status_code=400)
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        fake.state.setdefault("token_forms", []).append(form)
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        scopes = set(form.get("scope", "crm.read").split())
        if not scopes <= SCOPES:
            return JSONResponse({"error": "invalid_scope", "error_description": f"unknown scope {sorted(scopes - SCOPES)[0]}"},
                                status_code=400)  # fmt: skip
        body = {"access_token": fake.issue_token("at"), "token_type": fake.state.get("token_type", "Bearer"),
                "expires_in": fake.state.get("expires_in", 3600), "scope": " ".join(sorted(scopes))}  # fmt: skip
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def search(request: Request) -> JSONResponse:
        if (denied := guard(request, {"phone", "fields", "sort", "page[size]", "page[number]"})) is not None:
            return denied
        found = collection(request)
        if isinstance(found, JSONResponse):
            return found
        module, obj = found
        phone = request.query_params.get("phone", "")
        if not E164.match(phone):
            return error(400, "invalid_phone", "phone must be in E.164 format, like +14155552671")
        rows = [r for r in in_module(module) if phone in (e164_of(r.phone), e164_of(r.fields.get("mobile")))]
        return page(request, rows, obj)

    def filtered(request: Request, module: str, obj: str, filters: dict[str, Any]) -> list[FakeRecord] | JSONResponse:
        rows = in_module(module)
        for name, value in filters.items():
            if name not in FILTERABLE:
                return error(400, "invalid_filter", f"cannot filter {obj} by {name}")
            if name == "id":
                rows = [r for r in rows if r.id == value]
            else:  # the stored text, exactly (no normalisation)
                rows = [r for r in rows if str(attributes_of(r).get(name) or "") == value]
        return rows

    async def listing(request: Request) -> JSONResponse:
        if (denied := guard(request, {"filter[*]", "fields", "sort", "page[size]", "page[number]"})) is not None:
            return denied
        found = collection(request)
        if isinstance(found, JSONResponse):
            return found
        module, obj = found
        filters = {}
        for name, value in request.query_params.items():
            if name.startswith("filter["):
                if not name.endswith("]"):
                    return error(400, "invalid_filter", f"malformed filter {name}")
                filters[name[7:-1]] = value
        rows = filtered(request, module, obj, filters)
        return rows if isinstance(rows, JSONResponse) else page(request, rows, obj)

    async def one(request: Request) -> JSONResponse:
        if (denied := guard(request, {"fields"})) is not None:
            return denied
        found = collection(request)
        if isinstance(found, JSONResponse):
            return found
        module, obj = found
        only = fields_of(request.query_params.get("fields"), obj)
        if isinstance(only, JSONResponse):
            return only
        fake.state.setdefault("lookups", []).append((request.url.path, dict(request.query_params)))
        rec = next((r for r in in_module(module) if r.id == request.path_params["id"]), None)
        if rec is None:
            return error(404, "not_found", f"{obj} {request.path_params['id']} not found")
        return JSONResponse({"data": render(rec, only)})

    async def json_body(request: Request) -> Any:
        if request.headers.get("content-type", "").split(";")[0] != "application/json":
            return error(415, "unsupported_media_type", "send application/json")
        try:
            return json.loads(await request.body())
        except ValueError:
            return error(400, "invalid_json", "the body is not JSON")

    async def query(request: Request) -> JSONResponse:
        if (denied := guard(request, set())) is not None:
            return denied
        found = collection(request)
        if isinstance(found, JSONResponse):
            return found
        module, obj = found
        body = await json_body(request)
        if isinstance(body, JSONResponse):
            return body
        if not isinstance(body, dict) or set(body) - {"filter", "fields", "sort", "page"}:
            return error(400, "invalid_query", "a query has filter, fields, sort and page only")
        fake.state.setdefault("queries", []).append(body)
        filters = dict(body.get("filter") or {})
        if not isinstance(body.get("filter") or {}, dict) or not all(isinstance(v, str) for v in filters.values()):
            return error(400, "invalid_filter", "filter maps field names to text")
        only = fields_of(body.get("fields", []), obj)
        if isinstance(only, JSONResponse):
            return only
        phone = filters.pop("phone", None)
        rows = filtered(request, module, obj, filters)
        if isinstance(rows, JSONResponse):
            return rows
        if phone is not None:
            if not E164.match(phone):
                return error(400, "invalid_phone", "phone must be in E.164 format, like +14155552671")
            rows = [r for r in rows if e164_of(r.phone) == phone]
        return JSONResponse({"data": [render(r, only) for r in rows], "meta": {"total": len(rows)}})

    async def create_record(request: Request) -> JSONResponse:
        if (denied := guard(request, set())) is not None:
            return denied
        found = collection(request)
        if isinstance(found, JSONResponse):
            return found
        module, obj = found
        if module == "accounts":
            return error(405, "method_not_allowed", "companies are created in the back office")
        body = await json_body(request)
        if isinstance(body, JSONResponse):
            return body
        if not isinstance(body, dict) or set(body) - SCHEMA or not isinstance(body.get("name"), str):
            return error(422, "invalid_record", "a record needs a name and known fields only")
        if body.get("phone") is not None and not E164.match(body["phone"]):
            return error(422, "invalid_phone", "phone must be in E.164 format")
        rec = FakeRecord(module=module, id=f"{obj[:3]}_{next_id('record_ids', 9001)}", phone=body.get("phone") or "",
                         name=body["name"], modified="2026-11-26T09:31:00Z",
                         fields={k: v for k, v in body.items() if k not in ("name", "phone")})  # fmt: skip
        fake.records.append(rec)
        fake.created.append({"id": rec.id, "collection": obj, **body})
        return JSONResponse({"data": render(rec, None)}, status_code=201)

    def check_activity(body: Any) -> JSONResponse | None:
        if not isinstance(body, dict):
            return error(400, "invalid_activity", "an activity is a JSON object")
        unknown = sorted(set(body) - ACTIVITY_KEYS)
        if unknown:
            return error(422, "unknown_attribute", f"activities have no attribute {unknown[0]}")
        checks = [
            (body.get("type") == "call", "type must be call"),
            (isinstance(body.get("external_id"), str) and body["external_id"] != "", "external_id is required"),
            (isinstance(body.get("subject"), str) and body["subject"] != "", "subject is required"),
            (body.get("direction") in ("inbound", "outbound"), "direction is inbound or outbound"),
            (body.get("status") in ("answered", "missed", "busy", "failed"), "status is answered/missed/busy/failed"),
            (isinstance(body.get("started_at"), str) and bool(ISO_Z.match(body["started_at"])), "started_at: UTC ISO-8601"),
            (type(body.get("duration")) is int and body["duration"] >= 0, "duration: whole seconds"),
            (type(body.get("ring_seconds", 0)) is int, "ring_seconds: whole seconds"),
            (body.get("phone") in (None, "") or bool(E164.match(str(body["phone"]))), "phone: E.164"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                return error(422, "invalid_activity", message)
        related = body.get("related")
        if related is not None:
            if not isinstance(related, dict) or set(related) != {"type", "id"}:
                return error(422, "invalid_relation", "related is {type, id}")
            module = next((m for m, o in COLLECTIONS.items() if o == related["type"]), None)
            if module is None:
                return error(422, "invalid_relation", f"no collection named {related['type']}")
            if related["id"] is not None and not any(r.id == related["id"] for r in in_module(module)):
                return error(422, "invalid_relation", f"related {related['type']} {related['id']} does not exist")
        return None

    def store_activity(body: dict[str, Any]) -> dict[str, Any]:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        stored = {"id": f"act_{next_id('activity_ids', 7001)}", **body, "created_at": stamp}
        fake.activities.append(stored)
        return stored

    def render_activity(stored: dict[str, Any]) -> dict[str, Any]:
        return {"id": stored["id"], "type": "activity", "updated_at": stored["created_at"],
                "attributes": {k: v for k, v in stored.items() if k not in ("id", "created_at")}}  # fmt: skip

    async def activities(request: Request) -> JSONResponse:
        if request.method == "GET":
            if (denied := guard(request, {"filter[external_id]", "filter[related_id]", "page[size]", "sort"})) is not None:
                return denied
            fake.state.setdefault("activity_lookups", []).append(dict(request.query_params))
            rows = list(fake.activities)
            if fake.state.get("ignore_activity_filter"):  # a CRM that silently ignores the filter
                pass
            elif "filter[external_id]" in request.query_params:
                rows = [a for a in rows if a["external_id"] == request.query_params["filter[external_id]"]]
            return JSONResponse({"data": [render_activity(a) for a in rows], "meta": {"total": len(rows)}})
        if (denied := guard(request, set())) is not None:
            return denied
        body = await json_body(request)
        if isinstance(body, JSONResponse):
            return body
        if (problem := check_activity(body)) is not None:
            return problem
        fake.state.setdefault("idempotency_keys", []).append(request.headers.get("idempotency-key"))
        if any(a["external_id"] == body["external_id"] for a in fake.activities):
            return error(409, "duplicate", f"an activity with external_id {body['external_id']} exists")
        return JSONResponse({"data": render_activity(store_activity(body))}, status_code=201)

    async def upsert_activity(request: Request) -> JSONResponse:
        if (denied := guard(request, set())) is not None:
            return denied
        body = await json_body(request)
        if isinstance(body, JSONResponse):
            return body
        external_id = request.path_params["external_id"]
        if isinstance(body, dict):
            body = {"external_id": external_id} | body
            if body["external_id"] != external_id:
                return error(422, "invalid_activity", "external_id differs from the URL")
        if (problem := check_activity(body)) is not None:
            return problem
        existing = next((a for a in fake.activities if a["external_id"] == external_id), None)
        if existing is not None:
            existing.update(body)
            return JSONResponse({"data": render_activity(existing)})
        return JSONResponse({"data": render_activity(store_activity(body))}, status_code=201)

    async def not_found(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 405:
            return error(405, "method_not_allowed", f"{request.method} is not allowed on {request.url.path}")
        return error(exc.status_code, "not_found", f"no route {request.url.path}")

    return Starlette(routes=[
        Route("/oauth/token", token, methods=["POST"]),
        Route("/api/v2/activities", activities, methods=["GET", "POST"]),
        Route("/api/v2/activities/{external_id}", upsert_activity, methods=["PUT"]),
        Route("/api/v2/{collection}/search", search, methods=["GET"]),
        Route("/api/v2/{collection}/query", query, methods=["POST"]),
        Route("/api/v2/{collection}", listing, methods=["GET"]),
        Route("/api/v2/{collection}", create_record, methods=["POST"]),
        Route("/api/v2/{collection}/{id}", one, methods=["GET"]),
    ], exception_handlers={404: not_found, 405: not_found})  # fmt: skip


fake_server, fake = vendor_fixtures(make_app)



def base_settings(fake: VendorFake) -> dict[str, Any]:
    """Everything but the credentials: the fake CRM's URLs and shapes."""
    api = f"{fake.base_url}/api/v2"
    return {
        "lookup_url": api + "/{module}/search?phone={phone}&fields={field}&sort=-updated_at",
        "key_lookup_url": api + "/{module}?filter[{search_field}]={key}&fields={field}",
        "accounts_module": "companies", "contacts_module": "people", "leads_module": "prospects",
        "records_path": "data", "fields_path": "attributes", "modified_path": "updated_at", "total_path": "meta.total",
        "error_path": "errors[0].detail", "record_url": "https://crm.example.com/app/{module}/{id}",
        "log_url": api + "/activities", "log_lookup_url": api + "/activities?filter[external_id]={call_id}",
        "log_body": LOG_BODY, "create_url": api + "/{module}",
    }  # fmt: skip


# --- the contract -------------------------------------------------------------------------------------


class TestProprietary(ConnectorContract):
    OWNER_FIELDS = {"owner": {"id": "usr_olivia", "name": "Olivia"}}  # owner_path says where (no standard owner)
    OWNER_ID = "usr_olivia"
    kind = "proprietary"
    MODULE = "contacts"
    FIELD = "vip_status"  # a custom attribute of the in-house CRM
    NESTED_FIELD = "account.name"  # an embedded object inside the attributes
    NESTED_FIELDS = {"account": {"name": "Acme Corp", "tier": "A"}}
    NESTED_VALUE = "Acme Corp"
    IDS = ("peo_1001", "peo_1002", "peo_1003")
    KEY_FIELD = "account_number"
    REQUESTS_PER_CALL = (1, 1)
    MOBILE_FIELDS = {"accounts": "mobile", "contacts": "mobile", "leads": "mobile"}  # the in-house CRM's own schema

    def settings(self, fake: VendorFake) -> dict[str, Any]:
        return base_settings(fake) | {"auth": "oauth2", "token_url": f"{fake.base_url}/oauth/token",
                                      "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                                      "scope": "crm.read crm.write", "owner_path": "owner"}  # fmt: skip


# --- helpers -----------------------------------------------------------------------------------------

D = ConnectorContract.deadline
KEY = LookupKey(CALLER, "caller_id")


def person(index: int = 0, **changes: Any) -> FakeRecord:
    return TestProprietary().record(index, **changes)


@pytest.fixture
async def client(fake):
    http = make_client(Settings(ca_bundle=fake.ca_path))
    yield http
    await http.aclose()


def build(fake: VendorFake, client, *, username: str = "", password: str = "", **overrides: Any) -> ProprietaryConnector:
    values = TestProprietary().settings(fake) | overrides
    return ProprietaryConnector(ProprietarySettings.model_validate(values), client, region="US", username=username,
                                password=password)  # fmt: skip


def static(fake: VendorFake, client, auth: str, **overrides: Any) -> ProprietaryConnector:
    values = base_settings(fake) | {"auth": auth} | overrides
    return ProprietaryConnector(ProprietarySettings.model_validate(values), client, region="US")


def lookups(fake: VendorFake) -> list[tuple[str, dict[str, str]]]:
    return fake.state.get("lookups", [])


def call(record: Record | None = None, **changes: Any) -> CallActivity:
    base = CallActivity(
        call_id="1795657573.7", direction="inbound", outcome="answered", external_number=CALLER,
        started_at=datetime(2026, 11, 26, 9, 30, 5, tzinfo=timezone.utc), ring_seconds=6, talk_seconds=93,
        extension="201", recording="https://pbx.example.com/rec/7.wav", subject="Inbound call",
        description="Answered by 201", record=record,
    )  # fmt: skip
    for name, value in changes.items():
        setattr(base, name, value)
    return base


# --- settings ------------------------------------------------------------------------------------------


def test_settings_describe_themselves_and_name_the_secrets():
    specs = {s.name: s for s in setting_specs(ProprietarySettings)}
    assert {n for n, s in specs.items() if s.secret} == {"password", "token", "client_secret"}
    assert specs["lookup_url"].required and specs["lookup_url"].type == "url"
    assert specs["auth"].choices == ("none", "basic", "bearer", "api_key", "oauth2")
    assert specs["method"].choices == ("GET", "POST") and specs["log_method"].choices == ("POST", "PUT")
    assert all(s.help for s in specs.values())


@pytest.mark.parametrize(("changes", "message"), [
    ({"lookup_url": "http://crm.example.com/api?phone={phone}"}, "must start with https://"),
    ({"lookup_url": "https://{module}.example.com/api?phone={phone}"}, "not in the host"),
    ({"lookup_url": "https://crm.example.com/api?phone={caller}"}, "unknown placeholder {caller}"),
    ({"lookup_url": "https://crm.example.com/api?q={phone"}, "a lone '{'"),
    ({"lookup_url": "https://crm.example.com/api?q=a b"}, "spaces"),
    ({"log_url": "https://crm.example.com/calls?phone={key}"}, "unknown placeholder {key}"),
    ({"log_body": '{"id": {call_id}}'}, "is not valid JSON"),
    ({"log_body": '{"id": "{caller}"}'}, "unknown placeholder {caller}"),
    ({"create_body": '{"name": "{call_id}"}'}, "unknown placeholder {call_id}"),
    ({"records_path": "data..items"}, "cannot read the path"),
    ({"fields_path": "attributes["}, "cannot read the path"),
    ({"phone_forms": "e164,intl"}, "not intl"),
    ({"auth": "basic"}, "missing: username, password"),
    ({"auth": "bearer"}, "missing: token"),
    ({"auth": "api_key", "token": "k", "api_key_header": "X Api Key"}, "must be a header name"),
    ({"auth": "oauth2", "client_id": "x"}, "missing: token_url, client_secret"),
    ({"auth": "none", "log_url": "https://crm.example.com/calls"}, "needs log_lookup_url"),
    ({"auth": "none", "log_url": "https://crm.example.com/calls", "log_method": "PUT"}, "needs {call_id} in log_url"),
    ({"auth": "basic", "username": "a:b", "password": "p"}, "may not contain ':'"),
])  # fmt: skip
def test_settings_refuse_what_cannot_work(changes, message):
    values = {"lookup_url": "https://crm.example.com/api/{module}?phone={phone}", "auth": "none"} | changes
    with pytest.raises(ValidationError, match=re.escape(message)):
        ProprietarySettings.model_validate(values)


def test_phone_forms_are_normalised_and_templates_allow_literal_braces():
    settings = ProprietarySettings.model_validate({
        "lookup_url": "https://crm.example.com/api/{module}?q={{literal}}&phone={phone}", "auth": "none",
        "phone_forms": " E164 ; national,e164 "})  # fmt: skip
    assert settings.phone_forms == "e164,national"
    assert fill_url(settings.lookup_url, {"module": "people", "phone": "+1"}) == \
        "https://crm.example.com/api/people?q={literal}&phone=%2B1"  # fmt: skip


# --- templates and paths (pure) -------------------------------------------------------------------------


def test_url_values_are_percent_encoded_like_rfc_6570_simple_expansion():
    url = fill_url("https://h/api/{module}/{key}?phone={phone}&q={key}",
                   {"module": "people", "key": "a&b=c/d?e#f g", "phone": "+14155552671"})  # fmt: skip
    assert url == "https://h/api/people/a%26b%3Dc%2Fd%3Fe%23f%20g?phone=%2B14155552671&q=a%26b%3Dc%2Fd%3Fe%23f%20g"
    assert fill_url("https://h/api/{key}", {"key": ".."}) == "https://h/api/%2E%2E"  # never a dot segment
    assert fill_url("https://h/api/{key}", {"key": "ü~-._"}) == "https://h/api/%C3%BC~-._"


def test_json_values_cannot_break_out_of_their_strings():
    hostile = '", "admin": true, "x": "\\\n\u0000'
    body = fill_json('{"subject": "Call: {subject}", "n": "{talk_seconds}", "r": "{record_id}", "f": "{field}"}',
                     {"subject": hostile, "talk_seconds": 93}, {"talk_seconds": 93, "record_id": None, "field": ["a"]})  # fmt: skip
    assert body == {"subject": f"Call: {hostile}", "n": 93, "r": None, "f": ["a"]}
    assert set(json.loads(json.dumps(body))) == {"subject", "n", "r", "f"}


@pytest.mark.parametrize(("path", "value"), [
    ("data[0].attributes.status", "GOLD"),
    ("$.data[0].attributes.status", "GOLD"),
    ("data[-1].id", "b"),
    ("data[5].id", None),  # past the end
    ("data[0].attributes.missing.deeper", None),
    ("data.attributes", None),  # a name on a list
    ("data[0].attributes[\"odd.key\"]", "dotted"),
    ("data[0].attributes['odd.key']", "dotted"),
    ("DATA[0].Attributes.STATUS", "GOLD"),  # case-insensitive fallback
    ("data[0].attributes.tags[1]", "vip"),
    ("meta", {"total": 2}),
    ("", {"data": "..."}),
])  # fmt: skip
def test_paths(path, value):
    data = {"data": [{"id": "a", "attributes": {"status": "GOLD", "odd.key": "dotted", "tags": ["new", "vip"]}},
                     {"id": "b"}], "meta": {"total": 2}}  # fmt: skip
    found = get_path(data, path)
    assert found == (data if value == {"data": "..."} else value)


def test_path_grammar():
    assert parse_path('a["x.y"][2].b') == ("a", "x.y", 2, "b")
    assert parse_path("$[0]") == (0,)
    for bad in ("a..b", "a.", "a[x]", "a[0]b", "[", "a]"):
        with pytest.raises(ValueError):
            parse_path(bad)


# --- auth ----------------------------------------------------------------------------------------------------


async def test_client_credentials_follow_rfc_6749(fake, client):
    connector = build(fake, client)
    await connector.authenticate(deadline=D())
    request = next(r for r in fake.requests if r.path == "/oauth/token")
    user, _, password = base64.b64decode(request.headers["authorization"][6:]).decode().partition(":")
    assert (user, password) == ("crmroute+pbx%261", "s3cret%3Aclient%2Bsecret%2F9")  # form-encoded, then Basic
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert dict(parse_qsl(request.body.decode())) == {"grant_type": "client_credentials", "scope": "crm.read crm.write"}


async def test_the_token_is_refreshed_before_it_expires(fake, client):
    fake.state["expires_in"] = 2  # a 2 s token is stale after 1 s (half its life)
    connector = build(fake, client)
    fake.records = [person()]
    await connector.fetch(KEY, "contacts", "vip_status", deadline=D())
    await asyncio.sleep(1.1)
    await connector.fetch(KEY, "contacts", "vip_status", deadline=D())
    assert fake.token_requests == 2 and fake.state.get("unauthorized", 0) == 0


async def test_token_endpoint_errors_say_what_is_wrong(fake, client):
    with pytest.raises(AuthError, match="token rejected: client id or secret rejected .invalid_client: Client "
                                        "authentication failed"):  # fmt: skip
        await build(fake, client, client_secret="wrong").authenticate(deadline=D())
    with pytest.raises(AuthError, match="refused the request .invalid_scope: unknown scope crm.admin"):
        await build(fake, client, scope="crm.admin").authenticate(deadline=D())
    fake.state["token_type"] = "MAC"
    with pytest.raises(UnexpectedResponse, match="issued a MAC token"):
        await build(fake, client).authenticate(deadline=D())


async def test_no_auth(fake, client):
    fake.state["open"] = True
    fake.records = [person()]
    connector = static(fake, client, "none")
    assert await connector.fetch(KEY, "contacts", "vip_status", deadline=D()) == "GOLD"
    assert "authorization" not in fake.requests[0].headers and fake.token_requests == 0


async def test_basic_auth_and_a_rules_credentials(fake, client):
    fake.state["basic"] = {(BASIC_USER, BASIC_PASSWORD), ("rule-user", "rule-pass")}
    fake.records = [person()]
    connector = static(fake, client, "basic", username=BASIC_USER, password=BASIC_PASSWORD)
    assert await connector.fetch(KEY, "contacts", "vip_status", deadline=D()) == "GOLD"
    expected = base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()
    assert fake.requests[-1].headers["authorization"] == f"Basic {expected}"
    rule = ProprietaryConnector(connector.settings, client, region="US", username="rule-user", password="rule-pass")
    assert await rule.fetch(KEY, "contacts", "vip_status", deadline=D()) == "GOLD"
    assert base64.b64decode(fake.requests[-1].headers["authorization"][6:]) == b"rule-user:rule-pass"


async def test_bearer_token_and_a_rules_password(fake, client):
    fake.state["static_tokens"] = {STATIC_TOKEN, "rule-token"}
    fake.records = [person()]
    connector = static(fake, client, "bearer", token=STATIC_TOKEN)
    assert await connector.fetch(KEY, "contacts", "vip_status", deadline=D()) == "GOLD"
    assert fake.requests[-1].headers["authorization"] == f"Bearer {STATIC_TOKEN}"
    rule = ProprietaryConnector(connector.settings, client, region="US", username="x", password="rule-token")
    assert await rule.fetch(KEY, "contacts", "vip_status", deadline=D()) == "GOLD"
    assert fake.requests[-1].headers["authorization"] == "Bearer rule-token"


async def test_api_key_in_its_own_header(fake, client):
    fake.state |= {"api_keys": {API_KEY}, "api_key_header": "x-crm-key"}
    fake.records = [person()]
    connector = static(fake, client, "api_key", token=API_KEY, api_key_header="X-CRM-Key")
    assert await connector.fetch(KEY, "contacts", "vip_status", deadline=D()) == "GOLD"
    assert fake.requests[-1].headers["x-crm-key"] == API_KEY and "authorization" not in fake.requests[-1].headers


async def test_a_refused_static_credential_is_not_retried(fake, client):
    fake.state["static_tokens"] = {"another"}
    connector = static(fake, client, "bearer", token=STATIC_TOKEN)
    with pytest.raises(AuthError, match="credentials rejected .find people.: missing or invalid credentials") as caught:
        await connector.fetch(KEY, "contacts", "vip_status", deadline=D())
    assert len(fake.requests) == 1 and STATIC_TOKEN not in str(caught.value)


# --- phone forms ---------------------------------------------------------------------------------------------


async def test_the_default_sends_e164_encoded_once(fake, client):
    fake.records = [person(phone="+1 415-555-2671")]
    assert await build(fake, client).fetch(LookupKey("(415) 555-2671", "caller_id"), "contacts", "vip_status",
                                           deadline=D()) == "GOLD"  # fmt: skip
    [request] = fake.api_requests()
    assert request.path == "/api/v2/people/search"
    assert request.query == "phone=%2B14155552671&fields=vip_status&sort=-updated_at"
    assert request.params == {"phone": "+14155552671", "fields": "vip_status", "sort": "-updated_at"}


@pytest.mark.parametrize(("form", "stored"), [("national", "(415) 555-2671"), ("national_digits", "4155552671"),
                                              ("digits", "14155552671"), ("e164", "+14155552671")])  # fmt: skip
async def test_each_phone_form_against_a_crm_that_compares_text(fake, client, form, stored):
    fake.records = [person(phone=stored)]
    connector = build(fake, client, phone_forms=form,
                      lookup_url=f"{fake.base_url}/api/v2/{{module}}?filter[{{search_field}}]={{phone}}&fields={{field}}")  # fmt: skip
    assert await connector.fetch(KEY, "contacts", "vip_status", deadline=D()) == "GOLD"
    assert fake.api_requests()[-1].params["filter[phone]"] == stored


async def test_forms_are_tried_in_order_until_one_finds_the_record(fake, client):
    fake.records = [person(phone="415.555.2671")]  # stored as users type it: neither form matches
    connector = build(fake, client, phone_forms="e164,national,national_digits",
                      lookup_url=f"{fake.base_url}/api/v2/{{module}}?filter[phone]={{phone}}")  # fmt: skip
    assert await connector.find_record(KEY, "contacts", deadline=D()) is None
    sent = [r.params["filter[phone]"] for r in fake.api_requests()]
    assert sent == ["+14155552671", "(415) 555-2671", "4155552671"]
    fake.records = [person(phone="(415) 555-2671")]
    fake.requests.clear()
    assert (await connector.find_record(KEY, "contacts", deadline=D())).id == "peo_1001"
    assert len(fake.api_requests()) == 2  # stopped at the form that found it


async def test_a_number_that_does_not_parse_is_sent_as_digits(fake, client):
    fake.state["open"] = True
    connector = static(fake, client, "none", lookup_url=f"{fake.base_url}/api/v2/{{module}}?filter[phone]={{phone}}")
    fake.records = [person(phone="201")]
    record = await connector.find_record(LookupKey("201", "caller_id"), "contacts", deadline=D())
    assert record is not None and fake.api_requests()[-1].params == {"filter[phone]": "201"}
    assert await connector.find_record(LookupKey("anonymous", "caller_id"), "contacts", deadline=D()) is None
    assert len(fake.api_requests()) == 1  # nothing to send, nothing sent


# --- lookups: typed keys, POST, modules, paging ------------------------------------------------------------------


async def test_a_typed_key_by_field_and_by_record_id(fake, client):
    fake.records = [person(phone="")]
    by_field = build(fake, client, key_field="account_number")
    assert await by_field.fetch(LookupKey("12345", "dtmf"), "contacts", "vip_status", deadline=D()) == "GOLD"
    assert fake.api_requests()[-1].params == {"filter[account_number]": "12345", "fields": "vip_status"}
    by_id = build(fake, client, key_lookup_url=f"{fake.base_url}/api/v2/{{module}}/{{key}}?fields={{field}}")
    assert await by_id.fetch(LookupKey("peo_1001", "dtmf"), "contacts", "vip_status", deadline=D()) == "GOLD"
    assert fake.api_requests()[-1].path == "/api/v2/people/peo_1001"
    assert await by_id.find_record(LookupKey("peo_9", "dtmf"), "contacts", deadline=D()) is None  # a 404


async def test_a_hostile_key_stays_one_path_segment_and_one_value(fake, client):
    fake.records = [person(phone="")]
    by_id = build(fake, client, key_lookup_url=f"{fake.base_url}/api/v2/{{module}}/{{key}}?fields={{field}}")
    assert await by_id.find_record(LookupKey("../companies/x?fields=name&a=1", "dtmf"), "contacts",
                                   deadline=D()) is None  # fmt: skip
    [request] = fake.api_requests()
    assert request.path == "/api/v2/people/../companies/x?fields=name&a=1"  # decoded by the server: one segment
    assert request.query == "fields="
    by_field = build(fake, client, key_field="account_number")
    assert await by_field.find_record(LookupKey("12345&filter[id]=peo_1001", "dtmf"), "contacts", deadline=D()) is None
    assert fake.api_requests()[-1].params == {"filter[account_number]": "12345&filter[id]=peo_1001", "fields": ""}


async def test_post_lookups_send_the_json_body_template(fake, client):
    fake.records = [person()]
    body = '{"filter": {"{search_field}": "{key}"}, "fields": "{field}", "page": {"size": 10}}'
    connector = build(fake, client, method="POST", lookup_url=f"{fake.base_url}/api/v2/{{module}}/query",
                      lookup_body=body, key_field="account_number", key_lookup_url="")  # fmt: skip
    assert await connector.fetch(KEY, "contacts", "account.name", deadline=D()) == "Acme Corp"
    assert await connector.fetch(LookupKey("12345", "dtmf"), "contacts", "vip_status", deadline=D()) == "GOLD"
    first, second = fake.state["queries"]
    assert first == {"filter": {"phone": "+14155552671"}, "fields": ["account"], "page": {"size": 10}}
    assert second == {"filter": {"account_number": "12345"}, "fields": ["vip_status"], "page": {"size": 10}}
    request = fake.api_requests()[-1]
    assert request.method == "POST" and request.headers["content-type"] == "application/json"


async def test_the_crms_error_for_an_unknown_field_is_shown(fake, client):
    fake.records = [person()]
    with pytest.raises(UnexpectedResponse, match="refused find people: field vip_statuz does not exist on people"):
        await build(fake, client).fetch(KEY, "contacts", "vip_statuz", deadline=D())


async def test_each_module_maps_to_the_crms_collection(fake, client):
    fake.records = [person(0, module="accounts", id="com_1", fields={"vip_status": "KEY ACCOUNT"}),
                    person(1, module="leads", id="pro_1", fields={"vip_status": "HOT"}), person(2)]  # fmt: skip
    connector = build(fake, client)
    company = await connector.find_record(KEY, "accounts", fields=["vip_status"], deadline=D())
    lead = await connector.find_record(KEY, "leads", fields=["vip_status"], deadline=D())
    assert (company.module, company.id) == ("companies", "com_1")
    assert (lead.module, lead.id) == ("prospects", "pro_1")
    assert [p for p, _ in lookups(fake)] == ["/api/v2/companies/search", "/api/v2/prospects/search"]
    assert await connector.read_field(lead, "vip_status", deadline=D()) == "HOT"
    without = build(fake, client, leads_module="")
    with pytest.raises(UnexpectedResponse, match="has no leads module"):
        await without.find_record(KEY, "leads", deadline=D())


async def test_paging_total_counts_every_match(fake, client):
    fake.records = [person(0, id=f"peo_{2000 + i}", modified=f"2026-01-{i + 1:02d}T00:00:00Z") for i in range(25)]
    record = await build(fake, client).find_record(KEY, "contacts", deadline=D())
    assert record.matches == 25  # meta.total, though the page held 20
    assert record.id == "peo_2024"  # the CRM sorted -updated_at: the newest is on the first page
    assert record.describe() == "people peo_2024 (picked from 25 matches)"


async def test_record_url_and_test_report(fake, client):
    fake.records = [person()]
    report = await build(fake, client).test(CALLER, module="contacts", fields=["vip_status", "account.name"])
    assert report.ok, report.as_dict()
    assert report.record["url"] == "https://crm.example.com/app/people/peo_1001"
    assert report.record["fields"]["vip_status"] == "GOLD" and report.record["fields"]["account.name"] == "Acme Corp"


# --- answers: paths --------------------------------------------------------------------------------------------


async def answer(fake, client, body: Any, field: str = "status", **overrides: Any) -> Any:
    """What the connector makes of ``body`` served as the lookup answer."""
    fake.state["open"] = True
    connector = static(fake, client, "none", lookup_url=f"{fake.base_url}/api/v2/{{module}}/search?phone={{phone}}",
                       **{"records_path": "", "fields_path": "", "total_path": ""} | overrides)  # fmt: skip
    fake.fail_next(200, body)
    record = await connector.find_record(KEY, "contacts", deadline=D())
    if record is None:
        return None
    return record, await connector.read_field(record, field, deadline=D())


async def test_records_path_variants(fake, client):
    row = {"id": 7, "status": "GOLD"}
    assert (await answer(fake, client, [row]))[1] == "GOLD"  # the whole answer is the list
    assert (await answer(fake, client, row))[1] == "GOLD"  # ... or the one record
    assert (await answer(fake, client, {"result": {"items": [row]}}, records_path="result.items"))[1] == "GOLD"
    assert (await answer(fake, client, {"data": row}, records_path="data"))[0].id == "7"
    assert await answer(fake, client, {"result": {}}, records_path="result.items") is None  # missing: no record
    assert await answer(fake, client, {"data": None}, records_path="data") is None
    assert await answer(fake, client, {"data": []}, records_path="data") is None
    assert await answer(fake, client, b"", records_path="data") is None
    assert await answer(fake, client, None) is None  # JSON null


async def test_records_path_to_something_else_is_explained(fake, client):
    with pytest.raises(UnexpectedResponse, match="records_path 'data' is a string, not a list of records"):
        await answer(fake, client, {"data": "GOLD"}, records_path="data")
    with pytest.raises(UnexpectedResponse, match="leads to a list of numbers, not of records"):
        await answer(fake, client, {"data": [1, 2]}, records_path="data")
    with pytest.raises(UnexpectedResponse, match="a record without an id at id_path 'id'"):
        await answer(fake, client, [{"uuid": "x"}])
    assert (await answer(fake, client, [{"meta": {"uuid": "u-1"}}], id_path="meta.uuid"))[0].id == "u-1"


async def test_fields_nested_in_arrays_and_odd_names(fake, client):
    row = {"id": "1", "attributes": {"phones": [{"number": "+1"}, {"number": "+2"}], "tags": ["a", "b"],
                                     "cf.tier": "T1", "score": 50.0, "owner": {"name": "Ann"}, "vip": True},
           "meta": {"owner": "Bob"}}  # fmt: skip
    kwargs = {"fields_path": "attributes"}
    assert (await answer(fake, client, [row], "phones[1].number", **kwargs))[1] == "+2"
    assert (await answer(fake, client, [row], "phones[-1].number", **kwargs))[1] == "+2"
    assert (await answer(fake, client, [row], "tags", **kwargs))[1] == '["a","b"]'
    assert (await answer(fake, client, [row], '["cf.tier"]', **kwargs))[1] == "T1"
    assert (await answer(fake, client, [row], "score", **kwargs))[1] == "50"
    assert (await answer(fake, client, [row], "vip", **kwargs))[1] == "true"
    assert (await answer(fake, client, [row], "meta.owner", **kwargs))[1] == "Bob"  # not under attributes: the record
    assert (await answer(fake, client, [row], "$.id", **kwargs))[1] == "1"
    null_type = {"id": "1", "type": "people", "attributes": {"type": None}}
    assert (await answer(fake, client, [null_type], "type", **kwargs))[1] is None  # null there: not the envelope's
    assert (await answer(fake, client, [null_type], "$.type", **kwargs))[1] == "people"
    assert (await answer(fake, client, [row], "owner.missing", **kwargs))[1] is None
    assert (await answer(fake, client, [row], "phones[9].number", **kwargs))[1] is None
    with pytest.raises(UnexpectedResponse, match="the field name 'phones..number' is not a path"):
        await answer(fake, client, [row], "phones..number", **kwargs)


async def test_pick_reads_modified_times_in_any_format(fake, client):
    rows = [{"id": "a", "m": 1714557600000}, {"id": "b", "m": "2026-01-01T00:00:00+02:00"}, {"id": "c", "m": None}]
    record, _ = await answer(fake, client, rows, modified_path="m")
    assert record.id == "b" and record.matches == 3
    record, _ = await answer(fake, client, rows, modified_path="")  # no modified time: the first listed
    assert record.id == "a"


async def test_errors_reported_in_a_200_answer(fake, client):
    with pytest.raises(UnexpectedResponse, match="refused find people: Search is disabled"):
        await answer(fake, client, {"ok": False, "message": "Search is disabled"}, success_path="ok")
    assert (await answer(fake, client, {"ok": "true", "items": [{"id": 1, "status": "X"}]}, success_path="ok",
                         records_path="items"))[1] == "X"  # fmt: skip
    assert (await answer(fake, client, {"items": [{"id": 1, "status": "Y"}]}, success_path="ok",
                         records_path="items"))[1] == "Y"  # no flag: not a failure  # fmt: skip
    with pytest.raises(UnexpectedResponse, match="refused find people: ok is 0"):
        await answer(fake, client, {"ok": 0, "items": []}, success_path="ok", records_path="items")


# --- faults and limits ---------------------------------------------------------------------------------------------


async def test_a_503_with_retry_after_is_waited_out_when_it_fits(fake, client):
    connector = build(fake, client)
    fake.records = [person()]
    await connector.authenticate(deadline=D())
    fake.fail_next(503, {"errors": [{"status": "503", "detail": "maintenance"}]}, headers={"Retry-After": "0"})
    assert await connector.fetch(KEY, "contacts", "vip_status", deadline=D()) == "GOLD"
    fake.fail_next(503, {"errors": [{"status": "503", "detail": "maintenance"}]}, headers={"Retry-After": "60"})
    with pytest.raises(RateLimited):
        await connector.fetch(KEY, "contacts", "vip_status", deadline=D(1))
    fake.fail_next(502, {"errors": [{"status": "502", "detail": "bad gateway"}]}, times=2)
    with pytest.raises(ConnectorUnavailable, match="HTTP 502 to find people: bad gateway"):
        await connector.fetch(KEY, "contacts", "vip_status", deadline=D())


async def test_wrong_url_or_method_is_explained(fake, client):
    connector = build(fake, client, lookup_url=f"{fake.base_url}/api/v1/{{module}}/search?phone={{phone}}")
    fake.records = [person()]
    assert await connector.find_record(KEY, "contacts", deadline=D()) is None  # a 404 is "no record" (SPEC 5)
    connector = build(fake, client, log_url=f"{fake.base_url}/api/v2/people/search?id={{call_id}}", log_method="PUT")
    with pytest.raises(UnexpectedResponse, match="HTTP 405 to log call.*check the URL template and method"):
        await connector.log_call(call(None), LogOptions(), deadline=D())


# --- call log ------------------------------------------------------------------------------------------------------


async def test_the_logged_call_is_the_body_template_filled_in(fake, client):
    fake.records = [person()]
    connector = build(fake, client)
    record = await connector.find_record(KEY, "contacts", deadline=D())
    activity_id = await connector.log_call(call(record), LogOptions(inbound_answered=True), deadline=D())
    [stored] = fake.activities
    assert activity_id == stored["id"] == "act_7001"
    assert {k: v for k, v in stored.items() if k not in ("id", "created_at")} == {
        "type": "call", "external_id": "1795657573.7", "subject": "Inbound call", "direction": "inbound",
        "status": "answered", "phone": "+14155552671", "started_at": "2026-11-26T09:30:05Z", "ring_seconds": 6,
        "duration": 93, "agent": "201", "recording_url": "https://pbx.example.com/rec/7.wav",
        "notes": "Answered by 201", "related": {"type": "people", "id": "peo_1001"},
    }  # fmt: skip
    assert fake.state["activity_lookups"] == [{"filter[external_id]": "1795657573.7"}]
    assert fake.state["idempotency_keys"] == ["1795657573.7"]


async def test_text_with_quotes_and_newlines_goes_into_the_body_safely(fake, client):
    fake.records = [person()]
    connector = build(fake, client)
    nasty = 'He said "hi"\\ then\n", "type": "meeting'
    await connector.log_call(call(None, subject=nasty, description="ünïcode ✓"), LogOptions(), deadline=D())
    [stored] = fake.activities
    assert stored["subject"] == nasty and stored["type"] == "call" and stored["notes"] == "ünïcode ✓"


async def test_an_unknown_caller_is_logged_unlinked_unless_creation_is_asked(fake, client):
    connector = build(fake, client)
    first = await connector.log_call(call(None, subject=""), LogOptions(), deadline=D())
    [unlinked] = fake.activities
    assert unlinked["related"] == {"type": "people", "id": None} and fake.created == []
    assert unlinked["subject"] == "Inbound call from +14155552671"
    assert await connector.log_call(call(None), LogOptions(), deadline=D()) == first  # idempotent
    await connector.log_call(call(None, call_id="new"), LogOptions(create_unknown=True), deadline=D())
    [created] = fake.created
    assert created == {"id": "peo_9001", "collection": "people", "name": "+14155552671", "phone": "+14155552671"}
    assert fake.activities[-1]["related"] == {"type": "people", "id": "peo_9001"}


async def test_without_create_url_an_unknown_caller_stays_unlinked(fake, client, caplog):
    connector = build(fake, client, create_url="")
    await connector.log_call(call(None), LogOptions(create_unknown=True), deadline=D())
    assert fake.created == [] and fake.activities[0]["related"]["id"] is None
    assert "no create_url is set" in caplog.text


async def test_a_conflict_on_create_finds_the_existing_activity(fake, client):
    fake.records = [person()]
    connector = build(fake, client)
    record = await connector.find_record(KEY, "contacts", deadline=D())
    first = await connector.log_call(call(record), LogOptions(), deadline=D())
    # another logger created it between our lookup and our create: the lookup misses it once
    fake.fail_next(200, {"data": [], "meta": {"total": 0}})
    assert await connector.log_call(call(record), LogOptions(), deadline=D()) == first
    assert len(fake.activities) == 1 and len(fake.state["activity_lookups"]) == 2  # first call; the retry after 409
    assert [r.method for r in fake.api_requests() if r.path == "/api/v2/activities"][-2:] == ["POST", "GET"]


async def test_a_crm_that_ignores_the_filter_cannot_fake_idempotency(fake, client):
    fake.records = [person()]
    fake.state["ignore_activity_filter"] = True
    connector = build(fake, client)
    first = await connector.log_call(call(None, call_id="1795657573.1"), LogOptions(), deadline=D())
    second = await connector.log_call(call(None, call_id="1795657573.12"), LogOptions(), deadline=D())
    assert first != second and len(fake.activities) == 2


async def test_put_upserts_by_call_id(fake, client):
    fake.records = [person()]
    connector = build(fake, client, log_method="PUT", log_lookup_url="",
                      log_url=f"{fake.base_url}/api/v2/activities/{{call_id}}")  # fmt: skip
    first = await connector.log_call(call(None), LogOptions(), deadline=D())
    again = await connector.log_call(call(None, talk_seconds=120), LogOptions(), deadline=D())
    assert first == again == "act_7001" and len(fake.activities) == 1 and fake.activities[0]["duration"] == 120
    assert [r.method for r in fake.api_requests() if "activities" in r.path] == ["PUT", "PUT"]
    assert fake.api_requests()[-1].path == "/api/v2/activities/1795657573.7"


async def test_a_rejected_activity_names_the_problem(fake, client):
    fake.records = [person()]
    bad = LOG_BODY.replace('"{talk_seconds}"', '"{talk_seconds} s"')
    with pytest.raises(UnexpectedResponse, match="refused log call: duration: whole seconds"):
        await build(fake, client, log_body=bad).log_call(call(None), LogOptions(), deadline=D())


async def test_log_call_needs_a_log_url(fake, client):
    with pytest.raises(UnexpectedResponse, match="no log_url is set"):
        await build(fake, client, log_url="", log_lookup_url="").log_call(call(None), LogOptions(), deadline=D())


async def test_envelope_names_are_read_but_not_asked_for(fake, client):
    fake.records = [person()]
    connector = build(fake, client)
    assert await connector.fetch(KEY, "contacts", "$.updated_at", deadline=D()) == "2026-03-01T10:00:00Z"
    assert fake.api_requests()[-1].params["fields"] == ""  # the CRM would refuse "updated_at" as a field
