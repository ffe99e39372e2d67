"""Vtiger CRM against a strict loopback fake of its webservice (reference section 9).

The fake serves ``/webservice.php`` as Vtiger does: ``getchallenge`` and ``query``,
``retrieve``, ``describe`` (and, when ``fake.state["cloud"]`` is set, ``lookup``) read
their parameters from the query string of a GET, ``login`` and ``create`` from the
form body of a POST (``OperationManager`` reads one or the other), and every answer
is HTTP 200 ``{"success": true, "result": ...}`` or ``{"success": false, "error":
{"code", "message"}}``. ``login`` checks ``md5(challenge token + access key)``;
sessions are ``fake.tokens`` (an unknown one is ``INVALID_SESSIONID``). ``query``
runs VTQL through a tokenizer with the VTQL lexer's own patterns (strings are
``'(?:[^']|'')+'``) and then reads every string literal the way MySQL would (backslash
escapes, ``''``): if MySQL would end a string anywhere but where the lexer did, the
statement could be injected into, and the fake answers ``DATABASE_QUERY_ERROR`` and
records it in ``fake.state["injections"]``. Unknown columns are ``ACCESS_DENIED``
"Permission to access 'X' attribute denied", as VTQL answers; comparisons are
case-insensitive (MySQL's default collation); ``LIKE`` honours ``%``, ``_`` and
backslash escapes; ``AND`` binds tighter than ``OR``; at most 100 rows come back.
``create`` checks mandatory fields and reference ids and, like Vtiger, ignores names
the module lacks (recorded in ``fake.state["ignored"]``).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from datetime import datetime, timezone
from typing import Any

import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from crmroute.connectors._phone import digits_of
from crmroute.connectors.base import Record
from crmroute.connectors.vtiger import VtigerConnector, VtigerSettings, vtql_literal
from crmroute.errors import AuthError, ConnectorUnavailable, UnexpectedResponse
from crmroute.routing.engine import LookupKey
from crmroute.schemas import LogOptions
from tests.connectors.contract import CALLER, OTHER_PHONE, ConnectorContract
from tests.connectors.fakecrm import FakeRecord, VendorFake, vendor_fixtures

USERNAME, ACCESS_KEY = "crmroute", "Xy7pQ2rT9vK4mN8s"
RULE_USER, RULE_KEY = "agent.smith", "RuleKey5aB6cD7eF"
USERS = {USERNAME: (ACCESS_KEY, "19x5"), RULE_USER: (RULE_KEY, "19x7")}
WS = "/webservice.php"

MODULE_OF = {"contacts": "Contacts", "leads": "Leads", "accounts": "Accounts"}
PREFIX = {"Leads": "10", "Accounts": "11", "Contacts": "12", "Events": "18", "Users": "19", "Groups": "20"}
PHONES = {"Contacts": ("phone", "mobile", "homephone", "otherphone", "fax"), "Leads": ("phone", "mobile", "fax"),
          "Accounts": ("phone", "otherphone", "fax")}  # fmt: skip
COMMON = {"id", "assigned_user_id", "createdtime", "modifiedtime", "description", "source"}
SCHEMA: dict[str, set[str]] = {
    "Contacts": COMMON | set(PHONES["Contacts"]) | {"salutationtype", "firstname", "lastname", "contact_no", "email",
                                                   "account_id", "title", "department", "leadsource", "cf_851",
                                                   "cf_853", "cf_855"},
    "Leads": COMMON | set(PHONES["Leads"]) | {"firstname", "lastname", "company", "email", "leadstatus",
                                             "leadsource", "lead_no", "cf_871", "cf_873"},
    "Accounts": COMMON | set(PHONES["Accounts"]) | {"accountname", "account_no", "website", "industry",
                                                   "account_id", "cf_861", "cf_863"},
    "Events": COMMON | {"subject", "activitytype", "eventstatus", "date_start", "time_start", "due_date", "time_end",
                        "duration_hours", "duration_minutes", "contact_id", "parent_id", "visibility", "location",
                        "taskpriority", "sendnotification", "recurringtype"},
    "Users": {"id", "user_name", "first_name", "last_name", "email1", "status"},
}  # fmt: skip
REFERENCES = {"account_id": {"Accounts"}, "contact_id": {"Contacts"}, "parent_id": {"Accounts", "Leads"},
              "assigned_user_id": {"Users", "Groups"}}  # fmt: skip
MANDATORY = {"Contacts": ("lastname", "assigned_user_id"), "Leads": ("lastname", "assigned_user_id"),
             "Accounts": ("accountname", "assigned_user_id"),
             "Events": ("subject", "date_start", "time_start", "due_date", "time_end", "duration_hours",
                        "eventstatus", "activitytype", "assigned_user_id")}  # fmt: skip
OPERATIONS = {"getchallenge": ("GET", True), "login": ("POST", True), "query": ("GET", False),
              "retrieve": ("GET", False), "describe": ("GET", False), "create": ("POST", False),
              "listtypes": ("GET", False), "logout": ("POST", False), "lookup": ("GET", False)}  # fmt: skip
ACCOUNT = {"id": "11x22", "accountname": "Acme Corp", "industry": "Energy"}
OWNER = {"id": "19x5", "user_name": "crmroute", "first_name": "Cal", "last_name": "Router", "email1": "cal@example.com"}

# The VTQL lexer's token patterns (VTQL_Lexer.php), in its order.
_TOKEN = re.compile(r"(?P<ws>[ \t\r\n]+)|(?P<word>\w+)|(?P<str>'(?:[^']|'')+')|(?P<punct>[()])|"
                    r"(?P<num>[+-]?\d+)|(?P<op><=|>=|!=|=|<|>)|(?P<sep>[,*;])")  # fmt: skip
KEYWORDS = {"select", "from", "where", "and", "or", "like", "in", "order", "by", "asc", "desc", "limit"}


class WsError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def vt_date(iso: str) -> str:
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def mysql_string(token: str) -> str:
    """The value MySQL reads from a lexer string token; ``WsError`` when MySQL would end it elsewhere."""
    out, i, end = [], 1, len(token) - 1
    escapes = {"0": "\0", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a", "b": "\b"}
    while True:
        if i > end:
            raise WsError("DATABASE_QUERY_ERROR", "Database query error (unterminated string)")
        ch = token[i]
        if ch == "\\":
            if i + 1 > end:
                raise WsError("DATABASE_QUERY_ERROR", "Database query error (escaped closing quote)")
            nxt = token[i + 1]
            out.append("\\" + nxt if nxt in "%_" else escapes.get(nxt, nxt))  # LIKE keeps \% and \_
            i += 2
            continue
        if ch == "'":
            if i + 1 <= end and token[i + 1] == "'" and i + 1 != end:
                out.append("'")
                i += 2
                continue
            if i != end:
                raise WsError("DATABASE_QUERY_ERROR", "Database query error (the string ends early)")
            return "".join(out)
        out.append(ch)
        i += 1


def like_regex(pattern: str) -> re.Pattern[str]:
    parts, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            parts.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        parts.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("".join(parts), re.I | re.S)


def tokenize(vtql: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(vtql):
        found = _TOKEN.match(vtql, position)
        if not found:
            raise WsError("QUERY_SYNTAX_ERROR", f"Unexpected input at line1: {vtql[position]}")
        position = found.end()
        if found.lastgroup != "ws":
            tokens.append((found.lastgroup or "", found.group()))
    return tokens


class Vtql:
    """A parsed ``SELECT``: columns, module, OR-of-AND conditions, order, limit."""

    def __init__(self, vtql: str) -> None:
        self.tokens = tokenize(vtql)
        self.i = 0
        self.expect("select")
        self.columns = [self.word()]
        while self.peek(","):
            self.i += 1
            self.columns.append(self.word())
        self.expect("from")
        self.module = self.word()
        self.where: list[list[tuple[str, str, Any]]] = []
        self.order: tuple[str, bool] | None = None
        self.limit = 100
        if self.peek("where"):
            self.i += 1
            group = [self.condition()]
            while self.peek("and") or self.peek("or"):
                joiner = self.take()[1].lower()
                if joiner == "or":
                    self.where.append(group)
                    group = []
                group.append(self.condition())
            self.where.append(group)
        if self.peek("order"):
            self.i += 1
            self.expect("by")
            column = self.word()
            descending = False
            if self.peek("asc") or self.peek("desc"):
                descending = self.take()[1].lower() == "desc"
            self.order = (column, descending)
        self.offset = 0
        if self.peek("limit"):
            self.i += 1
            self.limit = min(100, int(self.take()[1]))
            if self.peek(","):  # LIMIT offset, count
                self.i += 1
                self.offset, self.limit = self.limit, min(100, int(self.take()[1]))
        self.expect(";")
        if self.i != len(self.tokens):
            raise WsError("QUERY_SYNTAX_ERROR", f"Syntax Error on line 1: token '{self.tokens[self.i][1]}'")

    def peek(self, text: str) -> bool:
        return self.i < len(self.tokens) and self.tokens[self.i][1].lower() == text

    def take(self) -> tuple[str, str]:
        if self.i >= len(self.tokens):
            raise WsError("QUERY_SYNTAX_ERROR", "Parsing failed")
        self.i += 1
        return self.tokens[self.i - 1]

    def expect(self, text: str) -> None:
        kind, value = self.take()
        if value.lower() != text:
            raise WsError("QUERY_SYNTAX_ERROR", f"Syntax Error on line 1: token '{value}' Unexpected, expected {text}")

    def word(self) -> str:
        kind, value = self.take()
        if kind != "word" or value.lower() in KEYWORDS:
            raise WsError("QUERY_SYNTAX_ERROR", f"Syntax Error on line 1: token '{value}' Unexpected")
        return value

    def value(self) -> str:
        kind, value = self.take()
        if kind == "str":
            return mysql_string(value)
        if kind in ("num", "word") and value.lstrip("+-").isdigit():
            return value
        raise WsError("QUERY_SYNTAX_ERROR", f"Syntax Error on line 1: token '{value}' Unexpected VALUE")

    def condition(self) -> tuple[str, str, Any]:
        column = self.word()
        kind, op = self.take()
        op = op.lower()
        if op == "in":
            self.expect("(")
            values = [self.value()]
            while self.peek(","):
                self.i += 1
                values.append(self.value())
            self.expect(")")
            return column, "in", values
        if op not in ("=", "!=", "<", ">", "<=", ">=", "like"):
            raise WsError("QUERY_SYNTAX_ERROR", f"Syntax Error on line 1: token '{op}' Unexpected")
        return column, op, self.value()


def make_app(fake: VendorFake) -> Starlette:
    fake.auth_paths = ()  # one path serves login and API alike: tests tell them apart by operation

    def ok(result: Any) -> JSONResponse:
        return JSONResponse({"success": True, "result": result})

    def failure(code: str, message: str) -> JSONResponse:
        return JSONResponse({"success": False, "error": {"code": code, "message": message}})

    # --- data ------------------------------------------------------------------------------

    def related_records() -> dict[str, dict[str, Any]]:
        found = {OWNER["id"]: OWNER | {"_module": "Users"}}
        for record in fake.records:
            for value in record.fields.values():
                if isinstance(value, dict) and str(value.get("id", "")).startswith(PREFIX["Accounts"] + "x"):
                    found[value["id"]] = value | {"_module": "Accounts"}
        return found

    def values(record: FakeRecord) -> dict[str, Any]:
        vmodule = MODULE_OF[record.module]
        first, _, last = record.name.rpartition(" ")
        row: dict[str, Any] = {"id": record.id, "modifiedtime": vt_date(record.modified), "assigned_user_id": "19x5",
                               PHONES[vmodule][0]: record.phone}  # fmt: skip
        if vmodule == "Accounts":
            row["accountname"] = record.name
        else:
            row["firstname"], row["lastname"] = first, last
        for name, value in record.fields.items():
            row[name] = value["id"] if isinstance(value, dict) else value
        return row

    def rows_of(vmodule: str) -> list[dict[str, Any]]:
        if vmodule == "Users":  # fake.state["users"]: id (19x..), user_name, first_name, last_name, email1, status
            return [dict(u) for u in fake.state.get("users", [])]
        if vmodule == "Events":
            return [dict(a) for a in fake.activities]
        return [values(r) for r in fake.records if MODULE_OF[r.module] == vmodule]

    def text(value: Any) -> str:
        return "" if value is None else str(value)

    def compare(row: dict[str, Any], column: str, op: str, wanted: Any) -> bool:
        actual = text(row.get(column))
        if column == "id" or column in REFERENCES:  # VTQL compares the record number of an id
            number = lambda v: v.split("x", 1)[1] if "x" in v else None  # noqa: E731
            if op == "in":
                return number(actual) in {number(w) for w in wanted}
            if number(wanted) is None:
                raise WsError("DATABASE_QUERY_ERROR", "Database query error")
            actual, wanted = number(actual) or "", number(wanted)
        if op == "like":
            return bool(like_regex(wanted).fullmatch(actual))
        if op == "in":
            return actual.casefold() in {w.casefold() for w in wanted}
        a, w = actual.casefold(), str(wanted).casefold()
        return {"=": a == w, "!=": a != w, "<": a < w, ">": a > w, "<=": a <= w, ">=": a >= w}[op]

    def run_query(vtql: str) -> list[dict[str, Any]]:
        fake.state.setdefault("queries", []).append(vtql)
        try:
            parsed = Vtql(vtql)
        except WsError as exc:
            if exc.code == "DATABASE_QUERY_ERROR":
                fake.state.setdefault("injections", []).append(vtql)
            raise
        if parsed.module not in SCHEMA or (parsed.module == "Users" and not fake.state.get("admin")):  # admins only
            raise WsError("ACCESS_DENIED", "Permission to perform the operation is denied")
        known = SCHEMA[parsed.module]
        for column in parsed.columns:
            if column != "*" and column not in known:
                raise WsError("ACCESS_DENIED", f"Permission to access '.{column}.' attribute denied.")
        for group in parsed.where:
            for column, _, _ in group:
                if column not in known:
                    raise WsError("ACCESS_DENIED", f"Permission to access {column} attribute denied.")
        if parsed.order and parsed.order[0] not in known:
            raise WsError("ACCESS_DENIED", f"Permission to access {parsed.order[0]} attribute denied.")
        rows = [r for r in rows_of(parsed.module)
                if not parsed.where or any(all(compare(r, c, o, v) for c, o, v in g) for g in parsed.where)]  # fmt: skip
        if parsed.order:
            rows.sort(key=lambda r: text(r.get(parsed.order[0])), reverse=parsed.order[1])
        columns = sorted(known) if "*" in parsed.columns else list(dict.fromkeys(parsed.columns + ["id"]))
        return [{c: text(r.get(c)) for c in columns} for r in rows[parsed.offset: parsed.offset + parsed.limit]]

    def retrieve(record_id: str) -> dict[str, Any]:
        for vmodule in ("Contacts", "Leads", "Accounts", "Events"):
            for row in rows_of(vmodule):
                if row["id"] == record_id:
                    return {c: text(row.get(c)) for c in sorted(SCHEMA[vmodule])}
        related = related_records().get(record_id)
        if related is not None:
            return {k: v for k, v in related.items() if k != "_module"}
        raise WsError("RECORD_NOT_FOUND", "Record you are trying to access is not found")

    def describe(vmodule: str) -> dict[str, Any]:
        if vmodule not in SCHEMA:
            raise WsError("ACCESS_DENIED", "Permission to perform the operation is denied for name")
        fields = [{"name": f, "label": f, "mandatory": f in MANDATORY.get(vmodule, ()), "type": {"name": "string"},
                   "nullable": True, "editable": True} for f in sorted(SCHEMA[vmodule])]  # fmt: skip
        return {"label": vmodule, "name": vmodule, "createable": True, "updateable": True, "deleteable": True,
                "retrieveable": True, "fields": fields, "idPrefix": PREFIX[vmodule], "isEntity": True,
                "labelFields": "lastname"}  # fmt: skip

    def create(vmodule: str, element_json: str, user_id: str) -> dict[str, Any]:
        if vmodule not in MANDATORY:
            raise WsError("ACCESS_DENIED", "Permission to perform the operation is denied for name")
        try:
            element = json.loads(element_json)
        except ValueError:
            raise WsError("INVALID_PARAMETER", "element is not valid JSON") from None
        if not isinstance(element, dict):
            raise WsError("INVALID_PARAMETER", "element is not a JSON object")
        fake.state.setdefault("ignored", []).extend(f"{vmodule}.{k}" for k in element if k not in SCHEMA[vmodule])
        element = {k: v for k, v in element.items() if k in SCHEMA[vmodule]}
        for name in MANDATORY[vmodule]:
            if element.get(name) in (None, ""):
                raise WsError("MANDATORY_FIELDS_MISSING", f"{name} does not have a value")
        known_ids = {r["id"]: m for m in ("Contacts", "Leads", "Accounts") for r in rows_of(m)}
        known_ids |= {i: r["_module"] for i, r in related_records().items()}
        for name, modules in REFERENCES.items():
            value = element.get(name)
            if value in (None, ""):
                continue
            if name == "assigned_user_id":
                if value not in {uid for _, uid in USERS.values()}:
                    raise WsError("ACCESS_DENIED", "Cannot assign record to the given user")
            elif known_ids.get(value) not in modules:
                raise WsError("REFERENCE_INVALID", f"{name} has an invalid reference {value}")
        new_id = f"{PREFIX[vmodule]}x{secrets.randbelow(90000) + 10000}"
        stored = element | {"id": new_id, "modifiedtime": vt_date(datetime.now(timezone.utc).isoformat())}
        if vmodule == "Events":
            fake.activities.append(stored)
        else:
            fake.created.append(stored | {"_module": vmodule})
            module = {v: k for k, v in MODULE_OF.items()}[vmodule]
            fake.records.append(FakeRecord(module=module, id=new_id, phone=str(element.get("phone") or ""),
                                           name=str(element.get("lastname") or element.get("accountname")),
                                           modified=datetime.now(timezone.utc).isoformat()))  # fmt: skip
        return {c: text(stored.get(c)) for c in sorted(SCHEMA[vmodule])}

    def lookup(params: dict[str, str]) -> list[dict[str, Any]]:
        if params.get("type") != "phone" or not params.get("value"):
            raise WsError("INVALID_PARAMETER", "type and value are required")
        try:
            search_in = json.loads(params.get("searchIn") or "{}")
        except ValueError:
            raise WsError("INVALID_PARAMETER", "searchIn is not valid JSON") from None
        wanted = digits_of(params["value"])
        found = []
        for vmodule, fields in search_in.items():
            for row in rows_of(vmodule):
                if any(digits_of(text(row.get(f))).endswith(wanted) for f in fields if f in SCHEMA[vmodule]):
                    found.append({"id": row["id"], "label": text(row.get("lastname") or row.get("accountname"))})
        return found

    # --- the endpoint ------------------------------------------------------------------------

    async def webservice(request: Request) -> Response:
        form: dict[str, str] = {}
        if request.method == "POST":
            if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
                form = {k: str(v) for k, v in (await request.form()).items()}
        query = dict(request.query_params)
        everything = query | form  # $_REQUEST
        name = everything.get("operation", "").lower()
        fake.state.setdefault("operations", []).append((request.method, name))
        if name not in OPERATIONS or (name == "lookup" and not fake.state.get("cloud")):
            return failure("UNKNOWN_OPERATION", "Unknown operation requested")
        method, prelogin = OPERATIONS[name]
        params = query if method == "GET" else form  # what the operation reads: $_GET or $_POST only
        session = everything.get("sessionName", "")
        if not prelogin:
            if not session or session.lower() == "null":
                return failure("AUTHENTICATION_REQUIRED", "Authencation required")
            if session not in fake.tokens:
                return failure("INVALID_SESSIONID", "Session Identifier provided is Invalid")
        try:
            if name == "getchallenge":
                token = secrets.token_hex(6)
                fake.state.setdefault("challenges", {})[params.get("username", "")] = (token, time.time() + 300)
                return ok({"token": token, "serverTime": int(time.time()), "expireTime": int(time.time()) + 300})
            if name == "login":
                username = params.get("username", "")
                token, expires = fake.state.get("challenges", {}).get(username, ("", 0.0))
                if not token or expires < time.time():
                    return failure("INVALID_AUTH_TOKEN", "Specified token is invalid or expired")
                key, user_id = USERS.get(username, ("", ""))
                expected = hashlib.md5((token + key).encode()).hexdigest()
                if fake.reject_credentials or not key or params.get("accessKey") != expected:
                    # Also what a login answered with a challenge another getchallenge replaced gets: Vtiger
                    # keeps one live challenge per user.
                    fake.state["login_failures"] = fake.state.get("login_failures", 0) + 1
                    return failure("INVALID_USER_CREDENTIALS", "Invalid username or password")
                fake.state.setdefault("logins", []).append(username)
                return ok({"sessionName": fake.issue_token("vt"), "userId": user_id, "version": "0.22",
                           "vtigerVersion": "7.5.0"})  # fmt: skip
            if name == "query":
                return ok(run_query(params.get("query", "")))
            if name == "retrieve":
                return ok(retrieve(params.get("id", "")))
            if name == "describe":
                return ok(describe(params.get("elementType", "")))
            if name == "listtypes":
                types = ["Contacts", "Accounts", "Leads", "Events", "Users"]
                return ok({"types": types, "information": {t: {"isEntity": True, "label": t} for t in types}})
            if name == "lookup":
                return ok(lookup(params))
            if name == "create":
                return ok(create(params.get("elementType", ""), params.get("element", ""), ""))
            return ok({"message": "successful"})
        except WsError as exc:
            return failure(exc.code, exc.message)

    async def elsewhere(request: Request) -> Response:
        return Response("Not Found", 404, media_type="text/html")

    return Starlette(routes=[
        Route(WS, webservice, methods=["GET", "POST"]),
        Route("/{path:path}", elsewhere, methods=["GET", "POST", "PUT", "DELETE"]),
    ])  # fmt: skip


fake_server, fake = vendor_fixtures(make_app)

CONTACT_IDS = ("12x345", "12x346", "12x347")
KEY = LookupKey(CALLER, "caller_id")


def operations(fake: VendorFake, *names: str) -> list[Any]:
    return [r for r in fake.requests if (r.params.get("operation") or _form(r).get("operation")) in names]


def _form(recorded: Any) -> dict[str, str]:
    from urllib.parse import parse_qsl

    return dict(parse_qsl(recorded.body.decode())) if recorded.method == "POST" else {}


class TestVtiger(ConnectorContract):
    OWNER_FIELDS = {"assigned_user_id": "19x5"}
    OWNER_ID = "19x5"
    kind = "vtiger"
    MODULE = "contacts"
    FIELD = "cf_851"  # a custom field (Contacts: Status)
    NESTED_FIELD = "account_id.accountname"  # a reference field's id, resolved with retrieve
    NESTED_FIELDS = {"account_id": ACCOUNT}
    NESTED_VALUE = "Acme Corp"
    IDS = CONTACT_IDS
    KEY_FIELD = "cf_853"
    REQUESTS_PER_CALL = (1, 1)
    MOBILE_FIELDS = {"contacts": "mobile", "leads": "mobile"}  # Accounts have phone/otherphone/fax, no mobile
    CUSTOM_FIELDS = {"contacts": "cf_851", "leads": "cf_871", "accounts": "cf_861"}  # each module numbers its own

    def field_for(self, module: str) -> str:
        return self.CUSTOM_FIELDS[module]

    def settings(self, fake: VendorFake) -> dict[str, Any]:
        return {"site_url": fake.base_url, "username": USERNAME, "access_key": ACCESS_KEY}

    # --- auth --------------------------------------------------------------------------------

    async def test_challenge_then_login_then_the_session(self, fake, connector):
        fake.records = [self.record()]
        await connector.fetch(KEY, "contacts", self.FIELD, deadline=self.deadline())
        challenge, login, query = fake.requests
        assert challenge.method == "GET" and challenge.path == WS
        assert challenge.params == {"operation": "getchallenge", "username": USERNAME}
        token = fake.state["challenges"][USERNAME][0]
        assert login.method == "POST" and login.headers["content-type"].startswith("application/x-www-form-urlencoded")
        assert _form(login) == {"operation": "login", "username": USERNAME,
                                "accessKey": hashlib.md5((token + ACCESS_KEY).encode()).hexdigest()}  # fmt: skip
        assert query.method == "GET" and query.params["operation"] == "query"
        assert query.params["sessionName"] in fake.tokens and "authorization" not in query.headers
        assert ACCESS_KEY not in json.dumps([r.query + r.body.decode() for r in fake.requests])

    async def test_the_rules_credentials_win(self, fake, http):
        settings = VtigerSettings.model_validate(self.settings(fake))
        connector = VtigerConnector(settings, http, username=RULE_USER, password=RULE_KEY)
        await connector.authenticate(deadline=self.deadline())
        assert fake.state["logins"] == [RULE_USER] and connector._token.extra["user_id"] == "19x7"

    async def test_a_wrong_access_key_is_explained(self, fake, http):
        connector = self.build(fake, http, access_key="not-the-key")
        with pytest.raises(AuthError) as caught:
            await connector.authenticate(deadline=self.deadline())
        text = str(caught.value)
        assert "INVALID_USER_CREDENTIALS" in text and USERNAME in text and "access key" in text
        assert "not-the-key" not in text

    async def test_a_session_left_idle_logs_in_again_once(self, fake, connector):
        fake.records = [self.record()]
        await connector.authenticate(deadline=self.deadline())
        fake.fail_next(200, {"success": False, "error": {"code": "SESSION_LEFT_IDLE",
                                                         "message": "Session has been invalidated to due lack activity"}})  # fmt: skip
        assert await connector.fetch(KEY, "contacts", self.FIELD, deadline=self.deadline()) == "GOLD"
        assert fake.token_requests == 2

    async def test_a_session_refused_twice_is_an_auth_error(self, fake, connector):
        await connector.authenticate(deadline=self.deadline())
        fake.fail_next(200, {"success": False, "error": {"code": "INVALID_SESSIONID",
                                                         "message": "Session Identifier provided is Invalid"}}, times=3)  # fmt: skip
        with pytest.raises(AuthError, match="INVALID_SESSIONID"):
            await connector.fetch(KEY, "contacts", self.FIELD, deadline=self.deadline())

    async def test_an_idle_session_is_renewed_before_calling(self, fake, connector):
        fake.records = [self.record()]
        await connector.fetch(KEY, "contacts", self.FIELD, deadline=self.deadline())
        connector._last_used = time.monotonic() - 1700  # Vtiger drops it after 1800 s idle
        await connector.fetch(KEY, "contacts", self.FIELD, deadline=self.deadline())
        assert fake.token_requests == 2
        assert [op for _, op in fake.state["operations"]] == ["getchallenge", "login", "query", "getchallenge",
                                                               "login", "query"]  # fmt: skip

    async def test_the_session_lives_a_day(self, fake, connector):
        token = await connector.authenticate(deadline=self.deadline())
        assert 86000 < token.expires_at - time.monotonic() <= 86400

    async def test_no_credentials_at_all_is_misconfigured(self, fake, http):
        connector = self.build(fake, http, username="", access_key=None)
        with pytest.raises(AuthError) as caught:
            await connector.authenticate(deadline=self.deadline())
        assert caught.value.reason == "misconfigured" and fake.requests == []

    def test_settings_are_checked(self, fake):
        base = self.settings(fake)
        assert VtigerSettings.model_validate(base | {"site_url": fake.base_url + "/webservice.php"}).site_url == fake.base_url  # fmt: skip
        with pytest.raises(ValidationError, match="https"):
            VtigerSettings.model_validate(base | {"site_url": "http://crm.example.com"})
        with pytest.raises(ValidationError):
            VtigerSettings.model_validate(base | {"phone_search": "magic"})

    # --- phone search ------------------------------------------------------------------------

    async def test_one_query_with_digit_wildcards_on_every_phone_field(self, fake, connector):
        fake.records = [self.record()]
        await connector.fetch(KEY, "contacts", self.FIELD, deadline=self.deadline())
        pattern = "'%4%1%5%5%5%5%2%6%7%1'"
        assert fake.state["queries"] == [
            "SELECT id, modifiedtime, firstname, lastname, account_id, phone, mobile, homephone, otherphone, cf_851 "
            f"FROM Contacts WHERE phone LIKE {pattern} OR mobile LIKE {pattern} OR homephone LIKE {pattern} OR "
            f"otherphone LIKE {pattern} ORDER BY modifiedtime DESC LIMIT 100;"]  # fmt: skip

    async def test_phone_formats_vtiger_stores(self, fake, connector):
        for stored in ["+1 415-555-2671", "415.555.2671", "(415) 555-2671", "14155552671", "4155552671",
                       "+1 (415) 555 2671", "41 55 55 26 71", "001 415 555 2671"]:
            fake.records = [self.record(phone=stored)]
            assert await connector.fetch(KEY, "contacts", self.FIELD, deadline=self.deadline()) == "GOLD", stored

    async def test_loose_candidates_are_verified(self, fake, connector):
        fake.records = [self.record(phone="+1 415 555 2671 ext 61")]  # the LIKE matches; the number is not the caller's
        assert await connector.find_record(KEY, "contacts", deadline=self.deadline()) is None

    async def test_mobile_and_home_phones_are_searched(self, fake, connector):
        fake.records = [self.record(phone="", fields={self.FIELD: "GOLD", "homephone": "415-555-2671"})]
        assert await connector.fetch(KEY, "contacts", self.FIELD, deadline=self.deadline()) == "GOLD"

    async def test_a_gb_number_stored_with_its_trunk_prefix(self, fake, connector):
        fake.records = [self.record(phone="020 7946 0958")]
        record = await connector.find_record(LookupKey("+442079460958", "caller_id"), "contacts",
                                             deadline=self.deadline())  # fmt: skip
        assert record is not None and record.id == CONTACT_IDS[0]

    async def test_garbage_numbers_ask_nothing(self, fake, connector):
        assert await connector.find_record(LookupKey("12", "caller_id"), "contacts", deadline=self.deadline()) is None
        assert fake.requests == []

    @pytest.mark.parametrize("module, vmodule, phones, custom", [
        ("accounts", "Accounts", ("phone", "otherphone"), "cf_861"),
        ("leads", "Leads", ("phone", "mobile"), "cf_871"),
    ])  # fmt: skip
    async def test_each_module_maps_to_its_own(self, fake, connector, module, vmodule, phones, custom):
        other_id = f"{PREFIX[vmodule]}x901"
        fake.records = [FakeRecord(module=module, id=other_id, phone="(415) 555-2671", fields={custom: "SILVER"}),
                        self.record()]  # fmt: skip
        record = await connector.find_record(KEY, module, fields=[custom], deadline=self.deadline())
        assert record.module == vmodule and record.id == other_id and record.matches == 1
        assert record.fields[custom] == "SILVER"
        assert record.url == f"{fake.base_url}/index.php?module={vmodule}&view=Detail&record=901"
        [query] = fake.state["queries"]
        assert f"FROM {vmodule} WHERE " in query
        assert [c.split(" LIKE ")[0] for c in query.split(" WHERE ")[1].split(" ORDER")[0].split(" OR ")] == list(phones)

    async def test_oldest_pick_orders_ascending(self, fake, http):
        connector = self.build(fake, http, match_pick="oldest")
        await connector.find_record(KEY, "contacts", deadline=self.deadline())
        assert fake.state["queries"][0].endswith("ORDER BY modifiedtime ASC LIMIT 100;")

    async def test_the_lookup_operation_on_vtiger_cloud(self, fake, http):
        fake.state["cloud"] = True
        connector = self.build(fake, http, phone_search="lookup")
        fake.records = [self.record(), self.record(1, phone="+1 415 555 0000")]
        assert await connector.fetch(KEY, "contacts", self.FIELD, deadline=self.deadline()) == "GOLD"
        [lookup] = operations(fake, "lookup")
        assert lookup.method == "GET" and lookup.params["type"] == "phone" and lookup.params["value"] == "4155552671"
        assert json.loads(lookup.params["searchIn"]) == {"Contacts": ["phone", "mobile", "homephone", "otherphone"]}
        assert fake.state["queries"][0].split(" WHERE ")[1].startswith("id IN ('12x345') ORDER BY")

    async def test_lookup_on_an_open_source_build_says_what_to_do(self, fake, http):
        connector = self.build(fake, http, phone_search="lookup")
        with pytest.raises(UnexpectedResponse, match="set phone_search to query"):
            await connector.fetch(KEY, "contacts", self.FIELD, deadline=self.deadline())

    # --- fields ---------------------------------------------------------------------------------

    async def test_a_reference_is_read_with_retrieve(self, fake, connector):
        fake.records = [self.record()]
        assert await connector.fetch(KEY, "contacts", "account_id.industry", deadline=self.deadline()) == "Energy"
        [retrieve] = operations(fake, "retrieve")
        assert retrieve.method == "GET" and retrieve.params["id"] == "11x22"
        assert "account_id" in fake.state["queries"][0].split(" FROM ")[0]

    async def test_the_owner_is_a_reference_too(self, fake, connector):
        fake.records = [self.record()]
        assert await connector.fetch(KEY, "contacts", "assigned_user_id.email1", deadline=self.deadline()) == "cal@example.com"  # fmt: skip

    async def test_an_empty_reference_is_none_without_a_retrieve(self, fake, connector):
        fake.records = [self.record(fields={self.FIELD: "GOLD", "account_id": ""})]
        assert await connector.fetch(KEY, "contacts", "account_id.accountname", deadline=self.deadline()) is None
        assert operations(fake, "retrieve") == []

    async def test_a_missing_field_says_which(self, fake, connector):
        fake.records = [self.record()]
        with pytest.raises(UnexpectedResponse) as caught:
            await connector.fetch(KEY, "contacts", "cf_999", deadline=self.deadline())
        assert str(caught.value) == "field cf_999 does not exist on Contacts"
        assert caught.value.reason == "unknown_field"

    async def test_a_field_the_record_was_found_without_is_selected_by_id(self, fake, connector):
        fake.records = [self.record()]
        record = await connector.find_record(KEY, "contacts", deadline=self.deadline())
        assert await connector.read_field(record, "cf_855", deadline=self.deadline()) is None
        assert await connector.read_field(record, self.FIELD, deadline=self.deadline()) == "GOLD"
        assert fake.state["queries"][1:] == ["SELECT id, cf_855 FROM Contacts WHERE id = '12x345';",
                                             "SELECT id, cf_851 FROM Contacts WHERE id = '12x345';"]  # fmt: skip

    async def test_field_names_cannot_inject(self, fake, connector):
        with pytest.raises(UnexpectedResponse, match="not a Vtiger field name"):
            await connector.fetch(KEY, "contacts", "cf_851 FROM Users;", deadline=self.deadline())
        assert fake.requests == []

    # --- typed keys --------------------------------------------------------------------------------

    async def test_typed_key_query_shape(self, fake, http):
        connector = self.build(fake, http, key_field=self.KEY_FIELD)
        fake.records = [self.record(phone="")]
        await connector.fetch(LookupKey("12345", "dtmf"), "contacts", self.FIELD, deadline=self.deadline())
        assert fake.state["queries"][0].endswith("FROM Contacts WHERE cf_853 = '12345' ORDER BY modifiedtime DESC "
                                                 "LIMIT 100;")  # fmt: skip

    async def test_a_typed_key_cannot_inject(self, fake, http):
        connector = self.build(fake, http, key_field=self.KEY_FIELD)
        for typed in ["1' OR '1'='1", "12\\", "12\\' OR 1=1 --", "''", "5%_", "a;b", "x\\\\'y",
                      "'; SELECT id FROM Users;"]:
            fake.records = [self.record(0, phone="", fields={self.FIELD: "GOLD", self.KEY_FIELD: typed}),
                            self.record(1, phone="", fields={self.FIELD: "OTHER", self.KEY_FIELD: "12345"})]  # fmt: skip
            value = await connector.fetch(LookupKey(typed, "dtmf"), "contacts", self.FIELD, deadline=self.deadline())
            assert value == "GOLD", typed
        assert fake.state.get("injections", []) == []

    def test_the_fake_catches_backslash_quote_escaping(self):
        from tests.connectors.test_vtiger import Vtql, WsError

        naive = "'" + "12\\' OR 1=1 --".replace("'", "\\'") + "'"  # the escaping MySQL alone would want
        with pytest.raises(WsError):
            Vtql(f"SELECT id FROM Contacts WHERE cf_853 = {naive};")
        with pytest.raises(WsError) as caught:  # quotes doubled but the backslash left alone: MySQL reads on
            Vtql("SELECT id FROM Contacts WHERE cf_853 = '\\' OR id = '12x1';")
        assert caught.value.code == "DATABASE_QUERY_ERROR"
        assert Vtql(f"SELECT id FROM Contacts WHERE cf_853 = {vtql_literal(chr(92) + chr(39))};").where == [
            [("cf_853", "=", "\\'")]]  # fmt: skip

    async def test_typed_key_without_key_field_is_the_record_number(self, fake, connector):
        fake.records = [self.record(phone="")]
        for _ in range(2):
            assert await connector.fetch(LookupKey("345", "dtmf"), "contacts", self.FIELD, deadline=self.deadline()) == "GOLD"  # fmt: skip
        assert len(operations(fake, "describe")) == 1  # the idPrefix is asked once
        assert " WHERE id = '12x345' ORDER BY" in fake.state["queries"][0]
        assert await connector.fetch(LookupKey("34a", "dtmf"), "contacts", self.FIELD, deadline=self.deadline()) is None  # fmt: skip
        assert len(fake.state["queries"]) == 2

    # --- errors ----------------------------------------------------------------------------------

    async def test_access_denied_is_an_auth_error(self, fake, connector):
        await connector.authenticate(deadline=self.deadline())
        fake.fail_next(200, {"success": False, "error": {"code": "ACCESS_DENIED",
                                                         "message": "Permission to perform the operation is denied"}})  # fmt: skip
        with pytest.raises(AuthError, match="may not find_record: Permission to perform the operation is denied"):
            await connector.fetch(KEY, "contacts", self.FIELD, deadline=self.deadline())

    async def test_a_syntax_error_is_an_unexpected_response(self, fake, connector):
        await connector.authenticate(deadline=self.deadline())
        fake.fail_next(200, {"success": False, "error": {"code": "QUERY_SYNTAX_ERROR", "message": "Parsing failed"}})
        with pytest.raises(UnexpectedResponse, match="QUERY_SYNTAX_ERROR: Parsing failed"):
            await connector.fetch(KEY, "contacts", self.FIELD, deadline=self.deadline())

    async def test_an_internal_error_is_unavailable(self, fake, connector):
        await connector.authenticate(deadline=self.deadline())
        fake.fail_next(200, {"success": False, "error": {"code": "INTERNAL_SERVER_ERROR",
                                                         "message": "Unknown Error while processing request"}})  # fmt: skip
        with pytest.raises(ConnectorUnavailable, match="INTERNAL_SERVER_ERROR"):
            await connector.fetch(KEY, "contacts", self.FIELD, deadline=self.deadline())

    async def test_a_cloud_status_line_error(self, fake, connector):
        await connector.authenticate(deadline=self.deadline())
        fake.fail_next(403, b"Forbidden", content_type="text/plain")
        with pytest.raises(AuthError, match="HTTP 403 to find_record: Forbidden"):
            await connector.fetch(KEY, "contacts", self.FIELD, deadline=self.deadline())

    # --- call log --------------------------------------------------------------------------------

    async def test_event_element_links_contact_and_account(self, fake, connector):
        fake.records = [self.record()]
        record = await connector.find_record(KEY, "contacts", deadline=self.deadline())
        event_id = await connector.log_call(self.call(record), LogOptions(inbound_answered=True), deadline=self.deadline())  # fmt: skip
        [stored] = fake.activities
        assert stored["id"] == event_id and event_id.startswith("18x")
        assert {k: v for k, v in stored.items() if k not in ("id", "modifiedtime", "description")} == {
            "subject": f"Inbound call from {CALLER} [1795657573.1]", "activitytype": "Call", "eventstatus": "Held",
            "date_start": "2026-11-26", "time_start": "09:30:00", "due_date": "2026-11-26", "time_end": "09:31:33",
            "duration_hours": 0, "duration_minutes": 2, "visibility": "Public", "assigned_user_id": "19x5",
            "contact_id": CONTACT_IDS[0], "parent_id": "11x22"}  # fmt: skip
        assert "Answered by 201 after 6 s" in stored["description"] and "talk 93 s" in stored["description"]
        assert fake.state.get("ignored", []) == []
        create = operations(fake, "create")[-1]
        assert create.method == "POST" and _form(create)["elementType"] == "Events"
        assert "SELECT id, subject FROM Events WHERE subject LIKE '%[1795657573.1]' LIMIT 10;" in fake.state["queries"]

    async def test_wildcards_in_a_call_id_are_escaped(self, fake, connector):
        await connector.log_call(self.call(None, "call_1%x"), LogOptions(), deadline=self.deadline())
        assert "subject LIKE '%[call\\\\_1\\\\%x]'" in fake.state["queries"][0]
        again = await connector.log_call(self.call(None, "call_1%x"), LogOptions(), deadline=self.deadline())
        assert again == fake.activities[0]["id"] and len(fake.activities) == 1

    async def test_a_lead_is_the_parent(self, fake, connector):
        fake.records = [FakeRecord(module="leads", id="10x77", phone="415-555-2671")]
        await connector.log_call(self.call(None, "c-lead"), LogOptions(), deadline=self.deadline())
        assert fake.activities[0]["parent_id"] == "10x77" and "contact_id" not in fake.activities[0]

    async def test_logging_by_number_tries_contacts_then_leads_then_accounts(self, fake, connector):
        fake.records = [FakeRecord(module="accounts", id="11x88", phone="(415) 555-2671")]
        await connector.log_call(self.call(None, "c-order"), LogOptions(), deadline=self.deadline())
        froms = [q.split(" FROM ")[1].split(" ")[0] for q in fake.state["queries"]]
        assert froms == ["Events", "Contacts", "Leads", "Accounts"]
        assert fake.activities[0]["parent_id"] == "11x88"

    async def test_an_unknown_caller_is_logged_unlinked_without_create_unknown(self, fake, connector):
        await connector.log_call(self.call(None, "c-none"), LogOptions(), deadline=self.deadline())
        assert fake.created == [] and "parent_id" not in fake.activities[0] and "contact_id" not in fake.activities[0]

    async def test_unknown_caller_becomes_a_lead(self, fake, connector):
        await connector.log_call(self.call(None, "c-new"), LogOptions(create_unknown=True), deadline=self.deadline())
        [lead] = fake.created
        assert lead["_module"] == "Leads" and lead["phone"] == CALLER and lead["company"]
        assert lead["assigned_user_id"] == "19x5" and lead["id"].startswith("10x")
        assert fake.activities[0]["parent_id"] == lead["id"]
        assert fake.state.get("ignored", []) == []

    async def test_unknown_caller_can_become_a_contact(self, fake, http):
        connector = self.build(fake, http, create_as="contacts")
        await connector.log_call(self.call(None, "c-new2"), LogOptions(create_unknown=True), deadline=self.deadline())
        assert fake.created[0]["_module"] == "Contacts" and "company" not in fake.created[0]
        assert fake.activities[0]["contact_id"] == fake.created[0]["id"]

    async def test_a_missed_outbound_call_is_not_held(self, fake, connector):
        call = self.call(None, "c-out")
        call.direction, call.outcome, call.subject, call.talk_seconds = "outbound", "busy", "", 0
        await connector.log_call(call, LogOptions(), deadline=self.deadline())
        stored = fake.activities[0]
        assert (stored["eventstatus"], stored["duration_minutes"], stored["time_end"]) == ("Not Held", 0, "09:30:00")
        assert stored["subject"] == f"Outbound call to {CALLER} [c-out]" and "direction: outbound" in stored["description"]

    async def test_a_missing_mandatory_field_is_reported(self, fake, connector, monkeypatch):
        from crmroute.connectors import vtiger

        monkeypatch.setattr(vtiger, "event_element", lambda *a: {"subject": "x [c-bad]", "activitytype": "Call"})
        with pytest.raises(UnexpectedResponse, match="MANDATORY_FIELDS_MISSING: date_start does not have a value"):
            await connector.log_call(self.call(None, "c-bad"), LogOptions(), deadline=self.deadline())

    async def test_logging_a_routed_record_reuses_it(self, fake, connector):
        record = Record(module="Contacts", id="12x345", fields={"account_id": ""})
        fake.records = [self.record()]
        await connector.log_call(self.call(record, "c-routed"), LogOptions(), deadline=self.deadline())
        assert [q.split(" FROM ")[1].split(" ")[0] for q in fake.state["queries"]] == ["Events"]
        assert fake.activities[0]["contact_id"] == "12x345" and "parent_id" not in fake.activities[0]

    async def test_unknown_number_is_not_found_in_leads_either(self, fake, connector):
        fake.records = [self.record()]
        assert await connector.find_record(LookupKey(OTHER_PHONE, "caller_id"), "leads", deadline=self.deadline()) is None  # fmt: skip


# --- users (agents sync) ------------------------------------------------------------------------


async def test_list_users_queries_the_active_users_as_an_admin(fake):
    from crmroute.connectors._http import make_client
    from crmroute.settings import Settings

    fake.state["users"] = [{"id": f"19x{i}", "user_name": f"agent{i}", "first_name": "Agent", "last_name": str(i),
                            "email1": f"agent{i}@example.com", "status": "Active"} for i in range(1, 151)]  # fmt: skip
    fake.state["users"].append({"id": "19x999", "user_name": "gone", "first_name": "", "last_name": "Gone",
                                "email1": "gone@example.com", "status": "Inactive"})  # fmt: skip
    http = make_client(Settings(ca_bundle=fake.ca_path))
    try:
        connector = TestVtiger().build(fake, http)
        with pytest.raises(AuthError, match="may not list_users: Permission"):  # Vtiger lists users to admins only
            await connector.list_users(deadline=TestVtiger.deadline())
        fake.state["admin"] = True
        users = await connector.list_users(deadline=TestVtiger.deadline())
    finally:
        await http.aclose()
    assert len(users) == 150 and "19x999" not in {u.id for u in users}
    assert (users[0].id, users[0].name, users[0].email) == ("19x1", "Agent 1", "agent1@example.com")
    queries = [q for q in fake.state["queries"] if "FROM Users" in q]
    assert queries[-2:] == ["SELECT id, user_name, first_name, last_name, email1 FROM Users WHERE status = 'Active' LIMIT 0, 100;",
                            "SELECT id, user_name, first_name, last_name, email1 FROM Users WHERE status = 'Active' LIMIT 100, 100;"]
