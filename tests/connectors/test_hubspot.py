"""HubSpot against a strict fake of CRM API v3: OAuth and private app tokens, search, calls."""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import json
import uuid
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl

import phonenumbers
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from crmroute.connectors.base import CallActivity, Record, setting_specs
from crmroute.connectors.hubspot import HubSpotConnector, HubSpotSettings, phone_groups
from crmroute.connectors._phone import phone_forms, written_forms
from crmroute.errors import AuthError, RateLimited, UnexpectedResponse
from crmroute.routing.engine import LookupKey
from crmroute.schemas import LogOptions
from tests.connectors.contract import CALLER, ConnectorContract
from tests.connectors.fakecrm import FakeRecord, VendorFake, vendor_fixtures

CLIENT_ID = "7f1c2a90-hs-client"
CLIENT_SECRET = "hs-s3cret-client-value"
REFRESH_TOKEN = "na1-r3fresh-0000-1111-2222"
PAT = "pat-na1-0c7d5e2a-1b2c-4d5e-8f90-123456789abc"
PORTAL_ID = 62515

CONTACT_PROPERTIES = {
    "firstname", "lastname", "email", "phone", "mobilephone", "lifecyclestage", "hs_lead_status", "createdate",
    "lastmodifieddate", "hs_object_id", "associatedcompanyid", "hubspot_owner_id",
    "hs_searchable_calculated_phone_number", "hs_searchable_calculated_mobile_number",
}  # fmt: skip
COMPANY_PROPERTIES = {
    "name", "domain", "phone", "createdate", "hs_lastmodifieddate", "hs_object_id", "hubspot_owner_id",
}  # fmt: skip
CALL_PROPERTIES = {
    "hs_timestamp", "hs_call_title", "hs_call_body", "hs_call_direction", "hs_call_status", "hs_call_duration",
    "hs_call_from_number", "hs_call_to_number", "hs_call_recording_url", "hs_call_external_id", "hubspot_owner_id",
    "hs_object_id", "hs_createdate", "hs_lastmodifieddate",
}  # fmt: skip
CUSTOM_PROPERTIES = {"crm_status", "account_number"}
OPERATORS = {"EQ", "NEQ", "LT", "LTE", "GT", "GTE", "BETWEEN", "IN", "NOT_IN", "HAS_PROPERTY", "NOT_HAS_PROPERTY",
             "CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"}  # fmt: skip
SEARCH_KEYS = {"filterGroups", "sorts", "query", "properties", "limit", "after"}
CALL_TO_CONTACT, CALL_TO_COMPANY = 194, 182


# --- the fake ---------------------------------------------------------------------------------


def error(status: int, message: str, category: str = "VALIDATION_ERROR", **extra: Any) -> JSONResponse:
    body = {"status": "error", "message": message, "correlationId": str(uuid.uuid4()), "category": category} | extra
    return JSONResponse(body, status_code=status)


def missing_property(name: str) -> JSONResponse:
    return error(400, f'Property "{name}" does not exist',
                 errors=[{"message": f'Property "{name}" does not exist', "code": "PROPERTY_DOESNT_EXIST",
                          "context": {"propertyName": [name]}}])  # fmt: skip


def national_digits(number: str | None) -> str | None:
    """HubSpot's calculated searchable phone: the number without country code, digits only."""
    if not number:
        return None
    try:
        parsed = phonenumbers.parse(number, "US")
        return phonenumbers.national_significant_number(parsed)
    except phonenumbers.NumberParseException:
        return "".join(ch for ch in number if ch.isdigit()).lstrip("0") or None


def known(obj: str) -> set[str]:
    return {"contacts": CONTACT_PROPERTIES | CUSTOM_PROPERTIES, "companies": COMPANY_PROPERTIES | CUSTOM_PROPERTIES,
            "calls": CALL_PROPERTIES}.get(obj, set())  # fmt: skip


def objects(fake: VendorFake, obj: str) -> list[dict[str, Any]]:
    """Every stored object of type ``obj`` in HubSpot's shape (rebuilt from ``fake.records`` each time)."""
    contacts: list[dict[str, Any]] = []
    companies: list[dict[str, Any]] = []
    for rec in fake.records:
        props: dict[str, Any] = {"hs_object_id": rec.id, "phone": rec.phone or None,
                                 "createdate": "2024-01-01T00:00:00Z", "hubspot_owner_id": None}  # fmt: skip
        target = companies if rec.module == "accounts" else contacts
        if rec.module == "accounts":
            props |= {"name": rec.name, "domain": None, "hs_lastmodifieddate": rec.modified}
        else:
            first, _, last = rec.name.partition(" ")
            props |= {"firstname": first, "lastname": last or None, "email": None, "mobilephone": None,
                      "lifecyclestage": "lead" if rec.module == "leads" else "customer",
                      "lastmodifieddate": rec.modified, "associatedcompanyid": None}  # fmt: skip
        for name, value in rec.fields.items():
            if isinstance(value, dict):  # a lookup: the associated company
                company_id = f"9{rec.id}"
                company = {"hs_object_id": company_id, "name": None, "hs_lastmodifieddate": rec.modified}
                companies.append({"id": company_id, "properties": company | {k: str(v) for k, v in value.items()}})
                props["associatedcompanyid"] = company_id
            else:
                props[name] = None if value is None else str(value)
        if rec.module != "accounts":
            props["hs_searchable_calculated_phone_number"] = national_digits(props.get("phone"))
            props["hs_searchable_calculated_mobile_number"] = national_digits(props.get("mobilephone"))
        target.append({"id": rec.id, "properties": props})
    contacts += [dict(c) for c in fake.state.setdefault("new_contacts", [])]
    found = {"contacts": contacts, "companies": companies, "calls": fake.state.setdefault("calls", [])}.get(obj, [])
    for item in found:
        modified = item["properties"].get("lastmodifieddate") or item["properties"].get("hs_lastmodifieddate") or \
            "2024-01-01T00:00:00Z"  # fmt: skip
        item.setdefault("createdAt", "2024-01-01T00:00:00Z")
        item["updatedAt"] = modified
        item.setdefault("archived", False)
    return found


