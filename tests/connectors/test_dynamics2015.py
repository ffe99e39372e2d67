"""Dynamics CRM 2015 connector against a strict loopback fake: Azure AD / AD FS token endpoint, NTLM, OData v2."""

from __future__ import annotations

import asyncio
import atexit
import base64
import json
import os
import re
import tempfile
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from crmroute.connectors.base import Record
from crmroute.errors import AuthError, UnexpectedResponse
from crmroute.routing.engine import LookupKey
from crmroute.schemas import LogOptions
from tests.connectors.contract import CALLER, ConnectorContract
from tests.connectors.fakecrm import FakeRecord, VendorFake, vendor_fixtures

ORG = "/Contoso"
SVC = f"{ORG}/XRMServices/2011/OrganizationData.svc"
TOKEN_PATH = "/contoso.onmicrosoft.com/oauth2/token"
APP_ID = "51f81489-12ee-4a9e-aaae-a2591f45987d"
APP_SECRET = "aad-app-s3cret"
USER, USER_PASSWORD = "crm.router@contoso.onmicrosoft.com", "aad-pa55w0rd"
NTLM_USER, NTLM_PASSWORD = "CONTOSO\\crmsvc", "ntlm-pa55w0rd"
RULE_USER, RULE_PASSWORD = "agent@contoso.onmicrosoft.com", "rule-pa55"
STATIC_REFRESH = "0.AAAA-refresh-s3cret"
NS = "Microsoft.Crm.Sdk.Data.Services"

CONTACT_IDS = ("b1f0d3a4-6c1e-e411-80d0-00155d0a1f01", "b1f0d3a4-6c1e-e411-80d0-00155d0a1f02",
               "b1f0d3a4-6c1e-e411-80d0-00155d0a1f03")  # fmt: skip
ACCOUNT_ID = "a7e2c0b9-6c1e-e411-80d0-00155d0a2f01"
OBJECTS = {"contacts": "Contact", "leads": "Lead", "accounts": "Account"}
SETS = {"ContactSet": "Contact", "LeadSet": "Lead", "AccountSet": "Account", "PhoneCallSet": "PhoneCall",
        "SystemUserSet": "SystemUser"}  # fmt: skip
KEYS = {"Contact": "ContactId", "Lead": "LeadId", "Account": "AccountId", "PhoneCall": "ActivityId",
        "SystemUser": "SystemUserId"}  # fmt: skip
COMMON = {"ModifiedOn": "datetime", "CreatedOn": "datetime", "OwnerId": "ref", "StatusCode": "option",
          "new_Status": "string", "new_CustomerNumber": "string", "new_Score": "int"}  # fmt: skip
PHONES = ("Telephone1", "Telephone2", "Telephone3")
SCHEMA: dict[str, dict[str, str]] = {
    "Contact": COMMON | {p: "string" for p in (*PHONES, "MobilePhone")}
    | {"ContactId": "guid", "FullName": "string", "FirstName": "string", "LastName": "string",
       "EMailAddress1": "string", "ParentCustomerId": "ref"},
    "Lead": COMMON | {p: "string" for p in (*PHONES, "MobilePhone")}
    | {"LeadId": "guid", "FullName": "string", "FirstName": "string", "LastName": "string", "Subject": "string",
       "CompanyName": "string"},
    "Account": COMMON | {p: "string" for p in PHONES}
    | {"AccountId": "guid", "Name": "string", "AccountNumber": "string", "ParentAccountId": "ref", "Revenue": "money"},
    "PhoneCall": {"ActivityId": "guid", "Subject": "string", "PhoneNumber": "string", "DirectionCode": "bool",
                  "ActualDurationMinutes": "int", "Description": "string", "RegardingObjectId": "ref",
                  "ModifiedOn": "datetime", "StateCode": "option"},
    "SystemUser": {"SystemUserId": "guid", "FullName": "string", "ModifiedOn": "datetime",
                   "InternalEMailAddress": "string", "IsDisabled": "bool"},
}  # fmt: skip
NAME_OF = {"Contact": "FullName", "Lead": "FullName", "Account": "Name", "SystemUser": "FullName"}
QUERY_OPTIONS = {"$filter", "$select", "$orderby", "$top", "$skip", "$expand", "$skiptoken"}


def odata_error(status: int, message: str, code: str = "") -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": {"lang": "en-US", "value": message}}}, status_code=status)


def ms_date(iso: str) -> str:
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return f"/Date({int(moment.timestamp() * 1000)})/"


# --- a strict subset of the OData v2 $filter grammar: eq/ne, and/or/not, (), endswith/startswith/substringof -----

_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<guid>guid'[0-9a-fA-F-]{36}')|(?P<num>-?\d+(?:\.\d+)?)"
                    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>[(),]))")  # fmt: skip


class FilterError(Exception):
    pass


