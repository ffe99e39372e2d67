"""Proprietary CRM I against a strict fake session-token CRM ("webservice", form-encoded, errors in 200s).

There is no vendor (reference section 12): the fake is the older style of in-house
PHP back end the kind exists for, designed for these tests:

- ``POST /webservice/login``: form fields ``user``, ``pass`` and ``client``
  (required); answers ``{"status": "ok", "data": {"session_id", "ttl"}}``, or
  401 ``{"status": "error", "error": {"code": "AUTH_FAILED", "message"}}`` (a
  200 with the same body when ``fake.state["login_errors_as_200"]``).
- ``/webservice/api`` (GET with the fields in the query, or POST with a form
  body, ``application/x-www-form-urlencoded`` only): the session in the
  ``X-Session-Id`` header or the ``sid`` query parameter; an unknown or expired
  session is 401 ``INVALID_SESSION`` (or a 200 carrying it, when
  ``fake.state["session_errors_as_200"]``). ``op=search`` with ``module``, exactly
  one criterion (``phone``/``mobile``: digits only, compared with the stored
  number's digits; ``account_no``; ``id``; ``call_id`` for Calls) and optional
  ``fields``; ``op=create`` for Calls (strict fields, 409 on a duplicate
  ``call_id``, the parent must exist) and Contacts/Leads. Records are flat, with
  ``modifiedtime`` as ``YYYY-MM-DD HH:MM:SS``; answers are
  ``{"status": "ok", "data": {"count", "records"}}``. Unknown parameters, fields
  and operations are refused with ``INVALID_PARAM``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl

import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from crmroute.connectors._http import make_client
from crmroute.connectors._phone import digits_of
from crmroute.connectors.base import CallActivity, Record, setting_specs
from crmroute.connectors.proprietary1 import ProprietaryOneConnector, ProprietaryOneSettings
from crmroute.errors import AuthError, UnexpectedResponse
from crmroute.routing.engine import LookupKey
from crmroute.schemas import LogOptions
from crmroute.settings import Settings
from tests.connectors.contract import CALLER, ConnectorContract
from tests.connectors.fakecrm import FakeRecord, VendorFake, vendor_fixtures

USER, PASSWORD = "pbx", "s3ss10n-passw0rd"
RULE_USER, RULE_PASSWORD = "sales-desk", "r&le=pass+word%"  # characters a form must encode

MODULES = {"accounts": "Accounts", "contacts": "Contacts", "leads": "Leads"}
SCHEMA = {"firstname", "lastname", "phone", "mobile", "email", "cf_status", "account_no", "account", "assigned_user"}
SEARCHABLE = {"phone", "mobile", "account_no", "id"}
CALL_FIELDS = {"call_id", "parent_module", "parent_id", "direction", "status", "number", "start", "ring", "duration",
               "agent", "subject", "notes", "recording"}  # fmt: skip
RECORD_FIELDS = {"firstname", "lastname", "phone", "mobile", "email"}
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

LOG_FORM = ("op=create&module=Calls&call_id={call_id}&parent_module={module}&parent_id={record_id}"
            "&direction={direction}&status={outcome}&number={number}&start={started_at}&ring={ring_seconds}"
            "&duration={talk_seconds}&agent={extension}&subject={subject}&notes={description}&recording={recording}")  # fmt: skip


# --- the fake -------------------------------------------------------------------------------------------


def failure(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"status": "error", "error": {"code": code, "message": message}}, status_code=status)


def ok(records: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse({"status": "ok", "data": {"count": len(records), "records": records}})


def render(rec: FakeRecord, only: list[str]) -> dict[str, Any]:
    first, *_, last = rec.name.split() if " " in rec.name else ("", rec.name)
    values = {"firstname": first, "lastname": last, "phone": rec.phone} | rec.fields
    assert not set(values) - SCHEMA, f"test bug: the fake CRM has no field {sorted(set(values) - SCHEMA)}"
    if only:
        values = {k: v for k, v in values.items() if k in only}
    modified = datetime.fromisoformat(rec.modified.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S")
    return {"id": rec.id, "module": MODULES[rec.module], "modifiedtime": modified, **values}


def make_app(fake: VendorFake) -> Starlette:
    fake.auth_paths = ("/webservice/login",)

    def next_id(counter: str, start: int) -> int:
        value = fake.state.get(counter, start)
        fake.state[counter] = value + 1
        return value

    async def form_of(request: Request) -> dict[str, str] | JSONResponse:
        if request.headers.get("content-type", "").split(";")[0] != "application/x-www-form-urlencoded":
            return failure(415, "INVALID_REQUEST", "send application/x-www-form-urlencoded")
        pairs = parse_qsl((await request.body()).decode(), keep_blank_values=True, strict_parsing=False)
        names = [name for name, _ in pairs]
        if len(names) != len(set(names)):
            return failure(400, "INVALID_REQUEST", "a field is repeated")
        return dict(pairs)

    async def login(request: Request) -> JSONResponse:
        form = await form_of(request)
        if isinstance(form, JSONResponse):
            return form
        fake.state.setdefault("logins", []).append(form)
        unknown = sorted(set(form) - {"user", "pass", "client"})
        if unknown:
            return failure(400, "INVALID_REQUEST", f"unknown field {unknown[0]}")
        if form.get("client") != "crmroute":
            return failure(400, "INVALID_REQUEST", "client is required")
        users = {(USER, PASSWORD), (RULE_USER, RULE_PASSWORD)}
        if fake.reject_credentials or (form.get("user"), form.get("pass")) not in users:
            return failure(200 if fake.state.get("login_errors_as_200") else 401, "AUTH_FAILED",
                           "Invalid user name or password")  # fmt: skip
        if fake.state.get("login_without_token"):
            return JSONResponse({"status": "ok", "data": {"user_id": "19x1"}})
        session = fake.issue_token("sess")
        fake.state.setdefault("sessions", {})[session] = form["user"]
        return JSONResponse({"status": "ok", "data": {"session_id": session, "ttl": fake.state.get("ttl", 1800),
                                                      "user_id": "19x1"}})  # fmt: skip

    async def api(request: Request) -> JSONResponse:
        session = request.headers.get("x-session-id") or request.query_params.get("sid", "")
        fake.state.setdefault("session_via", []).append("header" if request.headers.get("x-session-id") else
                                                        "query" if request.query_params.get("sid") else "none")  # fmt: skip
        if session not in fake.tokens:
            fake.state["refused_sessions"] = fake.state.get("refused_sessions", 0) + 1
            return failure(200 if fake.state.get("session_errors_as_200") else 401, "INVALID_SESSION",
                           "Session expired or invalid")  # fmt: skip
        if request.method == "POST":
            if set(request.query_params) - {"sid"}:
                return failure(400, "INVALID_PARAM", "POST parameters go in the body")
            params = await form_of(request)
            if isinstance(params, JSONResponse):
                return params
        else:
            params = {k: v for k, v in request.query_params.items() if k != "sid"}
        fake.state.setdefault("calls", []).append((request.method, dict(params)))
        op = params.pop("op", "")
        if op == "search":
            return search(params)
        if op == "create":
            return create(params, fake.state["sessions"].get(session, "?"))
        return failure(400, "INVALID_PARAM", f"unknown operation {op!r}")

    def search(params: dict[str, str]) -> JSONResponse:
        module = params.pop("module", "")
        fields = [f for f in params.pop("fields", "").split(",") if f]
        if module == "Calls":
            unknown = sorted(set(params) - {"call_id"})
            if unknown or "call_id" not in params:
                return failure(400, "INVALID_PARAM", "Calls are searched by call_id")
            rows = [a for a in fake.activities if a["call_id"] == params["call_id"]]
            return ok(rows)
        neutral = next((n for n, m in MODULES.items() if m == module), None)
        if neutral is None:
            return failure(400, "INVALID_PARAM", f"unknown module {module!r}")
        unknown = sorted(set(params) - SEARCHABLE)
        if unknown:
            return failure(400, "INVALID_PARAM", f"unknown parameter {unknown[0]}")
        if len(params) != 1:
            return failure(400, "INVALID_PARAM", "give exactly one of " + ", ".join(sorted(SEARCHABLE)))
        for name in fields:
            if name not in SCHEMA:
                return failure(400, "INVALID_PARAM", f"unknown field {name} in {module}")
        [(criterion, value)] = params.items()
        rows = [r for r in fake.records if r.module == neutral]
        if criterion in ("phone", "mobile"):
            if not value.isdigit():
                return failure(400, "INVALID_PARAM", f"{criterion}: digits only")
            rows = [r for r in rows if digits_of(r.phone if criterion == "phone" else r.fields.get("mobile", "")) == value]
        elif criterion == "id":
            rows = [r for r in rows if r.id == value]
        else:
            rows = [r for r in rows if str(r.fields.get(criterion, "")) == value]
        records = [render(r, fields) for r in rows]
        return JSONResponse({"status": "ok", "data": {"count": len(records), "records": records[:100]}})

    def create(params: dict[str, str], user: str) -> JSONResponse:
        module = params.pop("module", "")
        if module == "Calls":
            unknown = sorted(set(params) - CALL_FIELDS)
            if unknown:
                return failure(400, "INVALID_PARAM", f"Calls have no field {unknown[0]}")
            checks = [
                (params.get("call_id", "") != "", "call_id is required"),
                (params.get("subject", "") != "", "subject is required"),
                (params.get("direction") in ("inbound", "outbound"), "direction: inbound or outbound"),
                (params.get("status") in ("answered", "missed", "busy", "failed"), "status: answered/missed/busy/failed"),
                (bool(ISO_Z.match(params.get("start", ""))), "start: UTC ISO-8601"),
                (params.get("duration", "").isdigit(), "duration: whole seconds"),
                (params.get("ring", "0").isdigit(), "ring: whole seconds"),
            ]  # fmt: skip
            for passed, message in checks:
                if not passed:
                    return failure(200, "INVALID_PARAM", message)  # this back end reports validation in a 200
            parent = params.get("parent_id", "")
            if parent:
                neutral = next((n for n, m in MODULES.items() if m == params.get("parent_module")), None)
                if neutral is None or not any(r.id == parent and r.module == neutral for r in fake.records):
                    return failure(200, "INVALID_PARAM", f"parent {params.get('parent_module')} {parent} not found")
            if any(a["call_id"] == params["call_id"] for a in fake.activities):
                return failure(409, "DUPLICATE", f"a call with call_id {params['call_id']} exists")
            stored = {"id": str(next_id("activity_ids", 7001)), "module": "Calls", "created_by": user,
                      "modifiedtime": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"), **params}  # fmt: skip
            fake.activities.append(stored)
            return ok([stored])
        neutral = next((n for n, m in MODULES.items() if m == module), None)
        if neutral is None:
            return failure(400, "INVALID_PARAM", f"unknown module {module!r}")
        if neutral == "accounts":
            return failure(403, "ACCESS_DENIED", "Permission to create Accounts denied")
        unknown = sorted(set(params) - RECORD_FIELDS)
        if unknown or not params.get("lastname"):
            return failure(400, "INVALID_PARAM", "lastname is required; " + (f"no field {unknown[0]}" if unknown else ""))
        if params.get("phone") and not params["phone"].isdigit():
            return failure(400, "INVALID_PARAM", "phone: digits only")
        rec = FakeRecord(module=neutral, id=str(next_id("record_ids", 9001)), phone=params.get("phone", ""),
                         name=params["lastname"], modified="2026-11-26T09:31:00Z")  # fmt: skip
        fake.records.append(rec)
        fake.created.append({"id": rec.id, "module": module, **params})
        return ok([render(rec, [])])

    async def not_found(request: Request, exc: HTTPException) -> JSONResponse:
        return failure(exc.status_code, "INVALID_REQUEST", f"{request.method} {request.url.path}: {exc.detail}")

    return Starlette(routes=[
        Route("/webservice/login", login, methods=["POST"]),
        Route("/webservice/api", api, methods=["GET", "POST"]),
    ], exception_handlers={404: not_found, 405: not_found})  # fmt: skip


fake_server, fake = vendor_fixtures(make_app)



# --- the contract ---------------------------------------------------------------------------------------


class TestProprietaryOne(ConnectorContract):
    OWNER_FIELDS = {"assigned_user": "42"}  # the integration's owner_path says where (no standard owner)
    OWNER_ID = "42"
    kind = "proprietary1"
    MODULE = "contacts"
    FIELD = "cf_status"  # a custom field of the session CRM
    NESTED_FIELD = "account.name"
    NESTED_FIELDS = {"account": {"name": "Acme Corp", "account_no": "A-7"}}
    NESTED_VALUE = "Acme Corp"
    IDS = ("1001", "1002", "1003")
    KEY_FIELD = "account_no"
    REQUESTS_PER_CALL = (1, 4)  # unknown: two forms x two fields (one criterion per search)
    MOBILE_FIELDS = {"accounts": "mobile", "contacts": "mobile", "leads": "mobile"}  # the in-house CRM's own schema
    CALLER_FORMS = (CALLER, "4155552671", "14155552671")

    def settings(self, fake: VendorFake) -> dict[str, Any]:
        api = f"{fake.base_url}/webservice/api"
        return {
            "login_url": f"{fake.base_url}/webservice/login", "username": USER, "password": PASSWORD,
            "username_field": "user", "password_field": "pass", "login_form": "client=crmroute",
            "token_path": "data.session_id", "expires_path": "data.ttl", "token_in": "header",
            "token_name": "X-Session-Id", "token_prefix": "", "session_error": "INVALID_SESSION",
            "lookup_url": api, "lookup_form": "op=search&module={module}&{search_field}={key}&fields={field}",
            "phone_forms": "national_digits,digits", "phone_field": "phone,mobile",  # one criterion per search
            "accounts_module": "Accounts", "contacts_module": "Contacts", "leads_module": "Leads",
            "records_path": "data.records", "total_path": "data.count", "modified_path": "modifiedtime",
            "success_path": "status", "error_path": "error.message", "owner_path": "assigned_user",
            "record_url": "https://crm.example.com/index.php?module={module}&record={id}",
            "log_url": api, "log_form": LOG_FORM,
            "log_lookup_url": api, "log_lookup_form": "op=search&module=Calls&call_id={call_id}",
            "create_url": api, "create_form": "op=create&module={module}&lastname={number}&phone={phone}",
        }  # fmt: skip


# --- helpers -----------------------------------------------------------------------------------------------

D = ConnectorContract.deadline
KEY = LookupKey(CALLER, "caller_id")


def contact(index: int = 0, **changes: Any) -> FakeRecord:
    return TestProprietaryOne().record(index, **changes)


@pytest.fixture
async def client(fake):
    http = make_client(Settings(ca_bundle=fake.ca_path))
    yield http
    await http.aclose()


def build(fake: VendorFake, client, *, username: str = "", password: str = "", **overrides: Any) -> ProprietaryOneConnector:
    values = TestProprietaryOne().settings(fake) | overrides
    return ProprietaryOneConnector(ProprietaryOneSettings.model_validate(values), client, region="US",
                                   username=username, password=password)  # fmt: skip


def calls(fake: VendorFake) -> list[tuple[str, dict[str, str]]]:
    return fake.state.get("calls", [])


def call(record: Record | None = None, **changes: Any) -> CallActivity:
    base = CallActivity(
        call_id="1795657573.7", direction="inbound", outcome="answered", external_number=CALLER,
        started_at=datetime(2026, 11, 26, 9, 30, 5, tzinfo=timezone.utc), ring_seconds=6, talk_seconds=93,
        extension="201", recording="https://pbx.example.com/rec/7.wav?a=1&b=2", subject="Inbound call",
        description="Answered by 201", record=record,
    )  # fmt: skip
    for name, value in changes.items():
        setattr(base, name, value)
    return base


# --- settings ---------------------------------------------------------------------------------------------


def test_settings_describe_themselves_and_name_the_secret():
    specs = {s.name: s for s in setting_specs(ProprietaryOneSettings)}
    assert {n for n, s in specs.items() if s.secret} == {"password"}
    assert {n for n, s in specs.items() if s.required} == {"lookup_url", "login_url", "username", "password"}
    assert specs["token_in"].choices == ("header", "query") and specs["method"].default == "POST"
    assert all(s.help for s in specs.values())


@pytest.mark.parametrize(("changes", "message"), [
    ({"login_url": "http://crm.example.com/login"}, "must start with https://"),
    ({"login_form": "client={module}"}, "unknown placeholder {module}"),
    ({"lookup_form": "op=search&phone"}, "must be name=value pairs"),
    ({"lookup_form": "op=search&{caller}={key}"}, "unknown placeholder {caller}"),
    ({"log_form": "call={call_id}&n={key}"}, "unknown placeholder {key}"),
    ({"create_form": "=x"}, "every pair needs a name"),
    ({"token_path": ""}, "token_path is required"),
    ({"token_path": "data..id"}, "cannot read the path"),
    ({"token_name": "X Session"}, "token_name must be a header name"),
    ({"log_lookup_url": ""}, "log_url needs log_lookup_url"),
    ({"password_field": "user"}, "must differ"),
    ({"records_path": "data.records["}, "cannot read the path"),
])  # fmt: skip
def test_settings_refuse_what_cannot_work(fake, changes, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        ProprietaryOneSettings.model_validate(TestProprietaryOne().settings(fake) | changes)


def test_a_query_token_may_use_any_parameter_name(fake):
    settings = ProprietaryOneSettings.model_validate(TestProprietaryOne().settings(fake) |
                                                     {"token_in": "query", "token_name": "session[id]"})  # fmt: skip
    assert settings.token_name == "session[id]"


# --- the session -------------------------------------------------------------------------------------------


async def test_login_is_one_form_post_with_the_configured_field_names(fake, client):
    await build(fake, client).authenticate(deadline=D())
    [request] = fake.requests
    assert (request.method, request.path, request.query) == ("POST", "/webservice/login", "")
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qsl(request.body.decode()) == [("client", "crmroute"), ("user", USER), ("pass", PASSWORD)]


async def test_the_session_goes_in_the_header_bare_or_with_a_prefix(fake, client):
    fake.records = [contact()]
    assert await build(fake, client).fetch(KEY, "contacts", "cf_status", deadline=D()) == "GOLD"
    session = next(iter(fake.tokens))
    assert fake.api_requests()[-1].headers["x-session-id"] == session
    assert "sid" not in fake.api_requests()[-1].query
    connector = build(fake, client, token_prefix="Session")
    with pytest.raises(AuthError, match="credentials rejected"):  # "Session <token>" is not a session this CRM knows
        await connector.fetch(KEY, "contacts", "cf_status", deadline=D())
    assert fake.api_requests()[-1].headers["x-session-id"].startswith("Session sess-")


async def test_the_session_in_the_query_is_never_logged(fake, client, caplog):
    caplog.set_level(logging.INFO)
    fake.records = [contact()]
    connector = build(fake, client, token_in="query", token_name="sid")
    connector.log_requests = True
    assert await connector.fetch(KEY, "contacts", "cf_status", deadline=D()) == "GOLD"
    request = fake.api_requests()[-1]
    session = next(iter(fake.tokens))
    assert request.params == {"sid": session} and "x-session-id" not in request.headers
    assert dict(parse_qsl(request.body.decode()))["op"] == "search"
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("crmroute"))  # httpx's own
    assert session not in ours and "webservice/api -> HTTP 200" in ours  # logger is kept at WARNING (logs.py)


async def test_the_session_lifetime_is_honoured(fake, client):
    fake.state["ttl"] = 2  # a 2 s session is renewed after 1 s (half its life), before the CRM refuses it
    fake.records = [contact()]
    connector = build(fake, client)
    await connector.fetch(KEY, "contacts", "cf_status", deadline=D())
    await asyncio.sleep(1.1)
    await connector.fetch(KEY, "contacts", "cf_status", deadline=D())
    assert fake.token_requests == 2 and not fake.state.get("refused_sessions")
    without = build(fake, client, expires_path="")
    await without.authenticate(deadline=D())
    assert without._token.expires_at is None  # no lifetime given: used until refused


async def test_an_expired_session_is_renewed_once_and_the_request_repeated(fake, client):
    fake.records = [contact()]
    connector = build(fake, client)
    assert await connector.fetch(KEY, "contacts", "cf_status", deadline=D()) == "GOLD"
    fake.expire_tokens()
    assert await connector.fetch(KEY, "contacts", "cf_status", deadline=D()) == "GOLD"
    assert fake.token_requests == 2 and fake.state["refused_sessions"] == 1


async def test_a_session_error_inside_a_200_is_recognised(fake, client):
    fake.records = [contact()]
    fake.state["session_errors_as_200"] = True
    connector = build(fake, client)
    await connector.authenticate(deadline=D())
    fake.expire_tokens()
    assert await connector.fetch(KEY, "contacts", "cf_status", deadline=D()) == "GOLD"
    assert fake.token_requests == 2
    unaware = build(fake, client, session_error="")
    await unaware.authenticate(deadline=D())
    fake.expire_tokens()
    with pytest.raises(UnexpectedResponse, match="refused find Contacts: Session expired or invalid"):
        await unaware.fetch(KEY, "contacts", "cf_status", deadline=D())


async def test_a_session_refused_twice_is_an_auth_error(fake, client):
    connector = build(fake, client)
    await connector.authenticate(deadline=D())
    fake.fail_next(401, {"status": "error", "error": {"code": "INVALID_SESSION", "message": "Session expired"}},
                   times=2)  # fmt: skip
    with pytest.raises(AuthError, match="credentials rejected .find Contacts.: Session expired"):
        await connector.fetch(KEY, "contacts", "cf_status", deadline=D())
    assert fake.token_requests == 2


async def test_concurrent_calls_share_one_new_login(fake, client):
    fake.records = [contact()]
    connector = build(fake, client)
    await connector.authenticate(deadline=D())
    fake.expire_tokens()
    values = await asyncio.gather(*(connector.fetch(KEY, "contacts", "cf_status", deadline=D()) for _ in range(6)))
    assert values == ["GOLD"] * 6 and fake.token_requests == 2


@pytest.mark.parametrize("as_200", [False, True])
async def test_a_refused_login_says_so(fake, client, as_200):
    fake.state["login_errors_as_200"] = as_200
    with pytest.raises(AuthError, match="login refused: Invalid user name or password") as caught:
        await build(fake, client, password="wrong").authenticate(deadline=D())
    assert "wrong" not in str(caught.value) and caught.value.operation == "authenticate"


async def test_a_login_answer_without_the_token_names_the_path(fake, client):
    fake.state["login_without_token"] = True
    with pytest.raises(UnexpectedResponse, match="no session token at 'data.session_id' .check token_path."):
        await build(fake, client).authenticate(deadline=D())


async def test_a_rules_credentials_log_in_as_that_user(fake, client):
    fake.records = [contact()]
    connector = build(fake, client, username=RULE_USER, password=RULE_PASSWORD)
    assert await connector.fetch(KEY, "contacts", "cf_status", deadline=D()) == "GOLD"
    assert fake.state["logins"] == [{"client": "crmroute", "user": RULE_USER, "pass": RULE_PASSWORD}]
    assert b"r%26le%3Dpass%2Bword%25" in fake.requests[0].body  # form-encoded, one value


# --- requests -----------------------------------------------------------------------------------------------


async def test_lookups_are_form_posts(fake, client):
    fake.records = [contact()]
    await build(fake, client).fetch(KEY, "contacts", "account.name", deadline=D())
    request = fake.api_requests()[-1]
    assert (request.method, request.query) == ("POST", "")
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qsl(request.body.decode(), keep_blank_values=True) == [
        ("op", "search"), ("module", "Contacts"), ("phone", "4155552671"), ("fields", "account")]


async def test_get_puts_the_form_in_the_query(fake, client):
    fake.records = [contact()]
    assert await build(fake, client, method="GET").fetch(KEY, "contacts", "cf_status", deadline=D()) == "GOLD"
    request = fake.api_requests()[-1]
    assert request.method == "GET" and request.body == b""
    assert request.query == "op=search&module=Contacts&phone=4155552671&fields=cf_status"


async def test_form_values_cannot_add_fields(fake, client):
    fake.records = [contact(phone="")]
    connector = build(fake, client, key_field="account_no")
    key = LookupKey("12345&op=create&module=Accounts", "dtmf")
    assert await connector.find_record(key, "contacts", deadline=D()) is None
    assert calls(fake)[-1] == ("POST", {"op": "search", "module": "Contacts", "account_no": key.value, "fields": ""})
    assert await build(fake, client, key_field="account_no", method="GET").find_record(key, "contacts",
                                                                                      deadline=D()) is None  # fmt: skip
    assert calls(fake)[-1][1]["account_no"] == key.value


async def test_phone_forms_in_order_until_one_finds(fake, client):
    fake.records = [contact(phone="+1 415 555 2671")]  # digits 14155552671: the national digits miss it
    record = await build(fake, client).find_record(KEY, "contacts", deadline=D())
    assert record is not None and record.id == "1001"
    assert [p["phone"] for _, p in calls(fake)] == ["4155552671", "14155552671"]


async def test_each_phone_field_in_turn_and_the_last_hit_first(fake, client):
    connector = build(fake, client)
    fake.records = [contact(0, phone="", fields={"cf_status": "GOLD", "mobile": "+1 415 555 2671"}),
                    contact(1, phone="", fields={"cf_status": "SILVER", "mobile": "(415) 555-0100"})]  # fmt: skip
    assert await connector.fetch(KEY, "contacts", "cf_status", deadline=D()) == "GOLD"
    searched = [next((k, v) for k, v in p.items() if k in ("phone", "mobile")) for _, p in calls(fake)]
    assert searched == [("phone", "4155552671"), ("phone", "14155552671"), ("mobile", "4155552671"),
                        ("mobile", "14155552671")]  # fmt: skip
    fake.state["calls"] = []
    other = LookupKey("+14155550100", "caller_id")
    assert await connector.fetch(other, "contacts", "cf_status", deadline=D()) == "SILVER"
    assert calls(fake)[0][1]["mobile"] == "14155550100"  # the way that found last: one request here
    assert await connector.fetch(other, "leads", "cf_status", deadline=D()) is None


async def test_requests_per_uncached_call_from_the_first(fake, client):
    connector = build(fake, client)
    fake.records = [contact(0, phone="(415) 555-2671"), contact(1, phone="415.555.0100")]
    await connector.authenticate(deadline=D())
    before = len(fake.requests)
    for number in ("+14155552671", "+14155550100"):
        assert await connector.fetch(LookupKey(number, "caller_id"), "contacts", "cf_status", deadline=D()) == "GOLD"
    assert len(fake.requests) - before == 2  # one search each, the field answered in it; no second login
    before = len(fake.requests)
    assert await connector.fetch(LookupKey("+14155550199", "caller_id"), "contacts", "cf_status", deadline=D()) is None
    assert len(fake.requests) - before == 4  # unknown: two forms x two fields (one criterion per search)


async def test_a_typed_key_by_field_or_by_record_id(fake, client):
    fake.records = [contact(phone="")]
    assert await build(fake, client).fetch(LookupKey("1001", "dtmf"), "contacts", "cf_status", deadline=D()) == "GOLD"
    assert calls(fake)[-1][1] == {"op": "search", "module": "Contacts", "id": "1001", "fields": "cf_status"}


async def test_modules_pick_and_count(fake, client):
    fake.records = [contact(0, module="accounts", id="3001", fields={"cf_status": "KEY"}),
                    contact(1, module="leads", id="5001", fields={"cf_status": "COLD"}, modified="2025-01-01T00:00:00Z"),
                    contact(2, module="leads", id="5002", fields={"cf_status": "HOT"}, modified="2026-07-01T00:00:00Z")]
    connector = build(fake, client)
    account = await connector.find_record(KEY, "accounts", deadline=D())
    lead = await connector.find_record(KEY, "leads", fields=["cf_status"], deadline=D())
    assert (account.module, account.id) == ("Accounts", "3001")
    assert (lead.module, lead.id, lead.matches) == ("Leads", "5002", 2)  # modifiedtime "2026-07-01 00:00:00"
    assert await connector.read_field(lead, "cf_status", deadline=D()) == "HOT"
    assert lead.url == "https://crm.example.com/index.php?module=Leads&record=5002"


async def test_the_crms_own_error_text_is_shown(fake, client):
    fake.records = [contact()]
    with pytest.raises(UnexpectedResponse, match="refused find Contacts: unknown field cf_statuz in Contacts"):
        await build(fake, client).fetch(KEY, "contacts", "cf_statuz", deadline=D())


# --- call log ------------------------------------------------------------------------------------------------


async def test_the_logged_call_is_the_form_template_filled_in(fake, client):
    fake.records = [contact()]
    connector = build(fake, client)
    record = await connector.find_record(KEY, "contacts", deadline=D())
    activity_id = await connector.log_call(call(record, subject="Call: 50% off + more"),
                                           LogOptions(inbound_answered=True), deadline=D())  # fmt: skip
    [stored] = fake.activities
    assert activity_id == stored["id"] == "7001"
    assert {k: v for k, v in stored.items() if k not in ("id", "module", "created_by", "modifiedtime")} == {
        "call_id": "1795657573.7", "parent_module": "Contacts", "parent_id": "1001", "direction": "inbound",
        "status": "answered", "number": "+14155552671", "start": "2026-11-26T09:30:05Z", "ring": "6",
        "duration": "93", "agent": "201", "subject": "Call: 50% off + more", "notes": "Answered by 201",
        "recording": "https://pbx.example.com/rec/7.wav?a=1&b=2",
    }  # fmt: skip
    lookup, create = [params for _, params in calls(fake)[-2:]]
    assert lookup == {"op": "search", "module": "Calls", "call_id": "1795657573.7"}
    assert create["op"] == "create"
    assert await connector.log_call(call(record), LogOptions(), deadline=D()) == "7001"  # idempotent
    assert len(fake.activities) == 1


async def test_an_unknown_caller_becomes_a_contact_only_when_asked(fake, client):
    connector = build(fake, client)
    await connector.log_call(call(None), LogOptions(), deadline=D())
    assert fake.created == [] and fake.activities[0]["parent_id"] == ""
    await connector.log_call(call(None, call_id="new"), LogOptions(create_unknown=True), deadline=D())
    assert fake.created == [{"id": "9001", "module": "Contacts", "lastname": "+14155552671", "phone": "4155552671"}]
    assert fake.activities[-1]["parent_id"] == "9001" and fake.activities[-1]["created_by"] == USER


async def test_a_validation_error_in_a_200_is_shown(fake, client):
    connector = build(fake, client, log_form=LOG_FORM.replace("duration={talk_seconds}", "duration={talk_seconds}s"))
    with pytest.raises(UnexpectedResponse, match="refused log call: duration: whole seconds"):
        await connector.log_call(call(None), LogOptions(), deadline=D())


async def test_a_duplicate_on_create_returns_the_logged_call(fake, client):
    fake.records = [contact()]
    connector = build(fake, client)
    record = await connector.find_record(KEY, "contacts", deadline=D())
    first = await connector.log_call(call(record), LogOptions(), deadline=D())
    fake.fail_next(200, {"status": "ok", "data": {"count": 0, "records": []}})  # the lookup misses it once
    assert await connector.log_call(call(record), LogOptions(), deadline=D()) == first
    assert len(fake.activities) == 1


async def test_creating_where_the_user_may_not_is_an_auth_error(fake, client):
    connector = build(fake, client, log_module="accounts")
    with pytest.raises(AuthError, match="not allowed to create Accounts: Permission to create Accounts denied"):
        await connector.log_call(call(None), LogOptions(create_unknown=True), deadline=D())


async def test_secrets_never_reach_the_answer_or_the_log(fake, client, caplog):
    caplog.set_level(logging.DEBUG)
    fake.records = [contact()]
    connector = build(fake, client)
    await connector.fetch(KEY, "contacts", "cf_status", deadline=D())
    await connector.log_call(call(None), LogOptions(), deadline=D())
    session = next(iter(fake.tokens))
    text = caplog.text + repr(connector) + json.dumps((await connector.test(CALLER, fields=["cf_status"])).as_dict())
    assert PASSWORD not in text and session not in text