def matches(item: dict[str, Any], flt: dict[str, Any]) -> bool:
    value = item["properties"].get(flt["propertyName"])
    op = flt["operator"]
    if op == "HAS_PROPERTY":
        return value not in (None, "")
    if op == "NOT_HAS_PROPERTY":
        return value in (None, "")
    if value is None:
        return op in ("NEQ", "NOT_IN", "NOT_CONTAINS_TOKEN")
    text = str(value).casefold()
    if op == "EQ":
        return text == str(flt["value"]).casefold()
    if op == "NEQ":
        return text != str(flt["value"]).casefold()
    if op in ("IN", "NOT_IN"):  # string values must be lowercase (the search guide): the stored text is lowered
        inside = text in {str(v) for v in flt["values"]}
        return inside if op == "IN" else not inside
    if op in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        tokens = text.replace("-", " ").split()
        hit = any(fnmatch.fnmatch(t, str(flt["value"]).casefold()) for t in tokens + [text])
        return hit if op == "CONTAINS_TOKEN" else not hit
    return False  # ordering operators are not used by the connector


def make_app(fake: VendorFake) -> Starlette:
    fake.auth_paths = ("/oauth/", "/account-info/")
    ids = itertools.count(80001)

    def unauthorized(request: Request) -> JSONResponse | None:
        if fake.authorized(request):
            return None
        fake.state["unauthorized"] = fake.state.get("unauthorized", 0) + 1
        header = request.headers.get("authorization", "")
        if header.startswith("Bearer ") and header[7:] in fake.state.get("issued", set()):
            return error(401, "The OAuth token used to make this call expired 1 minute(s) ago.",
                         "EXPIRED_AUTHENTICATION")  # fmt: skip
        return error(401, "Authentication credentials not found. This API supports OAuth 2.0 authentication and "
                     "you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                     "INVALID_AUTHENTICATION")  # fmt: skip

    async def token(request: Request) -> JSONResponse:
        if request.headers.get("content-type", "").split(";")[0] != "application/x-www-form-urlencoded":
            return JSONResponse({"status": "BAD_REQUEST", "message": "form body expected"}, status_code=400)
        form = dict(parse_qsl((await request.body()).decode()))
        if request.query_params:
            return JSONResponse({"status": "BAD_REQUEST", "message": "credentials belong in the body"}, status_code=400)
        if form.get("grant_type") != "refresh_token":
            return JSONResponse({"status": "BAD_GRANT_TYPE", "message": "unsupported grant_type"}, status_code=400)
        if form.get("client_id") != CLIENT_ID:
            return JSONResponse({"status": "BAD_CLIENT_ID", "message": "missing or unknown client id"}, status_code=400)
        if form.get("client_secret") != CLIENT_SECRET:
            return JSONResponse({"status": "BAD_CLIENT_SECRET", "message": "missing or invalid client secret"},
                                status_code=400)  # fmt: skip
        if fake.reject_credentials or form.get("refresh_token") != REFRESH_TOKEN:
            return JSONResponse({"status": "BAD_REFRESH_TOKEN", "message": "missing or invalid refresh token",
                                 "correlationId": str(uuid.uuid4())}, status_code=400)  # fmt: skip
        access = fake.issue_token("CKLt")
        fake.state.setdefault("issued", set()).add(access)
        return JSONResponse({"token_type": "bearer", "refresh_token": REFRESH_TOKEN, "access_token": access,
                             "expires_in": fake.state.get("expires_in", 1800)})  # fmt: skip

    async def account(request: Request) -> JSONResponse:
        if fake.reject_credentials or not fake.authorized(request):
            return error(401, "Authentication credentials not found.", "INVALID_AUTHENTICATION")
        fake.state["account_checks"] = fake.state.get("account_checks", 0) + 1
        return JSONResponse({"portalId": PORTAL_ID, "accountType": "STANDARD", "timeZone": "US/Eastern",
                             "companyCurrency": "USD", "additionalCurrencies": [], "utcOffset": "-05:00",
                             "utcOffsetMilliseconds": -18000000, "uiDomain": "app.hubspot.com",
                             "dataHostingLocation": "na1"})  # fmt: skip

    def validate_search(obj: str, body: Any) -> JSONResponse | None:
        if not isinstance(body, dict):
            return error(400, "Invalid input JSON: expected an object")
        unknown = set(body) - SEARCH_KEYS
        if unknown:
            return error(400, f"Invalid input JSON on line 1: Unrecognized field \"{sorted(unknown)[0]}\"")
        groups = body.get("filterGroups", [])
        if not isinstance(groups, list) or len(groups) > 5:
            return error(400, "There was a problem with the request.", errors=[{"message": "Too many filter groups "
                         "(5 max)", "code": "TOO_MANY_FILTER_GROUPS"}])  # fmt: skip
        total = 0
        for group in groups:
            filters = group.get("filters") if isinstance(group, dict) else None
            if not isinstance(filters, list) or not filters or len(filters) > 10 or set(group) != {"filters"}:
                return error(400, "There was a problem with the request.", errors=[{"message": "Each filter group "
                             "needs 1 to 10 filters", "code": "INVALID_FILTER_GROUP"}])  # fmt: skip
            total += len(filters)
            for flt in filters:
                if not isinstance(flt, dict) or set(flt) - {"propertyName", "operator", "value", "values", "highValue"}:
                    return error(400, "Invalid input JSON: bad filter")
                if flt.get("operator") not in OPERATORS:
                    return error(400, f"Invalid input JSON: unknown operator {flt.get('operator')!r}")
                if flt.get("propertyName") not in known(obj):
                    return missing_property(str(flt.get("propertyName")))
                needs_value = flt["operator"] not in ("HAS_PROPERTY", "NOT_HAS_PROPERTY", "IN", "NOT_IN")
                if needs_value and not isinstance(flt.get("value"), (str, int, float, bool)):
                    return error(400, f"filter on {flt['propertyName']} needs a value")
                listed = flt.get("values")
                if flt["operator"] in ("IN", "NOT_IN") and (not isinstance(listed, list) or not listed or
                                                            not all(isinstance(v, str) for v in listed)):
                    return error(400, f"filter on {flt['propertyName']} needs a list of values")
        if total > 25:
            return error(400, "There was a problem with the request.", errors=[{"message": "Too many filters (25 max)",
                         "code": "TOO_MANY_FILTERS"}])  # fmt: skip
        sorts = body.get("sorts", [])
        if not isinstance(sorts, list) or len(sorts) > 1:
            return error(400, "Only one sort is supported")
        for sort in sorts:
            if not isinstance(sort, dict) or sort.get("direction") not in ("ASCENDING", "DESCENDING"):
                return error(400, "Invalid input JSON: bad sort")
            if sort.get("propertyName") not in known(obj):
                return missing_property(str(sort.get("propertyName")))
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or not 1 <= limit <= 200:
            return error(400, "limit must be between 1 and 200")
        properties = body.get("properties", [])
        if not isinstance(properties, list) or not all(isinstance(p, str) for p in properties):
            return error(400, "Invalid input JSON: properties must be a list of strings")
        return None

    def shown(obj: str, item: dict[str, Any], wanted: list[str]) -> dict[str, Any]:
        always = {"hs_object_id", "createdate", "lastmodifieddate"} if obj == "contacts" else \
            {"hs_object_id", "createdate", "hs_lastmodifieddate"}  # fmt: skip
        names = [p for p in dict.fromkeys(wanted) if p in known(obj)] + sorted(always & known(obj))
        return {name: item["properties"].get(name) for name in names}

    async def search(request: Request) -> JSONResponse:
        if (denied := unauthorized(request)) is not None:
            return denied
        obj = request.path_params["object"]
        if obj not in ("contacts", "companies", "calls"):
            return error(400, f"Unable to infer object type from: {obj}")
        if fake.state.get("missing_scope"):
            return error(403, "This app hasn't been granted all required scopes to make this call.", "MISSING_SCOPES",
                         errors=[{"message": "One or more of the following scopes are required.",
                                  "context": {"requiredGranularScopes": [f"crm.objects.{obj}.read"]}}])  # fmt: skip
        if request.headers.get("content-type", "").split(";")[0] != "application/json":
            return error(415, "Unsupported media type")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return error(400, "Invalid input JSON")
        if (problem := validate_search(obj, body)) is not None:
            return problem
        fake.state.setdefault("searches", []).append((obj, body))
        items = objects(fake, obj)
        groups = body.get("filterGroups") or []
        if groups:
            items = [i for i in items if any(all(matches(i, f) for f in g["filters"]) for g in groups)]
        for sort in body.get("sorts") or []:
            items.sort(key=lambda i: str(i["properties"].get(sort["propertyName"]) or ""),
                       reverse=sort["direction"] == "DESCENDING")  # fmt: skip
        after, limit = int(body.get("after", 0) or 0), body.get("limit", 10)
        page = items[after:after + limit]
        defaults = ["firstname", "lastname", "email"] if obj == "contacts" else ["name", "domain"]
        wanted = body.get("properties") or defaults
        answer: dict[str, Any] = {"total": len(items), "results": [
            {"id": i["id"], "properties": shown(obj, i, wanted), "createdAt": i["createdAt"],
             "updatedAt": i["updatedAt"], "archived": False} for i in page]}  # fmt: skip
        if after + limit < len(items):
            answer["paging"] = {"next": {"after": str(after + limit), "link": f"?after={after + limit}"}}
        return JSONResponse(answer)

    async def read(request: Request) -> JSONResponse:
        if (denied := unauthorized(request)) is not None:
            return denied
        obj, object_id = request.path_params["object"], request.path_params["id"]
        unknown = set(request.query_params) - {"properties", "associations", "archived", "idProperty",
                                               "propertiesWithHistory"}  # fmt: skip
        if unknown:
            return error(400, f"Unknown query parameter {sorted(unknown)[0]}")
        item = next((i for i in objects(fake, obj) if i["id"] == object_id), None)
        if item is None:
            return error(404, "Object not found.  objectId are usually numeric.", "OBJECT_NOT_FOUND",
                         context={"id": [object_id]})  # fmt: skip
        wanted = [p for p in request.query_params.get("properties", "").split(",") if p]
        answer = {"id": item["id"], "properties": shown(obj, item, wanted), "createdAt": item["createdAt"],
                  "updatedAt": item["updatedAt"], "archived": False}  # fmt: skip
        association = request.query_params.get("associations")
        if association:
            linked: list[str] = []
            if obj == "contacts" and association == "companies" and item["properties"].get("associatedcompanyid"):
                linked = [item["properties"]["associatedcompanyid"]]
            if obj == "companies" and association == "contacts":
                contacts = objects(fake, "contacts")
                linked = [c["id"] for c in contacts if c["properties"].get("associatedcompanyid") == object_id]
            if linked:
                kind = f"{obj[:-1]}_to_{association[:-1]}"
                answer["associations"] = {association: {"results": [{"id": i, "type": kind} for i in linked]}}
        return JSONResponse(answer)

    async def create(request: Request) -> JSONResponse:
        if (denied := unauthorized(request)) is not None:
            return denied
        obj = request.path_params["object"]
        try:
            body = json.loads(await request.body())
        except ValueError:
            return error(400, "Invalid input JSON")
        if not isinstance(body, dict) or set(body) - {"properties", "associations"}:
            return error(400, "Invalid input JSON: expected properties and associations")
        properties = body.get("properties") or {}
        for name, value in properties.items():
            if name not in known(obj):
                return error(400, "Property values were not valid", errors=[{
                    "message": f'Property "{name}" does not exist', "code": "PROPERTY_DOESNT_EXIST",
                    "context": {"propertyName": [name]}}])  # fmt: skip
            if not isinstance(value, str):
                return error(400, f"Property {name}: values are sent as strings")
        associations = body.get("associations") or []
        for assoc in associations:
            target = str(assoc.get("to", {}).get("id"))
            type_id = assoc["types"][0]["associationTypeId"]
            target_obj = {CALL_TO_CONTACT: "contacts", CALL_TO_COMPANY: "companies"}.get(type_id)
            if target_obj is None or assoc["types"][0]["associationCategory"] != "HUBSPOT_DEFINED":
                return error(400, f"invalid association type {type_id}")
            if not any(i["id"] == target for i in objects(fake, target_obj)):
                return error(400, f"{target_obj} {target} does not exist", "OBJECT_NOT_FOUND")
        new_id = str(next(ids))
        stored = {"id": new_id, "properties": {"hs_object_id": new_id} | properties, "associations": associations}
        if obj == "calls":
            if "hs_timestamp" not in properties:
                return error(400, "Property values were not valid: hs_timestamp is required")
            fake.state.setdefault("calls", []).append(stored)
            fake.activities.append(stored)
        elif obj == "contacts":
            stored["properties"] |= {"lastmodifieddate": "2026-11-26T09:31:00Z",
                                     "hs_searchable_calculated_phone_number": national_digits(properties.get("phone"))}
            fake.state.setdefault("new_contacts", []).append(stored)
            fake.created.append(stored)
        else:
            return error(400, f"creating {obj} is not part of this fake")
        return JSONResponse({"id": new_id, "properties": stored["properties"], "createdAt": "2026-11-26T09:31:00Z",
                             "updatedAt": "2026-11-26T09:31:00Z", "archived": False}, status_code=201)  # fmt: skip

    async def property_definition(request: Request) -> JSONResponse:
        if (denied := unauthorized(request)) is not None:
            return denied
        obj, name = request.path_params["object"], request.path_params["name"]
        fake.state["property_checks"] = fake.state.get("property_checks", 0) + 1
        if name not in known(obj):
            return error(404, f"Unable to find property {name} for object type {obj}", "OBJECT_NOT_FOUND")
        return JSONResponse({"name": name, "label": name.replace("_", " ").title(), "type": "string",
                             "fieldType": "text", "groupName": "contactinformation"})  # fmt: skip

    async def owner(request: Request) -> JSONResponse:
        if (denied := unauthorized(request)) is not None:
            return denied
        found = fake.state.get("owners", {}).get(request.path_params["id"])
        if found is None:
            return error(404, "Owner not found", "OBJECT_NOT_FOUND")
        return JSONResponse(found)

    async def owners(request: Request) -> JSONResponse:
        """``GET /crm/v3/owners``: ``limit`` (1..500, default 100), ``after`` (a cursor), ``archived``, ``email``."""
        if (denied := unauthorized(request)) is not None:
            return denied
        params = request.query_params
        unknown = set(params) - {"limit", "after", "archived", "email"}
        if unknown:
            return error(400, f"Unknown query parameter: {sorted(unknown)[0]}")
        raw_limit, raw_after = params.get("limit", "100"), params.get("after", "0")
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 500:
            return error(400, "limit must be between 1 and 500")
        if not raw_after.isdigit():
            return error(400, f"Invalid after cursor: {raw_after}")
        archived = params.get("archived", "false") == "true"
        listed = [o for o in fake.state.get("owners", {}).values() if bool(o.get("archived")) == archived]
        fake.state["owner_pages"] = fake.state.get("owner_pages", 0) + 1
        start, limit = int(raw_after), int(raw_limit)
        answer: dict[str, Any] = {"results": listed[start:start + limit]}
        if start + limit < len(listed):
            answer["paging"] = {"next": {"after": str(start + limit), "link": f"?after={start + limit}"}}
        return JSONResponse(answer)

    return Starlette(routes=[
        Route("/crm/v3/owners", owners, methods=["GET"]),
        Route("/oauth/v1/token", token, methods=["POST"]),
        Route("/account-info/v3/details", account, methods=["GET"]),
        Route("/crm/v3/objects/{object}/search", search, methods=["POST"]),
        Route("/crm/v3/objects/{object}/{id}", read, methods=["GET"]),
        Route("/crm/v3/objects/{object}", create, methods=["POST"]),
        Route("/crm/v3/properties/{object}/{name}", property_definition, methods=["GET"]),
        Route("/crm/v3/owners/{id}", owner, methods=["GET"]),
    ])  # fmt: skip


fake_server, fake = vendor_fixtures(make_app)



# --- the contract -----------------------------------------------------------------------------------


class TestHubSpot(ConnectorContract):
    OWNER_FIELDS = {"hubspot_owner_id": "7001"}
    OWNER_ID = "7001"
    kind = "hubspot"
    MODULE = "contacts"
    FIELD = "crm_status"  # a custom contact property
    NESTED_FIELD = "companies.name"  # the contact's primary company, through associatedcompanyid
    NESTED_FIELDS = {"companies": {"name": "Acme Corp"}}
    NESTED_VALUE = "Acme Corp"
    IDS = ("30101", "30102", "30103")
    KEY_FIELD = "account_number"
    MOBILE_FIELDS = {"contacts": "mobilephone", "leads": "mobilephone"}  # companies have no mobile property

    def settings(self, fake: VendorFake) -> dict[str, Any]:
        return {"api_url": fake.base_url, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                "refresh_token": REFRESH_TOKEN}  # fmt: skip


# --- HubSpot's own behaviour -----------------------------------------------------------------------

D = ConnectorContract.deadline
KEY = LookupKey(CALLER, "caller_id")


def contact(index: int = 0, **changes: Any) -> FakeRecord:
    return TestHubSpot().record(index, **changes)


@pytest.fixture
async def client(fake):
    from crmroute.connectors._http import make_client
    from crmroute.settings import Settings

    http = make_client(Settings(ca_bundle=fake.ca_path))
    yield http
    await http.aclose()


def oauth(fake: VendorFake, client, **overrides: Any) -> HubSpotConnector:
    values = TestHubSpot().settings(fake) | overrides
    return HubSpotConnector(HubSpotSettings.model_validate(values), client, region="US")


def private(fake: VendorFake, client, **overrides: Any) -> HubSpotConnector:
    fake.tokens.add(PAT)
    values = {"api_url": fake.base_url, "access_token": PAT} | overrides
    return HubSpotConnector(HubSpotSettings.model_validate(values), client, region="US")


def searches(fake: VendorFake) -> list[tuple[str, dict[str, Any]]]:
    return fake.state.get("searches", [])


# settings


def test_settings_need_a_token_or_the_oauth_triple():
    with pytest.raises(ValueError, match="client_secret, refresh_token"):
        HubSpotSettings.model_validate({"client_id": CLIENT_ID})
    with pytest.raises(ValueError, match="https"):
        HubSpotSettings.model_validate({"access_token": PAT, "api_url": "http://api.hubapi.com"})
    assert HubSpotSettings.model_validate({"access_token": PAT}).api_url == "https://api.hubapi.com"
    specs = {s.name: s for s in setting_specs(HubSpotSettings)}
    assert {n for n, s in specs.items() if s.secret} == {"access_token", "client_secret", "refresh_token"}
    assert specs["api_url"].type == "url" and specs["api_url"].default == "https://api.hubapi.com"


# auth: private app token


async def test_private_app_token_is_checked_once_and_sent_as_bearer(fake, client):
    connector = private(fake, client)
    fake.records = [contact()]
    for _ in range(2):
        assert await connector.fetch(KEY, "contacts", "crm_status", deadline=D()) == "GOLD"
    assert fake.state["account_checks"] == 1 and fake.token_requests == 0
    assert all(r.headers["authorization"] == f"Bearer {PAT}" for r in fake.api_requests())
    assert not any(PAT in r.query for r in fake.requests)


async def test_private_app_record_links_to_the_portal(fake, client):
    connector = private(fake, client)
    fake.records = [contact()]
    record = await connector.find_record(KEY, "contacts", deadline=D())
    assert record.url == f"https://app.hubspot.com/contacts/{PORTAL_ID}/record/0-1/30101"


async def test_a_revoked_private_app_token_is_an_auth_error(fake, client):
    connector = private(fake, client)
    fake.tokens.clear()
    with pytest.raises(AuthError, match="access token rejected"):
        await connector.fetch(KEY, "contacts", "crm_status", deadline=D())
    report = await connector.test(CALLER, fields=["crm_status"])
    assert not report.ok and report.steps[0].name == "authenticate" and PAT not in json.dumps(report.as_dict())


# auth: OAuth refresh token


async def test_refresh_request_is_form_encoded_with_the_app_credentials(fake, client):
    await oauth(fake, client).authenticate(deadline=D())
    request = next(r for r in fake.requests if r.path == "/oauth/v1/token")
    assert request.method == "POST" and request.query == ""
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert dict(parse_qsl(request.body.decode())) == {
        "grant_type": "refresh_token", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
        "refresh_token": REFRESH_TOKEN}  # fmt: skip


async def test_token_is_refreshed_before_it_expires(fake, client):
    fake.state["expires_in"] = 2  # expires_in is honoured: a 2 s token is stale after 1 s (half its life)
    connector = oauth(fake, client)
    fake.records = [contact()]
    assert await connector.fetch(KEY, "contacts", "crm_status", deadline=D()) == "GOLD"
    await asyncio.sleep(1.1)
    assert await connector.fetch(KEY, "contacts", "crm_status", deadline=D()) == "GOLD"
    assert fake.token_requests == 2
    assert fake.state.get("unauthorized", 0) == 0  # never waited for a 401


async def test_a_long_lived_token_is_not_refreshed(fake, client):
    connector = oauth(fake, client)
    fake.records = [contact()]
    for _ in range(3):
        await connector.fetch(KEY, "contacts", "crm_status", deadline=D())
    assert fake.token_requests == 1


async def test_a_revoked_refresh_token_says_so(fake, client):
    fake.reject_credentials = True
    with pytest.raises(AuthError, match="token rejected: refresh token revoked"):
        await oauth(fake, client).authenticate(deadline=D())


async def test_a_wrong_client_secret_says_so(fake, client):
    connector = oauth(fake, client, client_secret="not-the-secret")
    with pytest.raises(AuthError, match="client id or secret wrong") as caught:
        await connector.authenticate(deadline=D())
    assert "not-the-secret" not in str(caught.value)


async def test_an_expired_token_is_refreshed_after_the_401(fake, client):
    connector = oauth(fake, client)
    fake.records = [contact()]
    await connector.fetch(KEY, "contacts", "crm_status", deadline=D())
    fake.expire_tokens()
    assert await connector.fetch(KEY, "contacts", "crm_status", deadline=D()) == "GOLD"
    assert fake.state["unauthorized"] == 1 and fake.token_requests == 2


# the search request


async def test_contact_search_is_one_request_with_every_phone_form(fake, client):
    connector = oauth(fake, client)
    fake.records = [contact()]
    await connector.fetch(KEY, "contacts", "crm_status", deadline=D())
    [(obj, body)] = searches(fake)
    assert obj == "contacts"
    request = [r for r in fake.api_requests() if r.path.endswith("/search")][0]
    assert request.path == "/crm/v3/objects/contacts/search" and request.method == "POST"
    written = written_forms(phone_forms(CALLER))
    assert [g["filters"] for g in body["filterGroups"]] == [
        [{"propertyName": "hs_searchable_calculated_phone_number", "operator": "EQ", "value": "4155552671"}],
        [{"propertyName": "hs_searchable_calculated_mobile_number", "operator": "EQ", "value": "4155552671"}],
        [{"propertyName": "phone", "operator": "IN", "values": written}],
        [{"propertyName": "mobilephone", "operator": "IN", "values": written}],
    ]  # fmt: skip
    assert {"+14155552671", "(415) 555-2671", "415.555.2671", "1-415-555-2671", "+1 (415) 555-2671"} <= set(written)
    assert "crm_status" in body["properties"] and "lastmodifieddate" in body["properties"]
    assert body["sorts"] == [{"propertyName": "lastmodifieddate", "direction": "DESCENDING"}]
    assert body["limit"] == 10
    assert len([r for r in fake.api_requests()]) == 1  # the field came back with the search


@pytest.mark.parametrize("stored", ["+14155552671", "(415) 555-2671", "415.555.2671", "+1 415 555 2671", "4155552671"])
async def test_numbers_stored_in_any_format_are_found(fake, client, stored):
    fake.records = [contact(phone=stored)]
    assert await oauth(fake, client).fetch(KEY, "contacts", "crm_status", deadline=D()) == "GOLD"


async def test_a_mobile_number_is_found(fake, client):
    fake.records = [contact(phone="", fields={"crm_status": "GOLD", "mobilephone": "415-555-2671"})]
    assert await oauth(fake, client).fetch(KEY, "contacts", "crm_status", deadline=D()) == "GOLD"


def test_phone_groups_stay_within_hubspots_limits():
    for number in ("+14155552671", "+442079460018", "0049 30 1234567", "12"):
        for obj in ("contacts", "companies"):
            groups = phone_groups(obj, phone_forms(number, "US"))
            assert len(groups) <= 5 and all(len(g) == 1 for g in groups)
            assert all(g[0]["operator"] != "IN" or all(v == v.lower() for v in g[0]["values"]) for g in groups)


async def test_oldest_pick_sorts_ascending_and_first_does_not_sort(fake, client):
    fake.records = [contact(0, modified="2025-01-01T00:00:00Z"), contact(1, modified="2026-01-01T00:00:00Z")]
    oldest = await oauth(fake, client, match_pick="oldest").find_record(KEY, "contacts", deadline=D())
    first = await oauth(fake, client, match_pick="first").find_record(KEY, "contacts", deadline=D())
    assert oldest.id == "30101" and first.id == "30101"
    assert searches(fake)[0][1]["sorts"] == [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}]
    assert "sorts" not in searches(fake)[1][1]


