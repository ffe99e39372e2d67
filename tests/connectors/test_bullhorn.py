"""Bullhorn against a strict loopback fake of its login chain and REST API.

The fake serves (reference section 2; bullhorn/rest-api-docs): ``GET
/rest-services/loginInfo?username=`` (the user's ``oauthUrl``/``restUrl``), ``GET|POST
/oauth/authorize`` (``action=Login`` with username/password answers 302 with ``code`` in
``Location``; refused credentials answer the HTML login page; ``state["hop"]`` first sends
a 307 to another data centre at ``/west/oauth``), ``POST /oauth/token`` (parameters in the
query string; ``authorization_code`` codes and ``refresh_token`` tokens are single use,
every answer carries the next refresh token), ``POST /rest-services/login`` (``version``,
``access_token``, ``ttl`` -> ``BhRestToken`` and a per-corporation ``restUrl`` under
``/rest-services/8z1k0x/``), and under that ``search/{Entity}`` (a small Lucene parser:
``field:term``, ``field:"phrase"``, ``AND``/``OR``/``NOT``, parentheses; phone fields
compare digits; ``fields`` with ``assoc(sub)`` syntax checked per entity),
``entity/{Entity}/{id}/notes`` and ``PUT entity/{Note|Lead|Candidate}``. REST answers carry
``ratelimit-*`` headers. Missing ``BhRestToken``: 412; a bad one: 401 with Bullhorn's
``errors.authentication.invalidRestToken`` body. Bullhorn's exact text for an unknown
``fields`` entry and for an unknown search field is unconfirmed (the fake's are marked).
"""

from __future__ import annotations

import json
import re
import secrets
import time
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from crmroute.connectors._phone import digits_of
from crmroute.connectors.base import Record
from crmroute.connectors.bullhorn import BullhornSettings, field_list, lucene_phrase, phone_terms
from crmroute.errors import AuthError, RateLimited, UnexpectedResponse
from crmroute.routing.engine import LookupKey
from crmroute.schemas import LogOptions
from tests.connectors.contract import CALLER, ConnectorContract
from tests.connectors.fakecrm import FakeRecord, VendorFake, vendor_fixtures

CLIENT_ID = "7c1f9b2e-55aa-4d3e-9a61-crmroute-test"
CLIENT_SECRET = "bh-client-s3cret-Xy9"
USERNAME, PASSWORD = "crmroute.api", "bh-api-pa55"
RULE_USER, RULE_PASSWORD = "agent.jones", "rule-pa55"
USERS = {USERNAME: PASSWORD, RULE_USER: RULE_PASSWORD}
CORP = "8z1k0x"
REST = f"/rest-services/{CORP}/"

ENTITY_OF = {"contacts": "ClientContact", "leads": "Lead", "accounts": "ClientCorporation"}
PERSON = {"id", "name", "firstName", "lastName", "email", "phone", "mobile", "phone2", "phone3", "dateAdded",
          "dateLastModified", "isDeleted", "externalID", "status", "owner", "notes",
          *(f"customText{i}" for i in range(1, 21))}  # fmt: skip
SCHEMA = {
    "ClientContact": PERSON | {"clientCorporation", "occupation"},
    "Candidate": PERSON | {"workPhone", "occupation"},
    "Lead": PERSON | {"clientCorporation", "companyName"},
    "ClientCorporation": {"id", "name", "phone", "dateAdded", "dateLastModified", "externalID", "status", "notes",
                          *(f"customText{i}" for i in range(1, 21))},
}  # fmt: skip
ASSOCIATIONS = {"clientCorporation": {"id", "name", "phone", "externalID", "status"},
                "owner": {"id", "name", "firstName", "lastName", "email"}}  # fmt: skip
PHONES = {"phone", "mobile", "phone2", "phone3", "workPhone"}
NOTE_FIELDS = {"personReference", "action", "comments", "minutesSpent", "dateAdded", "externalID", "commentingPerson",
               "jobOrder", "isDeleted"}  # fmt: skip
SEARCH_PARAMS = {"query", "fields", "count", "start", "sort", "meta", "showEditable", "layout", "BhRestToken"}


def bh_error(status: int, message: str, key: str = "errors.badRequest") -> JSONResponse:
    return JSONResponse({"errorMessage": message, "errorMessageKey": key, "errorCode": status}, status)


def epoch_ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(timezone.utc).timestamp() * 1000)


def split_fields(text: str) -> list[tuple[str, str]]:
    """``id,clientCorporation(id,name)`` as ``[("id", ""), ("clientCorporation", "id,name")]``."""
    out, depth, start = [], 0, 0
    for i, char in enumerate(text + ","):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            item = text[start:i].strip()
            start = i + 1
            found = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:\((.*)\))?", item)
            if not found:
                raise ValueError(item)
            out.append((found[1], found[2] or ""))
    if depth:
        raise ValueError(text)
    return out


