"""HubSpot (CRM API v3): private app token or OAuth refresh token, CRM search, ``calls`` engagements.

Authentication (reference section 3)
    private app token   ``access_token`` (``pat-na1-…``; a legacy private app or a
                        service key) sent as ``Authorization: Bearer``. It does not
                        expire; ``authenticate()`` checks it once with
                        ``GET /account-info/v3/details`` (which also gives the portal
                        id and UI domain for record links; a 403 there only means
                        the token lacks the ``oauth`` scope and is accepted), and a
                        401 later is ``AuthError("... token rejected ...")``.
    OAuth refresh token ``client_id`` + ``client_secret`` + ``refresh_token`` (the
                        authorization-code flow was run once at install):
                        ``POST {api_url}/oauth/v1/token`` form-encoded
                        ``grant_type=refresh_token``. The access token's lifetime is
                        read from ``expires_in`` (1800 s in practice) and the token is
                        refreshed *before* it expires (``Token.fresh``: a minute early,
                        or at half the lifetime of a short token), since
                        HubSpot says a 401 is not a reliable signal to refresh (a 401
                        still triggers one refresh and retry). ``BAD_REFRESH_TOKEN``
                        is ``AuthError("... token rejected: refresh token revoked or
                        invalid")``. The v1 token endpoint is what the reference
                        documents (v1 is announced for deprecation on 16 Feb 2027);
                        camelCase answers of the newer endpoint are read too.
    HubSpot has no per-user credentials, so a rule's CRM Username/Password are
    not used.

Modules: accounts -> ``companies``, contacts -> ``contacts``, leads -> ``contacts``
whose ``lifecyclestage`` is ``lead_lifecycle_stage`` (default ``lead``). HubSpot's
own Leads object (Sales Hub) stores no phone number — a lead there is only a
link to a contact — so it cannot be searched by caller; route on contacts (e.g.
``hs_lead_status`` or ``lifecyclestage``) to tell leads apart instead.

Finding a record: one ``POST /crm/v3/objects/{object}/search``
    Phone keys, as OR-ed filter groups (at most 5 groups, 10 filters each, 25 in
    total since Aug 2024 — confirmed in the changelog); ``IN`` takes a ``values``
    list and compares each with the stored text (the reference's operator list;
    HubSpot's search guide asks for lowercase values with string properties —
    digits and punctuation have no case):
      contacts  ``hs_searchable_calculated_phone_number`` EQ national digits,
                ``hs_searchable_calculated_mobile_number`` EQ national digits,
                ``phone`` IN the written forms, ``mobilephone`` IN the written forms.
                The calculated properties are HubSpot's own normalisation of
                whatever was typed (the appendix: "national digits on calculated
                props"; public integrations query them the same way); their
                exact rules are **unconfirmed**, so the stored string is also
                compared.
      companies: no calculated phone property is documented for companies (the
                reference and HubSpot's docs name them on contacts only; filtering
                on a property a portal lacks is an error), so one group: ``phone`` IN the written forms (``_phone.written_forms``:
                E.164 ``+14155552671``, ``(415) 555-2671``, ``+1 415-555-2671``,
                ``415-555-2671``, ``14155552671``, ``4155552671``, ``415.555.2671``,
                ``1-415-555-2671``, ``+1 (415) 555-2671``, ``1 (415) 555-2671``,
                ``415 555 2671``, ``+1 415 555 2671``, ``1.415.555.2671``,
                ``+1.415.555.2671``). A company number typed any other way is not found.
    Typed (DTMF) keys: ``key_field`` EQ the digits (``hs_object_id`` when
    ``key_field`` is empty). The leads module adds ``lifecyclestage`` EQ
    ``lead_lifecycle_stage`` to every group.
    The asked fields are requested as ``properties`` in the same call (plus
    ``associatedcompanyid`` / ``hubspot_owner_id`` for lookups). The search is
    sorted on the modified-time property (contacts ``lastmodifieddate``,
    companies ``hs_lastmodifieddate``) in the ``match_pick`` direction, so one
    page of ``SEARCH_LIMIT`` holds the right record; ``pick()`` runs on
    ``updatedAt`` and ``Record.matches`` is the search's ``total``.
    Newly created or changed records take a few seconds to reach the search
    index (third-party connector docs).

Reading fields: values are strings (or null for a property with no value). A
property missing from the answer is checked in the property catalogue
(``GET /crm/v3/properties/{object}/{name}``, remembered): an unknown name is
``UnexpectedResponse("field X does not exist on contacts")``. Dotted names are
lookups through associations, one request more each:
``companies.<property>`` (also ``company.``; a contact's primary company is
``associatedcompanyid``; other records use ``GET …/{id}?associations=``),
``contacts.``/``deals.``/``tickets.<property>``, and
``hubspot_owner_id.<field>`` (``owner.``: ``GET /crm/v3/owners/{id}``:
``email``, ``firstName``, ``lastName``...).

Call log: ``POST /crm/v3/objects/calls`` with ``hs_timestamp`` (ISO UTC),
``hs_call_title``, ``hs_call_body``, ``hs_call_direction`` INBOUND/OUTBOUND,
``hs_call_status`` (answered COMPLETED, missed NO_ANSWER, busy BUSY, failed
FAILED), ``hs_call_duration`` (talk time in **milliseconds**, as the current
docs say), ``hs_call_from_number``/``hs_call_to_number``,
``hs_call_recording_url`` (only an ``https://`` one, as HubSpot requires),
``hs_call_external_id`` = the Asterisk call id, ``hubspot_owner_id`` when
``owner_id`` is set, and an association ``HUBSPOT_DEFINED`` 194 (call→contact)
or 182 (call→company; 182 is **unconfirmed** in vendor docs, used alike by
public integrations). Idempotent: a ``calls`` search on
``hs_call_external_id`` EQ the call id comes first (search-index lag means a
retry within seconds can still duplicate). With no record from routing the
caller is looked up in contacts; an unknown caller becomes a contact
(``phone`` in E.164) when the log options say so, else the call is logged
without association.

Checked with public sources (beyond the reference): the search limits (5 groups,
10 filters per group, 25 filters; vendor changelog), ``expires_in`` on token
answers and the 300-character token size (vendor OAuth docs), the
``BAD_REFRESH_TOKEN`` answer (third-party write-up of the v1 endpoint),
``GET /account-info/v3/details`` and its ``oauth`` scope (vendor docs),
``hs_call_external_id`` as a call property that integrations search on for
idempotency (vendor recordings guide and public integrations), and 182 as the
call→company type (public integrations). Still **unconfirmed**: the calculated
phone properties' exact normalisation, whether an unknown property in a search
filter answers ``PROPERTY_DOESNT_EXIST`` (create/update do; the connector maps
both and checks the catalogue itself for asked fields), and the current search
rate limit.

Limits: search endpoints allow 4 requests/s per token (changelog; the current
figure is **unconfirmed**): a pace of 4/s with a burst of 4 (every lookup is a
search); other endpoints 100–190 per 10 s by plan, and a daily quota of 250,000
(Free/Starter; 625,000 Professional, 1,000,000 Enterprise: set ``daily_quota``). A 429 (``policyName`` SECONDLY
or DAILY) is waited out only when it carries a ``Retry-After`` that fits the
deadline. The daily quota headers (``X-HubSpot-RateLimit-Daily``/``-Daily-Remaining``,
private apps only) give a warning in the log when under 5 % is left. Errors
arrive as ``{"status": "error", "message", "category",
"errors": [...]}``; ``MISSING_SCOPES`` names the scope the token lacks.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from datetime import timezone
from typing import Any
from urllib.parse import quote

from pydantic import Field, SecretStr, field_validator, model_validator

from crmroute.connectors._http import CappedResponse, send_capped
from crmroute.connectors._phone import PhoneForms, digits_of, written_forms
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

DEFAULT_API_URL = "https://api.hubapi.com"
TOKEN_PATH = "/oauth/v1/token"
ACCOUNT_PATH = "/account-info/v3/details"
SEARCH_LIMIT = 10  # one page, already sorted by the modified time
LOW_BUDGET = 0.05  # warn when less than this share of the daily quota is left
BUDGET_WARN_EVERY = 300.0

MODIFIED = {"contacts": "lastmodifieddate", "companies": "hs_lastmodifieddate"}
BASE_PROPERTIES = {
    "contacts": ("firstname", "lastname", "phone", "mobilephone", "lifecyclestage"),
    "companies": ("name", "phone", "domain"),
}
OBJECT_TYPE_IDS = {"contacts": "0-1", "companies": "0-2"}
CALL_ASSOCIATION = {"contacts": 194, "companies": 182}  # call -> contact / company, HUBSPOT_DEFINED
ASSOCIATIONS = {
    "company": "companies", "companies": "companies", "contact": "contacts", "contacts": "contacts",
    "deal": "deals", "deals": "deals", "ticket": "tickets", "tickets": "tickets",
}  # fmt: skip
OWNER_PREFIXES = ("hubspot_owner_id", "owner")
CALL_STATUS = {"answered": "COMPLETED", "missed": "NO_ANSWER", "busy": "BUSY", "failed": "FAILED"}


class HubSpotSettings(ConnectorSettings):
    api_url: str = Field(
        DEFAULT_API_URL, description="API base URL, https://api.hubapi.com; change it for a proxy or a test server"
    )
    access_token: SecretStr | None = Field(
        None, description="Private app (or service key) access token, pat-…; leave empty to use OAuth instead"
    )
    client_id: str = Field("", description="OAuth: the app's client id (with client secret and refresh token)")
    client_secret: SecretStr | None = Field(None, description="OAuth: the app's client secret")
    refresh_token: SecretStr | None = Field(
        None, description="OAuth: the refresh token from installing the app (scopes crm.objects.contacts.read and "
        ".write, crm.objects.companies.read)"
    )  # fmt: skip
    lead_lifecycle_stage: str = Field(
        "lead", description="The leads module searches contacts whose lifecyclestage has this internal value"
    )
    owner_id: str = Field("", description="HubSpot owner id set on logged calls (hubspot_owner_id); empty: none")

    @field_validator("api_url")
    @classmethod
    def _https(cls, value: str) -> str:
        value = https_url(value)
        if not value:
            raise ValueError("required: an https:// URL")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> "HubSpotSettings":
        if _plain(self.access_token):
            return self
        missing = [name for name in ("client_id", "client_secret", "refresh_token") if not _plain(getattr(self, name))]
        if missing:
            raise ValueError("give an access_token (private app), or client_id, client_secret and refresh_token "
                             f"(OAuth); missing: {', '.join(missing)}")  # fmt: skip
        return self


class HubSpotConnector(Connector):
    kind = "hubspot"
    title = "HubSpot"
    docs_url = "https://developers.hubspot.com/docs/api/crm/search"
    Settings = HubSpotSettings
    MODULES = {"accounts": "companies", "contacts": "contacts", "leads": "contacts"}
    requests_per_second = 4.0
    burst = 4.0
    quotas = (Quota(250_000, 86_400, "API requests per day"),)
    limits_source = "search 4/s per token (changelog); 250,000/day Free/Starter (usage guidelines, reference section 3)"
    owner_field = "hubspot_owner_id"

    settings: HubSpotSettings

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._known_properties: dict[tuple[str, str], bool] = {}
        self._budget_warned = -BUDGET_WARN_EVERY

    # --- authentication ---------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.settings.api_url}{path}"

    async def _login(self, *, deadline: Deadline) -> Token:
        static = _plain(self.settings.access_token)
        if static:
            return await self._check_static(static, deadline=deadline)
        return await self._refresh(deadline=deadline)

    async def _check_static(self, token: str, *, deadline: Deadline) -> Token:
        response = await self._send("GET", self._url(ACCOUNT_PATH), deadline=deadline, operation="authenticate",
                                    headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        if response.status_code == 401:
            raise AuthError(f"HubSpot: access token rejected: {self.vendor_message(response) or 'invalid or revoked'}",
                            kind=self.kind, operation="authenticate", reason="http_401")  # fmt: skip
        extra: dict[str, Any] = {}
        if response.status_code == 200:
            data = _json(response)
            if isinstance(data, dict):
                extra = {"portal_id": data.get("portalId"), "ui_domain": data.get("uiDomain") or "app.hubspot.com"}
        elif response.status_code != 403:  # 403: no oauth scope, the token itself works
            raise self.error_for(response, "authenticate")
        logger.debug("hubspot: private app token accepted")
        return Token(token, None, extra)

    async def verify(self, *, deadline: Deadline) -> str:
        """``GET /account-info/v3/details`` (403: the token works but lacks the ``oauth`` scope)."""
        response = await self.request("GET", self._url(ACCOUNT_PATH), deadline=deadline, operation="verify", ok=(403,))
        data = _json(response) if response.status_code == 200 else None
        portal = data.get("portalId") if isinstance(data, dict) else None
        return f"HubSpot account {portal}" if portal else "token accepted (no oauth scope to name the account)"

    async def _refresh(self, *, deadline: Deadline) -> Token:
        form = {
            "grant_type": "refresh_token",
            "client_id": self.settings.client_id,
            "client_secret": _plain(self.settings.client_secret),
            "refresh_token": _plain(self.settings.refresh_token),
        }
        response = await self._send("POST", self._url(TOKEN_PATH), deadline=deadline, operation="authenticate",
                                    data=form)  # fmt: skip
        data = _json(response)
        if response.status_code != 200:
            raise self._token_error(response, data)
        body = data if isinstance(data, dict) else {}
        access = body.get("access_token") or body.get("accessToken")
        if not isinstance(access, str) or not access:
            raise UnexpectedResponse("HubSpot answered the token request without an access token", kind=self.kind,
                                     operation="authenticate", reason="bad_token")  # fmt: skip
        expires_in = body.get("expires_in", body.get("expiresIn"))
        expires_at = time.monotonic() + float(expires_in) if isinstance(expires_in, (int, float)) else None
        logger.debug("hubspot: access token refreshed, expires in %s s", expires_in)
        return Token(access, expires_at, {"hub_id": body.get("hubId") or body.get("hub_id")})

    def _token_error(self, response: CappedResponse, data: Any) -> ConnectorError:
        status = str(lookup_path(data, "status") or "") if isinstance(data, dict) else ""
        message = self.vendor_message(response)
        args = {"kind": self.kind, "operation": "authenticate", "reason": f"http_{response.status_code}"}
        if status == "BAD_REFRESH_TOKEN" or "refresh token" in message.lower():
            return AuthError("HubSpot: token rejected: refresh token revoked or invalid (reinstall the app and store "
                             "the new refresh token)", **args)  # fmt: skip
        if status in ("BAD_CLIENT_ID", "BAD_CLIENT_SECRET") or "client" in message.lower():
            return AuthError(f"HubSpot: token rejected: client id or secret wrong ({message or status})", **args)
        if response.status_code in (400, 401, 403):
            return AuthError(f"HubSpot: token rejected: {message or status or 'HTTP ' + str(response.status_code)}",
                             **args)  # fmt: skip
        return self.error_for(response, "authenticate")

    async def _send(
        self, method: str, url: str, *, deadline: Deadline, operation: str, **kwargs: Any
    ) -> CappedResponse:
        """One request without the shared auth/retry path (token and credential checks)."""
        response = await send_capped(self.http, method, url, timeout=deadline.remaining(), kind=self.kind,
                                     operation=operation, **kwargs)  # fmt: skip
        if response.status_code == 429:
            raise RateLimited(f"HubSpot is rate limiting ({operation})", kind=self.kind, operation=operation,
                              reason="rate_limited")  # fmt: skip
        return response

    async def _api(self, method: str, path: str, *, deadline: Deadline, operation: str, ok: Sequence[int] = (),
                   **kwargs: Any) -> tuple[int, Any]:  # fmt: skip
        response = await self.request(method, self._url(path), deadline=deadline, operation=operation, ok=ok, **kwargs)
        self._note_budget(response)
        return response.status_code, self.json_of(response, operation)

    def _note_budget(self, response: CappedResponse) -> None:
        """Warn (at most every ``BUDGET_WARN_EVERY`` s) when the daily API quota is nearly used up."""
        daily, left = response.headers.get("x-hubspot-ratelimit-daily", ""), \
            response.headers.get("x-hubspot-ratelimit-daily-remaining", "")  # fmt: skip
        if not (daily.isdigit() and left.isdigit()):
            return
        if self.budget is not None:  # HubSpot's own count is the truth for the daily quota
            self.budget.sync_quota(86_400, int(daily) - int(left), int(daily))
        if int(left) > int(daily) * LOW_BUDGET:
            return
        now = time.monotonic()
        if now - self._budget_warned >= BUDGET_WARN_EVERY:
            self._budget_warned = now
            logger.warning("hubspot: %s of the daily %s API calls left", left, daily)

    # --- finding records ----------------------------------------------------------------

    async def find_record(
        self, key: LookupKey, module: str, *, fields: Sequence[str] = (), deadline: Deadline
    ) -> Record | None:
        obj = self.vendor_module(module)
        if key.source == "dtmf":
            value = key.value.strip()
            prop = self.settings.key_field or "hs_object_id"
            if not value or (prop == "hs_object_id" and not value.isdigit()):
                return None
            groups = [[{"propertyName": prop, "operator": "EQ", "value": value}]]
        else:
            groups = phone_groups(obj, self.phone(key))
            if not groups:
                return None
        if module == "leads":
            stage = {"propertyName": "lifecyclestage", "operator": "EQ", "value": self.settings.lead_lifecycle_stage}
            groups = [group + [stage] for group in groups]
        body: dict[str, Any] = {
            "filterGroups": [{"filters": group} for group in groups],
            "properties": self._properties(obj, fields),
            "limit": SEARCH_LIMIT,
        }
        if self.settings.match_pick != "first":
            direction = "DESCENDING" if self.settings.match_pick == "newest" else "ASCENDING"
            body["sorts"] = [{"propertyName": MODIFIED[obj], "direction": direction}]
        _, data = await self._api("POST", f"/crm/v3/objects/{obj}/search", json=body, deadline=deadline,
                                  operation=f"search {obj}")  # fmt: skip
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, list):
            raise self._shape("search " + obj, "a search answer without results")
        results = [r for r in results if isinstance(r, dict) and r.get("id") is not None]
        if not results:
            return None
        chosen, count = self.pick(results, "updatedAt")
        total = data.get("total")
        matches = max(count, total) if isinstance(total, int) else count
        return Record(module=obj, id=str(chosen["id"]), fields=dict(chosen.get("properties") or {}),
                      matches=matches, url=self._record_url(obj, str(chosen["id"])))  # fmt: skip

    def _properties(self, obj: str, fields: Sequence[str]) -> list[str]:
        wanted = list(BASE_PROPERTIES[obj]) + [MODIFIED[obj]]
        for name in fields:
            head, dot, _ = name.partition(".")
            if not dot:
                wanted.append(name)
            elif head.lower() in OWNER_PREFIXES:
                wanted.append("hubspot_owner_id")
            elif obj == "contacts" and ASSOCIATIONS.get(head.lower()) == "companies":
                wanted.append("associatedcompanyid")
            elif head.lower() not in ASSOCIATIONS:
                wanted.append(head)
        return list(dict.fromkeys(wanted))

    def _record_url(self, obj: str, record_id: str) -> str:
        token = self._token
        portal = (token.extra.get("portal_id") or token.extra.get("hub_id")) if token else None
        if token is None or not portal:
            return ""
        domain = token.extra.get("ui_domain") or "app.hubspot.com"
        return f"https://{domain}/contacts/{portal}/record/{OBJECT_TYPE_IDS[obj]}/{record_id}"

    # --- reading fields -------------------------------------------------------------------

    async def read_field(self, record: Record, api_name: str, *, deadline: Deadline) -> str | None:
        head, dot, rest = api_name.partition(".")
        if dot and rest:
            if head.lower() in OWNER_PREFIXES:
                return await self._owner_field(record, rest, deadline=deadline)
            target = ASSOCIATIONS.get(head.lower())
            if target is not None and head not in record.fields:
                return await self._associated_field(record, target, rest, deadline=deadline)
            return field_text(lookup_path(record.fields, api_name))
        if api_name in record.fields:
            return field_text(record.fields[api_name])
        # not in the answer: a property that does not exist, or one that was not asked for
        await self._require_property(record.module, api_name, deadline=deadline)
        properties = await self._read_object(record.module, record.id, [api_name], deadline=deadline)
        if properties is None:
            return None
        record.fields[api_name] = properties.get(api_name)
        return field_text(properties.get(api_name))

    async def _read_object(self, obj: str, record_id: str, properties: Sequence[str], *, deadline: Deadline,
                           associations: str = "") -> dict[str, Any] | None:  # fmt: skip
        params: dict[str, str] = {"properties": ",".join(properties)}
        if associations:
            params["associations"] = associations
        status, data = await self._api("GET", f"/crm/v3/objects/{obj}/{quote(record_id, safe='')}", params=params,
                                       ok=(404,), deadline=deadline, operation=f"read {obj}")  # fmt: skip
        if status == 404:
            return None
        if not isinstance(data, dict):
            raise self._shape(f"read {obj}", "a record answer that is not an object")
        if associations:
            return data
        return dict(data.get("properties") or {})

    async def _require_property(self, obj: str, name: str, *, deadline: Deadline) -> None:
        """``UnexpectedResponse`` when ``obj`` has no property ``name`` (answers remembered)."""
        known = self._known_properties.get((obj, name))
        if known is None:
            status, _ = await self._api("GET", f"/crm/v3/properties/{obj}/{quote(name, safe='')}", ok=(404,),
                                        deadline=deadline, operation=f"read {obj} properties")  # fmt: skip
            known = self._known_properties[(obj, name)] = status != 404
        if not known:
            raise UnexpectedResponse(f"field {name} does not exist on {obj}", kind=self.kind,
                                     operation=f"read {obj}", reason="unknown_field")  # fmt: skip

    async def _associated_field(self, record: Record, target: str, name: str, *, deadline: Deadline) -> str | None:
        assoc_id = field_text(record.fields.get("associatedcompanyid")) if target == "companies" else None
        if assoc_id is None:
            data = await self._read_object(record.module, record.id, ["hs_object_id"], associations=target,
                                           deadline=deadline)  # fmt: skip
            linked = lookup_path(data or {}, f"associations.{target}.results") or []
            ids = [str(item["id"]) for item in linked if isinstance(item, dict) and item.get("id") is not None]
            if not ids:
                return None
            assoc_id = ids[0]
        properties = await self._read_object(target, assoc_id, [name], deadline=deadline)
        if properties is None:
            return None
        if name not in properties:
            await self._require_property(target, name, deadline=deadline)
        return field_text(properties.get(name))

    async def _owner_field(self, record: Record, name: str, *, deadline: Deadline) -> str | None:
        owner_id = field_text(record.fields.get("hubspot_owner_id"))
        if owner_id is None:
            if "hubspot_owner_id" in record.fields:
                return None
            properties = await self._read_object(record.module, record.id, ["hubspot_owner_id"], deadline=deadline)
            owner_id = field_text((properties or {}).get("hubspot_owner_id"))
            if owner_id is None:
                return None
        status, data = await self._api("GET", f"/crm/v3/owners/{quote(owner_id, safe='')}", ok=(404,),
                                       deadline=deadline, operation="read owners")  # fmt: skip
        return None if status == 404 else field_text(lookup_path(data, name))

    # --- call log ----------------------------------------------------------------------------

    # --- users (agents sync) -------------------------------------------------------------

    async def list_users(self, *, deadline: Deadline) -> list[CrmUser]:
        """``GET /crm/v3/owners``: the owners (the ids ``hubspot_owner_id`` holds), 500 a page, following
        ``paging.next.after``; archived owners are not listed."""
        users: list[CrmUser] = []
        params: dict[str, Any] = {"limit": 500, "archived": "false"}
        for _ in range(1000):  # a bound: 500,000 owners
            _, data = await self._api("GET", "/crm/v3/owners", params=params, deadline=deadline,
                                      operation="list_users", limit=USER_LIST_BYTES)  # fmt: skip
            results = data.get("results") if isinstance(data, dict) else None
            if not isinstance(results, list):
                raise UnexpectedResponse("HubSpot sent an owner list without results", kind=self.kind,
                                         operation="list_users", reason="bad_response")  # fmt: skip
            for owner in results:
                if isinstance(owner, dict) and owner.get("id") is not None:
                    name = " ".join(str(owner.get(k) or "").strip() for k in ("firstName", "lastName")).strip()
                    users.append(CrmUser(str(owner["id"]), name, str(owner.get("email") or "")))
            after = lookup_path(data, "paging.next.after")
            if not after:
                return users
            params = params | {"after": str(after)}
        return users

    async def log_call(self, call: CallActivity, options: Any, *, deadline: Deadline) -> str:
        existing = await self._logged_call(call.call_id, deadline=deadline)
        if existing:
            logger.info("hubspot: call %s already logged as %s", call.call_id, existing)
            return existing
        record = call.record
        if record is None:
            record = await self.find_record(LookupKey(call.external_number, "caller_id"), "contacts",
                                            deadline=deadline)  # fmt: skip
            if record is None and getattr(options, "create_unknown", False):
                record = await self._create_contact(call.external_number, deadline=deadline)
        body: dict[str, Any] = {"properties": self._call_properties(call)}
        if record is not None:
            type_id = CALL_ASSOCIATION.get(record.module, CALL_ASSOCIATION["contacts"])
            kind = {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}
            body["associations"] = [{"to": {"id": record.id}, "types": [kind]}]
        _, data = await self._api("POST", "/crm/v3/objects/calls", json=body, deadline=deadline,
                                  operation="create calls")  # fmt: skip
        call_id = data.get("id") if isinstance(data, dict) else None
        if call_id is None:
            raise self._shape("create calls", "a create answer without an id")
        logger.info("hubspot: call %s logged as %s (%s)", call.call_id, call_id,
                    record.describe() if record else "no record")  # fmt: skip
        return str(call_id)

    async def _logged_call(self, call_id: str, *, deadline: Deadline) -> str | None:
        body = {
            "filterGroups": [
                {"filters": [{"propertyName": "hs_call_external_id", "operator": "EQ", "value": call_id}]}
            ],
            "properties": ["hs_call_external_id"],
            "limit": 1,
        }
        _, data = await self._api("POST", "/crm/v3/objects/calls/search", json=body, deadline=deadline,
                                  operation="search calls")  # fmt: skip
        for result in (data.get("results") or []) if isinstance(data, dict) else []:
            if isinstance(result, dict) and result.get("id") is not None:
                return str(result["id"])
        return None

    async def _create_contact(self, number: str, *, deadline: Deadline) -> Record | None:
        forms = self.phone(LookupKey(number, "caller_id"))
        phone = forms.e164 or forms.digits
        if not phone:
            return None
        _, data = await self._api("POST", "/crm/v3/objects/contacts", json={"properties": {"phone": phone}},
                                  deadline=deadline, operation="create contacts")  # fmt: skip
        if not isinstance(data, dict) or data.get("id") is None:
            raise self._shape("create contacts", "a create answer without an id")
        logger.info("hubspot: created contact %s for an unknown caller", data["id"])
        return Record(module="contacts", id=str(data["id"]), fields=dict(data.get("properties") or {}))

    def _call_properties(self, call: CallActivity) -> dict[str, str]:
        inbound = call.direction == "inbound"
        external = self.phone(LookupKey(call.external_number, "caller_id"))
        number = external.e164 or call.external_number
        started = call.started_at if call.started_at.tzinfo else call.started_at.replace(tzinfo=timezone.utc)
        stamp = started.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        properties = {
            "hs_timestamp": stamp,
            "hs_call_title": call.subject or (f"Inbound call from {number}" if inbound else
                                              f"Outbound call to {number}"),
            "hs_call_body": call.description or "",
            "hs_call_direction": "INBOUND" if inbound else "OUTBOUND",
            "hs_call_status": CALL_STATUS.get(call.outcome, "COMPLETED"),
            "hs_call_duration": str(max(0, call.talk_seconds) * 1000),
            "hs_call_from_number": number if inbound else call.extension,
            "hs_call_to_number": call.extension if inbound else number,
            "hs_call_external_id": call.call_id,
        }
        if call.recording.lower().startswith("https://"):
            properties["hs_call_recording_url"] = call.recording
        if self.settings.owner_id:
            properties["hubspot_owner_id"] = self.settings.owner_id
        return {k: v for k, v in properties.items() if v != "" or k == "hs_call_body"}

    # --- errors -----------------------------------------------------------------------------------

    def vendor_message(self, response: CappedResponse) -> str:
        data = _json(response)
        if isinstance(data, dict):
            for error in data.get("errors") or []:
                if isinstance(error, dict) and isinstance(error.get("message"), str) and error["message"].strip():
                    if error.get("code") == "PROPERTY_DOESNT_EXIST" or data.get("category") == "MISSING_SCOPES":
                        return error["message"].strip()[:300]
        return super().vendor_message(response)

    def error_for(self, response: CappedResponse, operation: str) -> ConnectorError:
        data = _json(response)
        data = data if isinstance(data, dict) else {}
        category = str(data.get("category") or "")
        args = {"kind": self.kind, "operation": operation, "reason": f"http_{response.status_code}"}
        missing = _missing_property(data)
        if missing:
            obj = operation.rsplit(" ", 1)[-1]
            args["reason"] = "unknown_field"
            return UnexpectedResponse(f"field {missing} does not exist on {obj}", **args)
        if category == "MISSING_SCOPES":
            scopes = _required_scopes(data)
            return AuthError(f"HubSpot: the token lacks a scope for {operation}"
                             + (f": grant {', '.join(scopes)}" if scopes else ""), **args)  # fmt: skip
        if response.status_code == 401:
            detail = "token expired" if category == "EXPIRED_AUTHENTICATION" else "token rejected"
            return AuthError(f"HubSpot: {detail} ({operation}): {self.vendor_message(response)}", **args)
        return super().error_for(response, operation)

    def _shape(self, operation: str, what: str) -> UnexpectedResponse:
        return UnexpectedResponse(f"HubSpot sent {what} ({operation})", kind=self.kind, operation=operation,
                                  reason="bad_shape")  # fmt: skip


def phone_groups(obj: str, forms: PhoneForms) -> list[list[dict[str, Any]]]:
    """The OR-ed filter groups (one filter each) that find ``forms`` in ``obj`` (see the module docstring)."""
    def eq(prop: str, value: str) -> list[dict[str, Any]]:
        return [{"propertyName": prop, "operator": "EQ", "value": value}]

    def among(prop: str, values: list[str]) -> list[dict[str, Any]]:
        return [{"propertyName": prop, "operator": "IN", "values": values}]

    written = written_forms(forms)
    if obj == "contacts":
        national = forms.national_digits or digits_of(forms.raw).lstrip("0")
        if not national:
            return []
        return [eq("hs_searchable_calculated_phone_number", national),
                eq("hs_searchable_calculated_mobile_number", national),
                among("phone", written), among("mobilephone", written)]  # fmt: skip
    return [among("phone", written)] if written else []


def _missing_property(data: dict[str, Any]) -> str:
    for error in data.get("errors") or []:
        if isinstance(error, dict) and error.get("code") == "PROPERTY_DOESNT_EXIST":
            names = lookup_path(error, "context.propertyName")
            if isinstance(names, list) and names:
                return str(names[0])
            message = str(error.get("message") or "")
            if '"' in message:
                return message.split('"')[1]
    return ""


def _required_scopes(data: dict[str, Any]) -> list[str]:
    scopes: list[str] = []
    for error in data.get("errors") or []:
        context = error.get("context") if isinstance(error, dict) else None
        if isinstance(context, dict):
            for key in ("requiredGranularScopes", "requiredScopes"):
                scopes += [str(s) for s in context.get(key) or []]
    return list(dict.fromkeys(scopes))


def _json(response: CappedResponse) -> Any:
    try:
        return json.loads(response.content or b"null")
    except ValueError:
        return None


def _plain(value: SecretStr | str | None) -> str:
    if value is None:
        return ""
    return value.get_secret_value() if isinstance(value, SecretStr) else value