async def test_matches_count_the_search_total_beyond_one_page(fake, client):
    fake.records = [contact(0, id=str(40000 + i), modified=f"2026-01-{i + 1:02d}T00:00:00Z") for i in range(14)]
    record = await oauth(fake, client).find_record(KEY, "contacts", deadline=D())
    assert record.matches == 14 and record.id == "40013"
    assert record.describe() == "contacts 40013 (picked from 14 matches)"


# modules


async def test_accounts_are_companies_searched_on_the_stored_phone(fake, client):
    fake.records = [contact(module="accounts", phone="+14155552671", name="Acme Corp")]
    connector = oauth(fake, client)
    record = await connector.find_record(KEY, "accounts", fields=["crm_status"], deadline=D())
    assert record.module == "companies" and record.fields["crm_status"] == "GOLD"
    [(obj, body)] = searches(fake)
    assert obj == "companies" and len(fake.api_requests()) == 1
    assert body["filterGroups"] == [{"filters": [{"propertyName": "phone", "operator": "IN",
                                                  "values": written_forms(phone_forms(CALLER))}]}]  # fmt: skip
    assert body["sorts"][0]["propertyName"] == "hs_lastmodifieddate"


@pytest.mark.parametrize("stored", ["+14155552671", "(415) 555-2671", "415-555-2671", "415.555.2671", "4155552671",
                                    "14155552671", "1-415-555-2671", "+1 (415) 555-2671", "+1 415-555-2671",
                                    "415 555 2671"])  # fmt: skip