class Lucene:
    """The Lucene the fake understands: ``field:term``, ``field:"phrase"``, AND/OR/NOT, parentheses."""

    TOKEN = re.compile(r'\s*(?:(?P<phrase>"(?:[^"\\]|\\.)*")|(?P<paren>[()])|(?P<word>[A-Za-z0-9_.@]+)(?P<colon>:)?)')

    def __init__(self, text: str, fields: set[str]) -> None:
        self.fields, self.tokens, position = fields, [], 0
        while position < len(text.rstrip()):
            found = self.TOKEN.match(text, position)
            if not found:
                raise ValueError(f"Cannot parse '{text}': Encountered \"{text[position:position + 1]}\"")
            if found["phrase"]:
                self.tokens.append(("phrase", re.sub(r"\\(.)", r"\1", found["phrase"][1:-1])))
            elif found["paren"]:
                self.tokens.append(("paren", found["paren"]))
            elif found["colon"]:
                self.tokens.append(("field", found["word"]))
            else:
                self.tokens.append(("word", found["word"]))
            position = found.end()
        self.position = 0
        self.tree = self._or()
        if self.position != len(self.tokens):
            raise ValueError(f"Cannot parse '{text}'")

    def _peek(self) -> tuple[str, str]:
        return self.tokens[self.position] if self.position < len(self.tokens) else ("", "")

    def _or(self) -> Any:
        parts = [self._and()]
        while self._peek() == ("word", "OR"):
            self.position += 1
            parts.append(self._and())
        return ("or", parts)

    def _and(self) -> Any:
        parts = [self._unary()]
        while self._peek() == ("word", "AND"):
            self.position += 1
            parts.append(self._unary())
        return ("and", parts)

    def _unary(self) -> Any:
        kind, text = self._peek()
        self.position += 1
        if (kind, text) == ("word", "NOT"):
            return ("not", self._unary())
        if (kind, text) == ("paren", "("):
            inner = self._or()
            if self._peek() != ("paren", ")"):
                raise ValueError("Cannot parse: missing )")
            self.position += 1
            return inner
        if kind == "field":
            if text not in self.fields:
                raise LookupError(text)
            value_kind, value = self._peek()
            if value_kind not in ("word", "phrase"):
                raise ValueError(f"Cannot parse: no value for {text}")
            self.position += 1
            return ("term", text, value)
        raise ValueError(f"Cannot parse: unexpected {text!r}")

    def test(self, row: dict[str, Any]) -> bool:
        return self._eval(self.tree, row)

    def _eval(self, node: Any, row: dict[str, Any]) -> bool:
        if node[0] == "or":
            return any(self._eval(n, row) for n in node[1])
        if node[0] == "and":
            return all(self._eval(n, row) for n in node[1])
        if node[0] == "not":
            return not self._eval(node[1], row)
        _, field, value = node
        stored = row.get(field)
        if field in PHONES:
            return bool(digits_of(str(stored or ""))) and digits_of(str(stored)) == value
        if field == "isDeleted":
            return bool(stored) == (value.lower() in ("true", "1"))
        if field == "id":
            return str(stored) == value
        return str(stored or "").casefold() == value.casefold()


