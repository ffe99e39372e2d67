"""Vtiger CRM (webservice API, open source 5-8 and Vtiger Cloud) — ``shared/reference/crm-apis.md`` section 9.

Every call goes to ``{site_url}/webservice.php``: a self-hosted install's root
(``https://crm.example.com/vtigercrm``), a Vtiger Cloud instance
(``https://yourcompany.od2.vtiger.com``), a sandbox or a test server. Read
operations (``getchallenge``, ``query``, ``retrieve``, ``describe``, ``lookup``) are
GETs with their parameters in the query string, write operations (``login``,
``create``) POSTs with a form body: the webservice reads each operation's
parameters from ``$_GET`` or ``$_POST`` only (``OperationManager``).

Authentication: challenge/response, the only login the webservice has
    ``GET ?operation=getchallenge&username=U`` -> ``{"token", "serverTime",
    "expireTime"}`` (the token lives 5 minutes), then ``POST operation=login
    &username=U&accessKey=md5(token + access key)`` (lower-case hex) ->
    ``{"sessionName", "userId": "19x1", "version", "vtigerVersion"}`` (the
    community guide also names it ``sessionId``: either is read). The
    access key is the user's, from My Preferences (not the password). A rule's
    CRM Username/Password replace ``username`` / ``access_key``. The
    ``sessionName`` goes with every call and is reused: a session lives at
    most a day and dies after 30 minutes idle (``SessionManager``), so after
    28 idle minutes the connector logs in again before calling, and a call
    answered ``INVALID_SESSIONID``, ``SESSION_EXPIRED``, ``SESSION_LEFT_IDLE`` or
    ``AUTHENTICATION_REQUIRED`` logs in again and is retried once. A refused
    login (``INVALID_USER_CREDENTIALS``, ``INVALID_AUTH_TOKEN``,
    ``ACCESSKEY_UNDEFINED``) is ``AuthError``. The Cloud-only REST API
    (``/restapi/v1``, HTTP Basic) is not used: the webservice serves both.

Modules: accounts -> ``Accounts``, contacts -> ``Contacts``, leads -> ``Leads``.

Finding a record
    ``phone_search = query`` (default, every version): one VTQL ``query``,
    ``SELECT <fields> FROM Contacts WHERE phone LIKE '%4%1%5%5%5%5%2%6%7%1' OR
    mobile LIKE ... ORDER BY modifiedtime DESC LIMIT 100;`` over the module's
    phone fields (Contacts ``phone mobile homephone otherphone``, Leads ``phone
    mobile``, Accounts ``phone otherphone``). Vtiger compares the stored,
    formatted text and normalises nothing (reference section 9 and the phone
    appendix: "like '%digits'"; "like '%<last digits>%' misses numbers stored
    with separators inside the digit run"), so the national number's digits
    are sent with a ``%`` wildcard before each one: any punctuation, spaces, a
    country code or a trunk ``0`` may sit between or before them. Every row is
    then verified here: the digits of one of its phone fields must be the
    national number, alone or after the country code, a trunk ``0`` or an
    international prefix. Only digits reach the query, so nothing can inject.
    ``phone_search = lookup`` (Vtiger Cloud): ``GET ?operation=lookup&type=phone
    &value=<national digits>&searchIn={"Contacts": [phone fields]}``, the
    operation the reference names for phone search (its availability in
    open-source builds and its answer shape are unconfirmed: the ``id`` of each
    entry is all that is used), then one ``query ... WHERE id IN (...)`` for the
    fields, verified the same way.
    Typed (DTMF) keys: ``WHERE <key_field> = '<key>'``, the key written as a VTQL
    string literal: the VTQL lexer reads a string as ``'(?:[^']|'')+'`` and the
    statement goes to MySQL with the literal as is, so a quote is doubled
    (``''``, which both read as one quote) and a backslash is doubled (``\\\\``,
    which MySQL reads as one and the lexer as two ordinary characters): the
    string ends where both think it ends, whatever a caller types. With no
    ``key_field`` the digits are the record number: ``WHERE id =
    '<idPrefix>x<digits>'``, the module's ``idPrefix`` asked once of
    ``describe``.
    The asked fields are selected in the same query (names are checked to be
    plain identifiers first); ``modifiedtime`` too, the ``match_pick`` field, and
    the query is ordered by it so ``LIMIT 100`` (the webservice's page) keeps
    the right end; ``Record.matches`` counts the verified rows.

Reading fields: ``result[i].{fieldname}`` (custom fields ``cf_NNN``; empty is
``""``). Reference fields hold ids (``account_id: "11x22"``); a dotted name
``account_id.accountname`` (or ``assigned_user_id.user_name``) reads the
referenced record with ``GET ?operation=retrieve&id=11x22``: one more request.
A field the record was found without is selected by id (one query).

Call log: ``POST operation=create&elementType=Events&element={"subject",
"activitytype": "Call", "eventstatus": Held|Not Held, "date_start",
"time_start", "due_date", "time_end" (UTC; the time zone the webservice
expects is unconfirmed), "duration_hours", "duration_minutes", "visibility":
"Public", "assigned_user_id": <the session's userId>, "description",
"contact_id" (a contact) and/or "parent_id" (a lead or account, or the
contact's account)}``. The subject ends with ``[<call id>]``; ``SELECT id,
subject FROM Events WHERE subject LIKE '%[<call id>]' LIMIT 10;`` first makes
logging idempotent (LIKE wildcards in the id escaped, the answer verified).
With no record from routing the caller is looked up in Contacts, then Leads,
then Accounts; an unknown caller becomes a Lead (``lastname``, ``company``,
``phone`` in E.164) or a Contact (``create_as``) when the log options ask.
PBXManager records are not written (creatable via webservice: unconfirmed).

Errors (one place: ``error_for``): the webservice answers HTTP 200 ``{"success":
false, "error": {"code", "message"}}``. Session codes -> log in again once,
then ``AuthError``; login codes -> ``AuthError``; ``ACCESS_DENIED`` "Permission
to access X attribute denied" (what VTQL says of a field the module lacks) ->
``UnexpectedResponse("field X does not exist on Contacts")``, other
``ACCESS_DENIED`` -> ``AuthError``; ``QUERY_SYNTAX_ERROR``,
``MANDATORY_FIELDS_MISSING``, ``RECORD_NOT_FOUND``, ``DATABASE_QUERY_ERROR`` ->
``UnexpectedResponse``; ``UNKNOWN_OPERATION`` for ``lookup`` -> "set phone_search
to query"; ``INTERNAL_SERVER_ERROR`` and HTTP 5xx -> ``ConnectorUnavailable``;
HTTP 429 (Cloud) -> waited out when ``Retry-After`` fits, else ``RateLimited``.

Limits: self-hosted Vtiger has none; Vtiger Cloud has per-day, per-user API
limits by edition (numbers unconfirmed: set ``daily_quota`` to count yours). No
pace, only the concurrency limit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Sequence
from datetime import timedelta, timezone
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator

from crmroute.connectors._http import CappedResponse
from crmroute.connectors._phone import PhoneForms
from crmroute.connectors.base import (
    CallActivity,
    Connector,
    ConnectorSettings,
    Record,
    Token,
    field_text,
    lookup_path,
)
from crmroute.deadline import Deadline
from crmroute.errors import AuthError, ConnectorError, ConnectorUnavailable, UnexpectedResponse
from crmroute.connectors.base import CrmUser
from crmroute.routing.engine import LookupKey

logger = logging.getLogger(__name__)

WEBSERVICE = "/webservice.php"
MODIFIED = "modifiedtime"
QUERY_LIMIT = 100  # the webservice's page
SESSION_LIFE = 86400.0  # a webservice session lives at most a day ...
IDLE_LIMIT = 1800.0  # ... and dies after 30 minutes without a call
IDLE_MARGIN = 120.0
SUBJECT_MAX = 255
SESSION_ERRORS = frozenset({"INVALID_SESSIONID", "SESSION_EXPIRED", "SESSION_LEFT_IDLE", "AUTHENTICATION_REQUIRED"})
LOGIN_ERRORS = frozenset({"INVALID_USER_CREDENTIALS", "INVALID_AUTH_TOKEN", "ACCESSKEY_UNDEFINED",
                          "AUTHENTICATION_FAILURE"})  # fmt: skip
PHONE_FIELDS: dict[str, tuple[str, ...]] = {
    "Contacts": ("phone", "mobile", "homephone", "otherphone"),
    "Leads": ("phone", "mobile"),
    "Accounts": ("phone", "otherphone"),
}
DISPLAY_FIELDS: dict[str, tuple[str, ...]] = {
    "Contacts": ("firstname", "lastname", "account_id"),
    "Leads": ("firstname", "lastname", "company"),
    "Accounts": ("accountname",),
}
LOOKUP_ORDER = ("contacts", "leads", "accounts")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ID = re.compile(r"^\d+x\d+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NO_ATTRIBUTE = re.compile(r"Permission to access '?\.?([A-Za-z0-9_]+?)\.?'? attribute denied")
_FROM = re.compile(r"\bFROM\s+([A-Za-z0-9_]+)", re.I)


class VtigerSettings(ConnectorSettings):
    site_url: str = Field(
        ..., description="Address of Vtiger: https://yourcompany.od2.vtiger.com (Vtiger Cloud) or a self-hosted "
        "install's root such as https://crm.example.com/vtigercrm; the webservice is {site_url}/webservice.php"
    )  # fmt: skip
    username: str = Field(
        "", description="Vtiger user name the integration logs in as (a rule's CRM Username wins); it needs read "
        "access to the modules and create access to Calendar events"
    )  # fmt: skip
    access_key: SecretStr | None = Field(
        None, description="That user's Access Key from My Preferences (not the password); a rule's CRM Password is "
        "taken as its access key"
    )  # fmt: skip
    phone_search: Literal["query", "lookup"] = Field(
        "query", description="How phones are searched: query (VTQL LIKE on the phone fields, every version) or "
        "lookup (the webservice's lookup operation, Vtiger Cloud)"
    )  # fmt: skip
    create_as: Literal["leads", "contacts"] = Field(
        "leads", description="What to create for an unknown caller when the log options ask for it"
    )

    @field_validator("site_url")
    @classmethod
    def _site(cls, value: str) -> str:
        value = value.rstrip("/").removesuffix(WEBSERVICE).rstrip("/")
        if not value.startswith("https://"):
            raise ValueError("must start with https://")
        return value


class VtigerConnector(Connector):
    kind = "vtiger"
    title = "Vtiger CRM"
    docs_url = "https://community.vtiger.com/help/vtigercrm/developers/third-party-app-integration.html"
    Settings = VtigerSettings
    MODULES = {"accounts": "Accounts", "contacts": "Contacts", "leads": "Leads"}
    limits_source = "self-hosted: none; Cloud: per day by edition, unconfirmed (reference section 9)"
    owner_field = "assigned_user_id"

    settings: VtigerSettings

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_used = 0.0
        self._id_prefixes: dict[str, str] = {}

    @property
    def ws_url(self) -> str:
        return f"{self.settings.site_url}{WEBSERVICE}"

    # --- auth ---------------------------------------------------------------------------

    def _auth_headers(self, token: Token) -> dict[str, str]:
        return {}  # the session travels as the sessionName parameter

    async def _login(self, *, deadline: Deadline) -> Token:
        username = self.username or self.settings.username
        access_key = self.password or _plain(self.settings.access_key)
        if not username or not access_key:
            raise AuthError("Vtiger needs a username and access key (the integration's, or the rule's CRM "
                            "Username/Password)", kind=self.kind, operation="authenticate", reason="misconfigured")  # fmt: skip
        response = await self.request("GET", self.ws_url, params={"operation": "getchallenge", "username": username},
                                      auth=False, deadline=deadline, operation="authenticate")  # fmt: skip
        challenge = self._result(response, "authenticate")
        token = challenge.get("token") if isinstance(challenge, dict) else None
        if not isinstance(token, str) or not token:
            raise self._shape_error("authenticate", "a challenge without a token")
        digest = hashlib.md5((token + access_key).encode()).hexdigest()
        response = await self.request("POST", self.ws_url, data={"operation": "login", "username": username,
                                      "accessKey": digest}, auth=False, deadline=deadline, operation="authenticate")  # fmt: skip
        result = self._result(response, "authenticate")
        session = (result.get("sessionName") or result.get("sessionId")) if isinstance(result, dict) else None
        if not isinstance(session, str) or not session:
            raise self._shape_error("authenticate", "a login answer without a sessionName")
        now = time.monotonic()
        self._last_used = now
        logger.debug("vtiger: logged in as %s (Vtiger %s)", username, result.get("vtigerVersion"))
        return Token(session, now + SESSION_LIFE, {"user_id": str(result.get("userId") or "")}, issued_at=now)

    def _adopted(self, token: Token) -> None:
        super()._adopted(token)
        self._last_used = time.monotonic()  # another process's session: if it sat idle, Vtiger says so (relogin)

    async def _session(self, deadline: Deadline, failed: Token | None = None) -> Token:
        """The session to call with: a new one after ``failed`` was refused or the old one sat idle too long."""
        current = self._token
        idle = current is not None and time.monotonic() - self._last_used > IDLE_LIMIT - IDLE_MARGIN
        if current is not None and (idle or (failed is not None and current is failed)):
            return await self.authenticate(deadline=deadline, force=True)
        return await self.authenticate(deadline=deadline)

    # --- webservice plumbing ---------------------------------------------------------------

    async def verify(self, *, deadline: Deadline) -> str:
        """``GET ?operation=listtypes`` with the session: the modules the user may read."""
        result = await self._call("GET", "listtypes", {}, deadline=deadline, operation="verify")
        types = lookup_path(result, "types")
        return f"session accepted ({len(types)} modules visible)" if isinstance(types, list) else "session accepted"

    async def _call(self, method: str, name: str, params: dict[str, str], *, deadline: Deadline,
                    operation: str) -> Any:  # fmt: skip
        """One webservice operation with the session; a session Vtiger refused is renewed once."""
        failed: Token | None = None
        for attempt in (1, 2, 3):  # 3: only when the session from the credential store was refused too
            token = await self._session(deadline, failed)
            payload = {"operation": name, "sessionName": token.value, **params}
            if method == "GET":
                response = await self.request("GET", self.ws_url, params=payload, auth=False, deadline=deadline,
                                              operation=operation)  # fmt: skip
            else:
                response = await self.request("POST", self.ws_url, data=payload, auth=False, deadline=deadline,
                                              operation=operation)  # fmt: skip
            data = self.json_of(response, operation)
            if isinstance(data, dict) and data.get("success") is True:
                self._last_used = time.monotonic()
                return data.get("result")
            code, _ = _vt_error(data)
            if code in SESSION_ERRORS and (attempt == 1 or (attempt == 2 and self.adopted(token))):
                logger.info("vtiger: the session was refused (%s); logging in again", code)
                failed = token
                continue
            raise self.error_for(response, operation)
        raise AssertionError("unreachable")

    def _result(self, response: CappedResponse, operation: str) -> Any:
        data = self.json_of(response, operation)
        if isinstance(data, dict) and data.get("success") is True:
            return data.get("result")
        raise self.error_for(response, operation)

    async def _query(self, vtql: str, *, deadline: Deadline, operation: str) -> list[dict[str, Any]]:
        result = await self._call("GET", "query", {"query": vtql}, deadline=deadline, operation=operation)
        if not isinstance(result, list) or not all(isinstance(r, dict) for r in result):
            raise self._shape_error(operation, "a query answer that is not a list of records")
        return result

    def _shape_error(self, operation: str, what: str) -> UnexpectedResponse:
        return UnexpectedResponse(f"Vtiger sent {what} to {operation}", kind=self.kind, operation=operation,
                                  reason="bad_response")  # fmt: skip

    def _select(self, vmodule: str, columns: Sequence[str], where: str, *, limit: int = QUERY_LIMIT) -> str:
        order = ""
        if self.settings.match_pick != "first":
            order = f" ORDER BY {MODIFIED} {'ASC' if self.settings.match_pick == 'oldest' else 'DESC'}"
        return f"SELECT {', '.join(columns)} FROM {vmodule} WHERE {where}{order} LIMIT {limit};"

    async def _id_prefix(self, vmodule: str, deadline: Deadline) -> str:
        if vmodule not in self._id_prefixes:
            described = await self._call("GET", "describe", {"elementType": vmodule}, deadline=deadline,
                                         operation="find_record")  # fmt: skip
            prefix = str(described.get("idPrefix") or "") if isinstance(described, dict) else ""
            if not prefix.isdigit():
                raise self._shape_error("find_record", f"a describe of {vmodule} without an idPrefix")
            self._id_prefixes[vmodule] = prefix
        return self._id_prefixes[vmodule]

    # --- finding records -----------------------------------------------------------------

    async def find_record(
        self, key: LookupKey, module: str, *, fields: Sequence[str] = (), deadline: Deadline
    ) -> Record | None:
        vmodule = self.vendor_module(module)
        if key.source == "dtmf":
            return await self._by_key(vmodule, key.value.strip(), fields, deadline)
        forms = self.phone(key)
        pattern = like_pattern(forms)
        if pattern is None:
            return None
        columns = self._columns(vmodule, fields)
        phones = PHONE_FIELDS[vmodule]
        if self.settings.phone_search == "lookup":
            rows = await self._lookup(vmodule, forms, columns, deadline)
        else:
            where = " OR ".join(f"{f} LIKE '{pattern}'" for f in phones)
            rows = await self._query(self._select(vmodule, columns, where), deadline=deadline, operation="find_record")
        rows = [r for r in rows if any(forms.matches(r.get(f)) for f in phones)]
        return self._record(vmodule, rows)

    async def _by_key(self, vmodule: str, value: str, fields: Sequence[str], deadline: Deadline) -> Record | None:
        if not value or _CONTROL.search(value):
            return None
        field = self.settings.key_field.strip()
        if field:
            check_name(field, "key_field")
            where, wanted = f"{field} = {vtql_literal(value)}", value
        else:
            if not value.isdigit():
                return None  # the record number is digits
            wanted = f"{await self._id_prefix(vmodule, deadline)}x{value}"
            field, where = "id", f"id = {vtql_literal(wanted)}"
        columns = self._columns(vmodule, fields, field)
        rows = await self._query(self._select(vmodule, columns, where), deadline=deadline, operation="find_record")
        return self._record(vmodule, [r for r in rows if field_text(r.get(field)) == wanted])

    async def _lookup(self, vmodule: str, forms: PhoneForms, columns: list[str], deadline: Deadline) -> list[dict]:
        value = forms.national_digits or forms.digits
        search_in = json.dumps({vmodule: list(PHONE_FIELDS[vmodule])}, separators=(",", ":"))
        result = await self._call("GET", "lookup", {"type": "phone", "value": value, "searchIn": search_in},
                                  deadline=deadline, operation="find_record")  # fmt: skip
        if isinstance(result, dict):  # the answer's shape is unconfirmed: a list, or lists per module
            entries = [e for v in result.values() if isinstance(v, list) for e in v]
        else:
            entries = result if isinstance(result, list) else []
        ids = [str(e["id"]) for e in entries if isinstance(e, dict) and _ID.match(str(e.get("id") or ""))]
        if not ids:
            return []
        where = f"id IN ({', '.join(vtql_literal(i) for i in dict.fromkeys(ids[:QUERY_LIMIT]))})"
        return await self._query(self._select(vmodule, columns, where), deadline=deadline, operation="find_record")

    def _columns(self, vmodule: str, fields: Sequence[str], *extra: str) -> list[str]:
        names = ["id", MODIFIED, *DISPLAY_FIELDS[vmodule], *PHONE_FIELDS[vmodule], *extra]
        for name in fields:
            head = name.strip().split(".", 1)[0]
            if head:
                check_name(head, "field")
                names.append(head)
        return list(dict.fromkeys(names))

    def _record(self, vmodule: str, rows: list[dict[str, Any]]) -> Record | None:
        rows = [r for r in rows if _ID.match(str(r.get("id") or ""))]
        if not rows:
            return None
        chosen, matches = self.pick(rows, MODIFIED)
        crmid = str(chosen["id"]).split("x", 1)[1]
        return Record(module=vmodule, id=str(chosen["id"]), fields=dict(chosen), matches=matches,
                      url=f"{self.settings.site_url}/index.php?module={vmodule}&view=Detail&record={crmid}")  # fmt: skip

    # --- reading fields ------------------------------------------------------------------------

    async def read_field(self, record: Record, api_name: str, *, deadline: Deadline) -> str | None:
        name = api_name.strip()
        head, _, rest = name.partition(".")
        check_name(head, "field")
        if head not in record.fields:  # found without it (e.g. a record from routing): select it by id
            rows = await self._query(f"SELECT id, {head} FROM {record.module} WHERE id = {vtql_literal(record.id)};",
                                     deadline=deadline, operation="read_field")  # fmt: skip
            record.fields[head] = rows[0].get(head) if rows else None
        value = lookup_path(record.fields, name)
        if value is not None or not rest:
            return field_text(value)
        reference = str(record.fields.get(head) or "")
        if not _ID.match(reference):
            return None  # empty reference (or not a reference field)
        related = await self._call("GET", "retrieve", {"id": reference}, deadline=deadline, operation="read_field")
        return field_text(lookup_path(related, rest)) if isinstance(related, dict) else None

    # --- call log --------------------------------------------------------------------------------

    # --- users (agents sync) -------------------------------------------------------------

    async def list_users(self, *, deadline: Deadline) -> list[CrmUser]:
        """VTQL ``SELECT ... FROM Users WHERE status = 'Active' LIMIT offset, 100`` until a page comes back short:
        the ids ``assigned_user_id`` holds (``19x5``). Vtiger answers ``ACCESS_DENIED`` unless the user is an admin."""
        users: list[CrmUser] = []
        offset = 0
        for _ in range(1000):
            vtql = (f"SELECT id, user_name, first_name, last_name, email1 FROM Users WHERE status = 'Active' "
                    f"LIMIT {offset}, {QUERY_LIMIT};")  # fmt: skip
            rows = await self._query(vtql, deadline=deadline, operation="list_users")
            for row in rows:
                if row.get("id"):
                    name = " ".join(str(row.get(k) or "").strip() for k in ("first_name", "last_name")).strip()
                    users.append(CrmUser(str(row["id"]), name or str(row.get("user_name") or ""),
                                         str(row.get("email1") or "")))  # fmt: skip
            if len(rows) < QUERY_LIMIT:
                return users
            offset += len(rows)
        return users

    async def log_call(self, call: CallActivity, options: Any, *, deadline: Deadline) -> str:
        subject = call_subject(call)
        marker = f"[{call.call_id}]"
        rows = await self._query(f"SELECT id, subject FROM Events WHERE subject LIKE "
                                 f"{vtql_literal('%' + like_escape(marker))} LIMIT 10;", deadline=deadline,
                                 operation="log_call")  # fmt: skip
        for row in rows:
            if str(row.get("subject") or "").endswith(marker) and _ID.match(str(row.get("id") or "")):
                logger.info("vtiger: call %s already logged as %s", call.call_id, row["id"])
                return str(row["id"])
        record = call.record or await self._lookup_caller(call.external_number, deadline=deadline)
        user_id = (self._token.extra.get("user_id") if self._token else "") or ""
        if record is None and getattr(options, "create_unknown", False):
            record = await self._create_caller(call, user_id, deadline=deadline)
        element = event_element(call, subject, record, user_id)
        created = await self._call("POST", "create", {"elementType": "Events", "element": json.dumps(element)},
                                   deadline=deadline, operation="log_call")  # fmt: skip
        event_id = created.get("id") if isinstance(created, dict) else None
        if not isinstance(event_id, str) or not _ID.match(event_id):
            raise self._shape_error("log_call", "an Events create answer without an id")
        logger.info("vtiger: call %s logged as %s", call.call_id, event_id)
        return event_id

    async def _lookup_caller(self, number: str, *, deadline: Deadline) -> Record | None:
        key = LookupKey(number, "caller_id")
        for module in LOOKUP_ORDER:
            record = await self.find_record(key, module, deadline=deadline)
            if record is not None:
                return record
        return None

    async def _create_caller(self, call: CallActivity, user_id: str, *, deadline: Deadline) -> Record:
        forms = self.phone(LookupKey(call.external_number, "caller_id"))
        phone = forms.e164 or forms.raw
        vmodule = self.MODULES[self.settings.create_as]
        element: dict[str, Any] = {"lastname": f"Caller {phone}", "phone": phone, "assigned_user_id": user_id,
                                   "description": f"Created by crmroute for an unknown caller (call {call.call_id})"}  # fmt: skip
        if vmodule == "Leads":
            element["company"] = "Unknown caller"
        created = await self._call("POST", "create", {"elementType": vmodule, "element": json.dumps(element)},
                                   deadline=deadline, operation="log_call")  # fmt: skip
        new_id = created.get("id") if isinstance(created, dict) else None
        if not isinstance(new_id, str) or not _ID.match(new_id):
            raise self._shape_error("log_call", f"a {vmodule} create answer without an id")
        logger.info("vtiger: created %s %s for the unknown caller of call %s", vmodule, new_id, call.call_id)
        return Record(module=vmodule, id=new_id, fields=dict(created))

    # --- errors ---------------------------------------------------------------------------------

    def vendor_message(self, response: CappedResponse) -> str:
        code, message = _vt_error(self._body(response))
        if code or message:
            return f"{code}: {message}" if code and message else (code or message)
        return super().vendor_message(response)

    def error_for(self, response: CappedResponse, operation: str) -> ConnectorError:
        code, message = _vt_error(self._body(response))
        args = {"kind": self.kind, "operation": operation}
        detail = f"{code}: {message}" if message else code
        if code in SESSION_ERRORS:
            return AuthError(f"Vtiger refused the session again ({operation}): {detail}", reason="session", **args)
        if code in LOGIN_ERRORS:
            return AuthError(f"Vtiger refused the login of {(self.username or self.settings.username)!r} "
                             f"({detail}); check the user name and the user's access key (My Preferences)",
                             reason="auth", **args)  # fmt: skip
        if code == "ACCESS_DENIED":
            missing = _NO_ATTRIBUTE.search(message)
            if missing:
                module = _query_module(response)
                return UnexpectedResponse(f"field {missing[1]} does not exist on {module or 'this module'}",
                                          reason="unknown_field", **args)  # fmt: skip
            return AuthError(f"the Vtiger user may not {operation}: {message or code}", reason="permission", **args)
        if code == "UNKNOWN_OPERATION" and "operation=lookup" in str(response.url):
            return UnexpectedResponse("this Vtiger has no lookup operation (open-source builds); set phone_search "
                                      "to query", reason="no_lookup", **args)  # fmt: skip
        if code == "INTERNAL_SERVER_ERROR" or response.status_code >= 500:
            return ConnectorUnavailable(f"Vtiger failed {operation}: {detail or f'HTTP {response.status_code}'}",
                                        reason="unavailable" if code else f"http_{response.status_code}", **args)  # fmt: skip
        if code:
            return UnexpectedResponse(f"Vtiger answered {operation} with {detail}", reason=code.lower(), **args)
        return super().error_for(response, operation)

    @staticmethod
    def _body(response: CappedResponse) -> Any:
        try:
            return json.loads(response.text)
        except ValueError:
            return None


# --- helpers -----------------------------------------------------------------------------------


def check_name(name: str, what: str) -> None:
    if not _NAME.match(name):
        raise UnexpectedResponse(f"{name!r} is not a Vtiger {what} name", kind="vtiger", operation="find_record",
                                 reason="bad_field")  # fmt: skip


def vtql_literal(value: str) -> str:
    """``value`` as a VTQL string literal that the VTQL lexer and MySQL both end at its closing quote."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def like_escape(value: str) -> str:
    """``value`` with MySQL LIKE wildcards escaped (backslash is LIKE's escape character)."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def like_pattern(forms: PhoneForms) -> str | None:
    """``%4%1%5%5%5%5%2%6%7%1``: the national number's digits in order, anything between and before them."""
    digits = forms.national_digits if forms.valid else forms.digits
    if len(digits) < 4:
        return None
    return "%" + "%".join(digits)