async def test_a_company_number_in_any_common_format_is_found(fake, client, stored):
    fake.records = [contact(module="accounts", phone=stored, name="Acme Corp"),
                    contact(1, module="accounts", phone="(415) 999-2671", name="Decoy Ltd")]  # fmt: skip
    record = await oauth(fake, client).find_record(KEY, "accounts", fields=["crm_status"], deadline=D())
    assert record is not None and record.id == "30101" and record.matches == 1


async def test_leads_are_contacts_in_the_lead_lifecycle_stage(fake, client):
    fake.records = [contact(0, module="contacts", fields={"crm_status": "CUSTOMER"}),
                    contact(1, module="leads", fields={"crm_status": "PROSPECT"}, modified="2020-01-01T00:00:00Z")]
    connector = oauth(fake, client)
    assert await connector.fetch(KEY, "leads", "crm_status", deadline=D()) == "PROSPECT"
    assert await connector.fetch(KEY, "contacts", "crm_status", deadline=D()) == "CUSTOMER"
    body = searches(fake)[0][1]
    assert all(g["filters"][-1] == {"propertyName": "lifecyclestage", "operator": "EQ", "value": "lead"}
               for g in body["filterGroups"])  # fmt: skip


# typed keys


async def test_typed_key_without_key_field_is_the_record_id(fake, client):
    fake.records = [contact(phone="")]
    connector = oauth(fake, client)
    assert await connector.fetch(LookupKey("30101", "dtmf"), "contacts", "crm_status", deadline=D()) == "GOLD"
    assert searches(fake)[0][1]["filterGroups"] == [
        {"filters": [{"propertyName": "hs_object_id", "operator": "EQ", "value": "30101"}]}]
    assert await connector.find_record(LookupKey("12a", "dtmf"), "contacts", deadline=D()) is None
    assert len(searches(fake)) == 1  # not an id: not even asked