class Filter:
    """Parses a $filter against one entity's schema; ``matches(values)`` evaluates it."""

    def __init__(self, text: str, entity: str) -> None:
        self.entity, self.tokens, self.position = entity, [], 0
        index = 0
        while index < len(text):
            found = _TOKEN.match(text, index)
            if not found or found.end() == index:
                if text[index:].strip() == "":
                    break
                raise FilterError(f"Syntax error at position {index} in '{text}'.")
            kind = found.lastgroup
            self.tokens.append((kind, found[kind], found.start(kind)))
            index = found.end()
        self.tree = self._or()
        if self.position != len(self.tokens):
            raise FilterError(f"Syntax error at position {self.tokens[self.position][2]} in '{text}'.")

    def _peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _take(self, value: str | None = None) -> tuple[str, str, int]:
        token = self._peek()
        if token is None or (value is not None and token[1] != value):
            raise FilterError(f"Expression expected at position {token[2] if token else 'end'}.")
        self.position += 1
        return token

    def _or(self) -> Any:
        node = self._and()
        while (t := self._peek()) and t[1] == "or":
            self._take()
            node = ("or", node, self._and())
        return node

    def _and(self) -> Any:
        node = self._factor()
        while (t := self._peek()) and t[1] == "and":
            self._take()
            node = ("and", node, self._factor())
        return node

    def _property(self) -> str:
        kind, name, at = self._take()
        if kind != "name":
            raise FilterError(f"Expression expected at position {at}.")
        for known in SCHEMA[self.entity]:
            if known == name:  # OData v2 property names are case-sensitive
                return known
        raise FilterError(f"No property '{name}' exists in type '{NS}.{self.entity}' at position {at}.")

    def _factor(self) -> Any:
        token = self._peek()
        if token is None:
            raise FilterError("Expression expected at position end.")
        if token[1] == "(":
            self._take("(")
            node = self._or()
            self._take(")")
            return node
        if token[1] == "not":
            self._take()
            return ("not", self._factor())
        if token[1] in ("endswith", "startswith", "substringof"):
            self._take()
            self._take("(")
            if token[1] == "substringof":
                literal = self._string()
                self._take(",")
                prop = self._property()
            else:
                prop = self._property()
                self._take(",")
                literal = self._string()
            self._take(")")
            if SCHEMA[self.entity][prop] != "string":
                raise FilterError(f"No applicable function found for '{token[1]}' at position {token[2]} with the "
                                  "specified arguments.")  # fmt: skip
            return (token[1], prop, literal)
        prop = self._property()
        kind, op, at = self._take()
        if op not in ("eq", "ne"):
            raise FilterError(f"Syntax error at position {at}.")
        lkind, literal, _ = self._take()
        ptype = SCHEMA[self.entity][prop]
        if lkind == "name" and literal in ("true", "false"):
            lkind = "bool"
        operand = {"str": "System.String", "num": "System.Int32", "guid": "System.Guid",
                   "bool": "System.Boolean"}.get(lkind, "System.Object")  # fmt: skip
        expected = {"string": "System.String", "int": "System.Int32", "guid": "System.Guid",
                    "bool": "System.Boolean"}.get(ptype)  # fmt: skip
        if expected != operand:
            shown = f"System.Nullable`1[{expected}]" if ptype in ("int", "guid") else expected
            raise FilterError(f"Operator '{op}' incompatible with operand types '{shown}' and '{operand}' at "
                              f"position {at}.")  # fmt: skip
        value: Any = literal[1:-1].replace("''", "'") if lkind == "str" else literal
        if lkind == "bool":
            value = literal == "true"
        elif lkind == "num":
            value = int(float(literal))
        elif lkind == "guid":
            value = literal[5:-1].lower()
        return (op, prop, value)

    def _string(self) -> str:
        kind, literal, at = self._take()
        if kind != "str":
            raise FilterError(f"Expression of type 'System.String' expected at position {at}.")
        return literal[1:-1].replace("''", "'")

    def matches(self, values: dict[str, Any], node: Any = None) -> bool:
        node = self.tree if node is None else node
        op = node[0]
        if op == "or":
            return self.matches(values, node[1]) or self.matches(values, node[2])
        if op == "and":
            return self.matches(values, node[1]) and self.matches(values, node[2])
        if op == "not":
            return not self.matches(values, node[1])
        value = values.get(node[1])
        if op in ("endswith", "startswith", "substringof"):  # SQL LIKE: case-insensitive on the stored text
            text, part = str(value or "").casefold(), node[2].casefold()
            return value is not None and {"endswith": text.endswith, "startswith": text.startswith,
                                          "substringof": lambda p: p in text}[op](part)  # fmt: skip
        if isinstance(value, str) and isinstance(node[2], str):
            equal = value.casefold() == node[2].casefold()
        else:
            equal = value == node[2] or (isinstance(value, float) and value == node[2])
        return equal if op == "eq" else not equal


