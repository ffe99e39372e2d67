"""Pipedrive: personal API token or OAuth refresh token, person search by phone, ``call`` activities.

Authentication (reference section 5)
    API token       ``api_token``, the user's personal token (one per user per
                    company), sent in the ``x-api-token`` header (Pipedrive's
                    authentication guide: "must be provided in the x-api-token
                    header for all requests"; it keeps the token out of URLs and
                    logs, unlike the old ``?api_token=`` form). It does not
                    expire; ``authenticate()`` checks it once with
                    ``GET /v1/users/me``. A rule's CRM Password, when set, is used
                    as that user's API token instead (its CRM Username is not
                    needed), so a rule can act as another Pipedrive user.
    OAuth           ``client_id`` + ``client_secret`` + ``refresh_token`` (the
                    Marketplace app was authorised once):
                    ``POST {oauth_url}/oauth/token`` form-encoded
                    ``grant_type=refresh_token`` with
                    ``Authorization: Basic base64(client_id:client_secret)``. The
                    answer's ``expires_in`` (3599 in vendor examples) is tracked
                    and the token refreshed before it expires (a minute early,
                    or at half the lifetime of a short token); the new ``refresh_token`` it carries is kept (in
                    memory) for the next refresh; its ``api_domain``
                    (``https://<company>.pipedrive.com``) becomes the API base
                    when ``api_url`` is left at ``https://api.pipedrive.com``.
                    A refused refresh token is ``AuthError("... token rejected:
                    refresh token revoked or expired")``. The refresh token's own
                    lifetime (60 days unused per third-party docs) is
                    **unconfirmed**.
    Requests then carry ``Authorization: Bearer`` (OAuth) or ``x-api-token``.

Modules: accounts -> ``organizations``, contacts -> ``persons``, leads -> ``leads``.
Organizations have no built-in phone field, but a custom field of type ``phone``
is searchable (``GET /api/v2/organizations/search`` searches custom fields of
the types address, varchar, text, varchar_auto, double, monetary and phone):
``org_phone_field`` names it (its 40-character API key, or its display name,
resolved once through ``GET /v1/organizationFields``). Without that setting the
accounts module fails with a configuration error naming it (before any request).
Leads have no phone either: they are the leads linked to the caller's persons
(``GET /v1/leads?person_id=``; leads linked only to an organization are not
found).

Finding a record
    Phone keys: ``GET /api/v2/persons/search?term=<national digits>&fields=phone``
    — one search, the national significant number without country code or
    punctuation, as the reference and the phone appendix prescribe ("integrations
    search the national significant number and verify digits client-side"):
    Pipedrive's search is substring-style on the stored phone, so the number
    matches however the country code was typed; how it treats punctuation
    inside stored numbers is **unconfirmed**. Every hit is verified here (same
    E.164 after parsing the stored number against the default region, or the
    same trailing digits when it does not parse), so a longer number that
    merely contains the digits is dropped. The verified ids are then read in
    one request, ``GET /api/v2/persons?ids=…&sort_by=update_time&sort_direction=
    desc|asc&include_option_labels=true`` (organizations alike), so the API
    returns the ``match_pick`` end first; ``pick()`` runs on ``update_time``
    and ``Record.matches`` counts the verified matches. Search items carry only
    summary data (the reference), hence the second request.
    Organizations: ``GET /api/v2/organizations/search?term=<national digits>&
    fields=custom_fields`` (hits whose matched custom values are none of them the
    caller's number are dropped), the rest read as above, and kept only when their
    ``org_phone_field`` value is the caller's number (``PhoneForms.matches``: the
    national number after nothing or a known prefix — a number sharing only the
    last digits is never taken). How the search treats punctuation inside a stored
    phone custom value is **unconfirmed**, as for person phones.
    Requests per uncached call: one for an unknown caller, two for a known one
    (issue 12 measured 1.75 on a mix of both). One answer cannot carry both: the search endpoints
    return summary items (id, name, phones, emails, organization, owner, and only
    the custom values that matched the term), never the record's other fields, and
    the list endpoints that return full records (``GET /api/v2/persons``,
    ``/organizations``) filter by ids, owner or a saved filter, not by a phone
    value. So the second request stays; it is one request for all matches.
    Typed (DTMF) keys: ``key_field`` (a field key, or a field's display name
    resolved through the fields API) searched with ``exact_match=true`` in
    ``custom_fields`` (or in ``name``/``email``/``notes``/``title`` when the key
    is one of those), then verified on the record; an empty ``key_field`` reads
    the record by id (``GET /api/v2/persons/{id}``, a lead by its UUID).

Reading fields: standard fields are top-level keys (``name``, ``owner_id``,
``org_id``...); custom fields are their 40-character hash keys (merged into
``Record.fields`` from v2's ``custom_fields``); a rule may also name a field by
its display name (``Status``), resolved once through ``GET /v1/personFields``
(``organizationFields``; ``dealFields`` for leads, whose custom fields are the
deal fields). Option fields read as their labels (``include_option_labels``),
money/address values as their ``value``. An unknown name is
``UnexpectedResponse("field X does not exist on persons")``. Lookups, one
request more: ``org_id.<field>`` (a person's organization; ``organization.``
too), a lead's ``person_id.``/``organization_id.``, and ``owner_id.<field>``
(``GET /v1/users/{id}``: ``name``, ``email``...).

Call log: ``POST /api/v2/activities`` with ``type`` = ``activity_type`` (``call``,
a built-in ActivityType ``key_string``), ``done: true``, ``subject``,
``due_date`` ``YYYY-MM-DD`` and ``due_time`` ``HH:MM`` (UTC, the call's start),
``duration`` ``HH:MM`` (talk time, rounded up to the minute), ``note`` (HTML:
description, direction, outcome, number, extension, ring and talk seconds,
recording, and ``Call ID: <Asterisk call id>``), and the link:
``participants: [{"person_id", "primary": true}]`` (+ the person's ``org_id``),
``org_id`` for an organization, ``lead_id`` for a lead. The v2 field formats
(``due_time``/``duration`` as ``HH:MM``) are the v1 ones the reference gives;
v2's are **unconfirmed**. Idempotent: activities have no external-id field, so
``GET /api/v2/activities?person_id=|org_id=|lead_id=…&sort_by=add_time&
sort_direction=desc`` is scanned for the ``Call ID`` line first (unlinked calls:
``updated_since`` the call's start). With no record from routing the caller is
looked up in persons; an unknown caller becomes a person
(``POST /api/v2/persons`` with ``phones: [{"value": E.164, "primary": true}]``)
when the log options say so, else the activity is logged unlinked.

Checked with public sources (beyond the reference): the ``x-api-token`` header
(vendor guide); v2 ``GET /persons/search`` parameters (``fields``, ``exact_match``,
``limit`` <= 100) and ``GET /persons``/``/organizations`` with ``ids`` (<= 100),
``sort_by=update_time``, ``sort_direction``, ``include_option_labels`` (option
fields as ``{id, label}``); v2 ``POST /persons`` with ``phones: [{value, primary,
label}]`` (the reference had it unconfirmed); v2 ``POST /activities`` fields
(``participants``, ``done`` boolean, ``due_date``, ``due_time``, ``duration``,
``note``, ``org_id``, ``lead_id``) and ``GET /activities`` filters ``person_id``
(primary participant), ``org_id``, ``lead_id``; v1 ``GET /leads?person_id=`` (leads
inherit the deal fields; unset custom fields are absent). All from Pipedrive's
generated client (pipedrive/client-nodejs). Still **unconfirmed**: punctuation in
phone search, v2 ``due_time``/``duration`` formats, the exact error body of a
refused refresh token (``invalid_grant`` is assumed, any 400 naming the grant
or refresh token is read alike), and refresh-token rotation (the newest one is
kept in memory only: after a restart the stored one is used again).

Limits: token-based rate limiting (a daily token budget per company, search
endpoints cost more; its size depends on plan and seats: set ``daily_quota`` to count
it) and a burst limit per 2-second window from 20 requests (lowest plan, API token)
upwards — a pace of 10/s with a burst of 20. A 429
carries ``Retry-After``, waited out when it fits the deadline; an
``x-daily-requests-left`` under 100 gives a warning in the log (the other
``x-ratelimit-*`` headers describe the burst window the 429 already covers). Errors arrive as
``{"success": false, "error", "error_info", ...}``: 401 is a rejected token, 402
an inactive company account, 403 a permission or plan limit.
"""