async def test_an_unknown_key_field_names_the_field(fake, client):
    connector = oauth(fake, client, key_field="AccountNumber")
    with pytest.raises(UnexpectedResponse, match="field AccountNumber does not exist on contacts"):
        await connector.find_record(LookupKey("12345", "dtmf"), "contacts", deadline=D())


# fields


async def test_a_field_that_does_not_exist_is_named(fake, client):
    fake.records = [contact()]
    connector = oauth(fake, client)
    with pytest.raises(UnexpectedResponse, match="field Status__c does not exist on contacts"):
        await connector.fetch(KEY, "contacts", "Status__c", deadline=D())
    fake.records = [contact(fields={"crm_status": None})]
    record = await connector.find_record(KEY, "contacts", deadline=D())
    checks = fake.state.get("property_checks", 0)
    with pytest.raises(UnexpectedResponse, match="Status__c does not exist"):
        await connector.read_field(record, "Status__c", deadline=D())
    assert fake.state["property_checks"] == checks  # remembered


async def test_a_field_not_asked_for_is_read_from_the_record(fake, client):
    fake.records = [contact()]
    connector = oauth(fake, client)
    record = await connector.find_record(KEY, "contacts", deadline=D())
    assert "account_number" not in record.fields
    assert await connector.read_field(record, "account_number", deadline=D()) == "12345"
    assert [r.path for r in fake.api_requests()][-1] == "/crm/v3/objects/contacts/30101"
    assert fake.api_requests()[-1].params == {"properties": "account_number"}


