"""Salesforce connector against a strict loopback fake of the REST API (OAuth token endpoint, SOSL, SOQL, sObjects)."""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from datetime import datetime, timezone
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from crmroute.connectors._phone import digits_of
from crmroute.connectors.base import Record
from crmroute.deadline import Deadline
from crmroute.errors import AuthError, RateLimited, UnexpectedResponse
from crmroute.routing.engine import LookupKey
from crmroute.schemas import LogOptions
from tests.connectors.contract import CALLER, OTHER_PHONE, ConnectorContract
from tests.connectors.fakecrm import FakeRecord, VendorFake, vendor_fixtures

VERSION = "63.0"
API = f"/services/data/v{VERSION}"
CLIENT_ID = "3MVG9fakeConsumerKey.Xyz"
CLIENT_SECRET = "sf-consumer-s3cret"
REFRESH_TOKEN = "5Aep861-refresh-s3cret"
USERNAME = "integration@example.com"
PASSWORD = "pa55-w0rd"
SECURITY_TOKEN = "SECtok3nXYZ"
RULE_USER, RULE_PASSWORD = "agent@example.com", "rule-pa55"

_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE_KEY_PEM = _KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()  # fmt: skip

OBJECTS = {"contacts": "Contact", "leads": "Lead", "accounts": "Account"}
PREFIX = {"Account": "001", "Contact": "003", "Lead": "00Q", "Task": "00T"}
PHONE_FIELDS = {
    "Contact": ("Phone", "MobilePhone", "HomePhone", "OtherPhone", "AssistantPhone"),
    "Lead": ("Phone", "MobilePhone"),
    "Account": ("Phone",),
}
COMMON = {"Id": "id", "Name": "string", "LastModifiedDate": "datetime", "CreatedDate": "datetime",
          "OwnerId": "reference", "Status__c": "string", "Customer_Number__c": "string", "Score__c": "double"}  # fmt: skip
SCHEMA: dict[str, dict[str, str]] = {
    "Contact": COMMON | {p: "phone" for p in PHONE_FIELDS["Contact"]}
    | {"FirstName": "string", "LastName": "string", "Email": "email", "AccountId": "reference"},
    "Lead": COMMON | {p: "phone" for p in PHONE_FIELDS["Lead"]}
    | {"FirstName": "string", "LastName": "string", "Company": "string", "Status": "picklist", "Email": "email"},
    "Account": COMMON | {"Phone": "phone", "AccountNumber": "string", "ParentId": "reference"},
    "Task": {"Id": "id", "Subject": "string", "TaskSubtype": "picklist", "CallType": "picklist",
             "CallDurationInSeconds": "int", "CallObject": "string", "CallDisposition": "string",
             "Status": "picklist", "ActivityDate": "date", "WhoId": "reference", "WhatId": "reference",
             "Description": "textarea", "OwnerId": "reference", "Priority": "picklist"},
    "User": {"Id": "id", "Name": "string", "Email": "email", "IsActive": "boolean"},
}  # fmt: skip
RELATIONS = {"Contact": {"Account": "Account", "Owner": "User"}, "Lead": {"Owner": "User"},
             "Account": {"Owner": "User", "Parent": "Account"}, "Task": {"Owner": "User"}}  # fmt: skip
CREATE_REQUIRED = {"Lead": ("LastName", "Company"), "Contact": ("LastName",), "Account": ("Name",), "Task": ()}
TASK_SUBTYPES = {"Task", "Email", "ListEmail", "Cadence", "Call", "LinkedIn"}
SOSL_RESERVED = set("?&|!{}[]()^~*:\\\"'+-")


def sf_errors(status: int, code: str, message: str, fields: list[str] | None = None) -> JSONResponse:
    return JSONResponse([{"message": message, "errorCode": code, "fields": fields or []}], status_code=status)


def sf_date(iso: str) -> str:
    """``2026-03-01T10:00:00Z`` as Salesforce writes datetimes: ``2026-03-01T10:00:00.000+0000``."""
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def new_id(sobject: str) -> str:
    return PREFIX[sobject] + secrets.token_hex(8)[:12].upper() + "AAA"