def make_app(fake: VendorFake) -> Starlette:
    fake.auth_paths = ("/oauth/", "/west/oauth/", "/rest-services/login")

    def entity_of(record: FakeRecord) -> str:
        return record.fields.get("_entity") or ENTITY_OF[record.module]

    def values(record: FakeRecord) -> dict[str, Any]:
        first, _, last = record.name.partition(" ")
        row = {"id": int(record.id), "name": record.name, "phone": record.phone or None, "isDeleted": False,
               "dateLastModified": epoch_ms(record.modified), "dateAdded": epoch_ms("2025-01-01T00:00:00Z")}  # fmt: skip
        if entity_of(record) != "ClientCorporation":
            row |= {"firstName": first, "lastName": last}
        return row | {k: v for k, v in record.fields.items() if k != "_entity"}

    def select(entity: str, row: dict[str, Any], fields: list[tuple[str, str]]) -> dict[str, Any]:
        out: dict[str, Any] = {"id": row["id"]}
        for name, sub in fields:
            value = row.get(name)
            if sub:
                out[name] = ({"id": value.get("id")} | {s: value.get(s) for s, _ in split_fields(sub)}
                             if isinstance(value, dict) else None)  # fmt: skip
            else:
                out[name] = value
        return out

    def check_fields(entity: str, text: str) -> tuple[list[tuple[str, str]], Response | None]:
        try:
            fields = split_fields(text)
        except ValueError:
            return [], bh_error(400, f"Malformed fields parameter '{text}'")
        for name, sub in fields:
            unknown = name not in SCHEMA[entity] or (sub and (name not in ASSOCIATIONS or any(
                s not in ASSOCIATIONS[name] for s, _ in split_fields(sub)))) or (not sub and name in ASSOCIATIONS and False)  # fmt: skip
            if unknown:  # the wording is the fake's: Bullhorn's exact text is unconfirmed
                return [], bh_error(400, f"Invalid field '{name}' for entity {entity}", "errors.invalidField")
        return fields, None

    def rest_headers() -> dict[str, str]:
        remaining = fake.state.setdefault("rl_remaining", 1500) - 1
        fake.state["rl_remaining"] = remaining
        return {"ratelimit-limit": "1500", "ratelimit-remaining": str(remaining), "ratelimit-reset": "42"}

    def session(request: Request) -> Response | None:
        token = request.headers.get("bhresttoken") or request.query_params.get("BhRestToken")
        if not token:
            return bh_error(412, "Missing BhRestToken", "errors.authentication.missingRestToken")
        if token not in fake.tokens:
            return bh_error(401, "Bad 'BhRestToken' or timed-out.", "errors.authentication.invalidRestToken")
        return None

    # --- login chain ---------------------------------------------------------------------------------

    async def ping(request: Request) -> Response:
        if denied := session(request):
            return denied
        fake.state["pings"] = fake.state.get("pings", 0) + 1
        return JSONResponse({"sessionExpires": int((time.time() + 600) * 1000)}, headers=rest_headers())

    async def login_info(request: Request) -> Response:
        user = request.query_params.get("username", "")
        fake.state.setdefault("login_info", []).append(user)
        if user not in USERS:
            return bh_error(400, "Invalid username")
        base = fake.base_url
        return JSONResponse({"atsUrl": "https://cls91.bullhornstaffing.com", "coreUrl": "https://cls91.bullhornstaffing.com/core",
                             "oauthUrl": f"{base}/oauth", "restUrl": f"{base}/rest-services", "samlUrl": f"{base}/saml",
                             "novoUrl": "https://app.bullhornstaffing.com", "dataCenterId": 9, "superClusterId": 91})  # fmt: skip

    async def servlet_params(request: Request) -> dict[str, str]:
        """Query and form parameters together, as a Java servlet's getParameter reads them."""
        params = dict(request.query_params)
        if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            params |= {k: str(v) for k, v in (await request.form()).items()}
        return params

    async def authorize(request: Request) -> Response:
        params = await servlet_params(request)
        fake.state.setdefault("authorize", []).append(params)
        if fake.state.get("hop") and request.url.path.startswith("/oauth"):
            return RedirectResponse(f"{fake.base_url}/west/oauth/authorize", 307)
        if params.get("client_id") != CLIENT_ID:
            return JSONResponse({"error": "invalid_client", "error_description": "Invalid client id"}, 400)
        if params.get("response_type") != "code":
            return JSONResponse({"error": "unsupported_response_type"}, 400)
        if params.get("action") != "Login" or USERS.get(params.get("username", "")) != params.get("password") \
                or fake.reject_credentials:  # fmt: skip
            return HTMLResponse("<html><body><form action='/oauth/authorize'>Bullhorn login</form></body></html>")
        code = f"22:{secrets.token_hex(12)}"
        fake.state.setdefault("codes", {})[code] = (params.get("username"), params.get("redirect_uri"))
        target = params.get("redirect_uri") or "https://www.bullhorn.com/"
        return RedirectResponse(f"{target}?code={quote(code, safe='')}&client_id={CLIENT_ID}", 302)

    async def token(request: Request) -> Response:
        if request.method != "POST":
            return JSONResponse({"error": "invalid_request", "error_description": "POST required"}, 405)
        q = await servlet_params(request)
        fake.state.setdefault("grants", []).append(q)
        if q.get("client_id") != CLIENT_ID or q.get("client_secret") != CLIENT_SECRET:
            return JSONResponse({"error": "invalid_client", "error_description": "Bad client credentials"}, 401)
        grant = q.get("grant_type")
        if grant == "authorization_code":
            issued = fake.state.setdefault("codes", {}).pop(q.get("code", ""), None)
            if issued is None or issued[1] != q.get("redirect_uri"):
                return JSONResponse({"error": "invalid_grant", "error_description": "Invalid, expired, or revoked authorization code."}, 400)  # fmt: skip
        elif grant == "refresh_token":
            live = fake.state.setdefault("refresh", set())
            if q.get("refresh_token") not in live or fake.reject_credentials:
                return JSONResponse({"error": "invalid_grant", "error_description": "Invalid, expired, or revoked refresh token."}, 400)  # fmt: skip
            live.discard(q["refresh_token"])
        else:
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        access, refresh = f"at-{secrets.token_hex(10)}", f"rt-{secrets.token_hex(10)}"
        fake.state.setdefault("access", set()).add(access)
        fake.state.setdefault("refresh", set()).add(refresh)
        return JSONResponse({"access_token": access, "token_type": "Bearer", "expires_in": 600, "refresh_token": refresh})

    async def rest_login(request: Request) -> Response:
        q = dict(request.query_params)
        fake.state.setdefault("logins", []).append(q)
        if request.method not in ("GET", "POST") or not q.get("version"):
            return bh_error(400, "version is required")
        if q.get("access_token") not in fake.state.setdefault("access", set()):
            return bh_error(400, "Invalid or expired OAuth access token.", "errors.internalError")
        return JSONResponse({"BhRestToken": fake.issue_token("bh"), "restUrl": f"{fake.base_url}{REST}"})

    # --- REST ------------------------------------------------------------------------------------------

    async def search(request: Request) -> Response:
        entity = request.path_params["entity"]
        if (bad := session(request)) is not None:
            return bad
        if request.method != "GET":
            return bh_error(405, "Method not allowed")
        if entity not in SCHEMA:
            return bh_error(404, f"Entity {entity} not found", "errors.entityNotFound")
        params = dict(request.query_params)
        if set(params) - SEARCH_PARAMS:
            return bh_error(400, f"Unrecognized parameter(s): {', '.join(sorted(set(params) - SEARCH_PARAMS))}")
        fields, bad = check_fields(entity, params.get("fields", "id"))
        if bad is not None:
            return bad
        try:
            lucene = Lucene(params.get("query", ""), SCHEMA[entity] - {"notes", "owner", "clientCorporation"})
        except LookupError as missing:  # the wording is the fake's
            return bh_error(400, f"Unknown search field '{missing.args[0]}' for entity {entity}")
        except ValueError as exc:
            return bh_error(400, str(exc), "errors.search.badQuery")
        count = int(params.get("count", "15"))
        if count > 500:
            return bh_error(400, "count must be at most 500")
        rows = [values(r) for r in fake.records if entity_of(r) == entity]
        rows = [r for r in rows if lucene.test(r)]
        if "sort" in params:
            name = params["sort"].lstrip("-")
            if name not in SCHEMA[entity]:
                return bh_error(400, f"Invalid sort field '{name}'")
            rows.sort(key=lambda r: r.get(name) or 0, reverse=params["sort"].startswith("-"))
        data = [{"_score": 1.0} | select(entity, r, fields) for r in rows[:count]]
        return JSONResponse({"total": len(rows), "start": 0, "count": len(data), "data": data}, headers=rest_headers())

    async def query(request: Request) -> Response:
        """``GET query/CorporateUser``: ``where`` (``field=value`` joined by `` AND ``), ``fields``, ``count`` (at
        most 500), ``start``, ``orderBy``; answers ``{start, count, data}`` (no total). Users: fake.state["users"]."""
        entity = request.path_params["entity"]
        if (bad := session(request)) is not None:
            return bad
        if entity != "CorporateUser":
            return bh_error(400, f"this fake queries CorporateUser only, not {entity}")
        params = dict(request.query_params)
        unknown = set(params) - {"where", "fields", "count", "start", "orderBy", "BhRestToken"}
        if unknown or "where" not in params:
            return bh_error(400, f"Unrecognized parameter(s): {', '.join(sorted(unknown))}" if unknown else "where is required")
        columns = {"id", "firstName", "lastName", "name", "email", "enabled", "isDeleted", "username"}
        tests = []
        for term in params["where"].split(" AND "):
            field, eq, value = term.partition("=")
            if not eq or field.strip() not in columns:
                return bh_error(400, f"Invalid where clause: {term}")
            tests.append((field.strip(), value.strip().lower()))
        fields = [f.strip() for f in params.get("fields", "id").split(",")]
        if any(f not in columns for f in fields):
            return bh_error(400, f"Invalid field(s): {', '.join(f for f in fields if f not in columns)}")
        count, start = params.get("count", "15"), params.get("start", "0")
        if not count.isdigit() or not 1 <= int(count) <= 500 or not start.isdigit():
            return bh_error(400, "count must be between 1 and 500")
        rows = [u for u in fake.state.get("users", []) if all(str(u.get(f)).lower() == v for f, v in tests)]
        if params.get("orderBy"):
            rows.sort(key=lambda u: u.get(params["orderBy"].lstrip("-")) or 0)
        chunk = rows[int(start):int(start) + int(count)]
        fake.state["user_pages"] = fake.state.get("user_pages", 0) + 1
        return JSONResponse({"start": int(start), "count": len(chunk), "data": [{f: u.get(f) for f in fields} for u in chunk]},
                            headers=rest_headers())  # fmt: skip

    async def person_notes(request: Request) -> Response:
        entity, person_id = request.path_params["entity"], request.path_params["id"]
        if (bad := session(request)) is not None:
            return bad
        if entity not in SCHEMA or not any(entity_of(r) == entity and r.id == person_id for r in fake.records):
            return bh_error(404, f"Entity {entity} with id {person_id} not found", "errors.entityNotFound")
        params = dict(request.query_params)
        if set(params) - {"fields", "count", "start", "orderBy", "BhRestToken"}:
            return bh_error(400, "Unrecognized parameter")
        wanted = [f for f, _ in split_fields(params.get("fields", "id"))]
        if set(wanted) - {"id", "externalID", "action", "comments", "dateAdded", "minutesSpent"}:
            return bh_error(400, "Invalid field for entity Note", "errors.invalidField")
        notes = [n for n in fake.activities if str(n["personReference"]["id"]) == person_id]
        notes.sort(key=lambda n: n.get("dateAdded") or 0, reverse=params.get("orderBy", "").startswith("-"))
        data = [{f: n.get(f) for f in wanted} for n in notes[: int(params.get("count", "5"))]]
        return JSONResponse({"total": len(notes), "start": 0, "count": len(data), "data": data}, headers=rest_headers())

    async def entity_put(request: Request) -> Response:
        entity = request.path_params["entity"]
        if (bad := session(request)) is not None:
            return bad
        if request.method != "PUT":
            return bh_error(405, "HTTP method POST is not supported by this URL; use PUT to create")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return bh_error(400, "Malformed JSON")
        if entity == "Note":
            unknown = set(body) - NOTE_FIELDS
            if unknown:
                return JSONResponse({"errorMessage": "error persisting an entity of type: Note", "errorMessageKey": "errors.cannotPersistEntity",
                                     "errorCode": 400, "errors": [{"propertyName": n, "severity": "ERROR", "type": "INVALID_PROPERTY",
                                                                    "detailMessage": f"Unknown property {n}"} for n in sorted(unknown)]}, 400)  # fmt: skip
            person = str((body.get("personReference") or {}).get("id"))
            if not any(r.id == person and entity_of(r) != "ClientCorporation" for r in fake.records):
                return bh_error(400, "personReference must be an existing person")
            if not body.get("comments"):
                return bh_error(400, "comments is required")
            note_id = 9000 + len(fake.activities) + 1
            fake.activities.append({"id": note_id} | body)
            return JSONResponse({"changedEntityType": "Note", "changedEntityId": note_id, "changeType": "INSERT",
                                 "data": body}, headers=rest_headers())  # fmt: skip
        if entity not in ("Lead", "Candidate"):
            return bh_error(400, f"the fake creates no {entity}")
        unknown = set(body) - SCHEMA[entity]
        if unknown:
            return bh_error(400, f"Invalid field(s): {', '.join(sorted(unknown))}")
        new_id = str(70000 + len(fake.created) + 1)
        fake.created.append({"id": new_id, "entity": entity} | body)
        fake.records.append(FakeRecord(module="leads" if entity == "Lead" else "contacts", id=new_id,
                                       phone=str(body.get("phone") or ""), name=str(body.get("name") or ""),
                                       fields={"_entity": entity}, modified=datetime.now(timezone.utc).isoformat()))  # fmt: skip
        return JSONResponse({"changedEntityType": entity, "changedEntityId": int(new_id), "changeType": "INSERT"},
                            headers=rest_headers())  # fmt: skip

    async def not_found(request: Request) -> Response:
        return bh_error(404, "Not found", "errors.notFound")

    return Starlette(routes=[
        Route("/rest-services/loginInfo", login_info, methods=["GET"]),
        Route("/oauth/authorize", authorize, methods=["GET", "POST"]),
        Route("/west/oauth/authorize", authorize, methods=["GET", "POST"]),
        Route("/oauth/token", token, methods=["GET", "POST"]),
        Route("/west/oauth/token", token, methods=["GET", "POST"]),
        Route("/rest-services/login", rest_login, methods=["GET", "POST"]),
        Route(f"{REST}ping", ping, methods=["GET"]),
        Route(f"{REST}search/{{entity}}", search, methods=["GET", "POST"]),
        Route(f"{REST}query/{{entity}}", query, methods=["GET"]),
        Route(f"{REST}entity/{{entity}}/{{id}}/notes", person_notes, methods=["GET"]),
        Route(f"{REST}entity/{{entity}}", entity_put, methods=["PUT", "POST"]),
        Route("/{path:path}", not_found, methods=["GET", "POST", "PUT", "DELETE"]),
    ])  # fmt: skip