async def test_a_companys_contact_goes_through_the_associations_api(fake, client):
    fake.records = [contact(module="accounts", name="Acme Corp", phone="+14155552671", fields={"crm_status": "GOLD"}),
                    contact(1, phone="", name="Bob Stone", fields={"associatedcompanyid": "30101"})]
    connector = oauth(fake, client)
    record = await connector.find_record(KEY, "accounts", deadline=D())
    assert await connector.read_field(record, "contacts.firstname", deadline=D()) == "Bob"
    paths = [(r.path, r.params) for r in fake.api_requests()][1:]
    assert paths == [("/crm/v3/objects/companies/30101", {"properties": "hs_object_id", "associations": "contacts"}),
                     ("/crm/v3/objects/contacts/30102", {"properties": "firstname"})]  # fmt: skip
    fake.records = fake.records[:1]
    assert await connector.read_field(record, "contacts.firstname", deadline=D()) is None  # nobody associated


async def test_the_nested_company_is_one_more_request(fake, client):
    fake.records = [contact()]
    connector = oauth(fake, client)
    assert await connector.fetch(KEY, "contacts", "companies.name", deadline=D()) == "Acme Corp"
    paths = [r.path for r in fake.api_requests()]
    assert paths == ["/crm/v3/objects/contacts/search", "/crm/v3/objects/companies/930101"]
    assert "associatedcompanyid" in searches(fake)[0][1]["properties"]


