"""SuiteCRM 7 (7.10+) and SuiteCRM 8: the V8 JSON:API, or the older v4.1 REST API, one ``suitecrm`` kind.

Where the API lives (``site_url`` is the install's root, e.g. ``https://crm.example.com`` or
``https://example.com/suitecrm``; self-hosted only, so any test server works)
    ``version: "7"``  V8 under ``{site_url}/Api/V8``, token at ``{site_url}/Api/access_token``
    ``version: "8"``  the same API behind SuiteCRM 8's legacy layer: ``{site_url}/legacy/Api/V8``
                      and ``{site_url}/legacy/Api/access_token``
    ``api: "v4_1"``   the pre-7.10 REST API at ``{site_url}[/legacy]/service/v4_1/rest.php``
                      (every call a form POST of ``method``, ``input_type=JSON``,
                      ``response_type=JSON``, ``rest_data``; argument order matters), for
                      installs whose V8 API is not set up (no OAuth keys, no mod_rewrite).
    Both APIs are implemented; V8 is the default.

Authentication
    V8, OAuth 2 (league/oauth2-server), form-encoded ``POST .../access_token``:
      ``client_credentials``  (7.10.2+) ``client_id`` (the GUID of the Admin > OAuth2 Clients
                              record) + ``client_secret``; calls run as the client's user
      ``password``            (7.10.0+) the same plus ``username``/``password`` of a SuiteCRM
                              user; a rule's CRM Username/Password replace the integration's
    The answer ``{"token_type": "Bearer", "expires_in": 3600, "access_token": <JWT>,
    "refresh_token": ...}`` is renewed before ``expires_in`` runs out: with
    ``grant_type=refresh_token`` when a refresh token came with it (SuiteCRM rotates it on
    use, so it is kept in memory, never in the settings), else by running the grant again.
    A refused refresh token falls back to the grant once; if there is no way back in (a
    rule's password-only credentials gone) it is ``AuthError("... token rejected: refresh
    token revoked or expired")``. API calls send ``Authorization: Bearer`` and
    ``Accept``/``Content-Type: application/vnd.api+json``; a 401 (league's
    ``access_denied`` "Access token could not be verified") is refreshed once.
    v4.1: ``login`` with ``user_auth: {user_name, password: md5(password)}`` gives a
    session id (no expiry is sent: PHP's session lifetime applies); "Invalid Session ID"
    (number 11, inside an HTTP 200) logs in again once.

Modules: accounts -> ``Accounts``, contacts -> ``Contacts``, leads -> ``Leads``.

Finding a record
    Phone keys. V8 filters compare the stored text in SQL (no normalisation), one value per
    field and operator (``Api/V8/JsonApi/Repository/Filter.php`` quotes a scalar; the
    ``[eq][]=`` array form needs a patch, SuiteCRM issue #9744). ``phone_match``:
      ``auto``  (default) ``like``, and on an install that refuses it the ``exact`` forms from then on
                (this connector's lifetime: one refused request, a warning in the log).
      ``like``  one request: ``filter[operator]=or&filter[<field>][like]=%5%5%5%1%2%3%0%0%0%4`` on every
                phone field — the national number's digits in order with SQL's ``%`` between and before
                them, so any punctuation or prefix typed around or inside the number matches
                (``555.123.0004``, ``1-555-123-0008``, ``+1 (555) 123-0009``...). The operator came
                with SuiteCRM PR #9093, released in 7.11.19 (28 April 2021; the 7.11.x release
                notes) and in every 7.12+ and 8.x; older installs answer "Filter operator like is
                invalid" — there is no documented way to ask the V8 API for the version beforehand
                (v4.1 ``get_server_info`` names it only from 7.11.21), so ``auto`` learns it from that
                answer.
      ``exact`` one request per stored form, sent at once (nine: E.164 ``+14155552671``, national
                ``(415) 555-2671``, international ``+1 415-555-2671``, ``415-555-2671``,
                ``14155552671``, ``4155552671``, ``415.555.2671``, ``1-415-555-2671``, ``+1 (415)
                555-2671``; ``_phone.written_forms``), each
                ``filter[operator]=or&filter[phone_work][eq]=<form>&filter[phone_mobile][eq]=...``.
                Numbers typed any other way (``415 555 2671``) are not found in this mode.
    The phone fields: Contacts/Leads ``phone_work``, ``phone_mobile``, ``phone_home``,
    ``phone_other``; Accounts ``phone_office``, ``phone_alternate`` (fax numbers are not
    callers; ``phone_fields`` overrides). Either way each candidate is kept only when one of
    its phone fields is the caller's number (``PhoneForms.matches``: the national number,
    after nothing or a known prefix), so a record sharing the last digits is never taken;
    this also guards installs older than SuiteCRM PR #8492 (January 2020), whose OR filter
    ignored every condition. v4.1 sends one ``get_entry_list`` whose ``query`` compares each
    phone column with its formatting characters stripped (``REPLACE`` of space, ``-``, ``(``,
    ``)``, ``.``, ``+``) ``LIKE '%<national number>'``.
    Typed (DTMF) keys: ``filter[<key_field>][eq]=<digits>`` (``id`` when ``key_field`` is
    empty); v4.1 ``<table>[_cstm].<key_field> = '<digits>'``.
    The asked fields come in the same request (``fields[<Module>]=``; custom ``*_c`` fields
    included; relate fields such as ``account_name`` are plain attributes). A dotted name
    ``<link>.<field>`` (``accounts.industry``) reads the first record related through that
    link: v4.1 asks for it in the same call (``link_name_to_fields_array``), V8 costs two
    requests (``GET .../module/Contacts/{id}/relationships/accounts``, then the related
    record with ``fields[...]``). Several matches give the ``match_pick`` record by
    ``date_modified`` (V8 asks ``sort=-date_modified``; v4.1 ignores ``order_by``, so up to
    50 rows are ordered here).

Call log: a ``Calls`` record (``name``, ``direction`` Inbound/Outbound, ``status`` Held or
Not Held, ``date_start`` in UTC ``Y-m-d H:i:s``, ``duration_hours``/``duration_minutes``,
``parent_type``/``parent_id`` = the record, ``description`` with the Asterisk call id,
``assigned_user_id`` when set), created with an id derived from the call id (UUID 5): the
call is first looked up by that id (``filter[id][eq]``), and SuiteCRM refuses a second
create with the same id ("Bean Calls with id ... is already exist"), so a call is never
logged twice. A Contact is also linked through ``calls_contacts`` (``POST
.../module/Calls/{id}/relationships`` with ``{"data": {"type": "Contacts", "id": ...}}``)
so the call shows in its History. v4.1: ``set_entry`` with ``new_with_id``, then
``set_relationship`` (link ``contacts``). With no record from routing the number is looked
up in Contacts, Leads, then Accounts; an unknown caller becomes a Lead (or a Contact,
``create_as``) with ``last_name`` and ``phone_work`` in E.164 when the log options ask.

Errors: V8 answers ``{"errors": {"status", "title", "detail"}}`` with HTTP 400 for almost
everything. "The following field in Contact module is not found: x" and "Filter field x in
Contact module is not found" become "field x does not exist on Contacts"; "Filter operator
like is invalid" turns ``auto`` to the exact forms, and in ``like`` mode says to set
``phone_match`` to ``exact`` or ``auto``. OAuth errors are ``{"error",
"message"|"error_description", "hint"}``. v4.1 errors are ``{"name", "number", "description"}``
inside HTTP 200.

Limits: SuiteCRM has no rate limiting of its own: no pace, only the concurrency limit. Unconfirmed: V8 date attributes are read as ISO-8601
(the fake's shape; other formats sort as oldest), and whether client_credentials tokens
carry a refresh token (either way works).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Sequence
from datetime import timezone
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from crmroute.connectors._http import CappedResponse
from crmroute.connectors._phone import PhoneForms, digits_of, phone_forms, written_forms
from crmroute.connectors.base import CallActivity, Connector, ConnectorSettings, Record, Token, https_url, lookup_path
from crmroute.deadline import Deadline
from crmroute.errors import AuthError, ConnectorError, UnexpectedResponse
from crmroute.connectors.base import USER_LIST_BYTES, CrmUser
from crmroute.routing.engine import LookupKey

logger = logging.getLogger(__name__)

JSON_API = "application/vnd.api+json"
CALL_IDS = uuid.UUID("5b0c9f0e-7a43-4f1e-9b4a-0c0ffee5c0de")  # namespace of Calls ids derived from call ids
PAGE_SIZE = 20  # V8 candidates per request
EXACT_FORMS = 9  # stored forms asked in exact mode, one request each
V41_MAX_RESULTS = 50
MODIFIED = "date_modified"
LOOKUP_ORDER = ("contacts", "leads", "accounts")  # which module wins when a call is logged by number
PHONE_FIELDS = {
    "Contacts": ("phone_work", "phone_mobile", "phone_home", "phone_other"),
    "Leads": ("phone_work", "phone_mobile", "phone_home", "phone_other"),
    "Accounts": ("phone_office", "phone_alternate"),
}
NAME_FIELDS = {"Contacts": ("first_name", "last_name"), "Leads": ("first_name", "last_name"), "Accounts": ("name",)}
TABLES = {"Contacts": "contacts", "Leads": "leads", "Accounts": "accounts"}
_FIELD = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_NOT_FOUND_FIELDS = re.compile(r"The following fields? in (\w+) module (?:is|are) not found: (.+)$")
_NOT_FOUND_FILTER = re.compile(r"Filter field (\w+) in (\w+) module is not found")
_BAD_OPERATOR = re.compile(r"Filter operator (\w+) is invalid")
_OBJECTS = {"Contact": "Contacts", "Lead": "Leads", "Account": "Accounts"}
_STRIPPED = (" ", "-", "(", ")", ".", "+")


class SuiteCrmSettings(ConnectorSettings):
    site_url: str = Field(
        ..., description="Root URL of the SuiteCRM install, e.g. https://crm.example.com or "
        "https://example.com/suitecrm (SuiteCRM 8: the public root; /legacy is added)"
    )  # fmt: skip
    version: Literal["7", "8"] = Field("7", description="SuiteCRM major version: 7 (7.10+) or 8 (API under /legacy)")
    api: Literal["v8", "v4_1"] = Field(
        "v8", description="v8: the JSON:API with OAuth 2 (needs the OAuth keys and mod_rewrite); v4_1: the older "
        "REST API with a session login, for installs without V8"
    )  # fmt: skip
    auth_flow: Literal["client_credentials", "password"] = Field(
        "client_credentials", description="V8 OAuth grant: client_credentials (client id + secret) or password "
        "(also a SuiteCRM username and password)"
    )  # fmt: skip
    client_id: str = Field("", description="V8: the OAuth2 client's id (Admin > OAuth2 Clients and Tokens), a GUID")
    client_secret: SecretStr | None = Field(None, description="V8: the OAuth2 client's secret")
    username: str = Field("", description="SuiteCRM user for the password grant and v4_1 (a rule's CRM Username wins)")
    password: SecretStr | None = Field(None, description="That user's password (a rule's CRM Password wins)")
    phone_match: Literal["auto", "like", "exact"] = Field(
        "auto", description="auto: like, or exact on an install that refuses it; like: one request matching the "
        "number's digits whatever the punctuation (SuiteCRM 7.11.19+, 7.12+ and 8); exact: nine requests, one per "
        "common stored format (any V8 version)"
    )  # fmt: skip
    phone_fields: str = Field(
        "", description="Comma-separated phone fields to search instead of the module's standard ones "
        "(e.g. phone_work,phone_mobile,mobile2_c)"
    )  # fmt: skip
    create_as: Literal["leads", "contacts"] = Field(
        "leads", description="What to create for an unknown caller when the log options ask for it"
    )
    assigned_user_id: str = Field("", description="User id to assign logged calls to; empty: the API user")

    @field_validator("site_url")
    @classmethod
    def _https(cls, value: str) -> str:
        value = https_url(value)
        if not value:
            raise ValueError("required: an https:// URL")
        return value

    @field_validator("phone_fields")
    @classmethod
    def _fields(cls, value: str) -> str:
        names = [n.strip() for n in value.split(",") if n.strip()]
        bad = [n for n in names if not _FIELD.match(n)]
        if bad:
            raise ValueError(f"not field names: {', '.join(bad)}")
        return ",".join(names)

    @model_validator(mode="after")
    def _api_needs(self) -> "SuiteCrmSettings":
        if self.api == "v8":
            missing = [n for n in ("client_id", "client_secret") if not _plain(getattr(self, n))]
            if missing:
                raise ValueError(f"the v8 API needs {', '.join(missing)}")
        return self


class SuiteCrmConnector(Connector):
    kind = "suitecrm"
    title = "SuiteCRM"
    docs_url = "https://docs.suitecrm.com/developer/api/developer-setup-guide/json-api/"
    Settings = SuiteCrmSettings
    MODULES = {"accounts": "Accounts", "contacts": "Contacts", "leads": "Leads"}
    limits_source = "no rate limiting (reference section 8)"
    owner_field = "assigned_user_id"

    settings: SuiteCrmSettings

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        s = self.settings
        root = s.site_url + ("/legacy" if s.version == "8" else "")
        self.token_url = f"{root}/Api/access_token"
        self.api_url = f"{root}/Api/V8"
        self.rest_url = f"{root}/service/v4_1/rest.php"
        self._like_refused = False  # phone_match auto: this install answered "Filter operator like is invalid"
        # the token the current task last sent: concurrent requests refused together log in once

    @property
    def v41(self) -> bool:
        return self.settings.api == "v4_1"

    # --- auth -----------------------------------------------------------------------------

    def _credentials(self) -> tuple[str, str]:
        username = self.username or self.settings.username
        password = self.password or _plain(self.settings.password)
        if not username or not password:
            raise AuthError("SuiteCRM needs a username and password for the "
                            + ("v4_1 login" if self.v41 else "password grant"), kind=self.kind,
                            operation="authenticate", reason="misconfigured")  # fmt: skip
        return username, password

    async def _login(self, *, deadline: Deadline) -> Token:
        if self.v41:
            return await self._v41_login(deadline=deadline)
        refused: AuthError | None = None
        refresh = self.refresh_token()  # the V8 refresh token (rotated by SuiteCRM), shared through the store
        if refresh:
            try:
                return await self._grant({"grant_type": "refresh_token", "refresh_token": refresh}, deadline=deadline)
            except AuthError as exc:
                refused = exc
                logger.info("suitecrm: refresh token refused; running the %s grant again", self.settings.auth_flow)
        grant: dict[str, str] = {"grant_type": self.settings.auth_flow}
        try:
            if self.settings.auth_flow == "password":
                grant["username"], grant["password"] = self._credentials()
            return await self._grant(grant, deadline=deadline)
        except AuthError as exc:
            if refused is None:
                raise
            raise AuthError(f"{refused}; the {self.settings.auth_flow} grant failed too: {exc}", kind=self.kind,
                            operation="authenticate", reason=exc.reason) from exc

    async def _grant(self, grant: dict[str, str], *, deadline: Deadline) -> Token:
        s = self.settings
        data = grant | {"client_id": s.client_id, "client_secret": _plain(s.client_secret)}
        response = await self.request("POST", self.token_url, data=data, headers={"Accept": "application/json"},
                                      deadline=deadline, operation="authenticate", auth=False,
                                      ok=(400, 401, 403))  # fmt: skip
        body = _json(response)
        if response.status_code != 200 or not isinstance(body, dict) or not body.get("access_token"):
            raise self._grant_error(response, body, grant["grant_type"])
        expires = body.get("expires_in")
        lifetime = float(expires) if isinstance(expires, (int, float)) or str(expires).isdigit() else None
        expires_at = time.monotonic() + lifetime if lifetime else None
        logger.debug("suitecrm: token from the %s grant", grant["grant_type"])
        return Token(str(body["access_token"]), expires_at, {"refresh_token": str(body.get("refresh_token") or "")})

    def _grant_error(self, response: CappedResponse, body: Any, grant: str) -> AuthError:
        if response.status_code == 200:  # a 200 without a token: not SuiteCRM's token endpoint
            text = "SuiteCRM's token endpoint answered without an access_token (is site_url the install's root?)"
            return AuthError(text, kind=self.kind, operation="authenticate", reason="bad_response")
        error = str(body.get("error") or "") if isinstance(body, dict) else ""
        detail = _oauth_detail(body)
        if grant == "refresh_token":
            why = detail or error or f"HTTP {response.status_code}"
            text = f"SuiteCRM token rejected: refresh token revoked or expired ({why})"
        elif error == "invalid_client":
            text = f"SuiteCRM refused the OAuth2 client: {detail or error} (check client_id and client_secret)"
        elif error:
            text = f"SuiteCRM refused the {grant} grant: {error}" + (f" ({detail})" if detail else "")
        else:
            text = f"SuiteCRM answered HTTP {response.status_code} to the {grant} grant"
            text += f": {detail}" if detail else ""
        return AuthError(text, kind=self.kind, operation="authenticate", reason="auth")

    async def _v41_login(self, *, deadline: Deadline) -> Token:
        username, password = self._credentials()
        args = {"user_auth": {"user_name": username, "password": hashlib.md5(password.encode()).hexdigest()},
                "application_name": "crmroute", "name_value_list": []}  # fmt: skip
        body = await self._v41_send("login", args, session=False, deadline=deadline, operation="authenticate")
        if isinstance(body, dict) and isinstance(body.get("id"), str) and body["id"] and "number" not in body:
            return Token(body["id"])
        error = _v41_error(body)
        raise AuthError(f"SuiteCRM refused the v4_1 login: {error or 'no session id in the answer'}", kind=self.kind,
                        operation="authenticate", reason="auth")  # fmt: skip

    def _auth_headers(self, token: Token) -> dict[str, str]:
        return {} if self.v41 else {"Authorization": f"Bearer {token.value}"}

    # --- plumbing -----------------------------------------------------------------------------

    async def verify(self, *, deadline: Deadline) -> str:
        """V8: ``GET /Api/V8/meta/modules`` (in every V8 release); v4_1: ``get_user_id`` with the session."""
        if self.v41:
            user_id = await self._v41("get_user_id", {}, deadline=deadline, operation="verify")
            return f"session accepted (user id {user_id})"
        data = await self._v8("GET", "/meta/modules", deadline=deadline, operation="verify")
        modules = lookup_path(data, "data.attributes")
        return f"token accepted ({len(modules)} modules visible)" if isinstance(modules, dict) else "token accepted"

    async def _v8(self, method: str, path: str, *, deadline: Deadline, operation: str, **kwargs: Any) -> Any:
        headers = {"Accept": JSON_API} | ({"Content-Type": JSON_API} if "content" in kwargs else {})
        response = await self.request(method, f"{self.api_url}{path}", headers=headers, deadline=deadline,
                                      operation=operation, **kwargs)  # fmt: skip
        return self.json_of(response, operation)

    async def _v41(self, method: str, args: dict[str, Any], *, deadline: Deadline, operation: str) -> Any:
        """One v4.1 call with the session first in ``rest_data``; an invalid session logs in again once."""
        refused: Token | None = None
        for attempt in (1, 2, 3):  # 3: only when the session from the credential store was refused too
            token = await self.authenticate(deadline=deadline, force=attempt > 1, refused=refused)
            refused = token
            body = await self._v41_send(method, {"session": token.value} | args, session=True, deadline=deadline,
                                        operation=operation)  # fmt: skip
            if isinstance(body, dict) and str(body.get("number")) == "11":  # Invalid Session ID
                if attempt == 1 or (attempt == 2 and self.adopted(token)):
                    continue
                raise AuthError(f"SuiteCRM rejected the session ({operation}): {_v41_error(body)}", kind=self.kind,
                                operation=operation, reason="auth")  # fmt: skip
            if isinstance(body, dict) and {"name", "number", "description"} <= set(body):
                raise UnexpectedResponse(f"SuiteCRM answered {method} with an error: {_v41_error(body)}",
                                         kind=self.kind, operation=operation, reason="v41_error")  # fmt: skip
            return body
        raise AssertionError("unreachable")

    async def _v41_send(self, method: str, args: dict[str, Any], *, session: bool, deadline: Deadline,
                        operation: str) -> Any:  # fmt: skip
        data = {"method": method, "input_type": "JSON", "response_type": "JSON", "rest_data": json.dumps(args)}
        response = await self.request("POST", self.rest_url, data=data, headers={"Accept": "application/json"},
                                      deadline=deadline, operation=operation, auth=False)  # fmt: skip
        return self.json_of(response, operation)

    # --- finding records ------------------------------------------------------------------------

    async def find_record(
        self, key: LookupKey, module: str, *, fields: Sequence[str] = (), deadline: Deadline
    ) -> Record | None:
        name = self.vendor_module(module)
        plain, links = _split_fields(fields)
        if key.source == "dtmf":
            rows = await self._by_key(name, key.value, plain, links, deadline=deadline)
        else:
            rows = await self._by_phone(name, self.phone(key), plain, links, deadline=deadline)
        return self._record(name, rows)

    def phone_fields(self, name: str) -> list[str]:
        custom = [f for f in self.settings.phone_fields.split(",") if f]
        return custom or list(PHONE_FIELDS[name])

    def _attributes(self, name: str, plain: Sequence[str]) -> list[str]:
        wanted = [*NAME_FIELDS[name], MODIFIED, *self.phone_fields(name)]
        for field in plain:
            if field not in wanted:
                wanted.append(field)
        return wanted

    async def _by_phone(self, name: str, forms: PhoneForms, plain: Sequence[str], links: Sequence[tuple[str, str]],
                        *, deadline: Deadline) -> list[dict[str, Any]]:  # fmt: skip
        wanted = wanted_digits(forms)
        if not wanted:
            return []
        phones = self.phone_fields(name)
        if self.v41:
            table = TABLES[name]
            column = {f: f"{table}_cstm.{f}" if f.endswith("_c") else f"{table}.{f}" for f in phones}
            query = " OR ".join(f"{_stripped_sql(column[f])} LIKE '%{wanted[-1]}'" for f in phones)
            rows = await self._v41_list(name, f"({query})", plain, links, deadline=deadline)
        else:
            rows = await self._v8_by_phone(name, forms, wanted[-1], phones, plain, deadline=deadline)
        return [r for r in rows if any(forms.matches(r.get(f)) for f in phones)]

    async def _v8_by_phone(self, name: str, forms: PhoneForms, digits: str, phones: Sequence[str],
                           plain: Sequence[str], *, deadline: Deadline) -> list[dict[str, Any]]:  # fmt: skip
        mode = self.settings.phone_match
        if mode == "like" or (mode == "auto" and not self._like_refused):
            params = {"filter[operator]": "or"} | {f"filter[{f}][like]": like_pattern(digits) for f in phones}
            try:
                return await self._v8_list(name, params, plain, deadline=deadline)
            except UnexpectedResponse as exc:
                if mode == "like" or exc.reason != "no_like":
                    raise
                self._like_refused = True
                logger.warning("suitecrm: this install has no like filter (before 7.11.19): phone numbers are "
                               "matched in the %d exact forms from now on", EXACT_FORMS)  # fmt: skip
        batches = await _first_error([
            self._v8_list(name, {"filter[operator]": "or"} | {f"filter[{f}][eq]": form for f in phones}, plain,
                          deadline=deadline)
            for form in stored_forms(forms)
        ])  # fmt: skip
        seen: dict[str, dict[str, Any]] = {}
        for batch in batches:
            for row in batch:
                seen.setdefault(row["id"], row)
        return list(seen.values())

    async def _by_key(self, name: str, value: str, plain: Sequence[str], links: Sequence[tuple[str, str]], *,
                      deadline: Deadline) -> list[dict[str, Any]]:  # fmt: skip
        field = self.settings.key_field.strip() or "id"
        if not _FIELD.match(field):
            raise UnexpectedResponse(f"key_field {field!r} is not a SuiteCRM field name", kind=self.kind,
                                     operation="find_record", reason="bad_field")  # fmt: skip
        if self.v41:
            table = TABLES[name]
            column = f"{table}_cstm.{field}" if field.endswith("_c") else f"{table}.{field}"
            return await self._v41_list(name, f"{column} = {sql_literal(value)}", plain, links, deadline=deadline)
        return await self._v8_list(name, {f"filter[{field}][eq]": value}, plain, deadline=deadline)

    async def _v8_list(self, name: str, filters: dict[str, str], plain: Sequence[str], *,
                       deadline: Deadline) -> list[dict[str, Any]]:  # fmt: skip
        params = dict(filters) | {f"fields[{name}]": ",".join(self._attributes(name, plain)),
                                  "page[size]": str(PAGE_SIZE), "page[number]": "1"}  # fmt: skip
        if self.settings.match_pick != "first":
            params["sort"] = f"-{MODIFIED}" if self.settings.match_pick == "newest" else MODIFIED
        body = await self._v8("GET", f"/module/{name}", params=params, deadline=deadline, operation="find_record")
        data = body.get("data") if isinstance(body, dict) else None
        if data is None:
            data = []
        if not isinstance(data, list):
            raise self._shape("find_record", "a module list without a data array")
        rows = []
        for item in data:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise self._shape("find_record", "a record without an id")
            attributes = item.get("attributes") if isinstance(item.get("attributes"), dict) else {}
            rows.append({"id": item["id"]} | attributes)
        return rows

    async def _v41_list(self, name: str, query: str, plain: Sequence[str], links: Sequence[tuple[str, str]], *,
                        deadline: Deadline) -> list[dict[str, Any]]:  # fmt: skip
        link_fields: dict[str, list[str]] = {}
        for link, field in links:
            link_fields.setdefault(link, []).append(field)
        args = {"module_name": name, "query": query, "order_by": "", "offset": 0,
                "select_fields": ["id", *self._attributes(name, plain)],
                "link_name_to_fields_array": [{"name": k, "value": v} for k, v in link_fields.items()],
                "max_results": V41_MAX_RESULTS, "deleted": 0, "favorites": False}  # fmt: skip
        body = await self._v41("get_entry_list", args, deadline=deadline, operation="find_record")
        entries = body.get("entry_list") if isinstance(body, dict) else None
        if not isinstance(entries, list):
            raise self._shape("find_record", "a get_entry_list answer without entry_list")
        related = body.get("relationship_list") if isinstance(body.get("relationship_list"), list) else []
        rows = []
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                raise self._shape("find_record", "an entry without an id")
            row = {"id": entry["id"]} | _name_values(entry.get("name_value_list"))
            if index < len(related):
                row |= _v41_links(related[index])
            rows.append(row)
        return rows

    def _record(self, name: str, rows: list[dict[str, Any]]) -> Record | None:
        if not rows:
            return None
        chosen, matches = self.pick(rows, MODIFIED)
        url = f"{self.settings.site_url}/index.php?module={name}&action=DetailView&record={chosen['id']}"
        return Record(module=name, id=chosen["id"], fields=chosen, matches=matches, url=url)

    async def read_field(self, record: Record, api_name: str, *, deadline: Deadline) -> str | None:
        link, _, field = api_name.partition(".")
        if not field or self.v41 or link in record.fields:
            return await super().read_field(record, api_name, deadline=deadline)
        if not _FIELD.match(link) or not _FIELD.match(field):
            raise UnexpectedResponse(f"{api_name!r} is not a SuiteCRM link.field name", kind=self.kind,
                                     operation="read_field", reason="bad_field")  # fmt: skip
        body = await self._v8("GET", f"/module/{record.module}/{record.id}/relationships/{link}", deadline=deadline,
                              operation="read_field")  # fmt: skip
        data = body.get("data") if isinstance(body, dict) else None
        related = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else None
        if related is None or not isinstance(related.get("id"), str) or not isinstance(related.get("type"), str):
            record.fields[link] = None
            return None
        module = _OBJECTS.get(related["type"], related["type"])
        one = await self._v8("GET", f"/module/{module}/{related['id']}", params={f"fields[{module}]": field},
                             deadline=deadline, operation="read_field")  # fmt: skip
        attributes = lookup_path(one, "data.attributes")
        record.fields[link] = attributes if isinstance(attributes, dict) else {}  # cached: the next read is free
        return await super().read_field(record, api_name, deadline=deadline)

    # --- call logging -----------------------------------------------------------------------------

    # --- users (agents sync) -------------------------------------------------------------

    async def list_users(self, *, deadline: Deadline) -> list[CrmUser]:
        """The active users (``status`` Active; the ids ``assigned_user_id`` holds), 100 a page. V8: ``GET
        .../module/Users`` with ``filter[status][eq]=Active`` and ``page[number]`` up to ``meta.total-pages``;
        v4.1: ``get_entry_list`` of Users with ``users.status = 'Active'`` by ``offset``."""
        users: list[CrmUser] = []
        for page in range(1, 1001):
            if self.v41:
                args = {"module_name": "Users", "query": "users.status = 'Active'", "order_by": "",
                        "offset": (page - 1) * 100, "select_fields": ["id", "user_name", "first_name", "last_name",
                        "email1"], "link_name_to_fields_array": [], "max_results": 100, "deleted": 0,
                        "favorites": False}  # fmt: skip
                body = await self._v41("get_entry_list", args, deadline=deadline, operation="list_users")
                entries = body.get("entry_list") if isinstance(body, dict) else None
                if not isinstance(entries, list):
                    raise self._shape("list_users", "a get_entry_list answer without entry_list")
                rows = [{"id": e["id"]} | _name_values(e.get("name_value_list")) for e in entries
                        if isinstance(e, dict) and isinstance(e.get("id"), str)]  # fmt: skip
                last = len(entries) < 100
            else:
                params = {"fields[Users]": "user_name,first_name,last_name,email1", "filter[status][eq]": "Active",
                          "page[size]": "100", "page[number]": str(page)}  # fmt: skip
                body = await self._v8("GET", "/module/Users", params=params, deadline=deadline,
                                      operation="list_users", limit=USER_LIST_BYTES)  # fmt: skip
                data = body.get("data") if isinstance(body, dict) else None
                if not isinstance(data, list):
                    raise self._shape("list_users", "a module list without a data array")
                rows = [{"id": d["id"]} | (d.get("attributes") if isinstance(d.get("attributes"), dict) else {})
                        for d in data if isinstance(d, dict) and isinstance(d.get("id"), str)]  # fmt: skip
                pages = lookup_path(body, "meta.total-pages")
                last = not data or not isinstance(pages, int) or page >= pages
            for row in rows:
                name = " ".join(str(row.get(k) or "").strip() for k in ("first_name", "last_name")).strip()
                users.append(CrmUser(row["id"], name or str(row.get("user_name") or ""), str(row.get("email1") or "")))
            if last:
                return users
        return users

    async def log_call(self, call: CallActivity, options: Any, *, deadline: Deadline) -> str:
        call_id = str(uuid.uuid5(CALL_IDS, call.call_id))
        if await self._logged(call_id, deadline=deadline):
            return call_id
        record = call.record or await self._lookup_caller(call.external_number, deadline=deadline)
        if record is None and getattr(options, "create_unknown", False):
            record = await self._create_caller(call.external_number, deadline=deadline)
        attributes = self._call(call, record)
        try:
            await self._create("Calls", attributes, record_id=call_id, deadline=deadline)
        except ConnectorError:
            if await self._logged(call_id, deadline=deadline):  # a concurrent logger got there first
                return call_id
            raise
        if record is not None and record.module == "Contacts":
            await self._relate("Calls", call_id, "Contacts", record.id, deadline=deadline)
        logger.info("suitecrm: call %s logged as Calls %s", call.call_id, call_id)
        return call_id

    async def _logged(self, call_id: str, *, deadline: Deadline) -> bool:
        if self.v41:
            args = {"module_name": "Calls", "query": f"calls.id = {sql_literal(call_id)}", "order_by": "",
                    "offset": 0, "select_fields": ["id"], "link_name_to_fields_array": [], "max_results": 1,
                    "deleted": 0, "favorites": False}  # fmt: skip
            body = await self._v41("get_entry_list", args, deadline=deadline, operation="log_call")
            return bool(isinstance(body, dict) and body.get("entry_list"))
        body = await self._v8("GET", "/module/Calls", params={"filter[id][eq]": call_id, "fields[Calls]": "name"},
                              deadline=deadline, operation="log_call")  # fmt: skip
        return bool(isinstance(body, dict) and body.get("data"))

    async def _lookup_caller(self, number: str, *, deadline: Deadline) -> Record | None:
        forms = phone_forms(number, self.region)
        for module in LOOKUP_ORDER:
            name = self.MODULES[module]
            record = self._record(name, await self._by_phone(name, forms, (), (), deadline=deadline))
            if record is not None:
                return record
        return None

    async def _create_caller(self, number: str, *, deadline: Deadline) -> Record:
        forms = phone_forms(number, self.region)
        phone = forms.e164 or forms.raw
        name = self.MODULES[self.settings.create_as]
        attributes = {"last_name": f"Caller {phone}", "phone_work": phone}
        if name == "Leads":
            attributes["lead_source"] = "Cold Call"
        new_id = await self._create(name, attributes, deadline=deadline)
        logger.info("suitecrm: created %s %s for an unknown caller", name, new_id)
        return Record(module=name, id=new_id, fields=attributes)

    async def _create(self, name: str, attributes: dict[str, Any], *, record_id: str = "", deadline: Deadline) -> str:
        if self.v41:
            values = [{"name": k, "value": v} for k, v in attributes.items()]
            if record_id:
                values += [{"name": "id", "value": record_id}, {"name": "new_with_id", "value": True}]
            body = await self._v41("set_entry", {"module_name": name, "name_value_list": values}, deadline=deadline,
                                   operation="log_call")  # fmt: skip
            new_id = body.get("id") if isinstance(body, dict) else None
        else:
            data: dict[str, Any] = {"type": name, "attributes": attributes}
            if record_id:
                data["id"] = record_id
            body = await self._v8("POST", "/module", content=json.dumps({"data": data}), deadline=deadline,
                                  operation="log_call")  # fmt: skip
            new_id = lookup_path(body, "data.id")
        if not isinstance(new_id, str) or not new_id:
            raise self._shape("log_call", f"a {name} create answer without an id")
        return new_id

    async def _relate(self, name: str, record_id: str, related: str, related_id: str, *, deadline: Deadline) -> None:
        if self.v41:
            args = {"module_name": name, "module_id": record_id, "link_field_name": related.lower(),
                    "related_ids": [related_id], "name_value_list": [], "delete": 0}  # fmt: skip
            body = await self._v41("set_relationship", args, deadline=deadline, operation="log_call")
            if not isinstance(body, dict) or not body.get("created"):
                logger.warning("suitecrm: %s %s not linked to %s %s: %s", name, record_id, related, related_id, body)
            return
        await self._v8("POST", f"/module/{name}/{record_id}/relationships",
                       content=json.dumps({"data": {"type": related, "id": related_id}}), deadline=deadline,
                       operation="log_call")  # fmt: skip

    def _call(self, call: CallActivity, record: Record | None) -> dict[str, Any]:
        inbound = call.direction == "inbound"
        subject = call.subject or f"{'Inbound' if inbound else 'Outbound'} call {'from' if inbound else 'to'} " \
                                  f"{call.external_number}"  # fmt: skip
        lines = [call.description] if call.description else []
        lines += [f"Outcome: {call.outcome}", f"Ringing {call.ring_seconds} s, talk {call.talk_seconds} s"]
        if call.extension:
            lines.append(f"Extension: {call.extension}")
        if call.recording:
            lines.append(f"Recording: {call.recording}")
        lines.append(f"Asterisk call id: {call.call_id}")
        minutes = (max(0, call.talk_seconds) + 59) // 60
        attributes: dict[str, Any] = {
            "name": subject[:50],
            "direction": "Inbound" if inbound else "Outbound",
            "status": "Held" if call.outcome == "answered" else "Not Held",
            "date_start": call.started_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
            "duration_hours": minutes // 60,
            "duration_minutes": minutes % 60,
            "description": "\n".join(lines),
        }
        if record is not None:
            attributes["parent_type"], attributes["parent_id"] = record.module, record.id
        if self.settings.assigned_user_id:
            attributes["assigned_user_id"] = self.settings.assigned_user_id
        return attributes

    # --- errors ---------------------------------------------------------------------------------

    def _shape(self, operation: str, what: str) -> UnexpectedResponse:
        return UnexpectedResponse(f"SuiteCRM sent {what} to {operation}", kind=self.kind, operation=operation,
                                  reason="bad_response")  # fmt: skip

    def vendor_message(self, response: CappedResponse) -> str:
        body = _json(response)
        if isinstance(body, dict):
            errors = body.get("errors")
            if isinstance(errors, list) and errors and isinstance(errors[0], dict):
                errors = errors[0]
            if isinstance(errors, dict):
                text = str(errors.get("detail") or errors.get("title") or "").strip()
                if text:
                    return text[:300]
            text = _oauth_detail(body) or _v41_error(body)
            if text:
                return text[:300]
        return super().vendor_message(response)

    def error_for(self, response: CappedResponse, operation: str) -> ConnectorError:
        detail = self.vendor_message(response)
        args = {"kind": self.kind, "operation": operation}
        if response.status_code == 400:
            if found := _NOT_FOUND_FIELDS.search(detail):
                names = [n.strip() for n in found[2].split(",")]
                module = _OBJECTS.get(found[1], found[1])
                return UnexpectedResponse(f"field {', '.join(names)} does not exist on {module}",
                                          reason="unknown_field", **args)  # fmt: skip
            if found := _NOT_FOUND_FILTER.search(detail):
                return UnexpectedResponse(f"field {found[1]} does not exist on {_OBJECTS.get(found[2], found[2])}",
                                          reason="unknown_field", **args)  # fmt: skip
            if (found := _BAD_OPERATOR.search(detail)) and found[1].lower() == "like":
                return UnexpectedResponse("this SuiteCRM has no like filter (it came in 7.11.19); set "
                                          "phone_match to exact or auto", reason="no_like", **args)  # fmt: skip
        return super().error_for(response, operation)


def stored_forms(forms: PhoneForms) -> list[str]:
    """The ways a number is commonly typed into SuiteCRM, most likely first (exact mode asks each)."""
    return written_forms(forms)[:EXACT_FORMS]


def like_pattern(digits: str) -> str:
    """``%5%5%5%1%2%3%0%0%0%4``: the digits in order, anything (punctuation, a prefix) before and between."""
    return "".join(f"%{d}" for d in digits)


def wanted_digits(forms: PhoneForms) -> list[str]:
    """Digit strings that identify the caller, shortest (the national number) last."""
    if not forms.valid:
        return [forms.digits] if len(forms.digits) >= 4 else []
    written = digits_of(forms.national)  # with a trunk prefix where the country writes one
    return [d for d in dict.fromkeys([forms.digits, written, forms.national_digits]) if d]


def _stripped_sql(column: str) -> str:
    for char in _STRIPPED:
        column = f"REPLACE({column},'{char}','')"
    return column


def sql_literal(value: str) -> str:
    """``value`` as a quoted SQL string (SuiteCRM's MySQL/MariaDB escaping)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _split_fields(fields: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    plain: list[str] = []
    links: list[tuple[str, str]] = []
    for name in fields:
        name = name.strip()
        head, _, tail = name.partition(".")
        if not _FIELD.match(head) or (tail and (not _FIELD.match(tail))):
            raise UnexpectedResponse(f"{name!r} is not a SuiteCRM field name", kind="suitecrm",
                                     operation="find_record", reason="bad_field")  # fmt: skip
        if tail:
            links.append((head, tail))
        elif head not in plain:
            plain.append(head)
    return plain, links


def _name_values(values: Any) -> dict[str, Any]:
    """A v4.1 ``name_value_list`` (a dict of ``{name, value}``, or a list of them) as plain fields."""
    items = values.values() if isinstance(values, dict) else values if isinstance(values, list) else []
    return {str(v["name"]): v.get("value") for v in items if isinstance(v, dict) and "name" in v}


def _v41_links(related: Any) -> dict[str, Any]:
    """v4.1 ``relationship_list[i]``: the first related record of each link, as ``{link: {field: value}}``."""
    out: dict[str, Any] = {}
    link_list = related.get("link_list") if isinstance(related, dict) else related
    for link in link_list if isinstance(link_list, list) else []:
        if not isinstance(link, dict) or not isinstance(link.get("name"), str):
            continue
        records = link.get("records") if isinstance(link.get("records"), list) else []
        first = records[0] if records and isinstance(records[0], dict) else None
        out[link["name"]] = _name_values(first.get("link_value")) if first else None
    return out


async def _first_error(works: list[Awaitable[Any]]) -> list[Any]:
    """Run ``works`` at once; their results, or the first failure (each is bounded by its deadline)."""
    results = await asyncio.gather(*works, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def _json(response: CappedResponse) -> Any:
    try:
        return json.loads(response.text)
    except ValueError:
        return None


def _oauth_detail(body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    text = str(body.get("error_description") or body.get("message") or "").strip()
    hint = str(body.get("hint") or "").strip()
    return f"{text} ({hint})" if text and hint else text or hint


def _v41_error(body: Any) -> str:
    if isinstance(body, dict) and "number" in body and ("name" in body or "description" in body):
        return f"{body.get('name') or 'error'}: {body.get('description') or ''}".strip().rstrip(":")
    return ""


def _plain(value: SecretStr | str | None) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value or ""