def make_app(fake: VendorFake) -> Starlette:
    fake.auth_paths = ("/contoso.onmicrosoft.com/oauth2/", f"{SVC}/SystemUserSet")
    users = tempfile.NamedTemporaryFile("w", suffix=".ntlm", delete=False)
    users.write(f"{NTLM_USER.replace(chr(92), ':')}:{NTLM_PASSWORD}\n")
    users.close()
    atexit.register(os.unlink, users.name)
    os.environ["NTLM_USER_FILE"] = users.name  # pyspnego's NTLM acceptor reads credentials from it
    connections: dict[Any, dict[str, Any]] = {}  # NTLM state per TCP connection (client address, port)

    # --- Azure AD v1 / AD FS token endpoint ------------------------------------------------------

    def aad_error(status: int, error: str, code: int, text: str) -> JSONResponse:
        return JSONResponse({"error": error, "error_description": f"AADSTS{code}: {text}\r\nTrace ID: 0e3c\r\n"
                             "Correlation ID: 9a1b\r\nTimestamp: 2026-11-26 09:30:00Z", "error_codes": [code],
                             "trace_id": "0e3c", "correlation_id": "9a1b"}, status_code=status)  # fmt: skip

    async def token(request: Request) -> Response:
        if request.method != "POST":
            return aad_error(400, "invalid_request", 900561, "The endpoint only accepts POST requests.")
        if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return aad_error(400, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.")  # fmt: skip
        form = dict(await request.form())
        fake.state.setdefault("grants", []).append(form)
        if form.get("client_id") != APP_ID:
            return aad_error(400, "unauthorized_client", 700016, f"Application with identifier '{form.get('client_id')}' was not found.")  # fmt: skip
        if form.get("resource") != fake.base_url:
            return aad_error(400, "invalid_resource", 500011, "The resource principal was not found in the tenant.")
        if "client_secret" in form and form["client_secret"] != APP_SECRET:
            return aad_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
        grant = form.get("grant_type")
        refresh_tokens: set[str] = fake.state.setdefault("refresh_tokens", {STATIC_REFRESH})
        if grant == "password":
            valid = {USER: USER_PASSWORD, RULE_USER: RULE_PASSWORD}
            if valid.get(str(form.get("username"))) != form.get("password") or fake.reject_credentials:
                return aad_error(400, "invalid_grant", 50126, "Error validating credentials due to invalid username or password.")  # fmt: skip
        elif grant == "refresh_token":
            if form.get("refresh_token") not in refresh_tokens or fake.reject_credentials:
                return aad_error(400, "invalid_grant", 70008, "The provided authorization code or refresh token has expired due to inactivity.")  # fmt: skip
        elif grant == "client_credentials":
            if form.get("client_secret") != APP_SECRET or fake.reject_credentials:
                return aad_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
        else:
            return aad_error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
        now = int(time.time())
        lifetime = fake.state.get("expires_in", 3599)
        body = {"token_type": "Bearer", "scope": "user_impersonation", "expires_in": str(lifetime),
                "ext_expires_in": str(lifetime), "expires_on": str(now + lifetime), "not_before": str(now),
                "resource": form["resource"], "access_token": fake.issue_token("eyJ0eXAiOiJKV1Qi")}  # fmt: skip
        if grant != "client_credentials":
            body["refresh_token"] = f"0.AAAA-{uuid.uuid4().hex}"
            refresh_tokens.add(body["refresh_token"])
        return JSONResponse(body)

    # --- authentication of the OData service: bearer tokens (OAuth) or NTLM per connection -----------

    def challenge() -> Response:
        response = Response(b"401 - Unauthorized: Access is denied due to invalid credentials.", 401,
                            media_type="text/html")  # fmt: skip
        response.headers.append("WWW-Authenticate", "Negotiate")
        response.headers.append("WWW-Authenticate", "NTLM")
        response.headers.append("WWW-Authenticate", f"Bearer authorization_uri={fake.base_url}"
                                "/contoso.onmicrosoft.com/oauth2/authorize, resource_id=" + fake.base_url)  # fmt: skip
        return response

    def authenticate(request: Request) -> Response | None:
        """``None`` when the request may go on; else the 401 (challenge) to send."""
        header = request.headers.get("authorization", "")
        connection = connections.setdefault(request.scope.get("client"), {})
        if header.startswith("Bearer "):
            return None if fake.authorized(request) else challenge()
        if header.startswith("NTLM "):
            import spnego

            blob = base64.b64decode(header[5:])
            if blob[8:12] == b"\x01\x00\x00\x00":  # NEGOTIATE: a new handshake on this connection
                connection.clear()
                connection["context"] = spnego.server(protocol="ntlm")
                reply = connection["context"].step(blob)
                response = Response(b"", 401)
                response.headers["WWW-Authenticate"] = f"NTLM {base64.b64encode(reply).decode()}"
                return response
            context = connection.pop("context", None)
            if context is None:
                return challenge()  # an AUTHENTICATE on a connection that never negotiated
            try:
                context.step(blob)
            except Exception:
                return challenge()
            if fake.reject_credentials:
                return challenge()
            connection["token"] = fake.issue_token("ntlm")
            fake.state.setdefault("ntlm_users", []).append(str(context.client_principal))
            return None
        if connection.get("token") in fake.tokens:
            return None  # an authenticated connection (IIS keeps NTLM per connection)
        return challenge()

    # --- the OData v2 Organization Data Service ----------------------------------------------

    def values(entity: str, record: FakeRecord) -> dict[str, Any]:
        base = {KEYS[entity]: record.id, NAME_OF[entity]: record.name, "Telephone1": record.phone or None,
                "ModifiedOn": record.modified}  # fmt: skip
        return base | record.fields

    def records_of(entity: str) -> list[FakeRecord]:
        return [r for r in fake.records if OBJECTS.get(r.module) == entity]

    def render_value(entity: str, prop: str, value: Any) -> Any:
        kind = SCHEMA[entity][prop]
        if kind == "datetime":
            return ms_date(value) if value else None
        if kind == "ref":
            ref = value if isinstance(value, dict) else {}
            return {"__metadata": {"type": f"{NS}.EntityReference"}, "Id": ref.get("Id"),
                    "LogicalName": ref.get("LogicalName"), "Name": ref.get("Name")}  # fmt: skip
        if kind in ("option", "money"):
            return {"__metadata": {"type": f"{NS}.{'OptionSetValue' if kind == 'option' else 'Money'}"},
                    "Value": value}  # fmt: skip
        return value

    def render(entity_set: str, entity: str, record_values: dict[str, Any], select: list[str]) -> dict[str, Any]:
        key = record_values[KEYS[entity]]
        data: dict[str, Any] = {"__metadata": {"uri": f"{fake.base_url}{SVC}/{entity_set}(guid'{key}')",
                                               "type": f"{NS}.{entity}"}}  # fmt: skip
        for prop in select or list(SCHEMA[entity]):
            data[prop] = render_value(entity, prop, record_values.get(prop))
        return data

    def check_select(entity: str, text: str | None) -> list[str]:
        if text is None:
            return []
        props = [p.strip() for p in text.split(",")]
        for prop in props:
            if prop not in SCHEMA[entity]:
                raise FilterError(f"No property '{prop}' exists in type '{NS}.{entity}' at position 0.")
        return props

    async def service(request: Request) -> Response:
        path = request.url.path[len(SVC) + 1 :]
        found = re.fullmatch(r"(?P<set>\w+)(?:\(guid'(?P<id>[0-9a-fA-F-]{36})'\))?", path)
        if not found or found["set"] not in SETS:
            return odata_error(404, f"Resource not found for the segment '{path.split('(')[0]}'.")
        if (denied := authenticate(request)) is not None:
            return denied
        if request.headers.get("accept", "") != "application/json":
            return odata_error(415, "Unsupported media type requested.")  # the connector always asks for JSON
        entity_set, entity, record_id = found["set"], SETS[found["set"]], found["id"]
        options = dict(request.query_params)
        for name in options:
            if name.startswith("$") and name not in QUERY_OPTIONS:
                return odata_error(400, f"The query parameter '{name}' begins with a system-reserved '$' character "
                                   "but is not recognized.")  # fmt: skip
        try:
            select = check_select(entity, options.get("$select"))
            if request.method == "GET" and record_id:
                return get_one(entity_set, entity, record_id.lower(), select)
            if request.method == "GET":
                return get_many(request, entity_set, entity, options, select)
            if request.method == "POST" and not record_id:
                return await create(request, entity_set, entity)
        except FilterError as exc:
            return odata_error(400, str(exc))
        return odata_error(405, "The requested HTTP method is not allowed for this resource.")

    def all_values(entity: str) -> list[dict[str, Any]]:
        if entity == "PhoneCall":
            return list(fake.activities)
        if entity == "SystemUser":
            return fake.state.get("system_users") or [
                {"SystemUserId": "d0e1f2a3-0000-0000-0000-000000000001", "FullName": "CRM Router",
                 "ModifiedOn": "2026-01-01T00:00:00Z", "InternalEMailAddress": "crm.router@example.com",
                 "IsDisabled": False}]  # fmt: skip
        return [values(entity, r) for r in records_of(entity)]

    def get_one(entity_set: str, entity: str, record_id: str, select: list[str]) -> Response:
        for row in all_values(entity):
            if str(row.get(KEYS[entity], "")).lower() == record_id:
                return JSONResponse({"d": render(entity_set, entity, row, select)})
        return odata_error(404, f"{entity.lower()} With Id = {record_id} Does Not Exist")

    def get_many(
        request: Request, entity_set: str, entity: str, options: dict[str, str], select: list[str]
    ) -> Response:
        rows = all_values(entity)
        if "$filter" in options:
            condition = Filter(options["$filter"], entity)
            rows = [r for r in rows if condition.matches(r)]
        if "$orderby" in options:
            found = re.fullmatch(r"(\w+)(?: (asc|desc))?", options["$orderby"])
            if not found or found[1] not in SCHEMA[entity]:
                raise FilterError(f"No property '{options['$orderby']}' exists in type '{NS}.{entity}' at position 0.")
            rows = sorted(rows, key=lambda r: str(r.get(found[1]) or ""), reverse=found[2] == "desc")
        if "$top" in options:
            rows = rows[: int(options["$top"])]
        start = int(options.get("$skiptoken", "0"))
        page = rows[start : start + 50]
        data: dict[str, Any] = {"results": [render(entity_set, entity, r, select) for r in page]}
        if start + 50 < len(rows):
            following = {k: v for k, v in options.items() if k != "$skiptoken"} | {"$skiptoken": str(start + 50)}
            data["__next"] = str(request.url.replace_query_params(**following))
        return JSONResponse({"d": data})

    async def create(request: Request, entity_set: str, entity: str) -> Response:
        if not request.headers.get("content-type", "").startswith("application/json"):
            return odata_error(415, "Unsupported media type: only application/json request bodies are supported here.")  # fmt: skip
        try:
            body = json.loads(await request.body())
        except ValueError:
            return odata_error(400, "Error processing request stream. The request should be a valid JSON payload.")
        for prop, value in body.items():
            if prop not in SCHEMA[entity]:
                return odata_error(400, f"Error processing request stream. The property '{prop}' does not exist on "
                                   f"type '{NS}.{entity}'. Make sure to only use property names that are defined "
                                   "by the type.")  # fmt: skip
            kind = SCHEMA[entity][prop]
            if kind == "ref" and (not isinstance(value, dict) or set(value) - {"Id", "LogicalName", "Name"}):
                return odata_error(400, f"Error processing request stream. '{prop}' must be an EntityReference.")
            if kind == "bool" and not isinstance(value, bool) or kind == "int" and not isinstance(value, int):
                return odata_error(400, f"Error processing request stream. '{prop}' has a value of the wrong type.")
        key = KEYS[entity]
        new_id = str(body.get(key) or uuid.uuid4()).lower()
        if any(str(r.get(key, "")).lower() == new_id for r in all_values(entity)):
            return odata_error(500, "Cannot insert duplicate key.", "-2147220937")
        now = datetime.now(timezone.utc).isoformat()
        if entity == "PhoneCall":
            regarding = body.get("RegardingObjectId")
            if regarding and not any(r.id == regarding["Id"] and OBJECTS[r.module].lower() == regarding["LogicalName"]
                                     for r in fake.records):  # fmt: skip
                return odata_error(500, f"{regarding['LogicalName']} With Id = {regarding['Id']} Does Not Exist")
            row = body | {key: new_id, "ModifiedOn": now}
            fake.activities.append(row)
        else:
            if not body.get("LastName") and entity != "Account":
                return odata_error(400, "A validation error occurred. The value of 'lastname' on record of type "
                                   f"'{entity.lower()}' is outside the valid range.")  # fmt: skip
            row = body | {key: new_id}
            fake.created.append(row | {"entity": entity})
            module = {v: k for k, v in OBJECTS.items()}[entity]
            fake.records.append(FakeRecord(module=module, id=new_id, phone=str(body.get("Telephone1") or ""),
                                           name=str(body.get("LastName")), modified=now))  # fmt: skip
        return JSONResponse({"d": render(entity_set, entity, row, [])}, status_code=201)

    async def not_found(request: Request) -> Response:
        return Response(b"<h2>404 - File or directory not found.</h2>", 404, media_type="text/html")

    return Starlette(routes=[
        Route(TOKEN_PATH, token, methods=["GET", "POST"]),
        Route(f"{SVC}/{{path:path}}", service, methods=["GET", "POST", "PUT", "MERGE", "DELETE"]),
        Route("/{path:path}", not_found, methods=["GET", "POST"]),
    ])  # fmt: skip


fake_server, fake = vendor_fixtures(make_app)


class DynamicsContract(ConnectorContract):
    OWNER_FIELDS = {"OwnerId": {"Id": "0f1e2d3c-0000-4000-8000-00000000a001", "LogicalName": "systemuser", "Name": "Olivia Owner"}}
    OWNER_ID = "0f1e2d3c-0000-4000-8000-00000000a001"
    kind = "dynamics2015"
    MODULE = "contacts"
    FIELD = "new_Status"
    NESTED_FIELD = "ParentCustomerId.Name"
    NESTED_FIELDS = {"ParentCustomerId": {"Id": ACCOUNT_ID, "LogicalName": "account", "Name": "Acme Corp"}}
    NESTED_VALUE = "Acme Corp"
    IDS = CONTACT_IDS
    KEY_FIELD = "new_CustomerNumber"
    REQUESTS_PER_CALL = (1, 1)
    MOBILE_FIELDS = {"contacts": "MobilePhone", "leads": "MobilePhone"}  # Account has Telephone1..3 only


class TestDynamicsOnline(DynamicsContract):
    """CRM Online 2015 (and AD FS 2016+): OAuth 2 password grant at an Azure AD v1 token endpoint."""

    def settings(self, fake: VendorFake) -> dict[str, Any]:
        return {"org_url": f"{fake.base_url}{ORG}", "auth": "oauth_password", "token_url": f"{fake.base_url}{TOKEN_PATH}",
                "resource": fake.base_url, "client_id": APP_ID, "username": USER, "password": USER_PASSWORD}  # fmt: skip

    # --- OAuth ----------------------------------------------------------------------------

    async def test_password_grant_request(self, fake, connector):
        token = await connector.authenticate(deadline=self.deadline())
        assert fake.state["grants"] == [{"grant_type": "password", "username": USER, "password": USER_PASSWORD,
                                         "client_id": APP_ID, "resource": fake.base_url}]  # fmt: skip
        assert 3500 < token.expires_at - time.monotonic() <= 3599  # expires_in came as the string "3599"

    async def test_resource_defaults_to_the_org_origin(self, fake, http):
        connector = self.build(fake, http, resource="")
        await connector.authenticate(deadline=self.deadline())
        assert fake.state["grants"][0]["resource"] == fake.base_url

    async def test_token_is_refreshed_before_expiry_with_its_refresh_token(self, fake, connector):
        fake.records = [self.record()]
        key = LookupKey(CALLER, "caller_id")
        await connector.fetch(key, "contacts", "new_Status", deadline=self.deadline())
        first, first_refresh = connector._token, connector._refresh_state
        first.issued_at, first.expires_at = time.monotonic() - 3570, time.monotonic() + 30  # an hour later: inside the margin
        assert await connector.fetch(key, "contacts", "new_Status", deadline=self.deadline()) == "GOLD"
        grants = fake.state["grants"]
        assert [g["grant_type"] for g in grants] == ["password", "refresh_token"]
        assert grants[1]["refresh_token"] == first_refresh
        assert all(r.headers["authorization"] != f"Bearer {first.value}" or r is fake.api_requests()[0]
                   for r in fake.api_requests())  # the stale token was never sent again  # fmt: skip

    async def test_a_refused_remembered_refresh_token_falls_back_to_the_password(self, fake, connector):
        await connector.authenticate(deadline=self.deadline())
        fake.state["refresh_tokens"].clear()
        await connector.authenticate(deadline=self.deadline(), force=True)
        assert [g["grant_type"] for g in fake.state["grants"]] == ["password", "refresh_token", "password"]

    async def test_rule_credentials_replace_the_integrations(self, fake, http):
        cls = type(self.build(fake, http))
        connector = cls(cls.Settings.model_validate(self.settings(fake)), http, username=RULE_USER, password=RULE_PASSWORD)  # fmt: skip
        await connector.authenticate(deadline=self.deadline())
        assert fake.state["grants"][0]["username"] == RULE_USER

    async def test_refresh_token_grant(self, fake, http):
        connector = self.build(fake, http, auth="oauth_refresh_token", username="", password=None,
                               refresh_token=STATIC_REFRESH, client_secret=APP_SECRET)  # fmt: skip
        fake.records = [self.record()]
        assert await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "new_Status", deadline=self.deadline()) == "GOLD"  # fmt: skip
        assert fake.state["grants"][0] == {"grant_type": "refresh_token", "refresh_token": STATIC_REFRESH,
                                           "client_id": APP_ID, "resource": fake.base_url,
                                           "client_secret": APP_SECRET}  # fmt: skip

    async def test_revoked_refresh_token_says_so(self, fake, http):
        connector = self.build(fake, http, auth="oauth_refresh_token", refresh_token="0.AAAA-revoked")
        with pytest.raises(AuthError) as caught:
            await connector.authenticate(deadline=self.deadline())
        assert "token rejected: refresh token revoked" in str(caught.value) and "AADSTS70008" in str(caught.value)
        assert "Trace ID" not in str(caught.value)

    async def test_client_credentials_grant(self, fake, http):
        connector = self.build(fake, http, auth="oauth_client_credentials", client_secret=APP_SECRET)
        token = await connector.authenticate(deadline=self.deadline())
        assert fake.state["grants"][0] == {"grant_type": "client_credentials", "client_id": APP_ID,
                                           "resource": fake.base_url, "client_secret": APP_SECRET}  # fmt: skip
        assert token.extra == {}  # no refresh token in this grant

    async def test_wrong_password_is_explained(self, fake, http):
        connector = self.build(fake, http, password="nope")
        with pytest.raises(AuthError, match="invalid_grant: AADSTS50126: Error validating credentials"):
            await connector.authenticate(deadline=self.deadline())

    async def test_rotated_refresh_tokens_are_used_then_the_stored_one(self, fake, http):
        connector = self.build(fake, http, auth="oauth_refresh_token", refresh_token=STATIC_REFRESH)
        await connector.authenticate(deadline=self.deadline())
        first_refresh = connector._refresh_state  # the rotated one (kept out of the token, for the store)
        await connector.authenticate(deadline=self.deadline(), force=True)
        fake.state["refresh_tokens"] = {STATIC_REFRESH}  # the rotated ones were revoked
        await connector.authenticate(deadline=self.deadline(), force=True)
        used = [g["refresh_token"] for g in fake.state["grants"]]
        assert used[0] == STATIC_REFRESH and used[1] == first_refresh
        assert used[2] != STATIC_REFRESH and used[3] == STATIC_REFRESH

    async def test_ntlm_without_pyspnego_is_explained(self, fake, http, monkeypatch):
        monkeypatch.setitem(__import__("sys").modules, "spnego", None)
        connector = self.build(fake, http, auth="ntlm", username=NTLM_USER, password=NTLM_PASSWORD)
        report = await connector.test()
        assert not report.ok and "needs the pyspnego package" in report.error_message

    def test_each_auth_demands_its_settings(self, fake):
        from crmroute.connectors.dynamics2015 import Dynamics2015Settings

        base = {"org_url": "https://contoso.crm.dynamics.com"}
        with pytest.raises(ValueError, match="auth oauth_password needs token_url, client_id"):
            Dynamics2015Settings.model_validate(base)
        with pytest.raises(ValueError, match="needs token_url, client_id, refresh_token"):
            Dynamics2015Settings.model_validate(base | {"auth": "oauth_refresh_token"})
        with pytest.raises(ValueError, match="https"):
            Dynamics2015Settings.model_validate({"org_url": "http://crm/Contoso", "auth": "ntlm"})
        assert Dynamics2015Settings.model_validate(base | {"auth": "ntlm"}).auth == "ntlm"

    # --- the OData requests -----------------------------------------------------------------

    async def test_one_phone_request_with_endswith_on_every_phone_attribute(self, fake, connector):
        fake.records = [self.record()]
        await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "new_Status", deadline=self.deadline())
        [search] = fake.api_requests()
        assert search.method == "GET" and search.path == f"{SVC}/ContactSet"
        assert search.params == {
            "$select": "ContactId,FullName,ModifiedOn,Telephone1,Telephone2,Telephone3,MobilePhone,new_Status",
            "$filter": "endswith(Telephone1,'2671') or endswith(Telephone2,'2671') or endswith(Telephone3,'2671') "
                       "or endswith(MobilePhone,'2671')",
            "$orderby": "ModifiedOn desc"}  # fmt: skip
        assert search.headers["accept"] == "application/json" and search.headers["authorization"].startswith("Bearer ")

    async def test_phone_formats_users_type(self, fake, connector):
        key = LookupKey(CALLER, "caller_id")
        for stored in ["+1 415-555-2671", "415-555-2671", "(415) 555-2671", "4155552671", "+1 (415) 555 2671"]:
            fake.records = [self.record(phone=stored)]
            assert await connector.fetch(key, "contacts", "new_Status", deadline=self.deadline()) == "GOLD", stored

    async def test_same_last_digits_of_another_number_are_not_a_match(self, fake, connector):
        fake.records = [self.record(phone="(212) 555-2671"), self.record(1, phone="", fields={"MobilePhone": "2671"})]
        assert await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline()) is None

    async def test_mobile_phone_matches(self, fake, connector):
        fake.records = [self.record(phone="", fields={"new_Status": "GOLD", "MobilePhone": "415 555 2671"})]
        assert await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "new_Status", deadline=self.deadline()) == "GOLD"  # fmt: skip

    async def test_pages_of_candidates_are_followed(self, fake, connector):
        others = [FakeRecord(module="contacts", id=str(uuid.UUID(int=i)), phone="(212) 555-2671",
                             modified=f"2026-05-{1 + i % 28:02d}T00:00:00Z") for i in range(1, 61)]  # fmt: skip
        fake.records = others + [self.record(modified="2020-01-01T00:00:00Z")]
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline())
        assert record is not None and record.id == CONTACT_IDS[0]
        requests = fake.api_requests()
        assert len(requests) == 2 and requests[1].params["$skiptoken"] == "50"

    @pytest.mark.parametrize("module, entity, record_id", [("accounts", "Account", ACCOUNT_ID),
                                                           ("leads", "Lead", "c3d4e5f6-6c1e-e411-80d0-00155d0a3f01")])  # fmt: skip
    async def test_each_module_maps_to_its_entity_set(self, fake, connector, module, entity, record_id):
        fake.records = [FakeRecord(module=module, id=record_id, phone="415.555.2671", fields={"new_Status": "SILVER"}),
                        self.record()]  # fmt: skip
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), module, fields=["new_Status"],
                                             deadline=self.deadline())  # fmt: skip
        assert record.module == entity and record.id == record_id and record.fields["new_Status"] == "SILVER"
        request = fake.api_requests()[0]
        assert request.path == f"{SVC}/{entity}Set"
        assert ("MobilePhone" in request.params["$filter"]) is (entity != "Account")
        assert record.url == f"{fake.base_url}{ORG}/main.aspx?etn={entity.lower()}&pagetype=entityrecord&id=%7B{record_id}%7D"  # fmt: skip

    async def test_complex_values_are_flattened(self, fake, connector):
        fake.records = [FakeRecord(module="accounts", id=ACCOUNT_ID, phone="415-555-2671",
                                   fields={"StatusCode": 1, "Revenue": 1250000.0, "AccountNumber": "ACC-42"})]  # fmt: skip
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), "accounts",
                                             fields=["StatusCode", "Revenue", "ModifiedOn", "ParentAccountId"],
                                             deadline=self.deadline())  # fmt: skip
        read = lambda name: connector.read_field(record, name, deadline=self.deadline())  # noqa: E731
        assert await read("StatusCode") == "1" and await read("Revenue") == "1250000"
        assert await read("ModifiedOn") == "2026-01-01T00:00:00Z"
        assert await read("ParentAccountId") is None and await read("ParentAccountId.Name") is None

    async def test_a_lookup_reads_as_its_name(self, fake, connector):
        fake.records = [self.record()]
        assert await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "ParentCustomerId", deadline=self.deadline()) == "Acme Corp"  # fmt: skip

    async def test_another_attribute_of_a_lookup_costs_one_request(self, fake, connector):
        fake.records = [self.record(), FakeRecord(module="accounts", id=ACCOUNT_ID, fields={"AccountNumber": "ACC-42"})]
        key = LookupKey(CALLER, "caller_id")
        record = await connector.find_record(key, "contacts", fields=["ParentCustomerId.AccountNumber"], deadline=self.deadline())  # fmt: skip
        assert (
            await connector.read_field(record, "ParentCustomerId.AccountNumber", deadline=self.deadline()) == "ACC-42"
        )
        assert (
            await connector.read_field(record, "ParentCustomerId.AccountNumber", deadline=self.deadline()) == "ACC-42"
        )
        follow = fake.api_requests()[1:]
        assert [(r.path, r.params) for r in follow] == [(f"{SVC}/AccountSet(guid'{ACCOUNT_ID}')", {"$select": "AccountNumber"})]  # fmt: skip

    async def test_a_missing_field_says_which(self, fake, connector):
        fake.records = [self.record()]
        with pytest.raises(UnexpectedResponse) as caught:
            await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "new_Tier", deadline=self.deadline())
        assert (
            str(caught.value) == "field new_Tier does not exist on Contact" and caught.value.reason == "unknown_field"
        )

    async def test_field_names_cannot_inject(self, fake, connector):
        with pytest.raises(UnexpectedResponse, match="not a Dynamics CRM attribute name"):
            await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "FullName&$top=1", deadline=self.deadline())  # fmt: skip
        assert fake.api_requests() == []

    async def test_forbidden_is_an_auth_error_with_crms_reason(self, fake, connector):
        await connector.authenticate(deadline=self.deadline())
        fake.fail_next(403, {"error": {"code": "", "message": {"lang": "en-US", "value": "SecLib::AccessCheckEx failed. Returned hr = -2147187962"}}})  # fmt: skip
        with pytest.raises(AuthError, match="SecLib::AccessCheckEx failed"):
            await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "new_Status", deadline=self.deadline())

    async def test_wrong_org_url_is_explained(self, fake, http):
        connector = self.build(fake, http, org_url=f"{fake.base_url}/Fabrikam")
        with pytest.raises(UnexpectedResponse, match="404.*check org_url"):
            await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "new_Status", deadline=self.deadline())

    # --- typed keys ---------------------------------------------------------------------------

    async def test_typed_key_is_an_eq_filter(self, fake, http):
        connector = self.build(fake, http, key_field="new_CustomerNumber")
        fake.records = [self.record(phone="")]
        await connector.fetch(LookupKey("12345", "dtmf"), "contacts", "new_Status", deadline=self.deadline())
        assert fake.api_requests()[0].params == {"$select": "ContactId,FullName,ModifiedOn,new_Status",
                                                 "$filter": "new_CustomerNumber eq '12345'", "$top": "50",
                                                 "$orderby": "ModifiedOn desc"}  # fmt: skip

    async def test_a_number_key_field_is_retried_unquoted_and_remembered(self, fake, http):
        connector = self.build(fake, http, key_field="new_Score")
        fake.records = [self.record(phone="", fields={"new_Status": "GOLD", "new_Score": 12345})]
        for _ in range(2):
            assert await connector.fetch(LookupKey("12345", "dtmf"), "contacts", "new_Status", deadline=self.deadline()) == "GOLD"  # fmt: skip
        assert [r.params["$filter"] for r in fake.api_requests()] == ["new_Score eq '12345'", "new_Score eq 12345",
                                                                      "new_Score eq 12345"]  # fmt: skip

    async def test_typed_key_without_key_field_is_a_guid_only_when_shaped_like_one(self, fake, connector):
        fake.records = [self.record(phone="")]
        assert await connector.fetch(LookupKey("12345", "dtmf"), "contacts", "new_Status", deadline=self.deadline()) is None  # fmt: skip
        assert fake.api_requests() == []
        assert await connector.fetch(LookupKey(CONTACT_IDS[0], "dtmf"), "contacts", "new_Status", deadline=self.deadline()) == "GOLD"  # fmt: skip
        assert await connector.fetch(LookupKey(CONTACT_IDS[1], "dtmf"), "contacts", "new_Status", deadline=self.deadline()) is None  # fmt: skip

    async def test_quotes_in_a_typed_key_are_doubled(self, fake, http):
        connector = self.build(fake, http, key_field="new_CustomerNumber")
        fake.records = [self.record(phone="", fields={"new_CustomerNumber": "O'Brien", "new_Status": "GOLD"})]
        assert await connector.fetch(LookupKey("O'Brien", "dtmf"), "contacts", "new_Status", deadline=self.deadline()) == "GOLD"  # fmt: skip
        assert fake.api_requests()[0].params["$filter"] == "new_CustomerNumber eq 'O''Brien'"

    # --- call logging ---------------------------------------------------------------------------

    async def test_phonecall_body(self, fake, connector):
        fake.records = [self.record()]
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline())
        activity_id = await connector.log_call(self.call(record), LogOptions(), deadline=self.deadline())
        [call] = fake.activities
        assert activity_id == call["ActivityId"] == str(uuid.uuid5(uuid.UUID("6f1d3c2e-9a57-5b8e-8c11-2f0e6d4a7b90"), "1795657573.1"))  # fmt: skip
        assert {k: call[k] for k in ("Subject", "PhoneNumber", "DirectionCode", "ActualDurationMinutes", "RegardingObjectId")} == {  # fmt: skip
            "Subject": f"Inbound call from {CALLER}", "PhoneNumber": CALLER, "DirectionCode": False,
            "ActualDurationMinutes": 2, "RegardingObjectId": {"Id": CONTACT_IDS[0], "LogicalName": "contact"}}  # fmt: skip
        assert "Asterisk call id: 1795657573.1" in call["Description"] and "Extension: 201" in call["Description"]
        check, create = fake.api_requests()[-2:]
        assert check.method == "GET" and check.path == f"{SVC}/PhoneCallSet(guid'{activity_id}')"
        assert create.method == "POST" and create.path == f"{SVC}/PhoneCallSet"
        assert create.headers["content-type"] == "application/json"

    async def test_a_concurrent_duplicate_create_is_the_same_call(self, fake, connector):
        activity_id = await connector.log_call(self.call(None, "dup"), LogOptions(), deadline=self.deadline())
        fake.fail_next(404, {"error": {"code": "", "message": {"lang": "en-US", "value": "phonecall Does Not Exist"}}})
        again = await connector.log_call(self.call(None, "dup"), LogOptions(), deadline=self.deadline())
        assert again == activity_id and len(fake.activities) == 1

    async def test_outbound_call_to_an_account(self, fake, connector):
        fake.records = [FakeRecord(module="accounts", id=ACCOUNT_ID, phone="415-555-2671")]
        account = Record(module="Account", id=ACCOUNT_ID, fields={})
        call = self.call(account, "out-1")
        call.direction, call.subject, call.talk_seconds = "outbound", "", 0
        await connector.log_call(call, LogOptions(), deadline=self.deadline())
        logged = fake.activities[0]
        assert logged["DirectionCode"] is True and logged["ActualDurationMinutes"] == 0
        assert logged["Subject"] == f"Outbound call to {CALLER}"
        assert logged["RegardingObjectId"] == {"Id": ACCOUNT_ID, "LogicalName": "account"}

    async def test_logging_by_number_tries_contacts_then_leads_then_accounts(self, fake, connector):
        lead_id = "c3d4e5f6-6c1e-e411-80d0-00155d0a3f01"
        fake.records = [FakeRecord(module="leads", id=lead_id, phone="(415) 555-2671")]
        await connector.log_call(self.call(None, "by-number"), LogOptions(), deadline=self.deadline())
        assert fake.activities[0]["RegardingObjectId"] == {"Id": lead_id, "LogicalName": "lead"}
        assert [r.path.rsplit("/", 1)[1] for r in fake.api_requests()][1:3] == ["ContactSet", "LeadSet"]

    async def test_unknown_caller_becomes_a_lead(self, fake, connector):
        await connector.log_call(self.call(None, "new-lead"), LogOptions(create_unknown=True), deadline=self.deadline())
        [lead] = fake.created
        assert lead["entity"] == "Lead" and lead["Telephone1"] == CALLER and lead["Subject"] and lead["LastName"]
        assert fake.activities[0]["RegardingObjectId"] == {"Id": lead["LeadId"], "LogicalName": "lead"}

    async def test_unknown_caller_can_become_a_contact(self, fake, http):
        connector = self.build(fake, http, create_as="contacts")
        await connector.log_call(
            self.call(None, "new-contact"), LogOptions(create_unknown=True), deadline=self.deadline()
        )
        assert fake.created[0]["entity"] == "Contact" and "Subject" not in fake.created[0]

    async def test_unknown_caller_without_create_unknown_is_logged_unlinked(self, fake, connector):
        await connector.log_call(self.call(None, "nobody"), LogOptions(), deadline=self.deadline())
        assert fake.created == [] and "RegardingObjectId" not in fake.activities[0]

    async def test_online_throttling_is_waited_out(self, fake, connector):
        fake.records = [self.record()]
        await connector.authenticate(deadline=self.deadline())
        fake.fail_next(429, {"error": {"code": "0x80072322", "message": "Number of requests exceeded the limit of 6000 over time window of 300 seconds."}}, headers={"Retry-After": "0"})  # fmt: skip
        assert await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "new_Status", deadline=self.deadline()) == "GOLD"  # fmt: skip