async def test_the_owner_lookup(fake, client):
    fake.state["owners"] = {"77": {"id": "77", "email": "ann@example.com", "firstName": "Ann", "lastName": "Lee"}}
    fake.records = [contact(fields={"crm_status": "GOLD", "hubspot_owner_id": "77"})]
    connector = oauth(fake, client)
    assert await connector.fetch(KEY, "contacts", "hubspot_owner_id.email", deadline=D()) == "ann@example.com"
    assert await connector.fetch(KEY, "contacts", "owner.firstName", deadline=D()) == "Ann"


# errors


async def test_a_missing_scope_names_the_scope(fake, client):
    fake.state["missing_scope"] = True
    with pytest.raises(AuthError, match="grant crm.objects.contacts.read"):
        await oauth(fake, client).fetch(KEY, "contacts", "crm_status", deadline=D())


async def test_a_429_without_retry_after_is_rate_limited_at_once(fake, client):
    connector = oauth(fake, client)
    await connector.authenticate(deadline=D())
    body = {"status": "error", "message": "You have reached your secondly limit.", "errorType": "RATE_LIMIT",
            "policyName": "SECONDLY"}  # fmt: skip
    fake.fail_next(429, body, headers={"X-HubSpot-RateLimit-Remaining": "0"})
    with pytest.raises(RateLimited):
        await connector.fetch(KEY, "contacts", "crm_status", deadline=D())


async def test_a_nearly_spent_daily_quota_is_logged_once(fake, client, caplog):
    connector = private(fake, client)
    await connector.authenticate(deadline=D())
    headers = {"X-HubSpot-RateLimit-Daily": "250000", "X-HubSpot-RateLimit-Daily-Remaining": "1200",
               "X-HubSpot-RateLimit-Max": "100", "X-HubSpot-RateLimit-Remaining": "97"}
    for _ in range(2):
        fake.fail_next(200, {"total": 0, "results": []}, headers=headers)
        assert await connector.find_record(KEY, "contacts", deadline=D()) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["hubspot: 1200 of the daily 250000 API calls left"]