fake_server, fake = vendor_fixtures(make_app)

CONTACT_IDS = ("10451", "10452", "10453")


class TestBullhorn(ConnectorContract):
    OWNER_FIELDS = {"owner": {"id": 501, "firstName": "Olivia", "lastName": "Owner"}}
    OWNER_ID = "501"
    kind = "bullhorn"
    MODULE = "contacts"
    FIELD = "customText1"
    NESTED_FIELD = "clientCorporation.name"
    NESTED_FIELDS = {"clientCorporation": {"id": 3120, "name": "Acme Corp", "phone": "(617) 555-0100"}}
    NESTED_VALUE = "Acme Corp"
    IDS = CONTACT_IDS
    KEY_FIELD = "externalID"
    REQUESTS_PER_CALL = (2, 2)  # ClientContact and Candidate, one search each (contact_entities)
    MOBILE_FIELDS = {"contacts": "mobile", "leads": "mobile"}  # ClientCorporation has phone (and fax) only

    def settings(self, fake: VendorFake) -> dict[str, Any]:
        return {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "username": USERNAME, "password": PASSWORD,
                "login_info_url": f"{fake.base_url}/rest-services/loginInfo"}  # fmt: skip

    def build(self, fake: VendorFake, http: Any, **overrides: Any) -> Any:
        # most tests skip the loginInfo hop (settings naming the data centre); its own tests ask for it
        hop = {} if overrides.pop("login_info", False) else {"auth_url": f"{fake.base_url}/oauth",
                                                              "rest_login_url": f"{fake.base_url}/rest-services"}
        return super().build(fake, http, **(hop | overrides))

    def candidate(self, index: int = 0, **changes: Any) -> FakeRecord:
        record = self.record(index, **changes)
        record.id = str(20000 + index)
        record.fields = dict(record.fields, _entity="Candidate")
        record.fields.pop("clientCorporation", None)
        return record

    # --- the login chain ------------------------------------------------------------------------

    async def test_the_three_hops_and_their_shapes(self, fake, http):
        token = await self.build(fake, http, login_info=True).authenticate(deadline=self.deadline())
        info, authorize, exchange, login = fake.requests
        assert (info.method, info.path, info.params) == ("GET", "/rest-services/loginInfo", {"username": USERNAME})
        assert (authorize.method, authorize.path, authorize.query) == ("POST", "/oauth/authorize", "")
        assert form(authorize) == {"client_id": CLIENT_ID, "response_type": "code", "action": "Login",
                                   "username": USERNAME, "password": PASSWORD}  # fmt: skip
        assert (exchange.method, exchange.path, exchange.query) == ("POST", "/oauth/token", "")
        assert form(exchange)["grant_type"] == "authorization_code" and form(exchange)["code"].startswith("22:")
        assert form(exchange)["client_secret"] == CLIENT_SECRET
        assert (login.method, login.path) == ("POST", "/rest-services/login")
        assert login.params["version"] == "2.0" and login.params["ttl"] == "60"
        assert login.params["access_token"].startswith("at-")
        assert token.extra["rest_url"] == f"{fake.base_url}{REST}"
        assert 3500 < token.expires_at - time.monotonic() <= 3600

    async def test_api_calls_go_to_the_rest_url_with_the_session_header(self, fake, connector):
        fake.records = [self.record()]
        await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "customText1", deadline=self.deadline())
        for call in fake.api_requests():
            assert call.path.startswith(REST) and call.headers["bhresttoken"].startswith("bh-")
            assert "BhRestToken" not in call.params

    async def test_data_centre_urls_skip_login_info(self, fake, http):
        connector = self.build(fake, http, auth_url=f"{fake.base_url}/west/oauth",
                               rest_login_url=f"{fake.base_url}/rest-services")  # fmt: skip
        await connector.authenticate(deadline=self.deadline())
        assert [r.path for r in fake.requests] == ["/west/oauth/authorize", "/west/oauth/token", "/rest-services/login"]

    async def test_a_307_to_the_users_data_centre_is_followed(self, fake, connector):
        fake.state["hop"] = True
        await connector.authenticate(deadline=self.deadline())
        assert [r.path for r in fake.requests][:2] == ["/oauth/authorize", "/west/oauth/authorize"]
        assert form(fake.requests[1])["password"] == PASSWORD  # a 307 keeps the POST body

    async def test_redirect_uri_is_sent_to_both_oauth_steps(self, fake, http):
        connector = self.build(fake, http, redirect_uri="https://crm.example.com/bullhorn")
        await connector.authenticate(deadline=self.deadline())
        assert fake.state["authorize"][0]["redirect_uri"] == "https://crm.example.com/bullhorn"
        assert fake.state["grants"][0]["redirect_uri"] == "https://crm.example.com/bullhorn"

    async def test_the_rules_credentials_win(self, fake, http):
        cls = type(self.build(fake, http))
        connector = cls(cls.Settings.model_validate(self.settings(fake)), http, username=RULE_USER,  # via loginInfo
                        password=RULE_PASSWORD)  # fmt: skip
        await connector.authenticate(deadline=self.deadline())
        assert fake.state["login_info"] == [RULE_USER]
        assert (fake.state["authorize"][0]["username"], fake.state["authorize"][0]["password"]) == (RULE_USER, RULE_PASSWORD)

    async def test_refused_credentials_say_so_without_the_password(self, fake, http):
        connector = self.build(fake, http, password="wrong")
        with pytest.raises(AuthError) as caught:
            await connector.authenticate(deadline=self.deadline())
        assert "did not accept the API user's username/password" in str(caught.value)
        assert "terms of service" in str(caught.value) and "wrong" not in str(caught.value)

    async def test_a_wrong_client_secret_names_the_api_key(self, fake, http):
        connector = self.build(fake, http, client_secret="nope")
        with pytest.raises(AuthError, match="refused the API key: Bad client credentials"):
            await connector.authenticate(deadline=self.deadline())

    async def test_the_session_is_renewed_with_the_refresh_token_before_it_ends(self, fake, connector):
        fake.records = [self.record()]
        key = LookupKey(CALLER, "caller_id")
        await connector.fetch(key, "contacts", "customText1", deadline=self.deadline())
        token = connector._token
        token.issued_at, token.expires_at = time.monotonic() - 3570, time.monotonic() + 30
        before = len(fake.api_requests())
        await connector.fetch(key, "contacts", "customText1", deadline=self.deadline())
        assert [g["grant_type"] for g in fake.state["grants"]] == ["authorization_code", "refresh_token"]
        assert len(fake.state["authorize"]) == 1 and len(fake.state["logins"]) == 2
        assert all(r.headers["bhresttoken"] != token.value for r in fake.api_requests()[before:])

    async def test_refresh_tokens_are_single_use_and_rotate(self, fake, connector):
        await connector.authenticate(deadline=self.deadline())
        for _ in range(3):
            await connector.authenticate(deadline=self.deadline(), force=True)
        grants = fake.state["grants"]
        assert [g["grant_type"] for g in grants] == ["authorization_code"] + ["refresh_token"] * 3
        assert len({g["refresh_token"] for g in grants[1:]}) == 3

    async def test_a_refused_refresh_token_logs_in_again(self, fake, connector):
        await connector.authenticate(deadline=self.deadline())
        fake.state["refresh"].clear()  # another process spent it
        await connector.authenticate(deadline=self.deadline(), force=True)
        assert [g["grant_type"] for g in fake.state["grants"]] == ["authorization_code", "refresh_token",
                                                                    "authorization_code"]  # fmt: skip

    async def test_a_revoked_refresh_token_with_no_way_back(self, fake, connector):
        await connector.authenticate(deadline=self.deadline())
        fake.reject_credentials = True
        with pytest.raises(AuthError) as caught:
            await connector.authenticate(deadline=self.deadline(), force=True)
        text = str(caught.value)
        assert text.startswith("Bullhorn token rejected: refresh token revoked or expired (Invalid, expired, or revoked")
        assert "logging in with the password failed too" in text
        self.assert_no_secrets(text)

    async def test_an_expired_access_token_at_login_is_explained(self, fake, http):
        connector = self.build(fake, http)
        fake.state["access"] = set()
        original = connector._oauth_token

        async def stale(grant, *, deadline):
            await original(grant, deadline=deadline)
            return "at-expired"

        connector._oauth_token = stale
        with pytest.raises(AuthError, match="refused the REST login: Invalid or expired OAuth access token"):
            await connector.authenticate(deadline=self.deadline())

    async def test_a_missing_session_is_412(self, fake, connector):
        token = await connector.authenticate(deadline=self.deadline())
        response = await http_get(connector, token.extra["rest_url"] + "search/ClientContact")
        assert response.status_code == 412
        assert "BhRestToken" in connector.error_for(response, "find_record").args[0]

    def test_settings_are_checked(self, fake):
        with pytest.raises(ValidationError, match="https"):
            BullhornSettings(client_id=CLIENT_ID, client_secret="x", auth_url="http://auth.bullhornstaffing.com/oauth")
        with pytest.raises(ValidationError):
            BullhornSettings(client_id=CLIENT_ID, client_secret="x", session_minutes=5000)

    # --- search shapes ----------------------------------------------------------------------------------

    async def test_one_lucene_search_per_contact_entity(self, fake, connector):
        fake.records = [self.record()]
        await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "customText1", deadline=self.deadline())
        contact, candidate = sorted(fake.api_requests(), key=lambda r: r.path)[1], sorted(fake.api_requests(), key=lambda r: r.path)[0]  # fmt: skip
        assert contact.path == f"{REST}search/ClientContact" and candidate.path == f"{REST}search/Candidate"
        terms = ("4155552671", "14155552671")
        assert contact.params == {
            "query": "(" + " OR ".join(f"{f}:{t}" for f in ("phone", "mobile", "phone2", "phone3") for t in terms)
            + ") AND isDeleted:false",
            "fields": "id,name,dateLastModified,customText1", "count": "20", "sort": "-dateLastModified"}  # fmt: skip
        assert "workPhone:4155552671" in candidate.params["query"]

    async def test_candidates_are_found_and_the_newest_wins_across_entities(self, fake, connector):
        fake.records = [self.record(0, fields={"customText1": "CONTACT"}, modified="2025-01-01T00:00:00Z"),
                        self.candidate(1, fields={"customText1": "CANDIDATE"}, modified="2026-02-01T00:00:00Z")]  # fmt: skip
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", fields=["customText1"],
                                             deadline=self.deadline())  # fmt: skip
        assert (record.module, record.id, record.matches) == ("Candidate", "20001", 2)
        assert record.fields["customText1"] == "CANDIDATE" and "_score" not in record.fields

    async def test_contact_entities_can_be_narrowed(self, fake, http):
        connector = self.build(fake, http, contact_entities="Candidate")
        fake.records = [self.record(), self.candidate(1)]
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline())
        assert record.module == "Candidate" and [r.path for r in fake.api_requests()] == [f"{REST}search/Candidate"]

    @pytest.mark.parametrize("module", ["accounts", "leads", "contacts"])
    async def test_one_search_per_uncached_call_for_one_entity(self, fake, http, module):
        connector = self.build(fake, http, contact_entities="ClientContact")
        fake.records = [self.record(0, module=module), self.record(1, module=module, phone="(415) 555-0100")]
        await connector.authenticate(deadline=self.deadline())
        before = len(fake.requests)
        for caller in (CALLER, "+14155550100", "+14155550199"):
            await connector.fetch(LookupKey(caller, "caller_id"), module, "customText1", deadline=self.deadline())
        assert len(fake.requests) - before == 3  # the fields come back in the search: no entity GET, no login

    async def test_a_field_only_one_entity_has_is_read_from_it_and_remembered(self, fake, connector):
        fake.records = [self.record()]
        key = LookupKey(CALLER, "caller_id")
        for _ in range(2):
            assert await connector.fetch(key, "contacts", "clientCorporation.name", deadline=self.deadline()) == "Acme Corp"  # fmt: skip
        paths = [r.path.rsplit("/", 1)[-1] for r in fake.api_requests()]
        assert sorted(paths) == ["Candidate", "ClientContact", "ClientContact"]  # Candidate asked once, then skipped

    async def test_nested_fields_use_the_sub_field_syntax(self, fake, connector):
        fake.records = [self.record(module="leads", fields={"customText1": "GOLD", "owner": {"id": 5, "email": "ann@example.com"},
                                            "clientCorporation": {"id": 3120, "name": "Acme Corp"}})]  # fmt: skip
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), "leads",
                                             fields=["owner.email", "clientCorporation.name", "clientCorporation.id"],
                                             deadline=self.deadline())  # fmt: skip
        assert fake.api_requests()[0].params["fields"] == "id,name,dateLastModified,owner(email),clientCorporation(name,id)"
        assert await connector.read_field(record, "owner.email", deadline=self.deadline()) == "ann@example.com"

    async def test_a_missing_field_says_which(self, fake, http):
        connector = self.build(fake, http, contact_entities="ClientContact")
        fake.records = [self.record()]
        with pytest.raises(UnexpectedResponse) as caught:
            await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "customText99", deadline=self.deadline())
        assert str(caught.value) == "field customText99 does not exist on ClientContact"
        assert caught.value.reason == "unknown_field"

    async def test_a_field_no_entity_has_says_which(self, fake, connector):
        with pytest.raises(UnexpectedResponse, match="^field tier does not exist on (ClientContact|Candidate)$"):
            await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "tier", deadline=self.deadline())

    @pytest.mark.parametrize("module, entity, record_id", [("accounts", "ClientCorporation", "3120"),
                                                           ("leads", "Lead", "55012")])  # fmt: skip
    async def test_each_module_maps_to_its_entity(self, fake, connector, module, entity, record_id):
        fake.records = [FakeRecord(module=module, id=record_id, phone="(415) 555-2671", fields={"customText1": "SILVER"}),
                        self.record()]  # fmt: skip
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), module, fields=["customText1"],
                                             deadline=self.deadline())  # fmt: skip
        assert (record.module, record.id, record.fields["customText1"]) == (entity, record_id, "SILVER")
        [search] = fake.api_requests()
        assert search.path == f"{REST}search/{entity}"
        assert ("isDeleted:false" in search.params["query"]) == (entity != "ClientCorporation")

    async def test_phone_formats_bullhorn_stores(self, fake, connector):
        key = LookupKey(CALLER, "caller_id")
        for stored in ["(415) 555-2671", "415-555-2671", "+1 415 555 2671", "4155552671", "14155552671"]:
            fake.records = [self.record(phone="", fields={"customText1": "GOLD", "mobile": stored})]
            assert await connector.fetch(key, "contacts", "customText1", deadline=self.deadline()) == "GOLD", stored

    async def test_a_gb_number_stored_with_its_trunk_prefix(self, fake, connector):
        connector.region = "GB"
        fake.records = [self.record(phone="020 7946 0958")]
        assert await connector.fetch(LookupKey("+442079460958", "caller_id"), "contacts", "customText1", deadline=self.deadline()) == "GOLD"  # fmt: skip
        assert "phone:02079460958" in fake.api_requests()[0].params["query"]

    async def test_pick_setting_orders_the_search(self, fake, http):
        for pick, sort in (("oldest", "dateLastModified"), ("first", None)):
            fake.requests.clear()
            connector = self.build(fake, http, match_pick=pick)
            await connector.find_record(LookupKey(CALLER, "caller_id"), "leads", deadline=self.deadline())
            assert fake.api_requests()[-1].params.get("sort") == sort

    async def test_typed_keys(self, fake, http):
        fake.records = [self.record(phone="", fields={"customText1": "GOLD", "externalID": 'A"1'})]
        connector = self.build(fake, http, key_field="externalID", contact_entities="ClientContact")
        assert await connector.fetch(LookupKey('A"1', "dtmf"), "contacts", "customText1", deadline=self.deadline()) == "GOLD"  # fmt: skip
        assert fake.api_requests()[-1].params["query"] == 'externalID:"A\\"1" AND isDeleted:false'
        by_id = self.build(fake, http, contact_entities="ClientContact")
        assert await by_id.fetch(LookupKey("10451", "dtmf"), "contacts", "customText1", deadline=self.deadline()) == "GOLD"  # fmt: skip
        assert fake.api_requests()[-1].params["query"] == "id:10451 AND isDeleted:false"
        fake.requests.clear()
        assert await by_id.fetch(LookupKey("12*", "dtmf"), "contacts", "customText1", deadline=self.deadline()) is None  # fmt: skip
        assert fake.requests == []

    async def test_field_names_cannot_inject(self, fake, connector):
        with pytest.raises(UnexpectedResponse, match="not a Bullhorn field name"):
            await connector.fetch(LookupKey(CALLER, "caller_id"), "contacts", "name),owner(password", deadline=self.deadline())  # fmt: skip
        assert fake.requests == []

    async def test_rate_limit_headers_are_kept_and_warned_about(self, fake, connector, caplog):
        fake.state["rl_remaining"] = 100
        await connector.find_record(LookupKey(CALLER, "caller_id"), "leads", deadline=self.deadline())
        assert connector.rate_limit == (99, 1500)
        assert "99 of 1500 API requests left (resets in 42 s)" in caplog.text

    async def test_429_without_room_is_rate_limited(self, fake, connector):
        await connector.authenticate(deadline=self.deadline())
        fake.fail_next(429, {"errorMessage": "Too many requests", "errorCode": 429}, headers={"Retry-After": "60"}, times=2)
        with pytest.raises(RateLimited):
            await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline(2))

    # --- call logging ---------------------------------------------------------------------------------

    async def test_note_body(self, fake, connector):
        fake.records = [self.record()]
        record = await connector.find_record(LookupKey(CALLER, "caller_id"), "contacts", deadline=self.deadline())
        note_id = await connector.log_call(self.call(record), LogOptions(inbound_answered=True), deadline=self.deadline())  # fmt: skip
        [note] = fake.activities
        assert note_id == str(note["id"])
        assert {k: v for k, v in note.items() if k not in ("id", "comments")} == {
            "personReference": {"id": 10451}, "action": "Inbound Call", "minutesSpent": 2,
            "dateAdded": int(datetime(2026, 11, 26, 9, 30, tzinfo=timezone.utc).timestamp() * 1000),
            "externalID": "1795657573.1"}  # fmt: skip
        assert note["comments"].startswith(f"Inbound call from {CALLER}\nAnswered by 201 after 6 s")
        check, create = fake.api_requests()[-2:]
        assert check.path == f"{REST}entity/ClientContact/10451/notes"
        assert check.params == {"fields": "id,externalID", "count": "50", "orderBy": "-dateAdded"}
        assert (create.method, create.path) == ("PUT", f"{REST}entity/Note")

    async def test_outbound_action_and_a_candidate(self, fake, http):
        connector = self.build(fake, http, note_action_outbound="Outbound Dial")
        fake.records = [self.candidate(0)]
        call = self.call(None, "c-7")
        call.direction, call.subject = "outbound", ""
        await connector.log_call(call, LogOptions(), deadline=self.deadline())
        [note] = fake.activities
        assert note["action"] == "Outbound Dial" and note["personReference"] == {"id": 20000}
        assert note["comments"].startswith(f"Outbound call to {CALLER}")

    async def test_a_company_from_routing_is_not_a_person(self, fake, connector):
        company = Record(module="ClientCorporation", id="3120", fields={})
        fake.records = [FakeRecord(module="accounts", id="3120", phone="(415) 555-2671"), self.record()]
        await connector.log_call(self.call(company), LogOptions(), deadline=self.deadline())
        assert fake.activities[0]["personReference"] == {"id": 10451}

    async def test_an_unknown_caller_is_not_logged_without_create_unknown(self, fake, connector):
        assert await connector.log_call(self.call(None, "c-8"), LogOptions(), deadline=self.deadline()) == ""
        assert fake.activities == [] and fake.created == []

    async def test_an_unknown_caller_becomes_a_candidate_when_asked(self, fake, http):
        connector = self.build(fake, http, create_as="candidates", new_record_status="New Lead")
        await connector.log_call(self.call(None, "c-9"), LogOptions(create_unknown=True), deadline=self.deadline())
        [created] = fake.created
        assert created == {"id": "70001", "entity": "Candidate", "firstName": "Unknown", "lastName": f"Caller {CALLER}",
                           "name": f"Unknown Caller {CALLER}", "phone": CALLER, "status": "New Lead"}  # fmt: skip
        assert fake.activities[0]["personReference"] == {"id": 70001}

    async def test_a_note_someone_else_logged_is_found(self, fake, connector):
        fake.records = [self.record()]
        fake.activities = [{"id": 8123, "personReference": {"id": 10451}, "externalID": "1795657573.1",
                            "comments": "x", "dateAdded": 1}]  # fmt: skip
        assert await connector.log_call(self.call(None), LogOptions(), deadline=self.deadline()) == "8123"
        assert len(fake.activities) == 1


