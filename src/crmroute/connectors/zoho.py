"""Zoho CRM (REST API v2 ... v8) — ``shared/reference/crm-apis.md`` section 11.

Auth (OAuth 2 against the Zoho Accounts server of the org's data centre)
    refresh token   ``POST {accounts_url}/oauth/v2/token`` with
                    ``grant_type=refresh_token``, ``client_id``, ``client_secret``,
                    ``refresh_token`` (form body, so no secret ever sits in a URL).
                    The refresh token comes from a Self Client or web client's
                    one-time authorization-code exchange, done once by the admin
                    (README). Zoho does not rotate it.
    client credentials  (Self Client only, no refresh token: set ``org_id``)
                    the same endpoint with ``grant_type=client_credentials``,
                    ``scope`` and ``soid=ZohoCRM.{org_id}``; the request is simply
                    repeated when the token expires.
    Both answer ``{access_token, api_domain, token_type, expires_in}``; the
    token is sent as ``Authorization: Zoho-oauthtoken <token>`` and refreshed
    ``TOKEN_MARGIN`` seconds before ``expires_in`` (3600) runs out. The token
    endpoint reports refusals as HTTP 200 with ``{"error": "invalid_code"}``
    (refresh token revoked/unknown) or ``"invalid_client"`` (wrong client or
    wrong data centre): both are ``AuthError``. A rule's CRM username/password
    are not used: Zoho has no password grant.

Base URLs
    ``accounts_url`` (default: the ``data_centre``'s Accounts server, e.g.
    ``https://accounts.zoho.eu``); API calls go to ``api_domain`` when set,
    else to the ``api_domain`` the token response names (the org's data
    centre), else ``https://www.zohoapis.<tld>``. Both are overridable for
    sandboxes and test servers; both must be ``https://``.

Modules
    accounts -> ``Accounts``, contacts -> ``Contacts``, leads -> ``Leads``.

Finding a record
    Phone keys use the module's dedicated phone search,
    ``GET /crm/{v}/{Module}/search?phone=...``, which looks in every phone
    field of the module. How Zoho normalises punctuation and country codes is
    unconfirmed (reference section 11, "Phone matching"), so per the
    reference's appendix ("E.164, then national") the forms are tried in
    order, stopping at the first that finds something: E.164
    (``+14155552671``), then the national format (``(415) 555-2671``) — one
    request for a number stored in E.164, two for an unknown caller. The
    national digits (``4155552671``) are not sent as a third form: the
    reference's summary counts the ``phone`` parameter as Zoho's server-side
    phone normalisation, and they differ from the national format only in
    punctuation. The form that last found a
    record in a module is tried first there (kept per connector, i.e. per
    integration and rule user): an org that stores its numbers one way —
    most do — pays one request per found caller after its first hit, not two.
    Requests per uncached call: 1 for a found caller in the org's usual form
    (2 for one stored the other way), 2 for an unknown caller (with or
    without the country code: how Zoho treats it is unconfirmed), plus the
    token request about once an hour. Zoho's search takes
    one ``phone`` value per request, and the ``criteria`` alternative compares
    stored text (``equals``/``starts_with``), so the forms cannot share one
    request.
    A typed (DTMF) key: ``GET /crm/{v}/{Module}/{id}`` when ``key_field`` is
    empty (digits only), else ``search?criteria=({key_field}:equals:{key})``
    (parentheses, commas and backslashes escaped as Zoho documents), the
    matches then checked for exact equality (v8 ``equals`` may act as
    *contains*).
    From v3 on, ``fields=`` names what comes back (the rule's field, the pick
    field and a few display fields) in the same request; v2 returns every field.
    Several matches: ``match_pick`` on ``Modified_Time``; ``Record.matches``
    counts the first page (``per_page=200``).
    No match is HTTP 204 with an empty body (``{"data": []}`` is accepted too).

Reading fields
    ``data[i].{api_name}``; lookups are ``{name, id}`` objects, so
    ``Account_Name.name`` reads in place, and any other dotted part
    (``Account_Name.Industry``) fetches the related record
    (``GET /crm/{v}/{Module}/{id}``; the module from the known standard
    lookups or, once per field, ``GET /crm/{v}/settings/fields?module=``;
    ``Owner``/``Created_By``/``Modified_By`` from ``/crm/{v}/users/{id}``).

Call log
    ``POST /crm/{v}/Calls`` ``{"data": [{Subject, Call_Type, Call_Start_Time,
    Call_Duration, Description, Who_Id|What_Id, $se_module}]}``.
    ``Call_Type``: Inbound (answered), Missed (inbound not answered), Outbound.
    ``Call_Start_Time`` ISO 8601 with offset; ``Call_Duration`` is the talk
    time as ``mm:ss`` for completed calls (Zoho's posts call it "hh:mm" while
    its examples and Bigin's docs read ``mm:ss``: unconfirmed). A contact is
    linked by ``Who_Id`` (and its account by ``What_Id`` + ``$se_module:
    Accounts``), a lead or account by ``What_Id`` + ``$se_module``. Without a
    record from routing the caller is looked up in Contacts, then Leads, then
    Accounts; when nothing matches and the log options say ``create_unknown``
    a Lead (or Contact, ``create_module``) is created first (``Last_Name`` and
    ``Company`` are mandatory on Leads). Idempotency: the Subject ends with
    ``[<call id>]`` and an existing Call with that exact Subject
    (``Calls/search?criteria=(Subject:equals:...)``) is returned instead of a
    new one.

Errors (one place: ``error_for``)
    ``{"code", "details", "message", "status"}`` (bulk: inside ``data[0]``).
    401 ``INVALID_TOKEN`` -> refresh once, then ``AuthError``;
    ``OAUTH_SCOPE_MISMATCH`` -> ``AuthError`` naming the scopes to grant;
    ``INVALID_QUERY``/``INVALID_DATA`` naming ``details.api_name`` while
    finding/reading -> ``UnexpectedResponse("field X does not exist on
    Contacts ...")``; 429 ``TOO_MANY_REQUESTS`` -> waited out if
    ``Retry-After`` fits the deadline, else ``RateLimited``; the Accounts
    server's ``{"error": "Access Denied"}`` ("too many requests") ->
    ``RateLimited`` (exact text unconfirmed).

Limits
    Credits per rolling 24 h (50,000 + per-user on paid editions, 5,000 Free)
    and 5 (Free) to 25 (Ultimate) concurrent requests per org; a token
    endpoint cap of 10 access tokens per refresh token per 10 minutes, which
    is why the token is cached and refreshed only when stale. Credits are a
    quota (Standard's base 50,000; set ``daily_quota`` for yours), at most 5
    requests in flight (the Free edition's concurrency); no pace.

Unconfirmed and kept as the reference has it: ``fields`` on search in v3+,
the 204 "no match" answer, the CA/SA API hosts, ``Call_Duration``'s format,
the error code strings above, and what the fake assumes of an unknown name
in ``fields`` (400 ``INVALID_DATA`` with ``details.api_name``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from crmroute.connectors._http import CappedResponse
from crmroute.connectors.base import (
    CallActivity,
    Connector,
    ConnectorSettings,
    Record,
    Token,
    field_text,
    https_url,
    lookup_path,
)
from crmroute.deadline import Deadline
from crmroute.errors import AuthError, ConnectorError, RateLimited, UnexpectedResponse
from crmroute.connectors.base import USER_LIST_BYTES, CrmUser
from crmroute.resilience.budget import Quota
from crmroute.routing.engine import LookupKey

logger = logging.getLogger(__name__)

PHONE_FORM_ORDER = ("e164", "national")  # the reference's phone appendix: "E.164, then national"

DATA_CENTRES: dict[str, tuple[str, str]] = {  # data centre -> (Accounts server, default API domain)
    "us": ("https://accounts.zoho.com", "https://www.zohoapis.com"),
    "eu": ("https://accounts.zoho.eu", "https://www.zohoapis.eu"),
    "in": ("https://accounts.zoho.in", "https://www.zohoapis.in"),
    "au": ("https://accounts.zoho.com.au", "https://www.zohoapis.com.au"),
    "jp": ("https://accounts.zoho.jp", "https://www.zohoapis.jp"),
    "cn": ("https://accounts.zoho.com.cn", "https://www.zohoapis.com.cn"),
    "ca": ("https://accounts.zohocloud.ca", "https://www.zohoapis.ca"),  # API host unconfirmed
    "sa": ("https://accounts.zoho.sa", "https://www.zohoapis.sa"),  # API host unconfirmed
}
API_VERSIONS = ("v2", "v2.1", "v3", "v4", "v5", "v6", "v7", "v8")
DEFAULT_SCOPE = "ZohoCRM.modules.ALL,ZohoCRM.settings.fields.READ,ZohoCRM.users.READ,ZohoSearch.securesearch.READ"
PICK_FIELD = "Modified_Time"
PER_PAGE = 200
SUBJECT_MAX = 255
# Shown in the Test action and needed to link a call (a contact's account); all are standard fields.
DISPLAY_FIELDS: dict[str, tuple[str, ...]] = {
    "Contacts": ("Full_Name", "Phone", "Account_Name"),
    "Leads": ("Full_Name", "Phone", "Company"),
    "Accounts": ("Account_Name", "Phone"),
}
# Standard lookup fields and the module they point to (custom lookups: asked of settings/fields).
KNOWN_LOOKUPS = {
    "Account_Name": "Accounts", "Parent_Account": "Accounts", "Contact_Name": "Contacts",
    "Reporting_To": "Contacts", "Vendor_Name": "Vendors", "Deal_Name": "Deals", "Campaign_Source": "Campaigns",
}  # fmt: skip
USER_LOOKUPS = frozenset({"Owner", "Created_By", "Modified_By"})
LOG_LOOKUP_ORDER = ("contacts", "leads", "accounts")


class ZohoSettings(ConnectorSettings):
    data_centre: Literal["us", "eu", "in", "au", "jp", "cn", "ca", "sa"] = Field(
        "us", description="Data centre of the Zoho account (the domain you sign in at: zoho.com = us, zoho.eu = eu, "
        "zoho.in = in, zoho.com.au = au, zoho.jp = jp, zoho.com.cn = cn, zohocloud.ca = ca, zoho.sa = sa)"
    )  # fmt: skip
    accounts_url: str = Field(
        "", description="Zoho Accounts server for tokens, e.g. https://accounts.zoho.eu; empty: the data centre's"
    )
    api_domain: str = Field(
        "", description="API domain, e.g. https://www.zohoapis.eu or a sandbox's; empty: the api_domain Zoho returns "
        "with the token"
    )  # fmt: skip
    api_version: Literal["v2", "v2.1", "v3", "v4", "v5", "v6", "v7", "v8"] = Field(
        "v8", description="Zoho CRM REST API version used in request paths (/crm/v8/...)"
    )
    client_id: str = Field(..., min_length=1, description="Client ID of the Self Client or server-based client "
                           "(API console), e.g. 1000.ABC...")  # fmt: skip
    client_secret: SecretStr = Field(..., description="Client secret of that client")
    refresh_token: SecretStr | None = Field(
        None, description="Refresh token from the one-time code exchange (scopes ZohoCRM.modules.ALL, "
        "ZohoSearch.securesearch.READ, ZohoCRM.settings.fields.READ, ZohoCRM.users.READ); empty: use the client "
        "credentials flow with org_id"
    )  # fmt: skip
    org_id: str = Field(
        "", description="Zoho CRM organization ID, only for the Self Client client-credentials flow (no refresh token)"
    )
    scope: str = Field(DEFAULT_SCOPE, description="Scopes requested by the client-credentials flow, comma separated")
    create_module: Literal["Leads", "Contacts"] = Field(
        "Leads", description="Where an unknown caller is created when the log options ask for it"
    )

    @field_validator("accounts_url", "api_domain")
    @classmethod
    def _https(cls, value: str) -> str:
        return https_url(value)

    @model_validator(mode="after")
    def _one_flow(self) -> "ZohoSettings":
        if self.refresh_token is None or not self.refresh_token.get_secret_value():
            if not self.org_id:
                raise ValueError("give a refresh_token, or an org_id for the client-credentials flow")
        return self


class ZohoConnector(Connector):
    kind: ClassVar[str] = "zoho"
    title: ClassVar[str] = "Zoho CRM"
    docs_url: ClassVar[str] = "https://www.zoho.com/crm/developer/docs/api/v8/"
    Settings: ClassVar[type[ConnectorSettings]] = ZohoSettings
    MODULES: ClassVar[dict[str, str]] = {"accounts": "Accounts", "contacts": "Contacts", "leads": "Leads"}
    quotas: ClassVar[tuple[Quota, ...]] = (Quota(50_000, 86_400, "API credits per 24 h"),)
    max_concurrency: ClassVar[int] = 5  # the Free edition's concurrency limit per org
    limits_source: ClassVar[str] = "credits per 24 h (Standard base 50,000), concurrency 5-25 (reference section 11)"
    owner_field = "Owner"

    settings: ZohoSettings

    def __init__(self, settings: ConnectorSettings, http: Any, **kwargs: Any) -> None:
        super().__init__(settings, http, **kwargs)
        self._lookup_modules: dict[tuple[str, str], str | None] = {}
        self._hit_form: dict[str, str] = {}  # module -> the phone form that last found a record there

    # --- auth ---------------------------------------------------------------------------------

    @property
    def accounts_url(self) -> str:
        return self.settings.accounts_url or DATA_CENTRES[self.settings.data_centre][0]

    def _auth_headers(self, token: Token) -> dict[str, str]:
        return {"Authorization": f"Zoho-oauthtoken {token.value}"}

    async def _login(self, *, deadline: Deadline) -> Token:
        s = self.settings
        form = {"client_id": s.client_id, "client_secret": s.client_secret.get_secret_value()}
        if s.refresh_token is not None and s.refresh_token.get_secret_value():
            form |= {"grant_type": "refresh_token", "refresh_token": s.refresh_token.get_secret_value()}
            flow = "refresh token"
        else:
            form |= {"grant_type": "client_credentials", "scope": s.scope, "soid": f"ZohoCRM.{s.org_id}"}
            flow = "client credentials"
        response = await self.request("POST", f"{self.accounts_url}/oauth/v2/token", data=form, auth=False,
                                      ok=(400, 401), deadline=deadline, operation="authenticate")  # fmt: skip
        data = self.json_of(response, "authenticate")
        if not isinstance(data, dict):
            data = {}
        error = data.get("error")
        if error or response.status_code >= 400 or not data.get("access_token"):
            raise self._token_error(str(error or f"HTTP {response.status_code}"), data, flow)
        expires_in = data.get("expires_in")
        expires_at = time.monotonic() + float(expires_in) if isinstance(expires_in, (int, float)) else None
        logger.debug("zoho: access token issued by the %s flow, valid %s s", flow, expires_in)
        return Token(str(data["access_token"]), expires_at, {"api_domain": str(data.get("api_domain") or "")})

    def _token_error(self, error: str, data: dict, flow: str) -> ConnectorError:
        args = {"kind": self.kind, "operation": "authenticate"}
        described = str(data.get("error_description") or "")
        if error == "invalid_code":
            what = "refresh token revoked or unknown" if flow == "refresh token" else "code rejected"
            return AuthError(f"Zoho CRM token rejected: {what} (invalid_code); create a new one in the Zoho API "
                             f"console of the {self.settings.data_centre} data centre", reason="token_rejected", **args)  # fmt: skip
        if error == "invalid_client":
            return AuthError(f"Zoho CRM refused the client id/secret (invalid_client); check them and that "
                             f"{self.accounts_url} is the account's data centre", reason="invalid_client", **args)  # fmt: skip
        if error == "Access Denied" or "too many requests" in described.lower():
            return RateLimited(f"Zoho Accounts is refusing token requests for now (too many); {described[:120]}",
                               reason="rate_limited", **args)  # fmt: skip
        text = f"Zoho CRM token request failed ({flow}): {error}" + (f": {described[:160]}" if described else "")
        return AuthError(text, reason="auth", **args)

    async def _api(self, deadline: Deadline) -> str:
        """The API root, ``{api_domain}/crm/{version}``."""
        if self.settings.api_domain:
            domain = self.settings.api_domain
        else:
            token = await self.authenticate(deadline=deadline)
            domain = token.extra.get("api_domain") or DATA_CENTRES[self.settings.data_centre][1]
        return f"{domain.rstrip('/')}/crm/{self.settings.api_version}"

    @property
    def _selects_fields(self) -> bool:
        return API_VERSIONS.index(self.settings.api_version) >= API_VERSIONS.index("v3")

    async def verify(self, *, deadline: Deadline) -> str:
        """``GET /crm/{version}/users?type=CurrentUser``: the user the token acts for."""
        response = await self.request("GET", f"{await self._api(deadline)}/users", params={"type": "CurrentUser"},
                                      deadline=deadline, operation="verify")  # fmt: skip
        user = lookup_path(self.json_of(response, "verify"), "users[0]")
        user = user if isinstance(user, dict) else {}
        return f"signed in as {user.get('full_name') or user.get('email') or user.get('id') or 'a Zoho CRM user'}"

    # --- finding records -----------------------------------------------------------------------

    async def find_record(
        self, key: LookupKey, module: str, *, fields: Sequence[str] = (), deadline: Deadline
    ) -> Record | None:
        zmodule = self.vendor_module(module)
        wanted = self._fields_param(zmodule, fields)
        if key.source == "dtmf":
            return await self._find_by_key(key.value.strip(), zmodule, wanted, deadline)
        forms = self.phone(key)
        tried: list[tuple[str, str]] = []
        for name in sorted(PHONE_FORM_ORDER, key=lambda n: n != self._hit_form.get(zmodule)):
            value = getattr(forms, name)
            if value and value not in {v for _, v in tried}:
                tried.append((name, value))
        if not tried and forms.digits:
            tried = [("digits", forms.digits)]
        for name, value in tried:
            rows = await self._search(zmodule, {"phone": value}, wanted, deadline)
            if rows:
                self._hit_form[zmodule] = name  # this org stores numbers this way: ask that first next time
                return self._record(zmodule, rows)
        return None

    def _fields_param(self, zmodule: str, fields: Sequence[str], *extra: str) -> str:
        names = {f.split(".", 1)[0].strip() for f in fields if f and f.strip()}
        names |= set(DISPLAY_FIELDS.get(zmodule, ())) | {PICK_FIELD} | {e for e in extra if e}
        names.discard("id")
        return ",".join(sorted(names))

    async def _search(self, zmodule: str, query: dict[str, str], wanted: str, deadline: Deadline) -> list[dict]:
        params = dict(query) | {"per_page": str(PER_PAGE)}
        if self._selects_fields and wanted:
            params["fields"] = wanted
        url = f"{await self._api(deadline)}/{zmodule}/search"
        response = await self.request("GET", url, params=params, ok=(204,), deadline=deadline, operation="find_record")
        return self._rows(response, "find_record")

    def _rows(self, response: CappedResponse, operation: str) -> list[dict]:
        if response.status_code == 204 or not response.content.strip():
            return []
        data = self.json_of(response, operation)
        rows = data.get("data") if isinstance(data, dict) else None
        if not isinstance(rows, list) or not all(isinstance(r, dict) and "id" in r for r in rows):
            raise UnexpectedResponse(f"{self.title} answered {operation} without a data list", kind=self.kind,
                                     operation=operation, reason="bad_shape")  # fmt: skip
        return rows

    def _record(self, zmodule: str, rows: list[dict]) -> Record:
        row, count = self.pick(rows, PICK_FIELD)
        return Record(module=zmodule, id=str(row["id"]), fields=row, matches=count)

    async def _find_by_key(self, key: str, zmodule: str, wanted: str, deadline: Deadline) -> Record | None:
        if not key:
            return None
        key_field = self.settings.key_field
        if not key_field:
            if not key.isdigit():
                return None
            params = {"fields": wanted} if self._selects_fields else {}
            url = f"{await self._api(deadline)}/{zmodule}/{key}"
            response = await self.request("GET", url, params=params, ok=(204, 400, 404), deadline=deadline,
                                          operation="find_record")  # fmt: skip
            if response.status_code == 400:
                code, _, details = self._zoho_error(response)
                if code == "INVALID_DATA" and not details.get("api_name"):
                    return None  # "the related id given seems to be invalid"
                raise self.error_for(response, "find_record")
            if response.status_code == 404:
                return None
            rows = self._rows(response, "find_record")
            return self._record(zmodule, rows) if rows else None
        wanted = self._fields_param(zmodule, wanted.split(","), key_field)
        criteria = f"({key_field}:equals:{escape_criteria(key)})"
        rows = await self._search(zmodule, {"criteria": criteria}, wanted, deadline)
        exact = [r for r in rows if field_text(lookup_path(r, key_field)) == key]
        return self._record(zmodule, exact) if exact else None

    # --- reading fields -------------------------------------------------------------------------

    async def read_field(self, record: Record, api_name: str, *, deadline: Deadline) -> str | None:
        head, _, rest = api_name.partition(".")
        if head and head not in record.fields and self._selects_fields and record.id.isdigit():
            await self._complete(record, head, deadline)  # found without that field (v3+ returns what was asked)
        value = lookup_path(record.fields, api_name)
        if value is not None or not rest:
            return field_text(value)
        related = lookup_path(record.fields, head)
        if not isinstance(related, dict) or not related.get("id"):
            return None
        fetched = await self._related(record.module, head, str(related["id"]), rest, deadline)
        return field_text(lookup_path(fetched, rest)) if fetched is not None else None

    async def _complete(self, record: Record, field: str, deadline: Deadline) -> None:
        url = f"{await self._api(deadline)}/{record.module}/{record.id}"
        response = await self.request("GET", url, params={"fields": field}, ok=(204,), deadline=deadline,
                                      operation="read_field")  # fmt: skip
        rows = self._rows(response, "read_field")
        record.fields.setdefault(field, rows[0].get(field) if rows else None)

    async def _related(self, zmodule: str, field: str, record_id: str, rest: str, deadline: Deadline) -> dict | None:
        api = await self._api(deadline)
        if field in USER_LOOKUPS:
            response = await self.request("GET", f"{api}/users/{record_id}", ok=(204,), deadline=deadline,
                                          operation="read_field")  # fmt: skip
            data = self.json_of(response, "read_field") if response.status_code != 204 else {}
            users = data.get("users") if isinstance(data, dict) else None
            return users[0] if isinstance(users, list) and users and isinstance(users[0], dict) else None
        target = await self._lookup_module(zmodule, field, deadline)
        if not target:
            raise UnexpectedResponse(f"field {field} on {zmodule} is not a lookup; cannot read {field}.{rest}",
                                     kind=self.kind, operation="read_field", reason="no_field")  # fmt: skip
        params = {"fields": rest.split(".", 1)[0]} if self._selects_fields else {}
        response = await self.request("GET", f"{api}/{target}/{record_id}", params=params, ok=(204,),
                                      deadline=deadline, operation="read_field")  # fmt: skip
        rows = self._rows(response, "read_field")
        return rows[0] if rows else None

    async def _lookup_module(self, zmodule: str, field: str, deadline: Deadline) -> str | None:
        if field in KNOWN_LOOKUPS:
            return KNOWN_LOOKUPS[field]
        cache_key = (zmodule, field)
        if cache_key not in self._lookup_modules:
            url = f"{await self._api(deadline)}/settings/fields"
            response = await self.request("GET", url, params={"module": zmodule}, deadline=deadline,
                                          operation="read_field")  # fmt: skip
            data = self.json_of(response, "read_field")
            found: str | None = None
            for item in data.get("fields", []) if isinstance(data, dict) else []:
                if isinstance(item, dict) and item.get("api_name") == field:
                    module = lookup_path(item, "lookup.module")  # v2.1+: {api_name, id}; v2: the name
                    if isinstance(module, dict):
                        module = module.get("api_name")
                    found = module if isinstance(module, str) and module else None
            self._lookup_modules[cache_key] = found
        return self._lookup_modules[cache_key]

    # --- call log -------------------------------------------------------------------------------

    # --- users (agents sync) -------------------------------------------------------------

    async def list_users(self, *, deadline: Deadline) -> list[CrmUser]:
        """``GET {api}/users?type=ActiveUsers``, 200 a page while ``info.more_records``; 204 is no users."""
        api = await self._api(deadline)
        users: list[CrmUser] = []
        for page in range(1, 1001):
            response = await self.request("GET", f"{api}/users", params={"type": "ActiveUsers", "page": page,
                                          "per_page": 200}, ok=(204,), deadline=deadline,
                                          operation="list_users", limit=USER_LIST_BYTES)  # fmt: skip
            if response.status_code == 204:
                return users
            data = self.json_of(response, "list_users")
            rows = data.get("users") if isinstance(data, dict) else None
            if not isinstance(rows, list):
                raise UnexpectedResponse("Zoho CRM sent a user list without users", kind=self.kind,
                                         operation="list_users", reason="bad_response")  # fmt: skip
            for user in rows:
                if isinstance(user, dict) and user.get("id") is not None:
                    users.append(CrmUser(str(user["id"]), str(user.get("full_name") or ""), str(user.get("email") or "")))
            if lookup_path(data, "info.more_records") is not True:
                return users
        return users

    async def log_call(self, call: CallActivity, options: Any, *, deadline: Deadline) -> str:
        subject = call_subject(call)
        api = await self._api(deadline)
        existing = await self._existing_call(api, subject, deadline)
        if existing:
            logger.info("zoho: call %s already logged as Calls/%s", call.call_id, existing)
            return existing
        record = call.record
        if record is None:
            record = await self._lookup_caller(call.external_number, deadline)
        if record is None and getattr(options, "create_unknown", False):
            record = await self._create_caller(api, call, deadline)
        body = call_body(call, subject, record)
        response = await self.request("POST", f"{api}/Calls", json={"data": [body]}, deadline=deadline,
                                      operation="log_call")  # fmt: skip
        call_id = self._created_id(response, "log_call")
        logger.info("zoho: call %s logged as Calls/%s", call.call_id, call_id)
        return call_id

    async def _existing_call(self, api: str, subject: str, deadline: Deadline) -> str | None:
        params = {"criteria": f"(Subject:equals:{escape_criteria(subject)})", "per_page": str(PER_PAGE)}
        if self._selects_fields:
            params["fields"] = "Subject"
        response = await self.request("GET", f"{api}/Calls/search", params=params, ok=(204,), deadline=deadline,
                                      operation="log_call")  # fmt: skip
        for row in self._rows(response, "log_call"):
            if row.get("Subject") == subject:
                return str(row["id"])
        return None

    async def _lookup_caller(self, number: str, deadline: Deadline) -> Record | None:
        key = LookupKey(number, "caller_id")
        for module in LOG_LOOKUP_ORDER:
            record = await self.find_record(key, module, deadline=deadline)
            if record is not None:
                return record
        return None

    async def _create_caller(self, api: str, call: CallActivity, deadline: Deadline) -> Record:
        forms = self.phone(LookupKey(call.external_number, "caller_id"))
        number = forms.e164 or forms.raw
        module = self.settings.create_module
        row: dict[str, Any] = {"Last_Name": number, "Phone": number,
                               "Description": f"Created by crmroute for an unknown caller (call {call.call_id})"}  # fmt: skip
        if module == "Leads":
            row["Company"] = "Unknown"
        response = await self.request("POST", f"{api}/{module}", json={"data": [row]}, deadline=deadline,
                                      operation="log_call")  # fmt: skip
        new_id = self._created_id(response, "log_call")
        logger.info("zoho: created %s/%s for unknown caller of call %s", module, new_id, call.call_id)
        return Record(module=module, id=new_id, fields={"id": new_id, **row})

    def _created_id(self, response: CappedResponse, operation: str) -> str:
        data = self.json_of(response, operation)
        entry = lookup_path(data, "data[0]")
        if not isinstance(entry, dict) or entry.get("status") != "success" or not lookup_path(entry, "details.id"):
            detail = f"{entry.get('code')}: {entry.get('message')}" if isinstance(entry, dict) else "no data"
            raise UnexpectedResponse(f"{self.title} did not create the record ({detail})", kind=self.kind,
                                     operation=operation, reason="not_created")  # fmt: skip
        return str(entry["details"]["id"])

    # --- errors -----------------------------------------------------------------------------------

    def _zoho_error(self, response: CappedResponse) -> tuple[str, str, dict]:
        try:
            data = json.loads(response.text)
        except ValueError:
            return "", "", {}
        if isinstance(data, dict) and isinstance(data.get("data"), list) and data["data"]:
            data = data["data"][0]
        if not isinstance(data, dict):
            return "", "", {}
        details = data.get("details") if isinstance(data.get("details"), dict) else {}
        return str(data.get("code") or data.get("error") or ""), str(data.get("message") or ""), details

    def vendor_message(self, response: CappedResponse) -> str:
        code, message, details = self._zoho_error(response)
        if not code and not message:
            return super().vendor_message(response)
        text = ": ".join(p for p in (code, message) if p)
        extra = ", ".join(f"{k} {v}" for k, v in details.items() if isinstance(v, (str, int)) and k != "id")
        return (text + (f" ({extra})" if extra else ""))[:300]

    def error_for(self, response: CappedResponse, operation: str) -> ConnectorError:
        code, message, details = self._zoho_error(response)
        args = {"kind": self.kind, "operation": operation}
        module = module_of(response)
        field = str(details.get("api_name") or "")
        if code == "OAUTH_SCOPE_MISMATCH":
            return AuthError(f"Zoho CRM token lacks the scope for {operation} on {module or 'this API'} "
                             f"(OAUTH_SCOPE_MISMATCH); grant {DEFAULT_SCOPE}", reason="scope", **args)  # fmt: skip
        if code == "NO_PERMISSION":
            return AuthError(f"the Zoho CRM user has no permission for {operation} on {module}: {message}",
                             reason="permission", **args)  # fmt: skip
        if code == "INVALID_MODULE":
            return UnexpectedResponse(f"module {module} does not exist in this Zoho CRM org", reason="no_module", **args)
        if code == "INVALID_QUERY" and field and details.get("operator"):
            return UnexpectedResponse(f"Zoho CRM cannot search field {field} on {module} with "
                                      f"{details['operator']} ({message})", reason="bad_query", **args)  # fmt: skip
        if code in ("INVALID_QUERY", "INVALID_DATA") and field and operation in ("find_record", "read_field"):
            return UnexpectedResponse(f"field {field} does not exist on {module} (or cannot be searched); "
                                      f"check its API name in Zoho CRM setup ({code})", reason="no_field", **args)  # fmt: skip
        if code in ("INVALID_DATA", "MANDATORY_NOT_FOUND") and field:
            return UnexpectedResponse(f"Zoho CRM rejected {field} on {module}: {message} ({code})", reason="bad_data",
                                      **args)  # fmt: skip
        return super().error_for(response, operation)


def escape_criteria(value: str) -> str:
    """A search criteria value with the characters Zoho asks to escape (``\\ ( ) ,``) escaped."""
    for char in ("\\", "(", ")", ","):
        value = value.replace(char, "\\" + char)
    return value


def module_of(response: CappedResponse) -> str:
    """The Zoho module a response is about, from ``/crm/{v}/{Module}/...`` (or ``?module=``)."""
    parts = [p for p in response.url.path.split("/") if p]
    if len(parts) >= 3 and parts[0] == "crm":
        if parts[2] == "settings":
            return response.url.params.get("module", "")
        return parts[2]
    return ""


def call_subject(call: CallActivity) -> str:
    """The Call's Subject; it ends with ``[<call id>]``, the idempotency key."""
    marker = f" [{call.call_id}]"
    default = f"{'Inbound' if call.direction == 'inbound' else 'Outbound'} call " \
              f"{'from' if call.direction == 'inbound' else 'to'} {call.external_number}"  # fmt: skip
    text = " ".join((call.subject or default).split())
    return text[: SUBJECT_MAX - len(marker)] + marker


