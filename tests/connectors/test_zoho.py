"""Zoho CRM against a strict loopback fake of its Accounts server and CRM API.

The fake serves what the connector uses, in Zoho's shapes (reference section 11):
``POST /oauth/v2/token`` (refresh token and client-credentials grants; refusals are
HTTP 200 ``{"error": ...}``), ``/crm/{v}/{Module}/search`` (``phone``, ``criteria``,
``email``, ``word``; 204 when nothing matches), ``/crm/{v}/{Module}/{id}``,
``/crm/{v}/settings/fields``, ``/crm/{v}/users/{id}``, and inserts into Calls, Leads
and Contacts. It is strict: the ``Zoho-oauthtoken`` header, one search parameter,
``per_page`` <= 200, known field names in ``fields``/``criteria``, mandatory Call
fields and formats. Its phone search compares the digits of the value with the
digits of every phone field (how Zoho normalises is unconfirmed); in v8 a single
``equals`` criterion matches as *contains*, as Zoho documents.
The same API is also served under ``/dc-eu`` so tests can tell which API domain
the connector used.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any
from urllib.parse import parse_qsl

import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from crmroute.connectors import registry
from crmroute.connectors._phone import digits_of
from crmroute.connectors.base import CrmUser, Record
from crmroute.connectors.zoho import ZohoConnector, ZohoSettings, escape_criteria
from crmroute.errors import AuthError, RateLimited, UnexpectedResponse
from crmroute.routing.engine import LookupKey
from crmroute.schemas import LogOptions
from tests.connectors.contract import CALLER, ConnectorContract
from tests.connectors.fakecrm import FakeRecord, VendorFake, vendor_fixtures

CLIENT_ID = "1000.ZX81KQ2M9TESTCLIENT"
CLIENT_SECRET = "c0ffee-client-secret-9d8e"
REFRESH_TOKEN = "1000.refresh-4f3e2d1c0b.a9a8a7"
ORG_ID = "60012345678"
ACCOUNT_ID = "4150868000000224999"
PARTNER_ID = "4150868000000224888"
OWNER = {"name": "Patricia Boyle", "id": "4150868000000225013", "email": "patricia.b@example.com"}

MODULE_OF = {"accounts": "Accounts", "contacts": "Contacts", "leads": "Leads"}
VERSIONS = {"v2", "v2.1", "v3", "v4", "v5", "v6", "v7", "v8"}
PHONE_FIELDS = ("Phone", "Mobile", "Home_Phone", "Other_Phone", "Asst_Phone", "Fax")
CUSTOM_FIELDS = {"Customer_Tier", "Customer_Number", "Partner_Account"}
STANDARD_FIELDS = {
    "Contacts": {"id", "Full_Name", "First_Name", "Last_Name", "Email", "Account_Name", "Reporting_To", "Owner",
                 "Modified_Time", "Created_Time", "Description", *PHONE_FIELDS},
    "Leads": {"id", "Full_Name", "First_Name", "Last_Name", "Email", "Company", "Lead_Status", "Owner",
              "Modified_Time", "Created_Time", "Description", *PHONE_FIELDS},
    "Accounts": {"id", "Account_Name", "Account_Number", "Industry", "Website", "Parent_Account", "Owner",
                 "Modified_Time", "Created_Time", "Description", "Phone", "Fax"},
}  # fmt: skip
LOOKUPS = {"Account_Name": "Accounts", "Reporting_To": "Contacts", "Parent_Account": "Accounts",
           "Partner_Account": "Accounts"}  # fmt: skip
CALL_FIELDS = {"Subject", "Call_Type", "Call_Start_Time", "Call_Duration", "Call_Purpose", "Description", "Who_Id",
               "What_Id", "$se_module", "Owner", "Call_Result", "Dialled_Number"}  # fmt: skip
ZOHO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")
ACCOUNTS = {  # the related accounts the lookup tests read through
    ACCOUNT_ID: {"id": ACCOUNT_ID, "Account_Name": "Acme Corp", "Industry": "Manufacturing", "Phone": None},
    PARTNER_ID: {"id": PARTNER_ID, "Account_Name": "Globex", "Industry": "Energy", "Phone": None},
}


def error(status: int, code: str, message: str, details: dict | None = None, *, bulk: bool = False) -> JSONResponse:
    body = {"code": code, "details": details or {}, "message": message, "status": "error"}
    return JSONResponse({"data": [body]} if bulk else body, status_code=status)


def zoho_time(iso: str) -> str:
    return iso.replace("Z", "+00:00")


def render(record: FakeRecord) -> dict[str, Any]:
    module = MODULE_OF[record.module]
    row: dict[str, Any] = {"id": record.id, "Owner": OWNER, "Modified_Time": zoho_time(record.modified),
                           "Created_Time": "2025-01-01T00:00:00+00:00", "Phone": record.phone or None}  # fmt: skip
    if module == "Accounts":
        row["Account_Name"] = record.name
    else:
        row["Full_Name"] = record.name
        row["Last_Name"] = record.name.split()[-1]
        if module == "Leads":
            row["Company"] = "Acme Corp"
    row.update(record.fields)
    return row


def known_fields(fake: VendorFake, module: str) -> set[str]:
    return STANDARD_FIELDS.get(module, set()) | CUSTOM_FIELDS | set(fake.state.get("extra_fields", ()))


def rows_of(fake: VendorFake, module: str) -> list[dict[str, Any]]:
    if module == "Calls":
        return list(fake.activities)
    rows = [render(r) for r in fake.records if MODULE_OF[r.module] == module]
    if module == "Accounts":
        rows += [dict(a) for a in ACCOUNTS.values() if all(r["id"] != a["id"] for r in rows)]
    return rows


class CriteriaError(ValueError):
    def __init__(self, details: dict) -> None:
        super().__init__(str(details))
        self.details = details


def parse_criteria(text: str) -> Any:
    """``(F:op:v)`` conditions joined by ``and``/``or`` in parentheses; values escape ``\\ ( ) ,``."""
    pos = 0

    def group() -> Any:
        nonlocal pos
        if pos >= len(text) or text[pos] != "(":
            raise CriteriaError({"reason": "invalid criteria", "position": pos})
        pos += 1
        if pos < len(text) and text[pos] == "(":
            node: Any = group()
            while text.startswith(("and", "or"), pos):
                joiner = "and" if text.startswith("and", pos) else "or"
                pos += len(joiner)
                node = (joiner, node, group())
        else:
            node = condition()
        if pos >= len(text) or text[pos] != ")":
            raise CriteriaError({"reason": "invalid criteria", "position": pos})
        pos += 1
        return node

    def condition() -> tuple:
        nonlocal pos
        end = text.find(":", pos)
        op_end = text.find(":", end + 1)
        if end < 0 or op_end < 0:
            raise CriteriaError({"reason": "invalid criteria"})
        field, operator = text[pos:end], text[end + 1 : op_end]
        pos = op_end + 1
        value = []
        while pos < len(text) and text[pos] != ")":
            if text[pos] == "\\" and pos + 1 < len(text):
                pos += 1
            elif text[pos] in "(,":
                raise CriteriaError({"reason": "unescaped special character in value", "api_name": field})
            value.append(text[pos])
            pos += 1
        return ("cond", field, operator, "".join(value))

    tree = group()
    if pos != len(text):
        raise CriteriaError({"reason": "invalid criteria", "position": pos})
    return tree


def conditions(tree: Any) -> list[tuple]:
    return [tree] if tree[0] == "cond" else conditions(tree[1]) + conditions(tree[2])


def matches(tree: Any, row: dict, *, contains: bool) -> bool:
    if tree[0] != "cond":
        left, right = matches(tree[1], row, contains=contains), matches(tree[2], row, contains=contains)
        return left and right if tree[0] == "and" else left or right
    _, field, operator, value = tree
    stored = row.get(field)
    if isinstance(stored, dict):
        stored = stored.get("name")
    stored = "" if stored is None else str(stored)
    if operator == "equals":
        return value.lower() in stored.lower() if contains else stored.lower() == value.lower()
    if operator == "starts_with":
        return stored.lower().startswith(value.lower())
    return stored.lower() != value.lower()  # not_equal


def make_app(fake: VendorFake) -> Starlette:
    fake.auth_paths = ("/oauth/",)

    async def token(request: Request) -> Response:
        if request.method != "POST":
            return JSONResponse({"error": "invalid_request"}, status_code=405)
        form = dict(request.query_params) | dict(await request.form())
        fake.state.setdefault("grants", []).append({k: v for k, v in form.items() if "secret" not in k})
        answer = fake.state.get("token_answer")
        if answer is not None:
            return JSONResponse(answer)
        grant = form.get("grant_type")
        good_client = form.get("client_id") == CLIENT_ID and form.get("client_secret") == CLIENT_SECRET
        if grant == "refresh_token":
            if not good_client:
                return JSONResponse({"error": "invalid_client"})
            if fake.reject_credentials or form.get("refresh_token") != REFRESH_TOKEN:
                return JSONResponse({"error": "invalid_code"})
        elif grant == "client_credentials":
            if not good_client or fake.reject_credentials:
                return JSONResponse({"error": "invalid_client"})
            if not form.get("scope"):
                return JSONResponse({"error": "invalid_scope"})
            if form.get("soid") != f"ZohoCRM.{ORG_ID}":
                return JSONResponse({"error": "missing_org_info"})
        else:
            return JSONResponse({"error": "unsupported_grant_type"})
        return JSONResponse({"access_token": fake.issue_token("1000.at"), "scope": form.get("scope", "ZohoCRM.modules.ALL"),
                             "api_domain": fake.state.get("api_domain", fake.base_url), "token_type": "Bearer",
                             "expires_in": fake.state.get("expires_in", 3600)})  # fmt: skip

    def unauthorized(request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        if not header:
            return error(401, "AUTHENTICATION_FAILURE", "Authentication failed")
        if not fake.authorized(request, scheme="Zoho-oauthtoken"):
            fake.state["rejected"] = fake.state.get("rejected", 0) + 1
            return error(401, "INVALID_TOKEN", "invalid oauth token")
        return None

    def check_version(request: Request) -> Response | None:
        if request.path_params["version"] not in VERSIONS:
            return error(404, "INVALID_URL_PATTERN", "Please check if the URL trying to access is a correct one")
        return None

    def selects(request: Request, module: str) -> tuple[set[str] | None, Response | None]:
        wanted = request.query_params.get("fields")
        if wanted is None or request.path_params["version"] in ("v2", "v2.1"):
            return None, None
        names = {n.strip() for n in wanted.split(",") if n.strip()}
        for name in sorted(names):
            if name not in known_fields(fake, module):
                return None, error(400, "INVALID_DATA", "invalid data", {"api_name": name})
        return names | {"id"}, None

    def shown(row: dict, names: set[str] | None) -> dict:
        return dict(row) if names is None else {k: v for k, v in row.items() if k in names}

    async def search(request: Request) -> Response:
        refused = check_version(request) or unauthorized(request)
        if refused:
            return refused
        module = request.path_params["module"]
        if module not in STANDARD_FIELDS and module != "Calls":
            return error(400, "INVALID_MODULE", "the module name given seems to be invalid")
        params = request.query_params
        given = [p for p in ("criteria", "email", "phone", "word") if p in params]
        if len(given) != 1:
            return error(400, "REQUIRED_PARAM_MISSING", "One of the expected parameter is missing",
                         {"param": "criteria"})  # fmt: skip
        per_page = params.get("per_page", "200")
        if not per_page.isdigit() or not 1 <= int(per_page) <= 200:
            return error(400, "INVALID_DATA", "invalid data", {"param_name": "per_page"})
        names, refused = selects(request, module) if module != "Calls" else (None, None)
        if refused:
            return refused
        rows = rows_of(fake, module)
        if "phone" in params:
            wanted = digits_of(params["phone"])
            if not wanted:
                return error(400, "INVALID_DATA", "invalid data", {"param_name": "phone"})
            found = [r for r in rows if any(digits_of(str(r.get(f) or "")) == wanted for f in PHONE_FIELDS)]
        elif "criteria" in params:
            try:
                tree = parse_criteria(params["criteria"])
            except CriteriaError as exc:
                return error(400, "INVALID_QUERY", "Invalid query formed", exc.details)
            allowed = known_fields(fake, module) if module != "Calls" else CALL_FIELDS
            for _, field, operator, _ in conditions(tree):
                if field not in allowed:
                    return error(400, "INVALID_QUERY", "Invalid query formed",
                                 {"reason": "the field is not available for search", "api_name": field})  # fmt: skip
                if operator not in ("equals", "starts_with", "not_equal"):
                    return error(400, "INVALID_QUERY", "Invalid query formed",
                                 {"reason": "invalid operator found", "api_name": field, "operator": operator})  # fmt: skip
            contains = request.path_params["version"] == "v8" and tree[0] == "cond"
            found = [r for r in rows if matches(tree, r, contains=contains)]
        else:
            return error(400, "INVALID_DATA", "the fake does not serve email or word search")
        if not found:
            return Response(status_code=204)
        data = [shown(r, names) for r in found]
        return JSONResponse({"data": data, "info": {"per_page": int(per_page), "count": len(data), "page": 1,
                                                    "more_records": False}})  # fmt: skip

    async def one_record(request: Request) -> Response:
        refused = check_version(request) or unauthorized(request)
        if refused:
            return refused
        module, record_id = request.path_params["module"], request.path_params["record_id"]
        if module not in STANDARD_FIELDS:
            return error(400, "INVALID_MODULE", "the module name given seems to be invalid")
        if not record_id.isdigit():
            return error(400, "INVALID_DATA", "the related id given seems to be invalid", {})
        names, refused = selects(request, module)
        if refused:
            return refused
        for row in rows_of(fake, module):
            if row["id"] == record_id:
                fake.state.setdefault("record_reads", []).append(f"{module}/{record_id}")
                return JSONResponse({"data": [shown(row, names)]})
        return Response(status_code=204)

    async def fields_meta(request: Request) -> Response:
        refused = check_version(request) or unauthorized(request)
        if refused:
            return refused
        module = request.query_params.get("module", "")
        if module not in STANDARD_FIELDS:
            return error(400, "REQUIRED_PARAM_MISSING", "One of the expected parameter is missing", {"param": "module"})
        out = []
        for name in sorted(known_fields(fake, module)):
            if name in LOOKUPS:
                out.append({"api_name": name, "data_type": "lookup",
                            "lookup": {"module": {"api_name": LOOKUPS[name], "id": "4150868000000002175"}}})  # fmt: skip
            else:
                out.append({"api_name": name, "data_type": "text"})
        return JSONResponse({"fields": out})

    async def user(request: Request) -> Response:
        refused = check_version(request) or unauthorized(request)
        if refused:
            return refused
        if request.path_params["user_id"] != OWNER["id"]:
            return Response(status_code=204)
        return JSONResponse({"users": [{"id": OWNER["id"], "full_name": OWNER["name"], "email": OWNER["email"],
                                        "phone": "+1 415 555 0100"}]})  # fmt: skip

    async def current_user(request: Request) -> Response:
        refused = check_version(request) or unauthorized(request)
        if refused:
            return refused
        if request.query_params.get("type") != "CurrentUser":
            return JSONResponse({"code": "INVALID_REQUEST", "status": "error", "message": "type required"}, 400)
        fake.state["me_checks"] = fake.state.get("me_checks", 0) + 1
        return JSONResponse({"users": [{"id": OWNER["id"], "full_name": OWNER["name"], "email": OWNER["email"]}]})

    async def insert(request: Request) -> Response:
        refused = check_version(request) or unauthorized(request)
        if refused:
            return refused
        module = request.path_params["module"]
        try:
            body = json.loads(await request.body())
        except ValueError:
            return error(400, "INVALID_DATA", "body is not valid JSON")
        if not isinstance(body, dict) or not isinstance(body.get("data"), list) or not 1 <= len(body["data"]) <= 100:
            return error(400, "INVALID_DATA", "invalid data", {"expected_data_type": "jsonarray", "api_name": "data"})
        entry = body["data"][0]
        problem = check_call(entry) if module == "Calls" else check_person(module, entry)
        if problem:
            code, field = problem
            message = "required field not found" if code == "MANDATORY_NOT_FOUND" else "invalid data"
            return error(400 if code != "MANDATORY_NOT_FOUND" else 400, code, message, {"api_name": field}, bulk=True)
        counter = fake.state["next_id"] = fake.state.get("next_id", 0) + 1
        new_id = str(4150868000001000000 + counter)
        stored = dict(entry) | {"id": new_id}
        if module == "Calls":
            fake.activities.append(stored)
        else:
            fake.created.append(stored)
            fake.records.append(FakeRecord(module={"Leads": "leads", "Contacts": "contacts"}[module], id=new_id,
                                           phone=entry.get("Phone") or "", name=entry["Last_Name"]))  # fmt: skip
        details = {"Modified_Time": "2026-11-26T09:31:00+00:00", "Modified_By": OWNER, "id": new_id,
                   "Created_Time": "2026-11-26T09:31:00+00:00", "Created_By": OWNER}  # fmt: skip
        return JSONResponse({"data": [{"code": "SUCCESS", "details": details, "message": "record added",
                                       "status": "success"}]}, status_code=201)  # fmt: skip

    def record_ids(module: str) -> set[str]:
        return {r["id"] for r in rows_of(fake, module)}

    def check_call(entry: dict) -> tuple[str, str] | None:
        for key in entry:
            if key not in CALL_FIELDS:
                return "INVALID_DATA", key
        for key in ("Subject", "Call_Type", "Call_Start_Time"):
            if not entry.get(key):
                return "MANDATORY_NOT_FOUND", key
        if entry["Call_Type"] not in ("Inbound", "Outbound", "Missed"):
            return "INVALID_DATA", "Call_Type"
        if not ZOHO_TIME.match(str(entry["Call_Start_Time"])):
            return "INVALID_DATA", "Call_Start_Time"
        if entry["Call_Type"] != "Missed":
            if "Call_Duration" not in entry:
                return "MANDATORY_NOT_FOUND", "Call_Duration"
            if not re.fullmatch(r"\d+:\d\d", str(entry["Call_Duration"])):
                return "INVALID_DATA", "Call_Duration"
        if "Who_Id" in entry:
            who = entry["Who_Id"]
            if not isinstance(who, dict) or who.get("id") not in record_ids("Contacts"):
                return "INVALID_DATA", "Who_Id"
        if "What_Id" in entry:
            what, module = entry["What_Id"], entry.get("$se_module")
            if module not in ("Accounts", "Leads", "Deals"):
                return "MANDATORY_NOT_FOUND", "$se_module"
            if not isinstance(what, dict) or what.get("id") not in record_ids(module):
                return "INVALID_DATA", "What_Id"
        elif "$se_module" in entry:
            return "INVALID_DATA", "$se_module"
        return None

    def check_person(module: str, entry: dict) -> tuple[str, str] | None:
        for key in entry:
            if key not in known_fields(fake, module):
                return "INVALID_DATA", key
        if not entry.get("Last_Name"):
            return "MANDATORY_NOT_FOUND", "Last_Name"
        if module == "Leads" and not entry.get("Company"):
            return "MANDATORY_NOT_FOUND", "Company"
        return None

    user_types = {"AllUsers", "ActiveUsers", "DeactiveUsers", "ConfirmedUsers", "NotConfirmedUsers", "DeletedUsers",
                  "ActiveConfirmedUsers", "AdminUsers", "ActiveConfirmedAdmins", "CurrentUser"}  # fmt: skip

    async def users(request: Request) -> Response:
        """``GET /crm/{v}/users?type=...&page=&per_page=`` (per_page at most 200); an empty page is a 204."""
        refused = check_version(request) or unauthorized(request)
        if refused:
            return refused
        params = request.query_params
        unknown = set(params) - {"type", "page", "per_page", "ids"}
        if unknown:
            return error(400, "INVALID_REQUEST", f"invalid parameter {sorted(unknown)[0]}")
        if params.get("type", "AllUsers") not in user_types:
            return error(400, "INVALID_DATA", "invalid data", {"param_name": "type"})
        page, per_page = params.get("page", "1"), params.get("per_page", "200")
        if not page.isdigit() or int(page) < 1 or not per_page.isdigit() or not 1 <= int(per_page) <= 200:
            return error(400, "INVALID_DATA", "invalid data", {"param_name": "per_page" if page.isdigit() else "page"})
        listed = [u for u in fake.state.get("users", []) if params.get("type") != "ActiveUsers" or u["status"] == "active"]
        fake.state["user_pages"] = fake.state.get("user_pages", 0) + 1
        start, size = (int(page) - 1) * int(per_page), int(per_page)
        rows = listed[start:start + size]
        if not rows:
            return Response(status_code=204)
        return JSONResponse({"users": rows, "info": {"per_page": size, "count": len(rows), "page": int(page),
                                                     "more_records": start + size < len(listed)}})  # fmt: skip

    api = [
        Route("/crm/{version}/users", users, methods=["GET"]),
        Route("/crm/{version}/settings/fields", fields_meta, methods=["GET"]),
        Route("/crm/{version}/users", current_user, methods=["GET"]),
        Route("/crm/{version}/users/{user_id}", user, methods=["GET"]),
        Route("/crm/{version}/{module}/search", search, methods=["GET"]),
        Route("/crm/{version}/{module}/{record_id}", one_record, methods=["GET"]),
        Route("/crm/{version}/{module:str}", insert, methods=["POST"]),
    ]
    return Starlette(routes=[Route("/oauth/v2/token", token, methods=["GET", "POST"]), *api,
                             Mount("/dc-eu", routes=api), Mount("/sandbox", routes=api)])  # fmt: skip


fake_server, fake = vendor_fixtures(make_app)


def settings_for(fake: VendorFake, **changes: Any) -> dict[str, Any]:
    return {"accounts_url": fake.base_url, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
            "refresh_token": REFRESH_TOKEN} | changes  # fmt: skip


class TestZoho(ConnectorContract):
    OWNER_FIELDS = {}  # the fake renders every record with OWNER
    OWNER_ID = OWNER["id"]
    kind = "zoho"
    MODULE = "contacts"
    FIELD = "Customer_Tier"  # a custom field: Zoho names it after its label
    NESTED_FIELD = "Account_Name.name"
    NESTED_FIELDS = {"Account_Name": {"name": "Acme Corp", "id": ACCOUNT_ID}}
    NESTED_VALUE = "Acme Corp"
    IDS = ("4150868000000224001", "4150868000000224002", "4150868000000224003")
    KEY_FIELD = "Customer_Number"
    REQUESTS_PER_CALL = (1, 2)  # unknown: E.164, then national (see the docstring)
    MOBILE_FIELDS = {"contacts": "Mobile", "leads": "Mobile"}  # Accounts have Phone and Fax, no Mobile

    def settings(self, fake: VendorFake) -> dict[str, Any]:
        return settings_for(fake)

    # --- auth flows ---------------------------------------------------------------------------------------

    async def test_refresh_grant_sends_its_secrets_in_the_body_and_uses_the_zoho_header(self, fake, connector):
        fake.records = [self.record()]
        assert await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", self.FIELD, deadline=self.deadline()) == "GOLD"
        grant = next(r for r in fake.requests if r.path == "/oauth/v2/token")
        assert grant.method == "POST" and grant.query == ""
        sent = dict(parse_qsl(grant.body.decode()))
        assert sent == {"grant_type": "refresh_token", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                        "refresh_token": REFRESH_TOKEN}  # fmt: skip
        for request in fake.api_requests():
            assert request.headers["authorization"].startswith("Zoho-oauthtoken 1000.at-")

    async def test_client_credentials_flow_with_the_org_id(self, fake, http):
        connector = self.build(fake, http, refresh_token=None, org_id=ORG_ID)
        fake.records = [self.record()]
        assert await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", self.FIELD, deadline=self.deadline()) == "GOLD"
        (grant,) = fake.state["grants"]
        assert grant["grant_type"] == "client_credentials" and grant["soid"] == f"ZohoCRM.{ORG_ID}"
        assert "ZohoSearch.securesearch.READ" in grant["scope"] and "refresh_token" not in grant

    def test_settings_need_one_flow_and_https(self, fake):
        with pytest.raises(ValidationError, match="refresh_token, or an org_id"):
            ZohoSettings.model_validate(settings_for(fake, refresh_token=None))
        with pytest.raises(ValidationError, match="https://"):
            ZohoSettings.model_validate(settings_for(fake, accounts_url="http://accounts.zoho.eu"))
        eu = ZohoSettings.model_validate(settings_for(fake, accounts_url="", data_centre="eu"))
        assert ZohoConnector(eu, None).accounts_url == "https://accounts.zoho.eu"  # type: ignore[arg-type]

    async def test_token_expiry_is_read_from_expires_in_and_refreshed_before_it(self, fake, connector):
        fake.records = [self.record()]
        fake.state["expires_in"] = 2  # a 2 s token is refreshed once half its life has passed
        key = LookupKey(CALLER, "caller_id")
        await connector.fetch(key, "contacts", self.FIELD, deadline=self.deadline())
        await asyncio.sleep(1.05)
        assert await connector.fetch(key, "contacts", self.FIELD, deadline=self.deadline()) == "GOLD"
        assert fake.token_requests == 2 and fake.state.get("rejected", 0) == 0  # never sent a stale token

    async def test_a_revoked_refresh_token_says_so(self, fake, connector):
        fake.reject_credentials = True
        with pytest.raises(AuthError, match="token rejected: refresh token revoked") as caught:
            await connector.authenticate(deadline=self.deadline())
        assert caught.value.reason == "token_rejected"

    async def test_a_wrong_client_secret_names_the_data_centre(self, fake, http):
        connector = self.build(fake, http, client_secret="wrong")
        with pytest.raises(AuthError, match="invalid_client.*data centre"):
            await connector.authenticate(deadline=self.deadline())

    async def test_too_many_token_requests_is_rate_limited(self, fake, connector):
        fake.state["token_answer"] = {"error_description": "You have made too many requests continuously. Please "
                                      "try again after some time.", "error": "Access Denied", "status": "failure"}  # fmt: skip
        with pytest.raises(RateLimited):
            await connector.authenticate(deadline=self.deadline())

    async def test_api_domain_comes_from_the_token_response(self, fake, connector):
        fake.records = [self.record()]
        fake.state["api_domain"] = f"{fake.base_url}/dc-eu"
        assert await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", self.FIELD, deadline=self.deadline()) == "GOLD"
        assert all(r.path.startswith("/dc-eu/crm/v8/") for r in fake.api_requests())

    async def test_api_domain_setting_wins_for_sandboxes(self, fake, http):
        connector = self.build(fake, http, api_domain=f"{fake.base_url}/sandbox")
        fake.records = [self.record()]
        fake.state["api_domain"] = f"{fake.base_url}/dc-eu"
        assert await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", self.FIELD, deadline=self.deadline()) == "GOLD"
        assert all(r.path.startswith("/sandbox/crm/v8/") for r in fake.api_requests())

    async def test_scope_mismatch_names_the_scopes(self, fake, connector):
        await connector.authenticate(deadline=self.deadline())
        body = {"code": "OAUTH_SCOPE_MISMATCH", "details": {}, "message": "invalid oauth scope to access this URL",
                "status": "error"}  # fmt: skip
        fake.fail_next(401, body, times=2)
        with pytest.raises(AuthError, match="ZohoSearch.securesearch.READ") as caught:
            await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline())
        assert caught.value.reason == "scope"

    # --- phone search ------------------------------------------------------------------------------------

    def phone_searches(self, fake: VendorFake) -> list[str]:
        return [r.params["phone"] for r in fake.api_requests() if r.path.endswith("/search") and "phone" in r.params]

    async def test_e164_first_then_national_forms(self, fake, connector):
        key = LookupKey(CALLER, "caller_id")
        fake.records = [self.record(phone="+1 415 555 2671")]
        assert (await connector.find_record(key, "contacts", deadline=self.deadline())).id == self.IDS[0]
        assert self.phone_searches(fake) == ["+14155552671"]  # one request when stored with the country code
        fake.requests.clear()
        fake.records = [self.record(phone="(415) 555-2671")]
        assert (await connector.find_record(key, "contacts", deadline=self.deadline())).id == self.IDS[0]
        assert self.phone_searches(fake) == ["+14155552671", "(415) 555-2671"]
        fake.requests.clear()
        fake.records = []
        assert await connector.find_record(key, "contacts", deadline=self.deadline()) is None
        assert self.phone_searches(fake) == ["(415) 555-2671", "+14155552671"]  # the last hit first

    async def test_the_form_that_found_last_is_asked_first(self, fake, connector):
        fake.records = [self.record(0, phone="(415) 555-2671"), self.record(1, phone="(415) 555-0100"),
                        self.record(2, phone="+14155550199")]  # fmt: skip
        assert await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline())
        assert len(self.phone_searches(fake)) == 2  # E.164 missed, national found
        fake.requests.clear()
        key = LookupKey("+14155550100", "caller_id")
        record = await connector.find_record(key, "contacts", deadline=self.deadline())
        assert record.id == self.IDS[1] and self.phone_searches(fake) == ["(415) 555-0100"]  # one request
        fake.requests.clear()
        key = LookupKey("+14155550199", "caller_id")
        record = await connector.find_record(key, "contacts", deadline=self.deadline())
        assert record.id == self.IDS[2] and self.phone_searches(fake) == ["(415) 555-0199", "+14155550199"]
        fake.requests.clear()
        leads = await connector.find_record(LookupKey(CALLER, "caller_id"), "leads", deadline=self.deadline())
        assert leads is None and self.phone_searches(fake)[0] == "+14155552671"  # each module learns for itself

    async def test_one_search_per_caller_stored_in_e164(self, fake, connector):
        fake.records = [self.record(0, phone="+14155552671"), self.record(1, phone="+14155550100")]
        await connector.authenticate(deadline=self.deadline())
        before = len(fake.requests)
        for caller in ("+14155552671", "+14155550100"):
            assert await connector.fetch(LookupKey(caller, "caller_id"), "contacts", self.FIELD,
                                         deadline=self.deadline()) == "GOLD"  # fmt: skip
        assert len(fake.requests) - before == 2 and fake.token_requests == 1  # one search each, fields included

    async def test_a_mobile_number_is_found_too(self, fake, connector):
        fake.records = [self.record(phone="", fields={self.FIELD: "SILVER", "Mobile": "+14155552671"})]
        assert await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", self.FIELD, deadline=self.deadline()) == "SILVER"

    async def test_the_asked_fields_come_in_the_same_request(self, fake, connector):
        fake.records = [self.record(phone="+14155552671")]
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts",
                                             fields=[self.FIELD, "Account_Name.name"], deadline=self.deadline())  # fmt: skip
        (search,) = fake.api_requests()
        assert search.path == "/crm/v8/Contacts/search" and search.params["per_page"] == "200"
        assert set(search.params["fields"].split(",")) == {self.FIELD, "Account_Name", "Modified_Time", "Full_Name",
                                                           "Phone"}  # fmt: skip
        assert await connector.read_field(record, "Account_Name.name", deadline=self.deadline()) == "Acme Corp"
        assert len(fake.api_requests()) == 1

    async def test_v2_paths_and_no_fields_parameter(self, fake, http):
        connector = self.build(fake, http, api_version="v2")
        fake.records = [self.record(phone="+14155552671")]
        assert await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", self.FIELD, deadline=self.deadline()) == "GOLD"
        (search,) = fake.api_requests()
        assert search.path == "/crm/v2/Contacts/search" and "fields" not in search.params

    @pytest.mark.parametrize(("module", "path"), [("accounts", "Accounts"), ("contacts", "Contacts"), ("leads", "Leads")])
    async def test_each_module_maps_to_its_zoho_module(self, fake, connector, module, path):
        fake.records = [FakeRecord(module=m, id=f"41508680000002240{i}", phone="+14155552671", name="Acme Corp",
                                   fields={self.FIELD: m.upper()}) for i, m in enumerate(("accounts", "contacts", "leads"))]  # fmt: skip
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), module, fields=[self.FIELD],
                                             deadline=self.deadline())  # fmt: skip
        assert record.module == path and record.fields[self.FIELD] == module.upper()
        assert fake.api_requests()[0].path == f"/crm/v8/{path}/search"

    async def test_an_unknown_field_is_named(self, fake, connector):
        fake.records = [self.record()]
        with pytest.raises(UnexpectedResponse, match="field Status__c does not exist on Contacts") as caught:
            await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "Status__c", deadline=self.deadline())
        assert caught.value.reason == "no_field"

    async def test_too_many_requests_without_retry_after_is_rate_limited(self, fake, connector):
        await connector.authenticate(deadline=self.deadline())
        fake.fail_next(429, {"code": "TOO_MANY_REQUESTS", "details": {}, "message": "too many requests",
                             "status": "error"})  # fmt: skip
        with pytest.raises(RateLimited):
            await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline())

    # --- typed keys ----------------------------------------------------------------------------------------

    async def test_a_typed_record_id_reads_the_record(self, fake, connector):
        fake.records = [self.record()]
        assert await connector.fetch(LookupKey(self.IDS[0], "dtmf"), "contacts", self.FIELD, deadline=self.deadline()) == "GOLD"
        assert fake.api_requests()[-1].path == f"/crm/v8/Contacts/{self.IDS[0]}"
        assert await connector.find_record(LookupKey("4150868000000999999", "dtmf"), "contacts", deadline=self.deadline()) is None
        before = len(fake.api_requests())
        assert await connector.find_record(LookupKey("12*34", "dtmf"), "contacts", deadline=self.deadline()) is None
        assert len(fake.api_requests()) == before  # not an id: not asked

    async def test_v8_equals_acts_as_contains_so_matches_are_checked(self, fake, http):
        connector = self.build(fake, http, key_field=self.KEY_FIELD)
        fake.records = [self.record(0, fields={self.FIELD: "GOLD", self.KEY_FIELD: "123456"})]
        assert await connector.find_record(LookupKey("12345", "dtmf"), "contacts", deadline=self.deadline()) is None
        sent = fake.api_requests()[-1].params
        assert sent["criteria"] == "(Customer_Number:equals:12345)"
        assert self.KEY_FIELD in sent["fields"].split(",")

    async def test_criteria_values_are_escaped(self, fake, http):
        connector = self.build(fake, http, key_field=self.KEY_FIELD)
        fake.records = [self.record(0, phone="", fields={self.FIELD: "GOLD", self.KEY_FIELD: "A(1),2"})]
        assert await connector.fetch(LookupKey("A(1),2", "dtmf"), "contacts", self.FIELD, deadline=self.deadline()) == "GOLD"
        assert fake.api_requests()[-1].params["criteria"] == r"(Customer_Number:equals:A\(1\)\,2)"
        assert escape_criteria("a\\b") == "a\\\\b"

    # --- lookups --------------------------------------------------------------------------------------------

    async def test_other_fields_of_a_lookup_fetch_the_related_record(self, fake, connector):
        fake.records = [self.record()]
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline())
        assert await connector.read_field(record, "Account_Name.Industry", deadline=self.deadline()) == "Manufacturing"
        last = fake.api_requests()[-1]
        assert last.path == f"/crm/v8/Accounts/{ACCOUNT_ID}" and last.params["fields"] == "Industry"

    async def test_a_custom_lookup_asks_the_field_metadata_once(self, fake, connector):
        fake.records = [self.record(fields={self.FIELD: "GOLD", "Partner_Account": {"name": "Globex", "id": PARTNER_ID}})]
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline())
        for _ in range(2):
            assert await connector.read_field(record, "Partner_Account.Industry", deadline=self.deadline()) == "Energy"
        metadata = [r for r in fake.api_requests() if r.path == "/crm/v8/settings/fields"]
        assert len(metadata) == 1 and metadata[0].params["module"] == "Contacts"

    async def test_owner_fields(self, fake, connector):
        fake.records = [self.record()]
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline())
        assert await connector.read_field(record, "Owner.email", deadline=self.deadline()) == OWNER["email"]
        assert await connector.read_field(record, "Owner.phone", deadline=self.deadline()) == "+1 415 555 0100"
        assert fake.api_requests()[-1].path == f"/crm/v8/users/{OWNER['id']}"

    # --- call log -----------------------------------------------------------------------------------------------

    async def test_the_call_record_is_zohos_calls_shape(self, fake, connector):
        fake.records = [self.record()]
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline())
        activity_id = await connector.log_call(self.call(record), LogOptions(inbound_answered=True), deadline=self.deadline())
        (stored,) = fake.activities
        assert stored["id"] == activity_id
        assert stored["Subject"] == "Inbound call from +14155552671 [1795657573.1]"
        assert stored["Call_Type"] == "Inbound" and stored["Call_Start_Time"] == "2026-11-26T09:30:00+00:00"
        assert stored["Call_Duration"] == "01:33"
        assert stored["Who_Id"] == {"id": self.IDS[0]}
        assert stored["What_Id"] == {"id": ACCOUNT_ID} and stored["$se_module"] == "Accounts"
        assert "crmroute call id: 1795657573.1" in stored["Description"]
        dedupe = next(r for r in fake.api_requests() if r.path == "/crm/v8/Calls/search")
        assert dedupe.params["criteria"] == "(Subject:equals:Inbound call from +14155552671 [1795657573.1])"

    async def test_a_missed_call_has_no_duration_and_a_lead_is_linked_by_what_id(self, fake, connector):
        lead = Record(module="Leads", id=self.IDS[1], fields={})
        fake.records = [self.record(1, module="leads")]
        call = self.call(lead, "missed-1")
        call.outcome, call.talk_seconds = "missed", 0
        await connector.log_call(call, LogOptions(inbound_missed=True), deadline=self.deadline())
        (stored,) = fake.activities
        assert stored["Call_Type"] == "Missed" and "Call_Duration" not in stored
        assert stored["What_Id"] == {"id": self.IDS[1]} and stored["$se_module"] == "Leads" and "Who_Id" not in stored

    async def test_outbound_calls(self, fake, connector):
        call = self.call(None, "out-1")
        call.direction, call.subject, call.talk_seconds = "outbound", "", 3725
        await connector.log_call(call, LogOptions(outbound=True), deadline=self.deadline())
        (stored,) = fake.activities
        assert stored["Call_Type"] == "Outbound" and stored["Call_Duration"] == "62:05"
        assert stored["Subject"] == "Outbound call to +14155552671 [out-1]" and "Who_Id" not in stored

    async def test_without_a_record_contacts_then_leads_are_searched(self, fake, connector):
        fake.records = [self.record(2, module="leads", phone="+14155552671")]
        await connector.log_call(self.call(None, "c-2"), LogOptions(inbound_answered=True), deadline=self.deadline())
        (stored,) = fake.activities
        assert stored["What_Id"] == {"id": self.IDS[2]} and stored["$se_module"] == "Leads"
        searched = [r.path for r in fake.api_requests() if "phone" in r.params]
        assert searched[0] == "/crm/v8/Contacts/search" and searched[-1] == "/crm/v8/Leads/search"

    async def test_unknown_callers_become_leads_with_the_mandatory_fields(self, fake, connector):
        await connector.log_call(self.call(None, "c-3"), LogOptions(create_unknown=True), deadline=self.deadline())
        (created,) = fake.created
        assert created["Last_Name"] == "+14155552671" and created["Company"] and created["Phone"] == "+14155552671"
        assert fake.api_requests()[-2].path == "/crm/v8/Leads"
        assert fake.activities[0]["What_Id"] == {"id": created["id"]} and fake.activities[0]["$se_module"] == "Leads"

    async def test_unknown_callers_can_become_contacts(self, fake, http):
        connector = self.build(fake, http, create_module="Contacts")
        await connector.log_call(self.call(None, "c-4"), LogOptions(create_unknown=True), deadline=self.deadline())
        (created,) = fake.created
        assert "Company" not in created and fake.activities[0]["Who_Id"] == {"id": created["id"]}

    async def test_a_rejected_call_names_the_field(self, fake, connector):
        await connector.authenticate(deadline=self.deadline())
        fake.fail_next(204)  # the idempotency search finds nothing
        fake.fail_next(400, {"data": [{"code": "INVALID_DATA", "details": {"api_name": "Call_Start_Time"},
                                       "message": "invalid data", "status": "error"}]})  # fmt: skip
        with pytest.raises(UnexpectedResponse, match="rejected Call_Start_Time on Calls"):
            await connector.log_call(self.call(Record("Leads", self.IDS[0], {})), LogOptions(),
                                     deadline=self.deadline())  # fmt: skip


def test_the_kind_is_registered_with_all_three_modules():
    cls = registry()["zoho"]
    assert cls is ZohoConnector and cls.MODULES == {"accounts": "Accounts", "contacts": "Contacts", "leads": "Leads"}


# --- users (agents sync) ------------------------------------------------------------------------


async def test_list_users_pages_while_more_records(fake):
    from crmroute.connectors._http import make_client
    from crmroute.settings import Settings

    fake.state["users"] = [{"id": f"41508680000002{i:05d}", "full_name": f"Agent {i}", "email": f"agent{i}@example.com",
                            "status": "active", "role": {"name": "Sales", "id": "1"}} for i in range(401)]  # fmt: skip
    fake.state["users"].append({"id": "1", "full_name": "Gone", "email": "gone@example.com", "status": "disabled"})
    http = make_client(Settings(ca_bundle=fake.ca_path))
    try:
        connector = TestZoho().build(fake, http)
        users = await connector.list_users(deadline=TestZoho.deadline())
        assert len(users) == 401 and fake.state["user_pages"] == 3  # 200 + 200 + 1
        assert users[0] == CrmUser("4150868000000200000", "Agent 0", "agent0@example.com")
        assert "1" not in {u.id for u in users}  # type=ActiveUsers: the disabled one is not listed
        assert all(r.params["type"] == "ActiveUsers" for r in fake.api_requests() if r.path.endswith("/users"))
        fake.state["users"] = []
        assert await connector.list_users(deadline=TestZoho.deadline()) == []  # 204: nobody
    finally:
        await http.aclose()