def form(recorded) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(recorded.body.decode()).items()}


async def http_get(connector, url: str):
    from crmroute.connectors._http import send_capped

    return await send_capped(connector.http, "GET", url, timeout=5, kind="bullhorn", operation="test")


def test_helpers():
    assert phone_terms("+442079460958", "GB") == ["2079460958", "442079460958", "02079460958"]
    assert phone_terms("ab", "US") == []
    assert lucene_phrase('a"b\\c') == '"a\\"b\\\\c"'
    assert field_list(["owner.email", "owner.firstName", "customText1"]) == \
        "id,name,dateLastModified,owner(email,firstName),customText1"  # fmt: skip
    assert split_fields("id,a(b,c(d)),e") == [("id", ""), ("a", "b,c(d)"), ("e", "")]
    assert urlsplit("https://x/y?code=1").query == "code=1" and parse_qs("code=22%3Aab")["code"] == ["22:ab"]


# --- users (agents sync) ------------------------------------------------------------------------


async def test_list_users_queries_the_enabled_corporate_users(fake):
    from crmroute.connectors._http import make_client
    from crmroute.settings import Settings

    fake.state["users"] = [{"id": 1000 + i, "firstName": "Agent", "lastName": str(i), "email": f"agent{i}@example.com",
                            "enabled": True} for i in range(700)]  # fmt: skip
    fake.state["users"].append({"id": 5, "firstName": "Gone", "lastName": "", "email": "gone@example.com", "enabled": False})
    http = make_client(Settings(ca_bundle=fake.ca_path))
    try:
        users = await TestBullhorn().build(fake, http).list_users(deadline=TestBullhorn.deadline())
    finally:
        await http.aclose()
    assert len(users) == 700 and fake.state["user_pages"] == 2 and "5" not in {u.id for u in users}
    assert (users[0].id, users[0].name, users[0].email) == ("1000", "Agent 0", "agent0@example.com")
    pages = [r for r in fake.api_requests() if r.path.endswith("query/CorporateUser")]
    assert [r.params["start"] for r in pages] == ["0", "500"] and pages[0].params["where"] == "enabled=true"