from __future__ import annotations

import asyncio
import base64
import html
import json
import logging
import math
import re
import time
from collections.abc import Sequence
from datetime import timezone
from typing import Any
from urllib.parse import quote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from crmroute.connectors._http import CappedResponse, send_capped
from crmroute.connectors._phone import PhoneForms, digits_of, phone_forms
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
from crmroute.errors import AuthError, ConnectorError, ConnectorUnavailable, RateLimited, UnexpectedResponse
from crmroute.connectors.base import USER_LIST_BYTES, CrmUser
from crmroute.routing.engine import LookupKey

logger = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.pipedrive.com"
DEFAULT_OAUTH_URL = "https://oauth.pipedrive.com"
SEARCH_LIMIT = 50  # search hits read per phone search (answers stay far below the 64 KB cap)
FETCH_LIMIT = 10  # records read per lookup, already sorted by update_time
LEAD_PERSONS = 5  # persons whose leads are read for the leads module
ACTIVITY_SCAN = 20  # recent activities checked for the call id
CATALOGUE_PAGE = 25
CATALOGUE_PAGES = 20
CATALOGUE_TTL = 600.0
LOW_BUDGET = 100  # warn when the daily budget has fewer requests left
BUDGET_WARN_EVERY = 300.0  # an unknown field name re-reads the fields list at most this often