def call_type(call: CallActivity) -> str:
    if call.direction == "outbound":
        return "Outbound"
    return "Inbound" if call.outcome == "answered" else "Missed"


def zoho_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.isoformat(timespec="seconds")


def call_body(call: CallActivity, subject: str, record: Record | None) -> dict[str, Any]:
    kind = call_type(call)
    talk = max(0, int(call.talk_seconds))
    lines = [call.description.strip()] if call.description.strip() else []
    lines.append(f"{'Caller' if call.direction == 'inbound' else 'Called'}: {call.external_number}; "
                 f"extension: {call.extension or '-'}; outcome: {call.outcome}; ring {call.ring_seconds} s, "
                 f"talk {talk} s")  # fmt: skip
    if call.recording:
        lines.append(f"Recording: {call.recording}")
    lines.append(f"crmroute call id: {call.call_id}")
    body: dict[str, Any] = {"Subject": subject, "Call_Type": kind, "Call_Start_Time": zoho_time(call.started_at),
                            "Description": "\n".join(lines)}  # fmt: skip
    if kind != "Missed":
        body["Call_Duration"] = f"{talk // 60:02d}:{talk % 60:02d}"
    if record is not None:
        if record.module == "Contacts":
            body["Who_Id"] = {"id": record.id}
            account = record.fields.get("Account_Name")
            if isinstance(account, dict) and account.get("id"):
                body["What_Id"] = {"id": str(account["id"])}
                body["$se_module"] = "Accounts"
        else:
            body["What_Id"] = {"id": record.id}
            body["$se_module"] = record.module
    return body