def canonical(sobject: str, name: str) -> str | None:
    for known in SCHEMA[sobject]:
        if known.casefold() == name.casefold():
            return known
    return None


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def make_app(fake: VendorFake) -> Starlette:
    fake.auth_paths = ("/services/oauth2/",)

    def limit_headers() -> dict[str, str]:
        used = fake.state.setdefault("api_used", 0) + 1
        fake.state["api_used"] = used
        return {"Sforce-Limit-Info": f"api-usage={used}/{fake.state.get('api_total', 15000)}"}

    # --- OAuth ------------------------------------------------------------------------

    async def token(request: Request) -> Response:
        if request.method != "POST":
            return JSONResponse({"error": "invalid_request", "error_description": "must use HTTP POST"}, 400)
        if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return JSONResponse({"error": "invalid_request", "error_description": "invalid content type"}, 400)
        form = dict(await request.form())
        fake.state.setdefault("grants", []).append(form)
        grant = form.get("grant_type", "")
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            problem = check_jwt(str(form.get("assertion", "")))
            if problem or fake.reject_credentials:
                return JSONResponse({"error": "invalid_grant", "error_description": problem or "user hasn't approved this consumer"}, 400)  # fmt: skip
        else:
            if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
                return JSONResponse({"error": "invalid_client", "error_description": "invalid client credentials"}, 400)
            if grant == "refresh_token":
                if form.get("refresh_token") != REFRESH_TOKEN or fake.reject_credentials:
                    return JSONResponse({"error": "invalid_grant", "error_description": "expired access/refresh token"}, 400)  # fmt: skip
            elif grant == "password":
                allowed = {USERNAME: PASSWORD + SECURITY_TOKEN, RULE_USER: RULE_PASSWORD + SECURITY_TOKEN}
                if allowed.get(str(form.get("username"))) != form.get("password") or fake.reject_credentials:
                    return JSONResponse({"error": "invalid_grant", "error_description": "authentication failure"}, 400)
            elif grant == "client_credentials":
                if fake.reject_credentials:
                    return JSONResponse({"error": "invalid_grant", "error_description": "no client credentials user enabled"}, 400)  # fmt: skip
            else:
                return JSONResponse({"error": "unsupported_grant_type", "error_description": "grant type not supported"}, 400)  # fmt: skip
        body = {"access_token": fake.issue_token("00Dxx0000001gPL!AQ"), "instance_url": fake.base_url,
                "id": f"{fake.base_url}/id/00Dxx0000001gPLEAY/005xx000001Sv6eAAC", "token_type": "Bearer",
                "issued_at": str(int(time.time() * 1000)), "signature": "c2lnbmF0dXJl", "scope": "api"}  # fmt: skip
        if "expires_in" in fake.state:
            body["expires_in"] = fake.state["expires_in"]
        return JSONResponse(body)

    def check_jwt(assertion: str) -> str:
        try:
            header, claims, signature = assertion.split(".")
            _KEY.public_key().verify(_b64decode(signature), f"{header}.{claims}".encode(), padding.PKCS1v15(),
                                     hashes.SHA256())  # fmt: skip
            head, body = json.loads(_b64decode(header)), json.loads(_b64decode(claims))
        except Exception:
            return "invalid assertion"
        now = time.time()
        if head.get("alg") != "RS256":
            return "invalid assertion algorithm"
        if body.get("iss") != CLIENT_ID:
            return "invalid client identifier"
        if body.get("sub") not in (USERNAME, RULE_USER):
            return "user hasn't approved this consumer"
        if body.get("aud") != fake.base_url:
            return "audience is invalid"
        if not now < int(body.get("exp", 0)) <= now + 300:
            return "expired authorization code"
        return ""

    # --- REST ------------------------------------------------------------------------------

    def unauthorized(request: Request) -> Response | None:
        if not fake.authorized(request):
            return sf_errors(401, "INVALID_SESSION_ID", "Session expired or invalid")
        return None

    def records_of(sobject: str) -> list[FakeRecord]:
        if sobject == "Task":
            return []
        return [r for r in fake.records if OBJECTS.get(r.module) == sobject]

    def values(record: FakeRecord) -> dict[str, Any]:
        base = {"Id": record.id, "Name": record.name, "Phone": record.phone or None,
                "LastModifiedDate": sf_date(record.modified)}  # fmt: skip
        return base | record.fields

    def value_of(record_values: dict[str, Any], name: str) -> Any:
        folded = {k.casefold(): v for k, v in record_values.items()}
        return folded.get(name.casefold())

    def check_column(sobject: str, column: str, where: str) -> Response | None:
        head, _, rest = column.partition(".")
        if not rest:
            if canonical(sobject, head) is None:
                return sf_errors(400, "INVALID_FIELD", f"\n{where}\n ^\nERROR at Row:1:Column:8\nNo such column "
                                 f"'{head}' on entity '{sobject}'. If you are attempting to use a custom field, be "
                                 "sure to append the '__c' after the custom field name. Please reference your WSDL "
                                 "or the describe call for the appropriate names.")  # fmt: skip
            return None
        target = {k.casefold(): v for k, v in RELATIONS.get(sobject, {}).items()}.get(head.casefold())
        if target is None:
            return sf_errors(400, "INVALID_FIELD", f"\n{where}\n ^\nERROR at Row:1:Column:8\nDidn't understand "
                             f"relationship '{head}' in field path. If you are attempting to use a custom "
                             "relationship, be sure to append the '__r' after the custom relationship name.")  # fmt: skip
        return check_column(target, rest, where)

    def render(sobject: str, record: FakeRecord, columns: list[str]) -> dict[str, Any]:
        data: dict[str, Any] = {"attributes": {"type": sobject, "url": f"{API}/sobjects/{sobject}/{record.id}"}}
        known = values(record)
        for column in columns:
            head, _, rest = column.partition(".")
            if not rest:
                data[canonical(sobject, head) or head] = value_of(known, head)
                continue
            target = {k.casefold(): (k, v) for k, v in RELATIONS[sobject].items()}[head.casefold()]
            nested = value_of(known, target[0])
            if not isinstance(nested, dict):
                data[target[0]] = None
                continue
            inner = data.get(target[0]) or {"attributes": {"type": target[1], "url": f"{API}/sobjects/{target[1]}/x"}}
            inner[canonical(target[1], rest) or rest] = value_of(nested, rest)
            data[target[0]] = inner
        return data

    def order(rows: list[FakeRecord], field: str | None, direction: str | None) -> list[FakeRecord]:
        if not field:
            return rows
        if field.casefold() != "lastmodifieddate":
            return sorted(rows, key=lambda r: str(value_of(values(r), field) or ""), reverse=direction == "DESC")
        return sorted(rows, key=lambda r: sf_date(r.modified), reverse=direction == "DESC")

    inner_clause = re.compile(r"(?P<fields>.+?)(?:\s+ORDER BY\s+(?P<order>\w+)(?:\s+(?P<dir>ASC|DESC))?)?"
                              r"(?:\s+LIMIT\s+(?P<limit>\d+))?$", re.S)  # fmt: skip

    async def search(request: Request) -> Response:
        if request.method != "GET":
            return sf_errors(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{request.method}' not allowed. Allowed are GET,HEAD")  # fmt: skip
        if (denied := unauthorized(request)) is not None:
            return denied
        q = request.query_params.get("q", "")
        found = re.fullmatch(r"FIND \{(?P<terms>[^{}]*)\} IN (?P<group>ALL|NAME|EMAIL|PHONE) FIELDS RETURNING (?P<ret>.+)", q, re.S)  # fmt: skip
        if not found:
            return sf_errors(400, "MALFORMED_SEARCH", f"line 1:0 no viable alternative at character '{q[:1]}'")
        if found["group"] != "PHONE":
            return sf_errors(400, "MALFORMED_SEARCH", "this fake serves IN PHONE FIELDS only")
        terms = [t.strip() for t in re.split(r"\s+OR\s+", found["terms"].strip())]
        for term in terms:
            bare = term[1:-1] if len(term) > 1 and term[0] == term[-1] == '"' else term
            if not bare or SOSL_RESERVED & set(bare):
                return sf_errors(400, "MALFORMED_SEARCH", f"Invalid search term: {term}")
        wanted = {digits_of(t) for t in terms}
        items = split_returning(found["ret"])
        if items is None:
            return sf_errors(400, "MALFORMED_SEARCH", f"unexpected token in RETURNING: '{found['ret'][:30]}'")
        out: list[dict[str, Any]] = []
        for sobject, clause in items:
            if sobject not in SCHEMA or sobject in ("User", "Task"):
                return sf_errors(400, "INVALID_TYPE", f"\n{q}\n ^\nERROR at Row:1:Column:1\nsObject type '{sobject}' is not supported.")  # fmt: skip
            parts = inner_clause.fullmatch(clause.strip())
            if not parts:
                return sf_errors(400, "MALFORMED_SEARCH", f"unexpected token in RETURNING {sobject}")
            columns = [c.strip() for c in parts["fields"].split(",")]
            for column in columns + ([parts["order"]] if parts["order"] else []):
                if (bad := check_column(sobject, column, q)) is not None:
                    return bad
            matches = [r for r in records_of(sobject)
                       if any(digits_of(str(value_of(values(r), p) or "")) in wanted for p in PHONE_FIELDS[sobject])]  # fmt: skip
            matches = order(matches, parts["order"], parts["dir"])[: int(parts["limit"] or 2000)]
            out += [render(sobject, r, columns) for r in matches]
        return JSONResponse({"searchRecords": out}, headers=limit_headers())

    soql_re = re.compile(r"SELECT (?P<fields>.+?) FROM (?P<obj>\w+)"
                         r"(?: WHERE (?P<field>\w+) = (?P<value>'(?:[^'\\]|\\.)*'|-?\d+(?:\.\d+)?|true|false))?"
                         r"(?: ORDER BY (?P<order>\w+)(?: (?P<dir>ASC|DESC))?)?(?: LIMIT (?P<limit>\d+))?", re.S)  # fmt: skip

    async def query(request: Request) -> Response:
        if request.method != "GET":
            return sf_errors(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{request.method}' not allowed. Allowed are GET,HEAD")  # fmt: skip
        if (denied := unauthorized(request)) is not None:
            return denied
        q = request.query_params.get("q", "")
        found = soql_re.fullmatch(q)
        if not found:
            return sf_errors(400, "MALFORMED_QUERY", f"\n{q}\n^\nERROR at Row:1:Column:1\nunexpected token")
        sobject = found["obj"]
        if sobject not in SCHEMA:
            return sf_errors(400, "INVALID_TYPE", f"\n{q}\n ^\nERROR at Row:1:Column:1\nsObject type '{sobject}' is not supported.")  # fmt: skip
        columns = [c.strip() for c in found["fields"].split(",")]
        for column in columns + [c for c in (found["field"], found["order"]) if c]:
            if (bad := check_column(sobject, column, q)) is not None:
                return bad
        if sobject == "User":  # fake.state["users"]: dicts of Id, Name, Email, IsActive; batches of query_batch
            users = fake.state.get("users", [])
            if found["field"]:
                if SCHEMA["User"].get(canonical("User", found["field"]) or "") != "boolean" or found["value"] not in ("true", "false"):
                    return sf_errors(400, "INVALID_FIELD", f"\n{q}\n ^\nERROR at Row:1:Column:40\nvalue of filter criterion "
                                     f"for field '{found['field']}' must be of type boolean and should not be enclosed in quotes")  # fmt: skip
                users = [u for u in users if u.get("IsActive") is (found["value"] == "true")]
            if found["order"]:
                users = sorted(users, key=lambda u: str(u.get(canonical("User", found["order"]) or "") or ""))
            out = [{"attributes": {"type": "User", "url": f"{API}/sobjects/User/{u['Id']}"}} | {c: u.get(c) for c in columns}
                   for u in users]  # fmt: skip
            return query_batch(out)
        if found["value"] in ("true", "false"):
            return sf_errors(400, "INVALID_FIELD", f"\n{q}\n ^\nERROR at Row:1:Column:40\nvalue of filter criterion "
                             f"for field '{found['field']}' must be of type string and should be enclosed in quotes")  # fmt: skip
        if sobject == "Task":
            rows = [a for a in fake.activities
                    if not found["field"] or str(a.get(canonical("Task", found["field"]) or "")) == _literal(found["value"])]  # fmt: skip
            out = [{"attributes": {"type": "Task", "url": f"{API}/sobjects/Task/{a['Id']}"}} | {c: a.get(c) for c in columns}
                   for a in rows]  # fmt: skip
            return JSONResponse({"totalSize": len(out), "done": True, "records": out[: int(found["limit"] or 2000)]},
                                headers=limit_headers())  # fmt: skip
        rows = records_of(sobject)
        if found["field"]:
            field, literal = canonical(sobject, found["field"]), found["value"]
            kind = SCHEMA[sobject][field]
            quoted = literal.startswith("'")
            if kind in ("double", "int") and quoted:
                return sf_errors(400, "INVALID_FIELD", f"\n{q}\n ^\nERROR at Row:1:Column:40\nvalue of filter "
                                 f"criterion for field '{field}' must be of type double and should not be enclosed "
                                 "in quotes")  # fmt: skip
            if kind not in ("double", "int") and not quoted:
                return sf_errors(400, "INVALID_FIELD", f"\n{q}\n ^\nERROR at Row:1:Column:40\nvalue of filter "
                                 f"criterion for field '{field}' must be of type {kind} and should be enclosed in "
                                 "quotes")  # fmt: skip
            if kind in ("double", "int"):
                rows = [r for r in rows if _number(value_of(values(r), field)) == float(literal)]
            else:
                rows = [r for r in rows if str(value_of(values(r), field) or "") == _literal(literal)]
        rows = order(rows, found["order"], found["dir"])[: int(found["limit"] or 2000)]
        out = [render(sobject, r, columns) for r in rows]
        return JSONResponse({"totalSize": len(out), "done": True, "records": out}, headers=limit_headers())

    def query_batch(out: list[dict[str, Any]], start: int = 0) -> JSONResponse:
        """One batch of a query's records; ``nextRecordsUrl`` names the rest (``fake.state["query_batch"]`` a batch)."""
        size = fake.state.get("query_batch", 2000)
        answer: dict[str, Any] = {"totalSize": len(out), "done": start + size >= len(out), "records": out[start:start + size]}
        if not answer["done"]:
            locator = f"01gD0000002HU6K-{start + size}"
            fake.state.setdefault("cursors", {})[locator] = out
            answer["nextRecordsUrl"] = f"{API}/query/{locator}"
        return JSONResponse(answer, headers=limit_headers())

    async def query_more(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        locator = request.path_params["locator"]
        out = fake.state.get("cursors", {}).get(locator)
        if out is None:
            return sf_errors(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return query_batch(out, int(locator.rsplit("-", 1)[1]))

    async def create(request: Request) -> Response:
        sobject = request.path_params["sobject"]
        if request.method != "POST":
            return sf_errors(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{request.method}' not allowed. Allowed are HEAD,GET,POST")  # fmt: skip
        if (denied := unauthorized(request)) is not None:
            return denied
        if sobject not in SCHEMA or sobject == "User":
            return sf_errors(404, "NOT_FOUND", "The requested resource does not exist")
        if not request.headers.get("content-type", "").startswith("application/json"):
            return sf_errors(415, "UNSUPPORTED_MEDIA_TYPE", "MediaType of 'text/plain' is not supported by this resource")  # fmt: skip
        try:
            body = json.loads(await request.body())
        except ValueError:
            return sf_errors(400, "JSON_PARSER_ERROR", "Unexpected character")
        if not isinstance(body, dict):
            return sf_errors(400, "JSON_PARSER_ERROR", "Cannot deserialize instance of sObject")
        for name in body:
            if canonical(sobject, name) is None or name == "Id":
                return sf_errors(400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {sobject}")
        missing = [f for f in CREATE_REQUIRED[sobject] if not body.get(f)]
        if missing:
            return sf_errors(400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]", missing)  # fmt: skip
        if sobject == "Task":
            if body.get("TaskSubtype") not in TASK_SUBTYPES | {None}:
                return sf_errors(400, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "Task Subtype: bad value for restricted picklist field", ["TaskSubtype"])  # fmt: skip
            if body.get("CallType") not in ("Inbound", "Outbound", "Internal", None):
                return sf_errors(400, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "Call Type: bad value for restricted picklist field", ["CallType"])  # fmt: skip
            who, what = str(body.get("WhoId") or ""), str(body.get("WhatId") or "")
            known = {r.id: OBJECTS[r.module] for r in fake.records}
            if who and known.get(who) not in ("Contact", "Lead"):
                return sf_errors(400, "FIELD_INTEGRITY_EXCEPTION", "Name ID: id value of incorrect type", ["WhoId"])
            if what and known.get(what) in (None, "Contact", "Lead"):
                return sf_errors(400, "FIELD_INTEGRITY_EXCEPTION", "Related To ID: id value of incorrect type", ["WhatId"])  # fmt: skip
            task_id = new_id("Task")
            fake.activities.append({"Id": task_id} | body)
            return JSONResponse({"id": task_id, "success": True, "errors": []}, 201, headers=limit_headers())
        record_id = new_id(sobject)
        fake.created.append({"Id": record_id, "sobject": sobject} | body)
        module = {v: k for k, v in OBJECTS.items()}[sobject]
        fake.records.append(FakeRecord(module=module, id=record_id, phone=str(body.get("Phone") or ""),
                                       name=str(body.get("LastName") or body.get("Name")),
                                       modified=datetime.now(timezone.utc).isoformat()))  # fmt: skip
        return JSONResponse({"id": record_id, "success": True, "errors": []}, 201, headers=limit_headers())

    async def not_found(request: Request) -> Response:
        return sf_errors(404, "NOT_FOUND", "The requested resource does not exist")

    async def resources(request: Request) -> Response:
        if denied := unauthorized(request):
            return denied
        fake.state["resource_checks"] = fake.state.get("resource_checks", 0) + 1
        return JSONResponse({"query": f"{API}/query", "search": f"{API}/search", "sobjects": f"{API}/sobjects",
                             "limits": f"{API}/limits"}, headers=limit_headers())  # fmt: skip

    return Starlette(routes=[
        Route("/services/oauth2/token", token, methods=["GET", "POST"]),
        Route(f"{API}/", resources, methods=["GET"]),
        Route(f"{API}/search/", search, methods=["GET", "POST"]),
        Route(f"{API}/query/", query, methods=["GET", "POST"]),
        Route(f"{API}/query/{{locator}}", query_more, methods=["GET"]),
        Route(f"{API}/sobjects/{{sobject}}", create, methods=["GET", "POST", "PATCH"]),
        Route("/{path:path}", not_found, methods=["GET", "POST", "PATCH", "DELETE"]),
    ])  # fmt: skip


def split_returning(text: str) -> list[tuple[str, str]] | None:
    """``Contact(Id, Name), Lead(Id)`` as ``[("Contact", "Id, Name"), ("Lead", "Id")]``; ``None`` if malformed."""
    items, position = [], 0
    item = re.compile(r"\s*(\w+)\s*\(([^()]*)\)\s*")
    while True:
        found = item.match(text, position)
        if not found:
            return None
        items.append((found[1], found[2]))
        position = found.end()
        if position == len(text):
            return items
        if text[position] != ",":
            return None
        position += 1


def _literal(quoted: str) -> str:
    body = quoted[1:-1] if quoted.startswith("'") else quoted
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(m[1], m[1]), body)


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


fake_server, fake = vendor_fixtures(make_app)

CONTACT_IDS = ("003Dn00000QxAb1IAF", "003Dn00000QxAb2IAF", "003Dn00000QxAb3IAF")


class TestSalesforce(ConnectorContract):
    OWNER_FIELDS = {"OwnerId": "005000000000OWN"}
    OWNER_ID = "005000000000OWN"
    kind = "salesforce"
    MODULE = "contacts"
    FIELD = "Status__c"
    NESTED_FIELD = "Account.Name"
    NESTED_FIELDS = {"Account": {"Name": "Acme Corp"}}
    NESTED_VALUE = "Acme Corp"
    IDS = CONTACT_IDS
    KEY_FIELD = "Customer_Number__c"
    REQUESTS_PER_CALL = (1, 1)
    MOBILE_FIELDS = {"contacts": "MobilePhone", "leads": "MobilePhone"}  # Account has Phone (and Fax) only

    def settings(self, fake: VendorFake) -> dict[str, Any]:
        return {"login_url": fake.base_url, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                "refresh_token": REFRESH_TOKEN}  # fmt: skip

    async def test_a_session_expiry_fits_the_deadline_with_the_default_budget(self, fake, connector):
        """The daily allocation is a quota, not a pace: refresh + retry is not held back (it was ~870 ms a request)."""
        fake.records = [self.record()]
        connector.budget = budget = self.default_budget(connector)
        assert budget.rate is None and [q.quota.limit for q in budget.quotas] == [100_000]
        await connector.fetch(LookupKey(CALLER, "caller_id"), self.MODULE, self.FIELD, deadline=self.deadline())
        fake.expire_tokens()  # the session ended: 401, refresh, retry
        tokens = fake.token_requests
        value = await connector.fetch(LookupKey(CALLER, "caller_id"), self.MODULE, self.FIELD,
                                      deadline=Deadline.after_ms(2500))  # fmt: skip
        assert value == "GOLD" and fake.token_requests == tokens + 1
        assert budget.waited_s == 0
        assert budget.quotas[0].limit == connector.api_usage[1]  # Sforce-Limit-Info corrected the allocation

    # --- auth flows -------------------------------------------------------------------

    async def test_refresh_token_flow_request(self, fake, connector):
        await connector.authenticate(deadline=self.deadline())
        assert fake.state["grants"] == [{"grant_type": "refresh_token", "refresh_token": REFRESH_TOKEN,
                                         "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}]  # fmt: skip
        token_request = fake.requests[0]
        assert token_request.method == "POST" and token_request.path == "/services/oauth2/token"

    async def test_revoked_refresh_token_says_so(self, fake, connector):
        fake.reject_credentials = True
        with pytest.raises(AuthError) as caught:
            await connector.authenticate(deadline=self.deadline())
        assert "token rejected: refresh token revoked" in str(caught.value)
        assert "expired access/refresh token" in str(caught.value)

    async def test_wrong_client_secret_names_the_connected_app(self, fake, http):
        connector = self.build(fake, http, client_secret="wrong")
        with pytest.raises(AuthError, match="Connected App.*invalid client credentials"):
            await connector.authenticate(deadline=self.deadline())

    async def test_client_credentials_flow(self, fake, http):
        connector = self.build(fake, http, auth_flow="client_credentials", refresh_token=None)
        fake.records = [self.record()]
        assert await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "Status__c", deadline=self.deadline()) == "GOLD"  # fmt: skip
        assert fake.state["grants"] == [{"grant_type": "client_credentials", "client_id": CLIENT_ID,
                                         "client_secret": CLIENT_SECRET}]  # fmt: skip

    async def test_password_flow_appends_the_security_token(self, fake, http):
        connector = self.build(fake, http, auth_flow="password", refresh_token=None, username=USERNAME,
                               password=PASSWORD, security_token=SECURITY_TOKEN)  # fmt: skip
        await connector.authenticate(deadline=self.deadline())
        assert fake.state["grants"][0] == {"grant_type": "password", "username": USERNAME,
                                                "password": PASSWORD + SECURITY_TOKEN, "client_id": CLIENT_ID,
                                                "client_secret": CLIENT_SECRET}  # fmt: skip

    async def test_password_flow_uses_the_rules_credentials(self, fake, http):
        cls = type(self.build(fake, http))
        settings = cls.Settings.model_validate(self.settings(fake) | {
            "auth_flow": "password", "username": USERNAME, "password": PASSWORD, "security_token": SECURITY_TOKEN})  # fmt: skip
        connector = cls(settings, http, username=RULE_USER, password=RULE_PASSWORD)
        await connector.authenticate(deadline=self.deadline())
        assert fake.state["grants"][0]["username"] == RULE_USER
        assert fake.state["grants"][0]["password"] == RULE_PASSWORD + SECURITY_TOKEN

    async def test_jwt_bearer_flow_signs_an_assertion(self, fake, http):
        connector = self.build(fake, http, auth_flow="jwt_bearer", client_secret=None, refresh_token=None,
                               username=USERNAME, private_key=PRIVATE_KEY_PEM)  # fmt: skip
        fake.records = [self.record()]
        assert await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "Status__c", deadline=self.deadline()) == "GOLD"  # fmt: skip
        grant = fake.state["grants"][0]
        assert set(grant) == {"grant_type", "assertion"}  # the signature is the proof: no client secret
        claims = json.loads(_b64decode(grant["assertion"].split(".")[1]))
        assert claims["iss"] == CLIENT_ID and claims["sub"] == USERNAME and claims["aud"] == fake.base_url

    async def test_jwt_bearer_with_a_foreign_key_is_refused(self, fake, http):
        other = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
            .decode()
        )
        connector = self.build(fake, http, auth_flow="jwt_bearer", username=USERNAME, private_key=other)
        with pytest.raises(AuthError, match="invalid_grant"):
            await connector.authenticate(deadline=self.deadline())

    def test_each_flow_demands_its_secrets(self, fake):
        cls = __import__("crmroute.connectors.salesforce", fromlist=["x"]).SalesforceSettings
        base = {"login_url": fake.base_url, "client_id": CLIENT_ID}
        with pytest.raises(ValueError, match="refresh_token flow needs client_secret, refresh_token"):
            cls.model_validate(base)
        with pytest.raises(ValueError, match="jwt_bearer flow needs private_key, username"):
            cls.model_validate(base | {"auth_flow": "jwt_bearer"})
        with pytest.raises(ValueError, match="https"):
            cls.model_validate(base | {"login_url": "http://login.salesforce.com", "client_secret": "x",
                                       "refresh_token": "y"})  # fmt: skip

    async def test_no_expires_in_means_kept_until_refused(self, fake, connector):
        token = await connector.authenticate(deadline=self.deadline())
        assert token.expires_at is None and token.extra["instance_url"] == fake.base_url

    async def test_an_expires_in_is_honoured_and_refreshed_before_expiry(self, fake, connector):
        fake.state["expires_in"] = 3600  # Salesforce sends none; should one ever come, it counts
        fake.records = [self.record()]
        key = LookupKey(CALLER, "caller_id")
        await connector.fetch(key, "contacts", "Status__c", deadline=self.deadline())
        token = connector._token
        assert 3500 < token.expires_at - time.monotonic() <= 3600
        token.issued_at, token.expires_at = time.monotonic() - 3570, time.monotonic() + 30  # an hour later: inside the margin
        await connector.fetch(key, "contacts", "Status__c", deadline=self.deadline())
        assert fake.token_requests == 2 and connector._token is not token
        assert all(r.path.endswith("/search/") for r in fake.api_requests())  # no 401 was needed

    # --- search shapes -----------------------------------------------------------------

    async def test_one_sosl_request_with_both_digit_forms(self, fake, connector):
        fake.records = [self.record()]
        await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "Status__c", deadline=self.deadline())
        [search] = fake.api_requests()
        assert search.method == "GET" and search.path == f"{API}/search/"
        assert search.params["q"] == ("FIND {4155552671 OR 14155552671} IN PHONE FIELDS RETURNING Contact(Id, Name, "
                                      "LastModifiedDate, Status__c ORDER BY LastModifiedDate DESC LIMIT 50)")  # fmt: skip
        assert search.headers["authorization"].startswith("Bearer 00Dxx")

    async def test_phone_formats_salesforce_stores(self, fake, connector):
        key = LookupKey(CALLER, "caller_id")
        for stored in ["+1 415-555-2671", "415.555.2671", "(415) 555-2671", "14155552671", "4155552671"]:
            fake.records = [self.record(phone=stored)]
            assert await connector.fetch(key, "contacts", "Status__c", deadline=self.deadline()) == "GOLD", stored

    async def test_mobile_phone_is_searched_too(self, fake, connector):
        fake.records = [self.record(phone="", fields={"Status__c": "GOLD", "MobilePhone": "(415) 555-2671"})]
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", fields=["Status__c"],
                                             deadline=self.deadline())  # fmt: skip
        assert record is not None and record.id == CONTACT_IDS[0]

    async def test_a_gb_number_stored_with_its_trunk_prefix(self, fake, connector):
        fake.records = [self.record(phone="020 7946 0958")]
        assert await connector.fetch(LookupKey("+442079460958", "caller_id"), "contacts", "Status__c", deadline=self.deadline()) == "GOLD"  # fmt: skip
        assert "02079460958" in fake.api_requests()[0].params["q"]

    async def test_oldest_pick_orders_the_search_ascending(self, fake, http):
        connector = self.build(fake, http, match_pick="oldest")
        await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline())
        assert "ORDER BY LastModifiedDate ASC LIMIT 50" in fake.api_requests()[0].params["q"]

    @pytest.mark.parametrize("module, sobject, record_id", [("accounts", "Account", "001Dn00000Acct1IAF"),
                                                            ("leads", "Lead", "00QDn00000Lead1IAF")])  # fmt: skip
    async def test_each_module_maps_to_its_object(self, fake, connector, module, sobject, record_id):
        fake.records = [FakeRecord(module=module, id=record_id, phone="(415) 555-2671", fields={"Status__c": "SILVER"}),
                        self.record()]  # fmt: skip
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), module, fields=["Status__c"],
                                             deadline=self.deadline())  # fmt: skip
        assert record.module == sobject and record.id == record_id and record.matches == 1
        assert record.fields["Status__c"] == "SILVER" and record.url == f"{fake.base_url}/{record_id}"
        assert f"RETURNING {sobject}(Id" in fake.api_requests()[0].params["q"]

    async def test_nested_lookup_that_is_empty_is_none(self, fake, connector):
        fake.records = [self.record(fields={"Status__c": "GOLD"})]
        assert await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "Account.Name", deadline=self.deadline()) is None  # fmt: skip

    async def test_owner_relationship(self, fake, connector):
        fake.records = [self.record(fields={"Owner": {"Name": "Bob Agent", "Email": "bob@example.com"}})]
        assert await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "Owner.Email", deadline=self.deadline()) == "bob@example.com"  # fmt: skip

    async def test_a_missing_field_says_which(self, fake, connector):
        fake.records = [self.record()]
        with pytest.raises(UnexpectedResponse) as caught:
            await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "Tier__c", deadline=self.deadline())
        assert str(caught.value) == "field Tier__c does not exist on Contact"
        assert caught.value.reason == "unknown_field"

    async def test_a_missing_relationship_says_which(self, fake, connector):
        with pytest.raises(UnexpectedResponse, match="relationship Parent__r does not exist"):
            await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "Parent__r.Name", deadline=self.deadline())  # fmt: skip

    async def test_field_names_cannot_inject(self, fake, connector):
        with pytest.raises(UnexpectedResponse, match="not a Salesforce field API name"):
            await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "Name) FROM User--", deadline=self.deadline())  # fmt: skip
        assert fake.api_requests() == []

    async def test_withheld_or_garbage_numbers_ask_nothing(self, fake, connector):
        assert await connector.find_record(LookupKey("ab", "caller_id"), "contacts", deadline=self.deadline()) is None
        assert fake.api_requests() == []

    # --- typed keys ---------------------------------------------------------------------

    async def test_typed_key_is_a_soql_equality(self, fake, http):
        connector = self.build(fake, http, key_field="Customer_Number__c")
        fake.records = [self.record(phone="")]
        await connector.fetch(LookupKey("12345", "dtmf"), "contacts", "Status__c", deadline=self.deadline())
        [query] = fake.api_requests()
        assert query.path == f"{API}/query/"
        assert query.params["q"] == ("SELECT Id, Name, LastModifiedDate, Status__c FROM Contact WHERE "
                                     "Customer_Number__c = '12345' ORDER BY LastModifiedDate DESC LIMIT 50")  # fmt: skip

    async def test_a_number_key_field_is_compared_without_quotes_and_remembered(self, fake, http):
        connector = self.build(fake, http, key_field="Score__c")
        fake.records = [self.record(phone="", fields={"Status__c": "GOLD", "Score__c": 12345.0})]
        for _ in range(2):
            assert await connector.fetch(LookupKey("12345", "dtmf"), "contacts", "Status__c", deadline=self.deadline()) == "GOLD"  # fmt: skip
        wheres = [re.search(r"WHERE (.+?) ORDER", r.params["q"])[1] for r in fake.api_requests()]
        assert wheres == ["Score__c = '12345'", "Score__c = 12345", "Score__c = 12345"]

    async def test_typed_key_without_key_field_is_an_id_only_when_shaped_like_one(self, fake, connector):
        fake.records = [self.record(phone="")]
        assert await connector.fetch(LookupKey("12345", "dtmf"), "contacts", "Status__c", deadline=self.deadline()) is None  # fmt: skip
        assert fake.api_requests() == []
        assert await connector.fetch(LookupKey(CONTACT_IDS[0], "dtmf"), "contacts", "Status__c", deadline=self.deadline()) == "GOLD"  # fmt: skip

    async def test_quotes_in_a_typed_key_are_escaped(self, fake, http):
        connector = self.build(fake, http, key_field="Customer_Number__c")
        fake.records = [self.record(phone="", fields={"Customer_Number__c": "1' OR '1", "Status__c": "GOLD"})]
        assert await connector.fetch(LookupKey("1' OR '1", "dtmf"), "contacts", "Status__c", deadline=self.deadline()) == "GOLD"  # fmt: skip
        assert "Customer_Number__c = '1\\' OR \\'1'" in fake.api_requests()[0].params["q"]

    # --- limits and errors -------------------------------------------------------------

    async def test_daily_limit_is_a_spent_quota(self, fake, connector):
        connector.budget = self.default_budget(connector)
        await connector.authenticate(deadline=self.deadline())
        fake.fail_next(403, [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
        with pytest.raises(RateLimited) as caught:
            await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "Status__c", deadline=self.deadline())
        assert "TotalRequests Limit exceeded" in str(caught.value) and caught.value.reason == "quota_exhausted"
        sent = len(fake.requests)
        with pytest.raises(RateLimited) as again:  # the next call does not ask Salesforce at all
            await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "Status__c", deadline=self.deadline())
        assert again.value.reason == "quota_exhausted" and len(fake.requests) == sent

    async def test_api_usage_is_read_from_the_limit_header(self, fake, connector, caplog):
        fake.state["api_total"] = 10
        fake.state["api_used"] = 8
        await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline())
        assert connector.api_usage == (9, 10)
        assert "9 of 10 API requests" in caplog.text

    async def test_insufficient_access_is_an_auth_error(self, fake, connector):
        await connector.authenticate(deadline=self.deadline())
        fake.fail_next(403, [{"message": "API is not enabled for this Organization or Partner", "errorCode": "API_DISABLED_FOR_ORG"}])  # fmt: skip
        with pytest.raises(AuthError, match="API_DISABLED_FOR_ORG"):
            await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "Status__c", deadline=self.deadline())

    async def test_a_session_refused_twice_is_an_auth_error(self, fake, connector):
        await connector.authenticate(deadline=self.deadline())
        fake.fail_next(401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}], times=2)
        with pytest.raises(AuthError, match="Session expired or invalid"):
            await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "Status__c", deadline=self.deadline())
        assert fake.token_requests == 2

    async def test_server_busy_with_retry_after_is_waited_out(self, fake, connector):
        fake.records = [self.record()]
        await connector.authenticate(deadline=self.deadline())
        fake.fail_next(503, [{"message": "Server busy", "errorCode": "SERVER_UNAVAILABLE"}], headers={"Retry-After": "0"})  # fmt: skip
        assert await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "Status__c", deadline=self.deadline()) == "GOLD"  # fmt: skip

    # --- call logging ------------------------------------------------------------------

    async def test_task_body_is_a_completed_call(self, fake, connector):
        fake.records = [self.record()]
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline())
        task_id = await connector.log_call(self.call(record), LogOptions(inbound_answered=True), deadline=self.deadline())  # fmt: skip
        [task] = fake.activities
        assert task_id == task["Id"] and task_id.startswith("00T")
        assert {k: v for k, v in task.items() if k not in ("Id", "Description")} == {
            "Subject": f"Inbound call from {CALLER}", "TaskSubtype": "Call", "CallType": "Inbound",
            "CallDurationInSeconds": 93, "CallObject": "1795657573.1", "CallDisposition": "Answered",
            "Status": "Completed", "ActivityDate": "2026-11-26", "WhoId": CONTACT_IDS[0]}  # fmt: skip
        assert "Answered by 201 after 6 s" in task["Description"] and "Extension: 201" in task["Description"]
        requests = fake.api_requests()
        assert requests[-2].params["q"] == "SELECT Id FROM Task WHERE CallObject = '1795657573.1' LIMIT 1"
        assert requests[-1].method == "POST" and requests[-1].path == f"{API}/sobjects/Task"

    async def test_an_account_is_the_what_not_the_who(self, fake, connector):
        account = Record(module="Account", id="001Dn00000Acct1IAF", fields={})
        fake.records = [FakeRecord(module="accounts", id=account.id, phone="(415) 555-2671")]
        await connector.log_call(self.call(account), LogOptions(), deadline=self.deadline())
        assert fake.activities[0]["WhatId"] == account.id and "WhoId" not in fake.activities[0]

    async def test_logging_by_number_prefers_a_contact_in_one_search(self, fake, connector):
        fake.records = [FakeRecord(module="accounts", id="001Dn00000Acct1IAF", phone="(415) 555-2671"),
                        FakeRecord(module="leads", id="00QDn00000Lead1IAF", phone="(415) 555-2671"),
                        self.record()]  # fmt: skip
        await connector.log_call(self.call(None), LogOptions(), deadline=self.deadline())
        assert fake.activities[0]["WhoId"] == CONTACT_IDS[0]
        searches = [r for r in fake.api_requests() if r.path.endswith("/search/")]
        assert len(searches) == 1 and "RETURNING Contact(Id, Name, LastModifiedDate ORDER BY" in searches[0].params["q"]
        assert "Lead(Id, Name, LastModifiedDate" in searches[0].params["q"] and "Account(" in searches[0].params["q"]

    async def test_logging_by_number_falls_back_to_a_lead(self, fake, connector):
        fake.records = [FakeRecord(module="leads", id="00QDn00000Lead1IAF", phone="415-555-2671")]
        await connector.log_call(self.call(None), LogOptions(), deadline=self.deadline())
        assert fake.activities[0]["WhoId"] == "00QDn00000Lead1IAF"

    async def test_an_unknown_caller_is_logged_unlinked_without_create_unknown(self, fake, connector):
        await connector.log_call(self.call(None, "c-2"), LogOptions(), deadline=self.deadline())
        assert fake.created == [] and "WhoId" not in fake.activities[0] and "WhatId" not in fake.activities[0]

    async def test_unknown_caller_becomes_a_lead(self, fake, connector):
        await connector.log_call(self.call(None, "c-3"), LogOptions(create_unknown=True), deadline=self.deadline())
        [lead] = fake.created
        assert lead["sobject"] == "Lead" and lead["Phone"] == CALLER and lead["Company"] and lead["LastName"]
        assert fake.activities[0]["WhoId"] == lead["Id"]

    async def test_unknown_caller_can_become_a_contact(self, fake, http):
        connector = self.build(fake, http, create_as="contacts")
        await connector.log_call(self.call(None, "c-4"), LogOptions(create_unknown=True), deadline=self.deadline())
        assert fake.created[0]["sobject"] == "Contact" and "Company" not in fake.created[0]

    async def test_outbound_call(self, fake, connector):
        call = self.call(None, "c-5")
        call.direction, call.outcome, call.subject = "outbound", "busy", ""
        await connector.log_call(call, LogOptions(), deadline=self.deadline())
        task = fake.activities[0]
        assert task["CallType"] == "Outbound" and task["CallDisposition"] == "Busy"
        assert task["Subject"] == f"Outbound call to {CALLER}"

    async def test_unknown_number_is_not_found_in_other_modules_either(self, fake, connector):
        fake.records = [self.record()]
        assert await connector.find_record(LookupKey(OTHER_PHONE, "caller_id"), "leads", deadline=self.deadline()) is None  # fmt: skip