FIELD_APIS = {"persons": "personFields", "organizations": "organizationFields", "leads": "dealFields"}
SEARCH_FIELDS = {
    "persons": ("name", "email", "notes"),
    "organizations": ("name", "address", "notes"),
    "leads": ("title", "notes"),
}
LINKS = {  # (module, field or alias) -> (field holding the id, object it points to)
    ("persons", "org_id"): ("org_id", "organizations"),
    ("persons", "organization"): ("org_id", "organizations"),
    ("leads", "organization_id"): ("organization_id", "organizations"),
    ("leads", "organization"): ("organization_id", "organizations"),
    ("leads", "person_id"): ("person_id", "persons"),
    ("leads", "person"): ("person_id", "persons"),
}
UI_PATHS = {"persons": "person", "organizations": "organization", "leads": "leads/inbox"}
_HASH_KEY = re.compile(r"^[0-9a-f]{40}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


class PipedriveSettings(ConnectorSettings):
    api_url: str = Field(
        DEFAULT_API_URL, description="API base URL: https://<company>.pipedrive.com (or https://api.pipedrive.com; "
        "with OAuth and this default the token's api_domain is used); a test server's URL for tests"
    )  # fmt: skip
    api_token: SecretStr | None = Field(
        None, description="Personal API token (Personal preferences > API); leave empty to use OAuth instead"
    )
    oauth_url: str = Field(DEFAULT_OAUTH_URL, description="OAuth server; the token endpoint is <oauth_url>/oauth/token")
    client_id: str = Field("", description="OAuth: the app's client id (with client secret and refresh token)")
    client_secret: SecretStr | None = Field(None, description="OAuth: the app's client secret")
    refresh_token: SecretStr | None = Field(
        None, description="OAuth: the refresh token from authorising the app (scopes contacts:read, "
        "search:read, leads:read, activities:full; contacts:full to create persons)"
    )  # fmt: skip
    activity_type: str = Field(
        "call", description="key_string of the activity type logged calls get (GET /v1/activityTypes); call is built in"
    )
    org_phone_field: str = Field(
        "", description="Organizations have no phone field of their own: the organization custom field of type Phone "
        "that holds the number, for the accounts module. Its API key (Company settings > Data fields > Organization, "
        "the field's ... menu > Copy API key: 40 characters) or its name as shown in Pipedrive"
    )  # fmt: skip

    @field_validator("api_url", "oauth_url")
    @classmethod
    def _https(cls, value: str) -> str:
        value = https_url(value)
        if not value:
            raise ValueError("required: an https:// URL")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> "PipedriveSettings":
        if _plain(self.api_token):
            return self
        missing = [name for name in ("client_id", "client_secret", "refresh_token") if not _plain(getattr(self, name))]
        if missing:
            raise ValueError("give an api_token, or client_id, client_secret and refresh_token (OAuth); "
                             f"missing: {', '.join(missing)}")  # fmt: skip
        return self


class PipedriveConnector(Connector):
    kind = "pipedrive"
    title = "Pipedrive"
    docs_url = "https://developers.pipedrive.com/docs/api/v1/Persons#searchPersons"
    Settings = PipedriveSettings
    MODULES = {"accounts": "organizations", "contacts": "persons", "leads": "leads"}
    requests_per_second = 10.0
    burst = 20.0
    limits_source = "burst: 20 requests per 2 s on the lowest plan (rate limiting docs, reference section 5)"
    owner_field = "owner_id"

    settings: PipedriveSettings

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._catalogues: dict[str, tuple[float, dict[str, str]]] = {}
        self._budget_warned = -BUDGET_WARN_EVERY  # object -> (read at, {key|folded name: key})

    # --- authentication ----------------------------------------------------------------

    def _api_token(self) -> str:
        return self.password or _plain(self.settings.api_token)

    def _auth_headers(self, token: Token) -> dict[str, str]:
        if token.extra.get("flow") == "api_token":
            return {"x-api-token": token.value}
        return {"Authorization": f"Bearer {token.value}"}

    async def _login(self, *, deadline: Deadline) -> Token:
        api_token = self._api_token()
        if api_token:
            return await self._check_api_token(api_token, deadline=deadline)
        return await self._refresh(deadline=deadline)

    async def _check_api_token(self, api_token: str, *, deadline: Deadline) -> Token:
        response = await self._send("GET", f"{self.settings.api_url}/v1/users/me", deadline=deadline,
                                    headers={"x-api-token": api_token})  # fmt: skip
        if response.status_code == 401:
            raise AuthError(f"Pipedrive: API token rejected: {self.vendor_message(response) or 'invalid or revoked'}",
                            kind=self.kind, operation="authenticate", reason="http_401")  # fmt: skip
        if response.status_code != 200:
            raise self.error_for(response, "authenticate")
        domain = lookup_path(_json(response), "data.company_domain")
        logger.debug("pipedrive: API token accepted")
        company = domain if isinstance(domain, str) else ""
        return Token(api_token, None, {"flow": "api_token", "company_domain": company})

    async def verify(self, *, deadline: Deadline) -> str:
        """``GET /v1/users/me``: the cheapest call that needs the credential."""
        response = await self.request("GET", f"{self.settings.api_url}/v1/users/me", deadline=deadline,
                                      operation="verify")  # fmt: skip
        data = lookup_path(self.json_of(response, "verify"), "data")
        data = data if isinstance(data, dict) else {}
        return f"signed in as {data.get('name') or data.get('email') or data.get('id') or 'a Pipedrive user'}"

    async def _refresh(self, *, deadline: Deadline) -> Token:
        credentials = f"{self.settings.client_id}:{_plain(self.settings.client_secret)}".encode()
        refresh = self.refresh_token(_plain(self.settings.refresh_token))
        form = {"grant_type": "refresh_token", "refresh_token": refresh}
        basic = {"Authorization": f"Basic {base64.b64encode(credentials).decode()}"}
        response = await self._send("POST", f"{self.settings.oauth_url}/oauth/token", deadline=deadline, data=form,
                                    headers=basic)  # fmt: skip
        data = _json(response)
        if response.status_code != 200:
            raise self._token_error(response, data)
        body = data if isinstance(data, dict) else {}
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise UnexpectedResponse("Pipedrive answered the token request without an access token", kind=self.kind,
                                     operation="authenticate", reason="bad_token")  # fmt: skip
        expires_in = body.get("expires_in")
        expires_at = time.monotonic() + float(expires_in) if isinstance(expires_in, (int, float)) else None
        api_domain = body.get("api_domain") if isinstance(body.get("api_domain"), str) else ""
        if not api_domain.lower().startswith("https://"):
            api_domain = ""
        logger.debug("pipedrive: access token refreshed, expires in %s s", expires_in)
        extra: dict[str, Any] = {"flow": "oauth", "api_domain": api_domain.rstrip("/")}
        if isinstance(body.get("refresh_token"), str) and body["refresh_token"]:  # rotated: saved before use
            extra["refresh_token"] = body["refresh_token"]
        return Token(access, expires_at, extra)

    def _token_error(self, response: CappedResponse, data: Any) -> ConnectorError:
        message = self.vendor_message(response)
        code = str(lookup_path(data, "error") or "") if isinstance(data, dict) else ""
        args = {"kind": self.kind, "operation": "authenticate", "reason": f"http_{response.status_code}"}
        if code == "invalid_grant" or "refresh token" in message.lower() or "grant" in message.lower():
            return AuthError("Pipedrive: token rejected: refresh token revoked or expired (authorise the app again "
                             "and store the new refresh token)", **args)  # fmt: skip
        if code == "invalid_client" or response.status_code == 401:
            return AuthError(f"Pipedrive: token rejected: client id or secret wrong ({message or code})", **args)
        if response.status_code in (400, 403):
            return AuthError(f"Pipedrive: token rejected: {message or code or 'HTTP ' + str(response.status_code)}",
                             **args)  # fmt: skip
        return self.error_for(response, "authenticate")

    async def _send(self, method: str, url: str, *, deadline: Deadline, **kwargs: Any) -> CappedResponse:
        """One authentication request, outside the shared path (its ``Authorization`` is ours, not a token)."""
        response = await send_capped(self.http, method, url, timeout=deadline.remaining(), kind=self.kind,
                                     operation="authenticate", **kwargs)  # fmt: skip
        if response.status_code == 429:
            raise RateLimited("Pipedrive is rate limiting (authenticate)", kind=self.kind, operation="authenticate",
                              reason="rate_limited")  # fmt: skip
        return response

    def _base(self) -> str:
        token = self._token
        if self.settings.api_url == DEFAULT_API_URL and token is not None and token.extra.get("api_domain"):
            return token.extra["api_domain"]
        return self.settings.api_url

    async def _api(self, method: str, path: str, *, deadline: Deadline, operation: str, ok: Sequence[int] = (),
                   **kwargs: Any) -> tuple[int, Any]:  # fmt: skip
        await self.authenticate(deadline=deadline)  # the base URL may come with the token
        response = await self.request(method, self._base() + path, deadline=deadline, operation=operation, ok=ok,
                                      **kwargs)  # fmt: skip
        self._note_budget(response)
        data = self.json_of(response, operation)
        if 200 <= response.status_code < 300 and isinstance(data, dict) and data.get("success") is False:
            raise UnexpectedResponse(f"Pipedrive refused {operation}: {self.vendor_message(response) or 'no reason'}",
                                     kind=self.kind, operation=operation, reason="refused")  # fmt: skip
        return response.status_code, data

    def _note_budget(self, response: CappedResponse) -> None:
        """Warn (at most every ``BUDGET_WARN_EVERY`` s) when the daily request budget is nearly used up."""
        left = response.headers.get("x-daily-requests-left", "")
        if not left.isdigit() or int(left) > LOW_BUDGET:
            return
        now = time.monotonic()
        if now - self._budget_warned >= BUDGET_WARN_EVERY:
            self._budget_warned = now
            logger.warning("pipedrive: %s requests left in the company's daily budget", left)

    # --- finding records -----------------------------------------------------------------

    async def find_record(
        self, key: LookupKey, module: str, *, fields: Sequence[str] = (), deadline: Deadline
    ) -> Record | None:
        obj = self.vendor_module(module)
        if key.source == "dtmf":
            rows, matches = await self._by_key(obj, key.value.strip(), deadline=deadline)
        else:
            forms = self.phone(key)
            if obj == "organizations":
                rows = await self._organizations_by_phone(forms, deadline=deadline)
                matches = len(rows)
            else:
                persons = await self._persons_by_phone(forms, deadline=deadline)
                if obj == "leads":
                    rows = await self._leads_of([p["id"] for p in persons], deadline=deadline) if persons else []
                    matches = len(rows)
                else:
                    ids = list(dict.fromkeys(p["id"] for p in persons if isinstance(p["id"], (int, str))))
                    rows, matches = await self._fetch(obj, ids, deadline=deadline), len(ids)
        if not rows:
            return None
        chosen, count = self.pick(rows, "update_time")
        return Record(module=obj, id=str(chosen["id"]), fields=flatten(chosen), matches=max(count, matches),
                      url=self._record_url(obj, str(chosen["id"])))  # fmt: skip

    async def _search(self, obj: str, fields: str, forms: PhoneForms, *, deadline: Deadline) -> list[Any]:
        """The items of ``/api/v2/{obj}/search`` for the caller's national number in ``fields``."""
        term = forms.national_digits or forms.digits.lstrip("0")
        if len(term) < 2:
            return []
        params = {"term": term, "fields": fields, "limit": SEARCH_LIMIT}
        _, data = await self._api("GET", f"/api/v2/{obj}/search", params=params, deadline=deadline,
                                  operation=f"search {obj}")  # fmt: skip
        items = lookup_path(data, "data.items")
        if not isinstance(items, list):
            raise self._shape(f"search {obj}", "a search answer without data.items")
        return items

    async def _persons_by_phone(self, forms: PhoneForms, *, deadline: Deadline) -> list[dict[str, Any]]:
        found = []
        for entry in await self._search("persons", "phone", forms, deadline=deadline):
            item = entry.get("item") if isinstance(entry, dict) else None
            if isinstance(item, dict) and item.get("id") is not None and self._same_number(item.get("phones"), forms):
                found.append(item)
        return found

    async def _organizations_by_phone(self, forms: PhoneForms, *, deadline: Deadline) -> list[dict[str, Any]]:
        name = self.settings.org_phone_field.strip()
        if not name:
            raise ConnectorError("Pipedrive organizations have no phone field of their own: set org_phone_field (the "
                                 "organization custom field of type Phone holding the number) to find accounts by "
                                 "the caller's number", kind=self.kind, operation="find_record",
                                 reason="misconfigured")  # fmt: skip
        field = name if _HASH_KEY.match(name) else await self._field_key("organizations", name, deadline=deadline)
        ids = []
        for entry in await self._search("organizations", "custom_fields", forms, deadline=deadline):
            item = entry.get("item") if isinstance(entry, dict) else None
            if not isinstance(item, dict) or not isinstance(item.get("id"), (int, str)):
                continue
            matched = [v for v in item.get("custom_fields") or [] if isinstance(v, str)]
            if matched and not any(forms.matches(v) for v in matched):
                continue  # the digits were in another custom field
            ids.append(item["id"])
        rows = await self._fetch("organizations", list(dict.fromkeys(ids)), deadline=deadline)
        return [row for row in rows if forms.matches(_phone_text(flatten(row).get(field)))]

    def _same_number(self, phones: Any, forms: PhoneForms) -> bool:
        wanted = forms.national_digits or forms.digits
        for phone in phones if isinstance(phones, list) else []:
            text = phone.get("value") if isinstance(phone, dict) else phone
            if not isinstance(text, str):
                continue
            stored = phone_forms(text, self.region)
            if stored.valid and forms.valid:
                if stored.e164 == forms.e164:
                    return True
            elif wanted and digits_of(text).endswith(wanted):
                return True
        return False

    async def _fetch(self, obj: str, ids: Sequence[Any], *, deadline: Deadline) -> list[dict[str, Any]]:
        """The records ``ids`` of ``obj``, the ``match_pick`` end first, at most ``FETCH_LIMIT``."""
        if not ids:
            return []
        if self.settings.match_pick == "first":
            ids = ids[:1]
        params: dict[str, Any] = {"ids": ",".join(str(i) for i in ids[:100]), "limit": FETCH_LIMIT,
                                  "include_option_labels": "true"}  # fmt: skip
        if self.settings.match_pick != "first":
            direction = "desc" if self.settings.match_pick == "newest" else "asc"
            params |= {"sort_by": "update_time", "sort_direction": direction}
        _, data = await self._api("GET", f"/api/v2/{obj}", params=params, deadline=deadline, operation=f"read {obj}")
        rows = data.get("data") if isinstance(data, dict) else None
        if not isinstance(rows, list):
            raise self._shape(f"read {obj}", "a list answer without data")
        return [r for r in rows if isinstance(r, dict) and r.get("id") is not None]

    async def _one(self, obj: str, record_id: str, *, deadline: Deadline) -> dict[str, Any] | None:
        if obj == "leads":
            if not _UUID.match(record_id):
                return None
            path, params = f"/v1/leads/{record_id}", {}
        elif obj == "users":
            path, params = f"/v1/users/{quote(record_id, safe='')}", {}
        else:
            if not record_id.isdigit():
                return None
            path, params = f"/api/v2/{obj}/{record_id}", {"include_option_labels": "true"}
        status, data = await self._api("GET", path, params=params, ok=(404, 410), deadline=deadline,
                                       operation=f"read {obj}")  # fmt: skip
        row = data.get("data") if isinstance(data, dict) and status == 200 else None
        return row if isinstance(row, dict) and row.get("id") is not None else None

    async def _leads_of(self, person_ids: Sequence[Any], *, deadline: Deadline) -> list[dict[str, Any]]:
        async def leads(person_id: Any) -> list[dict[str, Any]]:
            _, data = await self._api("GET", "/v1/leads", params={"person_id": person_id, "limit": 50},
                                      deadline=deadline, operation="read leads")  # fmt: skip
            rows = data.get("data") if isinstance(data, dict) else None
            return [r for r in rows or [] if isinstance(r, dict) and r.get("id") is not None]

        batches = await asyncio.gather(*(leads(p) for p in list(dict.fromkeys(person_ids))[:LEAD_PERSONS]))
        return list({row["id"]: row for batch in batches for row in batch}.values())

    async def _by_key(self, obj: str, value: str, *, deadline: Deadline) -> tuple[list[dict[str, Any]], int]:
        if not value:
            return [], 0
        if not self.settings.key_field:
            row = await self._one(obj, value, deadline=deadline)
            return ([row], 1) if row else ([], 0)
        key = self.settings.key_field
        if not (_HASH_KEY.match(key) or key in SEARCH_FIELDS[obj]):
            key = await self._field_key(obj, key, deadline=deadline)
        field = key if key in SEARCH_FIELDS[obj] else "custom_fields"
        params = {"term": value, "fields": field, "exact_match": "true", "limit": SEARCH_LIMIT}
        _, data = await self._api("GET", f"/api/v2/{obj}/search", params=params, deadline=deadline,
                                  operation=f"search {obj}")  # fmt: skip
        ids = [lookup_path(entry, "item.id") for entry in lookup_path(data, "data.items") or []]
        ids = list(dict.fromkeys(str(i) for i in ids if i is not None))
        if obj == "leads":
            found = await asyncio.gather(*(self._one("leads", i, deadline=deadline) for i in ids[:FETCH_LIMIT]))
            rows = [row for row in found if row]
        else:
            rows = await self._fetch(obj, ids, deadline=deadline)
        rows = [row for row in rows if (_text(flatten(row).get(key)) or "").casefold() == value.casefold()]
        return rows, len(rows)

    def _record_url(self, obj: str, record_id: str) -> str:
        token = self._token
        domain = token.extra.get("company_domain") if token else ""
        base = f"https://{domain}.pipedrive.com" if domain else self._base()
        if urlsplit(base).hostname in ("api.pipedrive.com", None):
            return ""
        return f"{base}/{UI_PATHS[obj]}/{record_id}"

    # --- reading fields -------------------------------------------------------------------

    async def read_field(self, record: Record, api_name: str, *, deadline: Deadline) -> str | None:
        head, dot, rest = api_name.partition(".")
        if dot and rest:
            link = LINKS.get((record.module, head))
            if head in ("owner_id", "owner"):
                link = ("owner_id", "users")
            if link is not None:
                return await self._linked_field(record, link, rest, deadline=deadline)
            if head not in record.fields:
                head = await self._field_key(record.module, head, deadline=deadline)
            return _text(lookup_path(record.fields, f"{head}.{rest}"))
        if api_name in record.fields:
            return _text(record.fields[api_name])
        key = await self._field_key(record.module, api_name, deadline=deadline)
        return _text(record.fields.get(key))

    async def _linked_field(
        self, record: Record, link: tuple[str, str], name: str, *, deadline: Deadline
    ) -> str | None:
        holder, target = link
        ref = record.fields.get(holder)
        if isinstance(ref, dict):  # v1 shapes: {"value": 5, "name": ...} or {"id": 5, ...}
            ref = ref.get("value", ref.get("id"))
        if ref is None or ref == "":
            return None
        row = await self._one(target, str(ref), deadline=deadline)
        if row is None:
            return None
        linked = Record(module=target, id=str(row["id"]), fields=flatten(row))
        if target == "users":
            return _text(lookup_path(linked.fields, name))
        return await self.read_field(linked, name, deadline=deadline)

    async def _field_key(self, obj: str, name: str, *, deadline: Deadline) -> str:
        """The API key of ``obj``'s field called ``name`` (a key or a display name); unknown: ``UnexpectedResponse``."""
        read_at, catalogue = self._catalogues.get(obj, (0.0, {}))
        stale = time.monotonic() - read_at > CATALOGUE_TTL
        if not read_at or (stale and name not in catalogue and name.casefold() not in catalogue):
            catalogue = await self._read_catalogue(obj, deadline=deadline)
            self._catalogues[obj] = (time.monotonic(), catalogue)
        key = catalogue.get(name) or catalogue.get(name.casefold())
        if key is None:
            raise UnexpectedResponse(f"field {name} does not exist on {obj}", kind=self.kind, operation=f"read {obj}",
                                     reason="unknown_field")  # fmt: skip
        return key

    async def _read_catalogue(self, obj: str, *, deadline: Deadline) -> dict[str, str]:
        api = FIELD_APIS.get(obj)
        catalogue: dict[str, str] = {}
        if api is None:
            return catalogue
        start = 0
        for _ in range(CATALOGUE_PAGES):
            _, data = await self._api("GET", f"/v1/{api}", params={"start": start, "limit": CATALOGUE_PAGE},
                                      deadline=deadline, operation=f"read {obj} fields")  # fmt: skip
            for item in data.get("data") or [] if isinstance(data, dict) else []:
                if isinstance(item, dict) and isinstance(item.get("key"), str):
                    catalogue[item["key"]] = item["key"]
                    if isinstance(item.get("name"), str):
                        catalogue.setdefault(item["name"].casefold(), item["key"])
            pagination = lookup_path(data, "additional_data.pagination") or {}
            if not pagination.get("more_items_in_collection"):
                break
            start = int(pagination.get("next_start") or start + CATALOGUE_PAGE)
        return catalogue

    # --- call log ----------------------------------------------------------------------------

    # --- users (agents sync) -------------------------------------------------------------

    async def list_users(self, *, deadline: Deadline) -> list[CrmUser]:
        """``GET /v1/users``: the company's users in one answer (no paging); deactivated ones left out."""
        _, body = await self._api("GET", "/v1/users", deadline=deadline, operation="list_users", limit=USER_LIST_BYTES)
        rows = body.get("data") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise UnexpectedResponse("Pipedrive sent a user list without data", kind=self.kind,
                                     operation="list_users", reason="bad_response")  # fmt: skip
        return [CrmUser(str(u["id"]), str(u.get("name") or ""), str(u.get("email") or ""))
                for u in rows if isinstance(u, dict) and u.get("id") is not None and u.get("active_flag") is not False]

    async def log_call(self, call: CallActivity, options: Any, *, deadline: Deadline) -> str:
        record = call.record
        if record is None:
            record = await self.find_record(LookupKey(call.external_number, "caller_id"), "contacts",
                                            deadline=deadline)  # fmt: skip
            if record is None and getattr(options, "create_unknown", False):
                record = await self._create_person(call.external_number, deadline=deadline)
        link, where = self._link(record, call)
        existing = await self._logged_activity(call.call_id, where, deadline=deadline)
        if existing:
            logger.info("pipedrive: call %s already logged as activity %s", call.call_id, existing)
            return existing
        body = self._activity(call) | link
        _, data = await self._api("POST", "/api/v2/activities", json=body, deadline=deadline,
                                  operation="create activities")  # fmt: skip
        activity_id = lookup_path(data, "data.id")
        if activity_id is None:
            raise self._shape("create activities", "a create answer without data.id")
        logger.info("pipedrive: call %s logged as activity %s (%s)", call.call_id, activity_id,
                    record.describe() if record else "no record")  # fmt: skip
        return str(activity_id)

    def _link(self, record: Record | None, call: CallActivity) -> tuple[dict[str, Any], dict[str, Any]]:
        """The activity's link fields, and the activity list filter that finds it again."""
        if record is None:
            return {}, {"updated_since": _utc(call).strftime("%Y-%m-%dT%H:%M:%SZ")}
        fields = record.fields
        if record.module == "organizations":
            return {"org_id": _int(record.id)}, {"org_id": record.id}
        if record.module == "leads":
            link: dict[str, Any] = {"lead_id": record.id}
            if _int(fields.get("person_id")) is not None:
                link["participants"] = [{"person_id": _int(fields["person_id"]), "primary": True}]
            if _int(fields.get("organization_id")) is not None:
                link["org_id"] = _int(fields["organization_id"])
            return link, {"lead_id": record.id}
        link = {"participants": [{"person_id": _int(record.id), "primary": True}]}
        if _int(fields.get("org_id")) is not None:
            link["org_id"] = _int(fields["org_id"])
        return link, {"person_id": record.id}

    async def _logged_activity(self, call_id: str, where: dict[str, Any], *, deadline: Deadline) -> str | None:
        params = where | {"sort_by": "add_time", "sort_direction": "desc", "limit": ACTIVITY_SCAN}
        _, data = await self._api("GET", "/api/v2/activities", params=params, deadline=deadline,
                                  operation="read activities")  # fmt: skip
        marker = re.compile(rf"Call ID: {re.escape(html.escape(call_id))}(?![\w.-])")
        for row in data.get("data") or [] if isinstance(data, dict) else []:
            if isinstance(row, dict) and isinstance(row.get("note"), str) and marker.search(row["note"]):
                return str(row.get("id"))
        return None

    def _activity(self, call: CallActivity) -> dict[str, Any]:
        started = _utc(call)
        inbound = call.direction == "inbound"
        external = phone_forms(call.external_number, self.region)
        number = external.e164 or call.external_number
        minutes = math.ceil(max(0, call.talk_seconds) / 60)
        lines = [html.escape(call.description)] if call.description else []
        lines += [
            f"{'Inbound' if inbound else 'Outbound'} call, {call.outcome}",
            f"Number: {html.escape(number)}",
            f"Extension: {html.escape(call.extension)}" if call.extension else "",
            f"Ringing: {call.ring_seconds} s, talking: {call.talk_seconds} s",
            f'Recording: <a href="{html.escape(call.recording)}">{html.escape(call.recording)}</a>'
            if call.recording else "",
            f"Call ID: {html.escape(call.call_id)}",
        ]  # fmt: skip
        return {
            "subject": call.subject or (f"Inbound call from {number}" if inbound else f"Outbound call to {number}"),
            "type": self.settings.activity_type,
            "done": True,
            "due_date": started.strftime("%Y-%m-%d"),
            "due_time": started.strftime("%H:%M"),
            "duration": f"{minutes // 60:02d}:{minutes % 60:02d}",
            "note": "<br>".join(line for line in lines if line),
        }

    async def _create_person(self, number: str, *, deadline: Deadline) -> Record | None:
        forms = phone_forms(number, self.region)
        phone = forms.e164 or forms.digits
        if not phone:
            return None
        body = {"name": phone, "phones": [{"value": phone, "primary": True, "label": "work"}]}
        _, data = await self._api("POST", "/api/v2/persons", json=body, deadline=deadline, operation="create persons")
        row = data.get("data") if isinstance(data, dict) else None
        if not isinstance(row, dict) or row.get("id") is None:
            raise self._shape("create persons", "a create answer without data.id")
        logger.info("pipedrive: created person %s for an unknown caller", row["id"])
        return Record(module="persons", id=str(row["id"]), fields=flatten(row))

    # --- errors -----------------------------------------------------------------------------------

    def vendor_message(self, response: CappedResponse) -> str:
        data = _json(response)
        if isinstance(data, dict):
            message = data.get("error") if isinstance(data.get("error"), str) else data.get("message")
            info = data.get("error_info")
            if isinstance(message, str) and message.strip():
                text = message.strip()
                generic = not isinstance(info, str) or not info.strip() or "developers.pipedrive.com" in info
                if not generic and info != message:
                    text = f"{text} ({info.strip()})"
                return text[:300]
        return super().vendor_message(response)

    def error_for(self, response: CappedResponse, operation: str) -> ConnectorError:
        status = response.status_code
        detail = self.vendor_message(response)
        args = {"kind": self.kind, "operation": operation, "reason": f"http_{status}"}
        if status == 401:
            return AuthError(f"Pipedrive: token rejected ({operation}): {detail or 'unauthorized'}", **args)
        if status == 402:
            return ConnectorUnavailable(f"Pipedrive: the company account is not active (payment required) for "
                                        f"{operation}" + (f": {detail}" if detail else ""), **args)  # fmt: skip
        if status == 403:
            return AuthError(f"Pipedrive: not allowed to {operation} (the user's permissions or the plan's limits)"
                             + (f": {detail}" if detail else ""), **args)  # fmt: skip
        return super().error_for(response, operation)

    def _shape(self, operation: str, what: str) -> UnexpectedResponse:
        return UnexpectedResponse(f"Pipedrive sent {what} ({operation})", kind=self.kind, operation=operation,
                                  reason="bad_shape")  # fmt: skip


def flatten(row: dict[str, Any]) -> dict[str, Any]:
    """A v2 record with its ``custom_fields`` merged in (v1 records already have them at the top)."""
    fields = {k: v for k, v in row.items() if k != "custom_fields"}
    custom = row.get("custom_fields")
    if isinstance(custom, dict):
        fields.update(custom)
    return fields


def _text(value: Any) -> str | None:
    """A field value as text: option objects as their labels, money/address objects as their value."""
    if isinstance(value, dict):
        if "label" in value:
            return field_text(value["label"])
        if "value" in value:
            return field_text(value["value"])
    if isinstance(value, list) and value and all(isinstance(v, dict) and "label" in v for v in value):
        return ", ".join(str(v["label"]) for v in value)
    return field_text(value)


def _phone_text(value: Any) -> str:
    """A phone custom field's value: a string, or ``{"value": ...}`` in some answers."""
    if isinstance(value, dict):
        value = value.get("value")
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int | None:
    if isinstance(value, dict):
        value = value.get("value", value.get("id"))
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _utc(call: CallActivity):
    started = call.started_at if call.started_at.tzinfo else call.started_at.replace(tzinfo=timezone.utc)
    return started.astimezone(timezone.utc)


def _json(response: CappedResponse) -> Any:
    try:
        return json.loads(response.content or b"null")
    except ValueError:
        return None


def _plain(value: SecretStr | str | None) -> str:
    if value is None:
        return ""
    return value.get_secret_value() if isinstance(value, SecretStr) else value