async def test_a_validation_error_shows_hubspots_message(fake, client):
    connector = oauth(fake, client)
    await connector.authenticate(deadline=D())
    fake.fail_next(400, {"status": "error", "message": "There was a problem with the request.",
                         "category": "VALIDATION_ERROR", "correlationId": "abc"})  # fmt: skip
    with pytest.raises(UnexpectedResponse, match="HTTP 400 to search contacts: There was a problem with the request"):
        await connector.fetch(KEY, "contacts", "crm_status", deadline=D())


# call log


def call(record: Record | None = None, **changes: Any) -> CallActivity:
    base = CallActivity(
        call_id="1795657573.7", direction="inbound", outcome="answered", external_number=CALLER,
        started_at=datetime(2026, 11, 26, 9, 30, 5, tzinfo=timezone.utc), ring_seconds=6, talk_seconds=93,
        extension="201", recording="https://pbx.example.com/rec/1795657573.7.wav", subject="Inbound call",
        description="Answered by 201", record=record,
    )  # fmt: skip
    for name, value in changes.items():
        setattr(base, name, value)
    return base


async def test_the_call_object_is_hubspots_shape(fake, client):
    fake.records = [contact()]
    connector = oauth(fake, client, owner_id="77")
    record = await connector.find_record(KEY, "contacts", deadline=D())
    call_id = await connector.log_call(call(record), LogOptions(inbound_answered=True), deadline=D())
    [stored] = fake.activities
    assert call_id == stored["id"]
    assert stored["properties"] == {
        "hs_object_id": call_id, "hs_timestamp": "2026-11-26T09:30:05.000Z", "hs_call_title": "Inbound call",
        "hs_call_body": "Answered by 201", "hs_call_direction": "INBOUND", "hs_call_status": "COMPLETED",
        "hs_call_duration": "93000", "hs_call_from_number": "+14155552671", "hs_call_to_number": "201",
        "hs_call_recording_url": "https://pbx.example.com/rec/1795657573.7.wav",
        "hs_call_external_id": "1795657573.7", "hubspot_owner_id": "77",
    }  # fmt: skip
    assert stored["associations"] == [{"to": {"id": "30101"}, "types": [
        {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 194}]}]  # fmt: skip
    idempotency = searches(fake)[-1]
    assert idempotency == ("calls", {"filterGroups": [{"filters": [
        {"propertyName": "hs_call_external_id", "operator": "EQ", "value": "1795657573.7"}]}],
        "properties": ["hs_call_external_id"], "limit": 1})  # fmt: skip


@pytest.mark.parametrize("outcome,status", [("missed", "NO_ANSWER"), ("busy", "BUSY"), ("failed", "FAILED")])
async def test_outcomes_map_to_hubspot_statuses(fake, client, outcome, status):
    fake.records = [contact()]
    await oauth(fake, client).log_call(call(outcome=outcome, talk_seconds=0, recording="http://insecure/x.wav"),
                                       LogOptions(), deadline=D())  # fmt: skip
    props = fake.activities[0]["properties"]
    assert props["hs_call_status"] == status and props["hs_call_duration"] == "0"
    assert "hs_call_recording_url" not in props  # HubSpot plays HTTPS recordings only


async def test_an_outbound_call_to_a_company(fake, client):
    fake.records = [contact(module="accounts", phone="+14155552671")]
    connector = oauth(fake, client)
    record = await connector.find_record(KEY, "accounts", deadline=D())
    await connector.log_call(call(record, direction="outbound"), LogOptions(outbound=True), deadline=D())
    stored = fake.activities[0]
    assert stored["properties"]["hs_call_direction"] == "OUTBOUND"
    assert stored["properties"]["hs_call_from_number"] == "201"
    assert stored["properties"]["hs_call_to_number"] == "+14155552671"
    assert stored["associations"][0]["types"][0]["associationTypeId"] == 182


async def test_an_unknown_caller_is_logged_without_association_unless_asked(fake, client):
    await oauth(fake, client).log_call(call(None), LogOptions(inbound_answered=True), deadline=D())
    assert fake.created == [] and fake.activities[0]["associations"] == []
    await oauth(fake, client).log_call(call(None, call_id="other"), LogOptions(create_unknown=True), deadline=D())
    assert fake.created[0]["properties"]["phone"] == "+14155552671"
    assert fake.activities[1]["associations"][0]["to"]["id"] == fake.created[0]["id"]


# --- users (agents sync) ------------------------------------------------------------------------


def owners_fixture(count: int) -> dict[str, dict[str, Any]]:
    found = {str(100 + i): {"id": str(100 + i), "email": f"agent{i}@example.com", "type": "PERSON",
                            "firstName": f"Agent{i}", "lastName": "Lee", "userId": 9000 + i, "archived": False}
             for i in range(count)}  # fmt: skip
    found["gone"] = {"id": "5", "email": "gone@example.com", "firstName": "Gone", "lastName": "", "archived": True}
    return found


async def test_list_users_pages_through_the_owners(fake, client):
    fake.state["owners"] = owners_fixture(1203)
    connector = private(fake, client)
    users = await connector.list_users(deadline=D())
    assert len(users) == 1203 and fake.state["owner_pages"] == 3  # 500 + 500 + 203
    assert users[0].id == "100" and users[0].name == "Agent0 Lee" and users[0].email == "agent0@example.com"
    assert "5" not in {u.id for u in users}  # archived owners are not listed
    assert connector.supports_users()


async def test_list_users_with_no_owners_is_empty(fake, client):
    fake.state["owners"] = {}
    users = await private(fake, client).list_users(deadline=D())
    assert users == []