def call_subject(call: CallActivity) -> str:
    marker = f" [{call.call_id}]"
    inbound = call.direction == "inbound"
    default = f"{'Inbound' if inbound else 'Outbound'} call {'from' if inbound else 'to'} {call.external_number}"
    text = " ".join((call.subject or default).split())
    return (text[: max(0, SUBJECT_MAX - len(marker))] + marker).strip()


def event_element(call: CallActivity, subject: str, record: Record | None, user_id: str) -> dict[str, Any]:
    talk = max(0, int(call.talk_seconds))
    minutes = math.ceil(talk / 60)
    start = call.started_at if call.started_at.tzinfo else call.started_at.replace(tzinfo=timezone.utc)
    start = start.astimezone(timezone.utc)
    end = start + timedelta(seconds=talk)
    lines = [call.description.strip()] if call.description.strip() else []
    lines.append(f"{'Caller' if call.direction == 'inbound' else 'Called'}: {call.external_number}; "
                 f"direction: {call.direction}; extension: {call.extension or '-'}; outcome: {call.outcome}; "
                 f"ring {call.ring_seconds} s, talk {talk} s")  # fmt: skip
    if call.recording:
        lines.append(f"Recording: {call.recording}")
    lines.append(f"crmroute call id: {call.call_id}")
    element: dict[str, Any] = {
        "subject": subject,
        "activitytype": "Call",
        "eventstatus": "Held" if call.outcome == "answered" else "Not Held",
        "date_start": start.strftime("%Y-%m-%d"),
        "time_start": start.strftime("%H:%M:%S"),
        "due_date": end.strftime("%Y-%m-%d"),
        "time_end": end.strftime("%H:%M:%S"),
        "duration_hours": minutes // 60,
        "duration_minutes": minutes % 60,
        "visibility": "Public",
        "assigned_user_id": user_id,
        "description": "\n".join(lines),
    }
    if record is not None:
        if record.module == "Contacts":
            element["contact_id"] = record.id
            account = str(record.fields.get("account_id") or "")
            if _ID.match(account):
                element["parent_id"] = account
        else:
            element["parent_id"] = record.id
    return element


def _vt_error(data: Any) -> tuple[str, str]:
    if isinstance(data, dict) and data.get("success") is False:
        error = data.get("error") if isinstance(data.get("error"), dict) else {}
        return str(error.get("code") or "UNKNOWN_ERROR"), str(error.get("message") or "").strip()[:300]
    return "", ""


def _query_module(response: CappedResponse) -> str:
    found = _FROM.search(response.url.params.get("query", ""))
    return found[1] if found else ""


def _plain(value: SecretStr | str | None) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value or ""