class TestDynamicsNtlm(DynamicsContract):
    """CRM 2015 on-premises with Active Directory: NTLM on the connection (needs pyspnego)."""

    HANDSHAKE_401 = True  # NTLM's challenge is a 401 by design

    @pytest.fixture(autouse=True)
    def _needs_spnego(self):
        pytest.importorskip("spnego")

    def settings(self, fake: VendorFake) -> dict[str, Any]:
        return {"org_url": f"{fake.base_url}{ORG}", "auth": "ntlm", "username": NTLM_USER, "password": NTLM_PASSWORD}

    async def test_handshake_then_plain_requests_on_the_same_connection(self, fake, connector):
        fake.records = [self.record()]
        for _ in range(2):
            assert await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "new_Status", deadline=self.deadline()) == "GOLD"  # fmt: skip
        negotiate, authenticate, first, second = fake.requests
        assert negotiate.path == authenticate.path == f"{SVC}/SystemUserSet"
        assert negotiate.headers["authorization"].startswith("NTLM TlRMTVNTUAAB")  # NTLMSSP NEGOTIATE
        assert authenticate.headers["authorization"].startswith("NTLM TlRMTVNTUAAD")  # NTLMSSP AUTHENTICATE
        assert "authorization" not in first.headers and "authorization" not in second.headers
        assert fake.state["ntlm_users"] == [NTLM_USER]

    async def test_concurrent_calls_share_the_connection_one_at_a_time(self, fake, connector):
        fake.records = [self.record()]
        key = LookupKey(CALLER, "caller_id")
        values = await asyncio.gather(
            *(connector.fetch(key, "contacts", "new_Status", deadline=self.deadline()) for _ in range(4))
        )
        assert values == ["GOLD"] * 4 and fake.token_requests == 1

    async def test_rule_credentials_replace_the_integrations(self, fake, http):
        cls = type(self.build(fake, http))
        connector = cls(cls.Settings.model_validate(self.settings(fake) | {"password": "unused"}), http,
                        username=NTLM_USER, password=NTLM_PASSWORD)  # fmt: skip
        await connector.authenticate(deadline=self.deadline())
        assert fake.state["ntlm_users"] == [NTLM_USER]

    async def test_wrong_password_names_the_user(self, fake, http):
        connector = self.build(fake, http, password="wrong")
        with pytest.raises(AuthError, match=r"refused the NTLM credentials of CONTOSO\\crmsvc"):
            await connector.authenticate(deadline=self.deadline())

    async def test_a_server_without_ntlm_is_explained(self, fake, http):
        connector = self.build(fake, http)
        fake.auth_paths = ("/contoso.onmicrosoft.com/oauth2/",)  # let the fault reach the handshake
        try:
            fake.fail_next(401, b"", headers={"WWW-Authenticate": "Bearer authorization_uri=https://x"}, content_type="text/html")  # fmt: skip
            with pytest.raises(AuthError, match="did not offer NTLM"):
                await connector.authenticate(deadline=self.deadline())
        finally:
            fake.auth_paths = ("/contoso.onmicrosoft.com/oauth2/", f"{SVC}/SystemUserSet")

    async def test_phonecall_is_logged_over_ntlm(self, fake, connector):
        fake.records = [self.record()]
        await connector.log_call(self.call(None, "ntlm-call"), LogOptions(), deadline=self.deadline())
        assert fake.activities[0]["RegardingObjectId"]["Id"] == CONTACT_IDS[0]