# --- users (agents sync) ------------------------------------------------------------------------


async def test_list_users_reads_the_active_users_in_batches(fake):
    from crmroute.connectors._http import make_client
    from crmroute.settings import Settings

    fake.state["users"] = [{"Id": f"005D0000001{i:04d}AAA", "Name": f"Agent {i:04d}", "Email": f"agent{i}@example.com",
                            "IsActive": True} for i in range(5)]  # fmt: skip
    fake.state["users"].append({"Id": "005D0000001XXXXAAA", "Name": "Agent 9999", "Email": "x@example.com", "IsActive": False})
    fake.state["query_batch"] = 2
    http = make_client(Settings(ca_bundle=fake.ca_path))
    try:
        users = await TestSalesforce().build(fake, http).list_users(deadline=TestSalesforce.deadline())
    finally:
        await http.aclose()
    assert [u.id for u in users] == [f"005D0000001{i:04d}AAA" for i in range(5)]  # the inactive one is not listed
    assert users[0].name == "Agent 0000" and users[0].email == "agent0@example.com"
    requests = [r for r in fake.api_requests() if "/query/" in r.path]
    assert requests[0].params["q"] == "SELECT Id, Name, Email FROM User WHERE IsActive = true ORDER BY Name"
    assert [r.path for r in requests[1:]] == [f"{API}/query/01gD0000002HU6K-2", f"{API}/query/01gD0000002HU6K-4"]
