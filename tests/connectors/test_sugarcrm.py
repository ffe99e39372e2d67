"""SugarCRM against a strict loopback fake of its REST API v11 (reference section 7).

The fake serves what the connector uses, in Sugar's shapes: ``POST /rest/v11/oauth2/token``
(password and refresh_token grants, JSON bodies, rotating refresh tokens),
``POST /rest/v11/{Module}/filter`` (Sugar's filter expressions and operators, ``fields``,
``max_num``, ``order_by``, ``next_offset``), ``GET /rest/v11/{Module}/{id}/link/{link}``,
``POST /rest/v11/{Module}`` and ``POST /rest/v11/Calls/{id}/link/{link}/{remote_id}``.
It is as strict as Sugar: the ``OAuth-Token`` header, "Unknown field X" and "Did not
recognize the operand" (422 ``invalid_parameter``), "Non existing field" in
``order_by``, enum values on Calls. Like Sugar it leaves NULL and unknown names out
of a record, and silently ignores unknown fields on create (recorded in
``fake.state["ignored"]`` so tests can insist there are none). String comparisons are
case-insensitive, as MySQL's default collation makes them.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from crmroute.connectors.base import Record
from crmroute.connectors.sugarcrm import SugarCRMConnector, SugarSettings, call_subject
from crmroute.errors import AuthError, ConnectorUnavailable, UnexpectedResponse
from crmroute.routing.engine import LookupKey
from crmroute.schemas import LogOptions
from tests.connectors.contract import CALLER, OTHER_PHONE, ConnectorContract
from tests.connectors.fakecrm import FakeRecord, VendorFake, vendor_fixtures

API = "/rest/v11"
USERNAME, PASSWORD = "crmroute-api", "sug4r-Pa55word"
RULE_USER, RULE_PASSWORD = "agent.smith", "rule-pa55"
CUSTOM_KEY, CUSTOM_SECRET = "crmroute-key", "oauth-key-s3cret"
CLIENTS = {"sugar": "", CUSTOM_KEY: CUSTOM_SECRET}
PLATFORMS = {"base", "mobile", "portal", "crmroute", "pbx"}

MODULE_OF = {"contacts": "Contacts", "leads": "Leads", "accounts": "Accounts"}
PHONES = {"Contacts": ("phone_work", "phone_mobile", "phone_home", "phone_other", "phone_fax"),
          "Leads": ("phone_work", "phone_mobile", "phone_home", "phone_other", "phone_fax"),
          "Accounts": ("phone_office", "phone_alternate", "phone_fax")}  # fmt: skip
COMMON = {"id", "name", "date_entered", "date_modified", "modified_user_id", "created_by", "assigned_user_id",
          "assigned_user_name", "description", "deleted", "locked_fields", "team_name"}  # fmt: skip
SCHEMA: dict[str, set[str]] = {
    "Contacts": COMMON | set(PHONES["Contacts"]) | {"first_name", "last_name", "title", "email", "account_name",
                                                   "account_id", "lead_source", "customer_status_c",
                                                   "customer_number_c", "tier_c"},
    "Leads": COMMON | set(PHONES["Leads"]) | {"first_name", "last_name", "account_name", "status", "lead_source",
                                             "email", "customer_status_c", "customer_number_c"},
    "Accounts": COMMON | set(PHONES["Accounts"]) | {"industry", "account_type", "website", "customer_status_c",
                                                   "customer_number_c"},
    "Users": {"id", "user_name", "full_name", "first_name", "last_name", "email1", "status", "is_group",
              "date_modified", "deleted"},
    "Calls": COMMON | {"direction", "status", "date_start", "date_end", "duration_hours", "duration_minutes",
                       "parent_type", "parent_id", "parent_name", "reminder_time", "outlook_id"},
}  # fmt: skip
LINKS = {"Contacts": {"accounts": "Accounts", "calls": "Calls", "leads": "Leads"},
         "Leads": {"calls": "Calls", "contacts": "Contacts"},
         "Accounts": {"contacts": "Contacts", "calls": "Calls", "members": "Accounts"},
         "Calls": {"contacts": "Contacts", "leads": "Leads", "users": "Users"}}  # fmt: skip
MANDATORY = ("id", "date_modified", "assigned_user_id", "created_by", "locked_fields")
ENUMS = {("Calls", "direction"): {"Inbound", "Outbound"}, ("Calls", "status"): {"Planned", "Held", "Not Held"},
         ("Calls", "parent_type"): {"Accounts", "Contacts", "Leads", "Opportunities", "Cases"}}  # fmt: skip
OPERANDS = {"$equals", "$not_equals", "$starts", "$ends", "$contains", "$not_contains", "$in", "$not_in",
            "$is_null", "$not_null", "$empty", "$not_empty", "$lt", "$lte", "$gt", "$gte"}  # fmt: skip
ACCOUNT_ID = "7a1c2e4f-1b2c-4d5e-8f90-0a1b2c3d4e5f"


class Invalid(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def sugar_error(status: int, error: str, message: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_message": message}, status_code=status)


def sugar_date(iso: str) -> str:
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(timezone.utc)
    return moment.isoformat(timespec="seconds")


def _ci(value: Any) -> str:
    return str(value if value is not None else "").casefold()


def make_app(fake: VendorFake) -> Starlette:
    fake.auth_paths = (f"{API}/oauth2/",)

    # --- OAuth --------------------------------------------------------------------------

    def token_answer(platform: str) -> JSONResponse:
        refresh = f"rt-{uuid.uuid4()}"
        fake.state["refresh_tokens"] = {refresh}  # Sugar keeps one set per platform: older ones stop working
        body = {"access_token": fake.issue_token("sugar"), "expires_in": fake.state.get("expires_in", 3600),
                "token_type": "bearer", "scope": None, "refresh_token": refresh, "refresh_expires_in": 1209600,
                "download_token": f"dl-{uuid.uuid4()}"}  # fmt: skip
        fake.state.setdefault("platforms", []).append(platform)
        return JSONResponse(body)

    async def token(request: Request) -> Response:
        if request.method != "POST":
            return sugar_error(404, "no_method", "Could not find a route with 2 elements")
        if not request.headers.get("content-type", "").startswith("application/json"):
            return sugar_error(400, "invalid_request", "The request body must be JSON")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return sugar_error(400, "invalid_request", "Could not decode the JSON body")
        fake.state.setdefault("grants", []).append(body)
        for name in ("grant_type", "client_id", "client_secret", "platform"):
            if name not in body:
                return sugar_error(422, "missing_parameter", f"Missing parameter: {name}")
        if CLIENTS.get(body["client_id"]) != body["client_secret"]:
            return sugar_error(401, "invalid_client", "The client credentials are invalid")
        if body["platform"] not in PLATFORMS:
            return sugar_error(400, "invalid_parameter", f"Invalid platform {body['platform']}")
        if body["grant_type"] == "password":
            allowed = {USERNAME: PASSWORD, RULE_USER: RULE_PASSWORD}
            if fake.reject_credentials or allowed.get(body.get("username")) != body.get("password"):
                return sugar_error(401, "invalid_grant", "Invalid Credentials")
        elif body["grant_type"] == "refresh_token":
            if fake.reject_credentials or fake.state.get("refuse_refresh") or \
                    body.get("refresh_token") not in fake.state.get("refresh_tokens", set()):  # fmt: skip
                return sugar_error(401, "invalid_grant", "Invalid refresh token")
        else:
            return sugar_error(400, "unsupported_grant_type", "Unsupported grant type")
        return token_answer(body["platform"])

    # --- records ------------------------------------------------------------------------

    def unauthorized(request: Request) -> Response | None:
        value = request.headers.get("oauth-token")
        if not value:
            return sugar_error(401, "need_login", "No valid authentication for user.")
        if value not in fake.tokens:
            return sugar_error(401, "invalid_grant", "The access token provided is invalid.")
        return None

    def values(record: FakeRecord) -> dict[str, Any]:
        smodule = MODULE_OF[record.module]
        row: dict[str, Any] = {"id": record.id, "name": record.name, "date_modified": sugar_date(record.modified),
                               "assigned_user_id": "seed_sally_id", "created_by": "1", "locked_fields": [],
                               PHONES[smodule][0]: record.phone or None}  # fmt: skip
        for name, value in record.fields.items():
            if name == "accounts" and isinstance(value, dict):  # the contact's account: relate fields are flat
                row["account_id"], row["account_name"] = value.get("id"), value.get("name")
            else:
                row[name] = value
        return row

    def related_accounts() -> dict[str, dict[str, Any]]:
        found = {}
        for record in fake.records:
            account = record.fields.get("accounts")
            if isinstance(account, dict) and account.get("id"):
                found[account["id"]] = {"id": account["id"], "name": account.get("name"), "date_modified":
                                        "2026-01-01T00:00:00+00:00"} | {k: v for k, v in account.items()}  # fmt: skip
        return found

    def rows_of(smodule: str) -> list[dict[str, Any]]:
        if smodule == "Users":  # fake.state["users"]: id, user_name, full_name, email1, status, date_modified
            return [dict(u) for u in fake.state.get("users", [])]
        if smodule == "Calls":
            return [dict(a) for a in fake.activities]
        return [values(r) for r in fake.records if MODULE_OF[r.module] == smodule]

    def check_field(smodule: str, field: str) -> None:
        if "." in field:
            link, _, remote = field.partition(".")
            target = LINKS.get(smodule, {}).get(link)
            if target is None:
                raise Invalid(422, "invalid_parameter", f"Invalid link {link} for field {remote}")
            check_field(target, remote)
            return
        if field not in SCHEMA[smodule]:
            raise Invalid(422, "invalid_parameter", f"Unknown field {field}")

    def match_defs(smodule: str, defs: Any, row: dict[str, Any]) -> bool:
        if not isinstance(defs, list):
            raise Invalid(422, "invalid_parameter", f"Unexpected filter type {type(defs).__name__}.")
        results = [match_def(smodule, d, row) for d in defs]  # evaluate all: validation errors surface
        return all(results)

    def match_def(smodule: str, definition: Any, row: dict[str, Any]) -> bool:
        if not isinstance(definition, dict):
            raise Invalid(422, "invalid_parameter", f"Did not recognize the definition: {definition}")
        results = []
        for key, value in definition.items():
            if key == "$or":
                if not isinstance(value, list):
                    raise Invalid(422, "invalid_parameter", "Did not recognize the definition: $or")
                results.append(any([match_def(smodule, d, row) for d in value]))
            elif key == "$and":
                results.append(match_defs(smodule, value, row))
            elif key.startswith("$"):
                raise Invalid(422, "invalid_parameter", f"Did not recognize the operand: {key}")
            else:
                results.append(match_field(smodule, key, value, row))
        return all(results)

    def match_field(smodule: str, field: str, condition: Any, row: dict[str, Any]) -> bool:
        check_field(smodule, field)
        if not isinstance(condition, dict):
            condition = {"$equals": condition}
        if "." in field:
            link, _, remote = field.partition(".")
            nested = row.get(link) if isinstance(row.get(link), dict) else {}
            actual = nested.get(remote)
        else:
            actual = row.get(field)
        results = []
        for op, value in condition.items():
            if op not in OPERANDS:
                raise Invalid(422, "invalid_parameter", f"Did not recognize the operand: {op}")
            if op in ("$in", "$not_in") and not isinstance(value, list):
                raise Invalid(422, "invalid_parameter", f"{op} requires an array")
            text = _ci(actual)
            results.append({
                "$equals": lambda: actual is not None and text == _ci(value),
                "$not_equals": lambda: text != _ci(value),
                "$starts": lambda: actual is not None and text.startswith(_ci(value)),
                "$ends": lambda: actual is not None and text.endswith(_ci(value)),
                "$contains": lambda: actual is not None and _ci(value) in text,
                "$not_contains": lambda: _ci(value) not in text,
                "$in": lambda: actual is not None and text in {_ci(v) for v in value},
                "$not_in": lambda: text not in {_ci(v) for v in value},
                "$is_null": lambda: actual is None,
                "$not_null": lambda: actual is not None,
                "$empty": lambda: actual in (None, ""),
                "$not_empty": lambda: actual not in (None, ""),
                "$lt": lambda: text < _ci(value), "$lte": lambda: text <= _ci(value),
                "$gt": lambda: text > _ci(value), "$gte": lambda: text >= _ci(value),
            }[op]())  # fmt: skip
        return all(results)

    def parse_fields(raw: Any) -> list[str]:
        if raw in (None, ""):
            return []
        if not isinstance(raw, str):
            raise Invalid(422, "invalid_parameter", "Fields must be string or array")
        chunks = [c.strip() for c in raw.split(",")]
        try:
            decoded = json.loads("[" + ",".join(c if '"' in c else f'"{c}"' for c in chunks) + "]")
        except ValueError:
            raise Invalid(422, "invalid_parameter", "Unable to parse fields") from None
        return [d if isinstance(d, str) else d.get("name", "") for d in decoded]

    def render(smodule: str, row: dict[str, Any], fields: list[str]) -> dict[str, Any]:
        wanted = set(fields) | set(MANDATORY) if fields else set(SCHEMA[smodule])
        out = {k: v for k, v in row.items() if k in wanted and k in SCHEMA[smodule] and v is not None}
        return out | {"_acl": {"fields": {}}, "_module": smodule}

    def ordered(smodule: str, rows: list[dict[str, Any]], order_by: Any) -> list[dict[str, Any]]:
        spec = order_by or "date_modified:desc"
        for column in reversed(str(spec).split(",")):
            field, _, direction = column.partition(":")
            if field not in SCHEMA[smodule]:
                raise Invalid(422, "invalid_parameter", f"Non existing field: {field} in module: {smodule}")
            rows = sorted(rows, key=lambda r: str(r.get(field) or ""), reverse=direction.lower() != "asc")
        return rows

    def page(smodule: str, rows: list[dict[str, Any]], args: dict[str, Any]) -> JSONResponse:
        fields = parse_fields(args.get("fields"))
        rows = ordered(smodule, rows, args.get("order_by"))
        offset, limit = int(args.get("offset") or 0), int(args.get("max_num") or 20)
        chunk = rows[offset: offset + limit]
        next_offset = offset + limit if offset + limit < len(rows) else -1
        return JSONResponse({"next_offset": next_offset, "records": [render(smodule, r, fields) for r in chunk]})

    async def filter_list(request: Request) -> Response:
        smodule = request.path_params["module"]
        if request.method != "POST":
            return sugar_error(404, "no_method", "Could not find a route with 2 elements")
        if (denied := unauthorized(request)) is not None:
            return denied
        if smodule not in SCHEMA:
            return sugar_error(404, "no_method", f"Could not find a route with 2 elements ({smodule})")
        try:
            args = json.loads(await request.body() or b"{}")
        except ValueError:
            return sugar_error(400, "invalid_request", "Could not decode the JSON body")
        fake.state.setdefault("filters", []).append((smodule, args))
        try:
            match_defs(smodule, args.get("filter", []), {})  # Sugar builds (and checks) the query first
            rows = [r for r in rows_of(smodule) if match_defs(smodule, args.get("filter", []), r)]
            return page(smodule, rows, args)
        except Invalid as exc:
            return sugar_error(exc.status, exc.error, exc.message)

    async def related(request: Request) -> Response:
        smodule, record_id, link = (request.path_params[k] for k in ("module", "record", "link"))
        if request.method != "GET":
            return sugar_error(404, "no_method", "Could not find a route with 4 elements")
        if (denied := unauthorized(request)) is not None:
            return denied
        if smodule not in SCHEMA or not any(r["id"] == record_id for r in rows_of(smodule)):
            return sugar_error(404, "not_found", f"Could not find record: {record_id} in module: {smodule}")
        target = LINKS.get(smodule, {}).get(link)
        if target is None:
            return sugar_error(404, "not_found", f"Could not find a relationship named: {link}")
        row = next(r for r in rows_of(smodule) if r["id"] == record_id)
        if target == "Accounts" and row.get("account_id"):
            rows = [related_accounts()[row["account_id"]]]
        else:
            rows = []
        args = dict(request.query_params)
        try:
            return page(target, rows, args)
        except Invalid as exc:
            return sugar_error(exc.status, exc.error, exc.message)

    async def create(request: Request) -> Response:
        smodule = request.path_params["module"]
        if request.method != "POST":
            return sugar_error(404, "no_method", "Could not find a route with 1 elements")
        if (denied := unauthorized(request)) is not None:
            return denied
        if smodule not in SCHEMA:
            return sugar_error(404, "no_method", f"Could not find a route with 1 elements ({smodule})")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return sugar_error(400, "invalid_request", "Could not decode the JSON body")
        if not isinstance(body, dict):
            return sugar_error(422, "invalid_parameter", "Record data must be an object")
        ignored = [k for k in body if k not in SCHEMA[smodule]]  # Sugar drops unknown names silently
        fake.state.setdefault("ignored", []).extend(f"{smodule}.{k}" for k in ignored)
        known = {k: v for k, v in body.items() if k in SCHEMA[smodule]}
        for (module, field), allowed in ENUMS.items():
            if module == smodule and field in known and known[field] not in allowed:
                return sugar_error(422, "invalid_parameter", f"Invalid field value: {field} in module: {smodule}")
        new_id = str(uuid.uuid4())
        stored = known | {"id": new_id, "date_modified": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                          "assigned_user_id": "seed_sally_id", "created_by": "1"}  # fmt: skip
        if smodule == "Calls":
            fake.activities.append(stored)
        else:
            fake.created.append(stored | {"_module": smodule})
            module = {v: k for k, v in MODULE_OF.items()}[smodule]
            fake.records.append(FakeRecord(module=module, id=new_id, phone=str(known.get(PHONES[smodule][0]) or ""),
                                           name=str(known.get("last_name") or known.get("name") or ""),
                                           modified=stored["date_modified"]))  # fmt: skip
        return JSONResponse(render(smodule, stored, []))

    async def link(request: Request) -> Response:
        smodule, record_id, link_name, remote = (request.path_params[k] for k in ("module", "record", "link", "remote"))
        if request.method != "POST":
            return sugar_error(404, "no_method", "Could not find a route with 5 elements")
        if (denied := unauthorized(request)) is not None:
            return denied
        if smodule != "Calls":
            return sugar_error(404, "no_method", "this fake links Calls only")
        call = next((a for a in fake.activities if a["id"] == record_id), None)
        if call is None:
            return sugar_error(404, "not_found", f"Could not find record: {record_id} in module: Calls")
        target = LINKS["Calls"].get(link_name)
        if target is None:
            return sugar_error(404, "not_found", f"Could not find a relationship named: {link_name}")
        if not any(r["id"] == remote for r in rows_of(target)):
            return sugar_error(404, "not_found", f"Could not find record: {remote} in module: {target}")
        call.setdefault(f"_linked_{link_name}", []).append(remote)
        return JSONResponse({"record": render("Calls", call, []), "related_record": {"id": remote, "_module": target}})

    async def no_route(request: Request) -> Response:
        return sugar_error(404, "no_method", f"Could not find a route for {request.url.path}")

    async def me(request: Request) -> Response:
        if denied := unauthorized(request):
            return denied
        fake.state["me_checks"] = fake.state.get("me_checks", 0) + 1
        return JSONResponse({"current_user": {"id": "seed_sally_id", "user_name": "sally", "full_name": "Sally Bronsen",
                                              "type": "user"}})  # fmt: skip

    return Starlette(routes=[
        Route(f"{API}/oauth2/token", token, methods=["GET", "POST"]),
        Route(f"{API}/me", me, methods=["GET"]),
        Route(f"{API}/{{module}}/filter", filter_list, methods=["GET", "POST"]),
        Route(f"{API}/{{module}}/{{record}}/link/{{link}}/{{remote}}", link, methods=["GET", "POST", "DELETE"]),
        Route(f"{API}/{{module}}/{{record}}/link/{{link}}", related, methods=["GET", "POST"]),
        Route(f"{API}/{{module}}", create, methods=["GET", "POST"]),
        Route("/{path:path}", no_route, methods=["GET", "POST", "PUT", "DELETE"]),
    ])  # fmt: skip


fake_server, fake = vendor_fixtures(make_app)

CONTACT_IDS = ("2f3a8c1e-9d4b-11ee-8c90-0242ac120002", "3b7d9e2a-9d4b-11ee-8c90-0242ac120003",
               "4c8e0f3b-9d4b-11ee-8c90-0242ac120004")  # fmt: skip
KEY = LookupKey(CALLER, "caller_id")


def filters(fake: VendorFake, module: str | None = None) -> list[dict[str, Any]]:
    return [args for m, args in fake.state.get("filters", []) if module is None or m == module]


class TestSugarCRM(ConnectorContract):
    OWNER_FIELDS = {"assigned_user_id": "seed_sally_id"}
    OWNER_ID = "seed_sally_id"
    kind = "sugarcrm"
    MODULE = "contacts"
    FIELD = "customer_status_c"
    NESTED_FIELD = "accounts.name"  # a link name and the related record's field
    NESTED_FIELDS = {"accounts": {"id": ACCOUNT_ID, "name": "Acme Corp", "industry": "Energy"}}
    NESTED_VALUE = "Acme Corp"
    IDS = CONTACT_IDS
    KEY_FIELD = "customer_number_c"
    REQUESTS_PER_CALL = (1, 1)
    MOBILE_FIELDS = {"contacts": "phone_mobile", "leads": "phone_mobile"}  # Accounts: phone_office, phone_alternate

    def settings(self, fake: VendorFake) -> dict[str, Any]:
        return {"site_url": fake.base_url, "username": USERNAME, "password": PASSWORD}

    # --- auth ----------------------------------------------------------------------------

    async def test_password_grant_request(self, fake, connector):
        fake.records = [self.record()]
        await connector.fetch(KEY, "contacts", self.FIELD, deadline=self.deadline())
        assert fake.state["grants"] == [{"grant_type": "password", "username": USERNAME, "password": PASSWORD,
                                         "client_id": "sugar", "client_secret": "", "platform": "crmroute"}]  # fmt: skip
        login = fake.requests[0]
        assert login.method == "POST" and login.path == f"{API}/oauth2/token"
        assert login.headers["content-type"] == "application/json"
        api = fake.api_requests()[0]
        assert api.headers["oauth-token"].startswith("sugar-") and "authorization" not in api.headers

    async def test_the_rules_credentials_win(self, fake, http):
        settings = SugarSettings.model_validate(self.settings(fake))
        connector = SugarCRMConnector(settings, http, username=RULE_USER, password=RULE_PASSWORD)
        await connector.authenticate(deadline=self.deadline())
        assert fake.state["grants"][0]["username"] == RULE_USER
        assert fake.state["grants"][0]["password"] == RULE_PASSWORD

    async def test_custom_oauth_key_and_platform(self, fake, http):
        connector = self.build(fake, http, client_id=CUSTOM_KEY, client_secret=CUSTOM_SECRET, platform="pbx")
        await connector.authenticate(deadline=self.deadline())
        grant = fake.state["grants"][0]
        assert (grant["client_id"], grant["client_secret"], grant["platform"]) == (CUSTOM_KEY, CUSTOM_SECRET, "pbx")

    async def test_a_wrong_key_secret_names_the_key(self, fake, http):
        connector = self.build(fake, http, client_id=CUSTOM_KEY, client_secret="wrong")
        with pytest.raises(AuthError, match="OAuth key 'crmroute-key'.*Admin > OAuth Keys") as caught:
            await connector.authenticate(deadline=self.deadline())
        assert "wrong" not in str(caught.value)

    async def test_refused_password_says_who_and_where(self, fake, connector):
        fake.reject_credentials = True
        with pytest.raises(AuthError) as caught:
            await connector.authenticate(deadline=self.deadline())
        text = str(caught.value)
        assert "crmroute-api" in text and "'crmroute'" in text and "Invalid Credentials" in text
        assert PASSWORD not in text

    async def test_an_unregistered_platform_is_explained(self, fake, http):
        connector = self.build(fake, http, platform="unregistered")
        with pytest.raises(AuthError, match="Invalid platform unregistered.*platform is allowed"):
            await connector.authenticate(deadline=self.deadline())

    async def test_expires_in_is_read_and_refreshed_before_expiry(self, fake, connector):
        fake.records = [self.record()]
        await connector.fetch(KEY, "contacts", self.FIELD, deadline=self.deadline())
        token = connector._token
        assert 3500 < token.expires_at - time.monotonic() <= 3600
        first_refresh = connector._refresh_state  # kept out of the token, for the credential store
        token.issued_at, token.expires_at = time.monotonic() - 3570, time.monotonic() + 30  # inside the margin
        await connector.fetch(KEY, "contacts", self.FIELD, deadline=self.deadline())
        assert fake.state["grants"][1] == {"grant_type": "refresh_token", "refresh_token": first_refresh,
                                           "client_id": "sugar", "client_secret": "", "platform": "crmroute"}  # fmt: skip
        assert connector._refresh_state != first_refresh  # rotated, and the newest kept
        assert all(r.headers["oauth-token"] in fake.tokens for r in fake.api_requests())  # no 401 was needed

    async def test_a_short_token_is_refreshed_at_half_its_life(self, fake, connector):
        fake.state["expires_in"] = 60
        token = await connector.authenticate(deadline=self.deadline())
        assert token.fresh()
        token.issued_at, token.expires_at = time.monotonic() - 31, time.monotonic() + 29
        assert not token.fresh()

    async def test_a_refused_refresh_token_falls_back_to_the_password(self, fake, connector):
        fake.records = [self.record()]
        await connector.fetch(KEY, "contacts", self.FIELD, deadline=self.deadline())
        fake.expire_tokens()
        fake.state["refuse_refresh"] = True
        assert await connector.fetch(KEY, "contacts", self.FIELD, deadline=self.deadline()) == "GOLD"
        assert [g["grant_type"] for g in fake.state["grants"]] == ["password", "refresh_token", "password"]

    async def test_refresh_and_password_both_refused_is_an_auth_error(self, fake, connector):
        await connector.authenticate(deadline=self.deadline())
        fake.expire_tokens()
        fake.reject_credentials = True
        with pytest.raises(AuthError, match="refused the login"):
            await connector.fetch(KEY, "contacts", self.FIELD, deadline=self.deadline())

    async def test_a_token_refused_twice_is_an_auth_error(self, fake, connector):
        await connector.authenticate(deadline=self.deadline())
        fake.fail_next(401, {"error": "invalid_grant", "error_message": "The access token provided is invalid."},
                       times=2)  # fmt: skip
        with pytest.raises(AuthError, match="access token provided is invalid"):
            await connector.fetch(KEY, "contacts", self.FIELD, deadline=self.deadline())

    def test_settings_are_checked(self, fake):
        base = self.settings(fake)
        assert SugarSettings.model_validate(base | {"site_url": fake.base_url + "/rest/v11/"}).site_url == fake.base_url
        with pytest.raises(ValidationError, match="https"):
            SugarSettings.model_validate(base | {"site_url": "http://crm.example.com"})
        with pytest.raises(ValidationError, match="browser's platform"):
            SugarSettings.model_validate(base | {"platform": "base"})
        with pytest.raises(ValidationError, match="v11"):
            SugarSettings.model_validate(base | {"api_version": "11"})
        assert SugarSettings.model_validate(base | {"api_version": "v11_4"}).api_version == "v11_4"

    async def test_no_credentials_at_all_is_misconfigured(self, fake, http):
        connector = self.build(fake, http, username="", password=None)
        with pytest.raises(AuthError) as caught:
            await connector.authenticate(deadline=self.deadline())
        assert caught.value.reason == "misconfigured" and fake.requests == []

    # --- phone search ---------------------------------------------------------------------

    async def test_one_filter_request_with_formats_and_a_grouped_suffix(self, fake, connector):
        fake.records = [self.record()]
        await connector.fetch(KEY, "contacts", self.FIELD, deadline=self.deadline())
        [search] = fake.api_requests()
        assert search.method == "POST" and search.path == f"{API}/Contacts/filter"
        body = search.json()
        assert body["max_num"] == 50 and body["order_by"] == "date_modified:desc"
        assert body["fields"].split(",")[:1] == ["date_modified"] and self.FIELD in body["fields"].split(",")
        [clause] = body["filter"]
        branches = clause["$or"]
        formats = ["+14155552671", "(415) 555-2671", "+1 415-555-2671", "4155552671", "14155552671"]
        assert {"phone_work": {"$in": formats}} in branches and {"phone_mobile": {"$in": formats}} in branches
        assert {"$and": [{"phone_home": {"$ends": "2671"}}, {"phone_home": {"$contains": "415"}},
                         {"phone_home": {"$contains": "555"}}]} in branches  # fmt: skip
        assert not any("phone_fax" in json.dumps(b) for b in branches)

    async def test_phone_formats_sugar_stores(self, fake, connector):
        for stored in ["+1 415-555-2671", "415.555.2671", "(415) 555-2671", "14155552671", "4155552671",
                       "+1 (415) 555 2671", "001 415 555 2671", "+14155552671"]:
            fake.records = [self.record(phone=stored)]
            assert await connector.fetch(KEY, "contacts", self.FIELD, deadline=self.deadline()) == "GOLD", stored

    async def test_suffix_candidates_are_verified(self, fake, connector):
        fake.records = [self.record(phone="+1 555 415 2671")]  # ends 2671, has 415 and 555: not the caller
        assert await connector.find_record(KEY, "contacts", deadline=self.deadline()) is None
        assert len(fake.api_requests()) == 1

    async def test_mobile_and_other_fields_are_searched(self, fake, connector):
        fake.records = [self.record(phone="", fields={self.FIELD: "GOLD", "phone_other": "415-555-2671"})]
        assert await connector.fetch(KEY, "contacts", self.FIELD, deadline=self.deadline()) == "GOLD"

    async def test_a_gb_number_stored_with_its_trunk_prefix(self, fake, connector):
        fake.records = [self.record(phone="020 7946 0958")]
        record = await connector.find_record(LookupKey("+442079460958", "caller_id"), "contacts",
                                             deadline=self.deadline())  # fmt: skip
        assert record is not None and record.id == CONTACT_IDS[0]
        body = fake.api_requests()[0].json()
        assert {"$and": [{"phone_work": {"$ends": "0958"}}, {"phone_work": {"$contains": "20"}},
                         {"phone_work": {"$contains": "7946"}}]} in body["filter"][0]["$or"]  # fmt: skip

    async def test_garbage_numbers_ask_nothing(self, fake, connector):
        assert await connector.find_record(LookupKey("12", "caller_id"), "contacts", deadline=self.deadline()) is None
        assert fake.api_requests() == []

    async def test_the_pick_survives_the_limit(self, fake, connector):
        fake.records = [self.record(0, id=f"old-{i:03d}", modified=f"2025-01-01T00:{i // 60:02d}:{i % 60:02d}Z")
                        for i in range(60)]  # fmt: skip
        fake.records.append(self.record(0, id="newest", modified="2026-06-01T00:00:00Z"))
        record = await connector.find_record(KEY, "contacts", deadline=self.deadline())
        assert record.id == "newest" and record.matches == 50

    async def test_oldest_pick_orders_ascending(self, fake, http):
        connector = self.build(fake, http, match_pick="oldest")
        await connector.find_record(KEY, "contacts", deadline=self.deadline())
        assert fake.api_requests()[0].json()["order_by"] == "date_modified:asc"

    async def test_first_pick_leaves_sugars_order(self, fake, http):
        connector = self.build(fake, http, match_pick="first")
        await connector.find_record(KEY, "contacts", deadline=self.deadline())
        assert "order_by" not in fake.api_requests()[0].json()

    @pytest.mark.parametrize("module, smodule, phone_field", [("accounts", "Accounts", "phone_office"),
                                                              ("leads", "Leads", "phone_work")])  # fmt: skip
    async def test_each_module_maps_to_its_own(self, fake, connector, module, smodule, phone_field):
        other_id = "9e8d7c6b-0000-4000-8000-00000000abcd"
        fake.records = [FakeRecord(module=module, id=other_id, phone="(415) 555-2671", fields={self.FIELD: "SILVER"}),
                        self.record()]  # fmt: skip
        record = await connector.find_record(KEY, module, fields=[self.FIELD], deadline=self.deadline())
        assert record.module == smodule and record.id == other_id and record.matches == 1
        assert record.fields[self.FIELD] == "SILVER" and record.url == f"{fake.base_url}/#{smodule}/{other_id}"
        request = fake.api_requests()[0]
        assert request.path == f"{API}/{smodule}/filter" and phone_field in json.dumps(request.json()["filter"])

    # --- fields ----------------------------------------------------------------------------------

    async def test_a_relate_field_comes_in_the_same_request(self, fake, connector):
        fake.records = [self.record()]
        assert await connector.fetch(KEY, "contacts", "account_name", deadline=self.deadline()) == "Acme Corp"
        assert len(fake.api_requests()) == 1

    async def test_a_link_field_reads_the_related_record(self, fake, connector):
        fake.records = [self.record()]
        assert await connector.fetch(KEY, "contacts", "accounts.industry", deadline=self.deadline()) == "Energy"
        link = fake.api_requests()[-1]
        assert link.method == "GET" and link.path == f"{API}/Contacts/{CONTACT_IDS[0]}/link/accounts"
        assert link.params == {"fields": "industry", "max_num": "1", "order_by": "date_modified:desc"}

    async def test_an_unknown_link_says_so(self, fake, connector):
        fake.records = [self.record()]
        with pytest.raises(UnexpectedResponse, match="link partner does not exist on Contacts"):
            await connector.fetch(KEY, "contacts", "partner.name", deadline=self.deadline())

    async def test_a_missing_field_says_which(self, fake, connector):
        fake.records = [self.record()]
        with pytest.raises(UnexpectedResponse) as caught:
            await connector.fetch(KEY, "contacts", "status_c", deadline=self.deadline())
        assert str(caught.value) == "field status_c does not exist on Contacts"
        assert caught.value.reason == "unknown_field"

    async def test_a_null_field_is_checked_once(self, fake, connector):
        fake.records = [self.record(fields={self.FIELD: "GOLD", "tier_c": None})]
        for _ in range(2):
            assert await connector.fetch(KEY, "contacts", "tier_c", deadline=self.deadline()) is None
        checks = [f for f in filters(fake, "Contacts") if {"tier_c": {"$is_null": ""}} in f["filter"]]
        assert len(checks) == 1 and checks[0]["fields"] == "id" and checks[0]["max_num"] == 1

    async def test_field_names_cannot_break_the_fields_list(self, fake, connector):
        with pytest.raises(UnexpectedResponse, match="not a SugarCRM field name"):
            await connector.fetch(KEY, "contacts", 'name,{"name":"x"}', deadline=self.deadline())
        assert fake.api_requests() == []

    # --- typed keys -------------------------------------------------------------------------------

    async def test_typed_key_filter_shape(self, fake, http):
        connector = self.build(fake, http, key_field=self.KEY_FIELD)
        fake.records = [self.record(phone="")]
        await connector.fetch(LookupKey("12345", "dtmf"), "contacts", self.FIELD, deadline=self.deadline())
        body = fake.api_requests()[0].json()
        assert body["filter"] == [{"customer_number_c": {"$equals": "12345"}}]
        assert "customer_number_c" in body["fields"].split(",")

    async def test_typed_key_without_key_field_is_the_record_id(self, fake, connector):
        fake.records = [self.record(phone="", id="1234")]
        assert await connector.fetch(LookupKey("1234", "dtmf"), "contacts", self.FIELD, deadline=self.deadline()) == "GOLD"  # fmt: skip
        assert fake.api_requests()[0].json()["filter"] == [{"id": {"$equals": "1234"}}]

    async def test_an_unknown_key_field_says_which(self, fake, http):
        connector = self.build(fake, http, key_field="account_no_c")
        with pytest.raises(UnexpectedResponse, match="^field account_no_c does not exist on Contacts$"):
            await connector.fetch(LookupKey("12345", "dtmf"), "contacts", self.FIELD, deadline=self.deadline())

    # --- errors -------------------------------------------------------------------------------------

    async def test_not_authorized_is_an_auth_error(self, fake, connector):
        await connector.authenticate(deadline=self.deadline())
        fake.fail_next(403, {"error": "not_authorized", "error_message": "No access to view records for module: Contacts"})  # fmt: skip
        with pytest.raises(AuthError, match="Contacts.*not_authorized: No access to view records"):
            await connector.fetch(KEY, "contacts", self.FIELD, deadline=self.deadline())

    async def test_maintenance_is_unavailable(self, fake, connector):
        await connector.authenticate(deadline=self.deadline())
        fake.fail_next(503, {"error": "maintenance", "error_message": "System is in maintenance mode"})
        with pytest.raises(ConnectorUnavailable, match="HTTP 503.*maintenance"):
            await connector.fetch(KEY, "contacts", self.FIELD, deadline=self.deadline())

    async def test_an_unknown_operand_is_an_unexpected_response(self, fake, connector):
        await connector.authenticate(deadline=self.deadline())
        fake.fail_next(422, {"error": "invalid_parameter", "error_message": "Did not recognize the operand: $ends"})
        with pytest.raises(UnexpectedResponse, match="HTTP 422.*Did not recognize the operand"):
            await connector.fetch(KEY, "contacts", self.FIELD, deadline=self.deadline())

    # --- call log ------------------------------------------------------------------------------------

    async def test_call_body_and_participant_link(self, fake, connector):
        fake.records = [self.record()]
        record = await connector.find_record(KEY, "contacts", deadline=self.deadline())
        call_id = await connector.log_call(self.call(record), LogOptions(inbound_answered=True), deadline=self.deadline())  # fmt: skip
        [stored] = fake.activities
        assert stored["id"] == call_id
        assert {k: stored[k] for k in ("name", "direction", "status", "date_start", "duration_hours",
                                       "duration_minutes", "parent_type", "parent_id")} == {
            "name": f"Inbound call from {CALLER} [1795657573.1]", "direction": "Inbound", "status": "Held",
            "date_start": "2026-11-26T09:30:00+00:00", "duration_hours": 0, "duration_minutes": 2,
            "parent_type": "Contacts", "parent_id": CONTACT_IDS[0]}  # fmt: skip
        assert stored["_linked_contacts"] == [CONTACT_IDS[0]]
        assert "Answered by 201 after 6 s" in stored["description"] and "talk 93 s" in stored["description"]
        assert fake.state.get("ignored", []) == []
        existing_check = filters(fake, "Calls")[0]
        assert existing_check["filter"] == [{"name": {"$ends": "[1795657573.1]"}}]
        paths = [(r.method, r.path) for r in fake.api_requests()][-3:]
        assert paths == [("POST", f"{API}/Calls/filter"), ("POST", f"{API}/Calls"),
                         ("POST", f"{API}/Calls/{call_id}/link/contacts/{CONTACT_IDS[0]}")]  # fmt: skip

    def test_the_name_fits_fifty_characters(self):
        call = self.call(None, "1795657573.123456")
        call.subject = "Inbound call from a very long caller name that goes on"
        name = call_subject(call)
        assert len(name) <= 50 and name.endswith(" [1795657573.123456]")

    async def test_a_lead_is_linked_as_lead(self, fake, connector):
        lead_id = "5d9f1a4c-0000-4000-8000-00000000beef"
        fake.records = [FakeRecord(module="leads", id=lead_id, phone="415-555-2671")]
        await connector.log_call(self.call(None, "c-lead"), LogOptions(), deadline=self.deadline())
        [stored] = fake.activities
        assert stored["parent_type"] == "Leads" and stored["_linked_leads"] == [lead_id]

    async def test_an_account_is_the_parent_only(self, fake, connector):
        account = Record(module="Accounts", id=ACCOUNT_ID, fields={})
        fake.records = [FakeRecord(module="accounts", id=ACCOUNT_ID, phone="(415) 555-2671")]
        await connector.log_call(self.call(account, "c-acct"), LogOptions(), deadline=self.deadline())
        [stored] = fake.activities
        assert (stored["parent_type"], stored["parent_id"]) == ("Accounts", ACCOUNT_ID)
        assert not any(k.startswith("_linked") for k in stored)

    async def test_logging_by_number_tries_contacts_then_leads_then_accounts(self, fake, connector):
        fake.records = [FakeRecord(module="accounts", id=ACCOUNT_ID, phone="(415) 555-2671")]
        await connector.log_call(self.call(None, "c-order"), LogOptions(), deadline=self.deadline())
        searched = [m for m, _ in fake.state["filters"] if m != "Calls"]
        assert searched == ["Contacts", "Leads", "Accounts"]
        assert fake.activities[0]["parent_id"] == ACCOUNT_ID

    async def test_an_unknown_caller_is_logged_unlinked_without_create_unknown(self, fake, connector):
        await connector.log_call(self.call(None, "c-none"), LogOptions(), deadline=self.deadline())
        assert fake.created == [] and "parent_id" not in fake.activities[0]

    async def test_unknown_caller_becomes_a_lead(self, fake, connector):
        await connector.log_call(self.call(None, "c-new"), LogOptions(create_unknown=True), deadline=self.deadline())
        [lead] = fake.created
        assert lead["_module"] == "Leads" and lead["phone_work"] == CALLER and lead["account_name"]
        assert fake.activities[0]["parent_id"] == lead["id"] and fake.activities[0]["_linked_leads"] == [lead["id"]]
        assert fake.state.get("ignored", []) == []

    async def test_unknown_caller_can_become_a_contact(self, fake, http):
        connector = self.build(fake, http, create_as="contacts")
        await connector.log_call(self.call(None, "c-new2"), LogOptions(create_unknown=True), deadline=self.deadline())
        assert fake.created[0]["_module"] == "Contacts" and "account_name" not in fake.created[0]
        assert fake.activities[0]["_linked_contacts"] == [fake.created[0]["id"]]

    async def test_a_missed_outbound_call_is_not_held(self, fake, connector):
        call = self.call(None, "c-out")
        call.direction, call.outcome, call.subject, call.talk_seconds = "outbound", "busy", "", 0
        await connector.log_call(call, LogOptions(), deadline=self.deadline())
        stored = fake.activities[0]
        assert (stored["direction"], stored["status"], stored["duration_minutes"]) == ("Outbound", "Not Held", 0)
        assert stored["name"] == f"Outbound call to {CALLER} [c-out]"

    async def test_an_invalid_enum_is_reported(self, fake, connector, monkeypatch):
        from crmroute.connectors import sugarcrm

        monkeypatch.setattr(sugarcrm, "call_body", lambda call, record: {"name": "x [c-bad]", "status": "Done"})
        with pytest.raises(UnexpectedResponse, match="Invalid field value: status in module: Calls"):
            await connector.log_call(self.call(None, "c-bad"), LogOptions(), deadline=self.deadline())

    async def test_unknown_number_is_not_found_in_leads_either(self, fake, connector):
        fake.records = [self.record()]
        assert await connector.find_record(LookupKey(OTHER_PHONE, "caller_id"), "leads", deadline=self.deadline()) is None  # fmt: skip


# --- users (agents sync) ------------------------------------------------------------------------


async def test_list_users_reads_the_active_users_by_offset(fake):
    from crmroute.connectors._http import make_client
    from crmroute.settings import Settings

    fake.state["users"] = [{"id": f"seed_{i:03d}_id", "user_name": f"agent{i:03d}", "full_name": f"Agent {i:03d}",
                            "email1": f"agent{i}@example.com", "status": "Active", "date_modified": "2025-01-01T00:00:00+00:00"}
                           for i in range(205)]  # fmt: skip
    fake.state["users"].append({"id": "gone_id", "user_name": "zz", "full_name": "Gone", "email1": "gone@example.com",
                                "status": "Inactive", "date_modified": "2025-01-01T00:00:00+00:00"})  # fmt: skip
    http = make_client(Settings(ca_bundle=fake.ca_path))
    try:
        users = await TestSugarCRM().build(fake, http).list_users(deadline=TestSugarCRM.deadline())
    finally:
        await http.aclose()
    assert len(users) == 205 and users[0].id == "seed_000_id" and users[0].name == "Agent 000"
    assert users[0].email == "agent0@example.com" and "gone_id" not in {u.id for u in users}
    pages = [args for module, args in fake.state["filters"] if module == "Users"]
    assert [p["offset"] for p in pages] == [0, 100, 200]
    assert pages[0]["filter"] == [{"status": {"$equals": "Active"}}]