# --- users (agents sync) ------------------------------------------------------------------------


async def test_list_users_reads_the_enabled_system_users_following_next(fake):
    from crmroute.connectors._http import make_client
    from crmroute.settings import Settings

    fake.state["system_users"] = [
        {"SystemUserId": f"d0e1f2a3-0000-0000-0000-{i:012d}", "FullName": f"Agent {i:03d}",
         "InternalEMailAddress": f"agent{i}@example.com", "IsDisabled": False, "ModifiedOn": "2026-01-01T00:00:00Z"}
        for i in range(1, 121)] + [
        {"SystemUserId": "d0e1f2a3-0000-0000-0000-999999999999", "FullName": "Gone", "InternalEMailAddress": "g@example.com",
         "IsDisabled": True, "ModifiedOn": "2026-01-01T00:00:00Z"}]  # fmt: skip
    http = make_client(Settings(ca_bundle=fake.ca_path))
    try:
        users = await TestDynamicsOnline().build(fake, http).list_users(deadline=TestDynamicsOnline.deadline())
    finally:
        await http.aclose()
    assert len(users) == 120 and "d0e1f2a3-0000-0000-0000-999999999999" not in {u.id for u in users}
    assert (users[0].id, users[0].name, users[0].email) == ("d0e1f2a3-0000-0000-0000-000000000001", "Agent 001",
                                                            "agent1@example.com")
    pages = [r for r in fake.requests if r.path.endswith("/SystemUserSet") and "$select" in r.params]
    assert len(pages) == 3 and pages[0].params["$filter"] == "IsDisabled eq false"  # 50 + 50 + 20, by __next
