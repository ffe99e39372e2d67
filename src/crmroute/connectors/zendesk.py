"""Zendesk Support (API v2, + Talk Partner Edition) — ``shared/reference/crm-apis.md`` section 10.

Auth (``auth`` setting; all against ``base_url``, ``https://{subdomain}.zendesk.com``)
    api_token           Basic ``{email}/token:{api_token}``. A rule's CRM username
                        and password, when given, replace ``email`` and
                        ``api_token`` (the password is an API token, not a
                        sign-in password: Zendesk turned password auth off).
    client_credentials  ``POST /oauth/tokens`` JSON ``{grant_type:
                        "client_credentials", client_id, client_secret, scope}``
                        (confidential OAuth client); repeated when the token runs out.
    refresh_token       the same endpoint with ``grant_type: "refresh_token"``. Each
                        refresh returns a new access *and refresh* token and
                        invalidates the old pair; the new refresh token is kept in
                        memory only (the framework cannot store it back), so after
                        a restart the configured one is stale: prefer
                        client_credentials for a server like this one.
    access_token        a pasted OAuth access token (legacy tokens never expire).
    OAuth tokens go as ``Authorization: Bearer``; ``expires_in`` (when sent) sets
    the expiry and the token is refreshed ``TOKEN_MARGIN`` seconds before it
    (Zendesk allows refreshing a token "expired or about to expire"; the
    reference's "must be expired first" is contradicted by that page).
    Token errors are OAuth's ``{"error", "error_description"}``: ``invalid_grant``
    -> ``AuthError("token rejected: refresh token revoked, expired or already
    used")``, ``invalid_client`` -> ``AuthError`` naming the client id/secret.

Modules
    contacts -> ``users`` (end-users), accounts -> ``organizations``. Zendesk
    Support has no leads: use contacts (users); Zendesk Sell's leads are another
    product with another API.

Finding a record
    Phone keys: one request,
    ``GET /api/v2/search.json?query=type:user role:end-user phone:*{national digits}``
    with ``sort_by=updated_at&sort_order=desc``. Zendesk compares digits only and
    a leading ``*`` matches the number in any stored format (``+1 415.555.2671``,
    ``(415) 555-2671``) — reference section 10 and its appendix ("``*`` + digits,
    no ``+``") — so the national significant number with the wildcard covers
    numbers stored with or without the country code. ``role:end-user`` is left
    out when ``end_users_only`` is off (agents calling in).
    Organizations have no phone: the caller's user is found as above and its
    ``organization_id`` read with ``GET /api/v2/organizations/{id}.json``.
    A typed (DTMF) key: ``GET /api/v2/{users|organizations}/{id}.json`` when
    ``key_field`` is empty, else a search ``type:user <key_field>:<key>`` (a
    standard property such as ``external_id`` or a user/organization field
    key), the results checked for an exact match.
    Several matches: ``match_pick`` on ``updated_at``; ``Record.matches`` is the
    search's ``count`` (all pages).
    Requests per uncached call: users 1 (the search answers every user field);
    organizations 2, the search and then the organization, because organizations
    hold no phone and reference section 10 documents no way to get the organization
    in the search answer.

Reading fields
    Standard properties at the top level (``name``, ``email``, ``external_id``,
    ``notes``...), custom fields by key (``customer_tier`` reads
    ``user_fields.customer_tier``; ``user_fields.x``/``organization_fields.x`` work
    too). A name found in neither place is checked against the field
    definitions (``GET /api/v2/user_fields.json`` / ``organization_fields.json``,
    cached a minute): defined but empty is ``None``, unknown is
    ``UnexpectedResponse("field x does not exist on Zendesk users ...")``.
    ``organization.<name>`` on a user fetches its organization (one request,
    kept on the record).

Call log
    ``ticket`` (any plan; no Talk needed): ``POST /api/v2/tickets.json``
    ``{"ticket": {subject, requester_id, organization_id, external_id, tags,
    voice_comment: {from, to, recording_url, started_at, call_duration}}}``.
    ``talk_partner``: ``POST /api/v2/channels/voice/tickets.json`` with the same
    ticket plus ``via_id`` 45 (inbound call) or 46 (outbound call) (via ids from
    Zendesk's generated API reference). ``recording_url`` is sent empty when the
    call has no recording URL (Zendesk then shows "Recording not available").
    The requester is the routed user, or the caller found by phone, or — when
    nothing matches and the log options say ``create_unknown`` — a new end-user
    (``POST /api/v2/users.json {"user": {name, phone, role: "end-user"}}``).
    Idempotency: ``external_id`` is ``crmroute-<call id>`` and
    ``GET /api/v2/tickets.json?external_id=...`` is asked first; an existing
    ticket's id is returned. The Talk Partner Edition call object
    (``POST /api/v2/calls``) needs an ``app_id`` from a Zendesk app and is not used.

Errors (one place: ``error_for``)
    ``{"error": "...", "description": "...", "details": {...}}`` (or
    ``{"error": {"title", "message"}}``): 401 -> refresh once, then
    ``AuthError``; 403 -> ``AuthError`` (the API user lacks permission); 422
    ``RecordInvalid`` -> ``UnexpectedResponse`` with the field details; 429 ->
    ``Retry-After`` waited out when it fits, else ``RateLimited``.
    ``X-Rate-Limit-Remaining`` under 10 % of ``X-Rate-Limit`` is logged as a warning.

Limits
    Account-wide per minute: 200 (Suite Team) ... 2,500 (Enterprise Plus /
    High Volume add-on): a pace of the smallest plan's 200 a minute with that
    minute's burst of 200, so an uncached call waits only when 200 went out in
    the last minute.

Unconfirmed and kept as the reference has it: the search result cap (1,000),
the default OAuth token lifetimes, ``recording_url`` being accepted empty.
"""

from __future__ import annotations

import base64
import json
import logging
import re
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
    lookup_path,
)
from crmroute.deadline import Deadline
from crmroute.errors import AuthError, ConnectorError, UnexpectedResponse
from crmroute.connectors.base import USER_LIST_BYTES, CrmUser
from crmroute.routing.engine import LookupKey

logger = logging.getLogger(__name__)

PICK_FIELD = "updated_at"
EXTERNAL_ID_PREFIX = "crmroute-"
VIA_INBOUND_CALL, VIA_OUTBOUND_CALL = 45, 46
CUSTOM_FIELDS = {"users": "user_fields", "organizations": "organization_fields"}
SINGULAR = {"users": "user", "organizations": "organization"}
FIELD_KEYS_TTL = 60.0
MAX_FIELD_PAGES = 5
_SUBDOMAIN = re.compile(r"^[a-z0-9][a-z0-9-]*$")


class ZendeskSettings(ConnectorSettings):
    base_url: str = Field(..., description="Your Zendesk, https://{subdomain}.zendesk.com (a bare subdomain is "
                          "accepted); a sandbox's or test server's URL works too")  # fmt: skip
    auth: Literal["api_token", "client_credentials", "refresh_token", "access_token"] = Field(
        "api_token", description="How to sign in: an agent's API token, an OAuth client (client credentials), an "
        "OAuth refresh token, or a pasted OAuth access token"
    )  # fmt: skip
    email: str = Field("", description="Agent or admin email the API token belongs to (auth api_token)")
    api_token: SecretStr | None = Field(None, description="API token from Admin Center > Apps and integrations > "
                                        "Zendesk API (auth api_token)")  # fmt: skip
    client_id: str = Field("", description="OAuth client unique identifier (auth client_credentials/refresh_token)")
    client_secret: SecretStr | None = Field(None, description="OAuth client secret (auth client_credentials/"
                                            "refresh_token)")  # fmt: skip
    refresh_token: SecretStr | None = Field(None, description="OAuth refresh token (auth refresh_token); Zendesk "
                                            "rotates it on every refresh")  # fmt: skip
    access_token: SecretStr | None = Field(None, description="OAuth access token (auth access_token)")
    scope: str = Field("read write", description="OAuth scopes asked by the client-credentials flow, space separated")
    end_users_only: bool = Field(True, description="Match callers among end-users only (role:end-user); off: agents "
                                 "and admins too")  # fmt: skip
    call_log: Literal["ticket", "talk_partner"] = Field(
        "ticket", description="Log calls as tickets with a voice comment (any plan), or through the Talk Partner "
        "Edition tickets endpoint (needs Talk Partner Edition)"
    )  # fmt: skip

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if _SUBDOMAIN.match(value.lower()):
            return f"https://{value.lower()}.zendesk.com"
        if not value.startswith("https://"):
            raise ValueError("must start with https:// (or be just the subdomain)")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> "ZendeskSettings":
        needs = {"api_token": (),  # email and token may come from a rule's own username/password: checked at sign-in
                 "client_credentials": ("client_id", "client_secret"),
                 "refresh_token": ("client_id", "client_secret", "refresh_token"),
                 "access_token": ("access_token",)}[self.auth]  # fmt: skip
        missing = [n for n in needs if not _given(getattr(self, n))]
        if missing:
            raise ValueError(f"auth {self.auth} needs {', '.join(missing)}")
        return self


def _given(value: Any) -> bool:
    if isinstance(value, SecretStr):
        return bool(value.get_secret_value())
    return bool(value)


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""


class ZendeskConnector(Connector):
    kind: ClassVar[str] = "zendesk"
    title: ClassVar[str] = "Zendesk Support"
    docs_url: ClassVar[str] = "https://developer.zendesk.com/api-reference/"
    Settings: ClassVar[type[ConnectorSettings]] = ZendeskSettings
    MODULES: ClassVar[dict[str, str]] = {"accounts": "organizations", "contacts": "users"}  # no leads in Support
    requests_per_second: ClassVar[float | None] = 200 / 60  # Suite Team: 200 requests per minute, account-wide
    burst: ClassVar[float | None] = 200.0
    limits_source: ClassVar[str] = "200 per minute, Suite Team (rate limits docs, reference section 10)"

    settings: ZendeskSettings

    def __init__(self, settings: ConnectorSettings, http: Any, **kwargs: Any) -> None:
        super().__init__(settings, http, **kwargs)
        self._keys: dict[str, tuple[float, set[str]]] = {}  # custom field keys per module, with when they were read

    # --- auth ---------------------------------------------------------------------------------

    def _auth_headers(self, token: Token) -> dict[str, str]:
        return {"Authorization": f"{token.extra.get('scheme', 'Bearer')} {token.value}"}

    async def _login(self, *, deadline: Deadline) -> Token:
        s = self.settings
        if s.auth == "api_token":
            email, api_token = self.username or s.email, self.password or _secret(s.api_token)
            if not email or not api_token:
                raise AuthError("Zendesk API token auth needs an email and an API token", kind=self.kind,
                                operation="authenticate", reason="misconfigured")  # fmt: skip
            basic = base64.b64encode(f"{email}/token:{api_token}".encode()).decode()
            return Token(basic, None, {"scheme": "Basic"})
        if s.auth == "access_token":
            return Token(_secret(s.access_token), None, {"scheme": "Bearer"})
        body = {"client_id": s.client_id, "client_secret": _secret(s.client_secret)}
        if s.auth == "client_credentials":
            body |= {"grant_type": "client_credentials", "scope": s.scope}
        else:
            body |= {"grant_type": "refresh_token", "refresh_token": self.refresh_token(_secret(s.refresh_token))}
        response = await self.request("POST", f"{s.base_url}/oauth/tokens", json=body, auth=False,
                                      ok=(400, 401, 403), deadline=deadline, operation="authenticate")  # fmt: skip
        data = self.json_of(response, "authenticate")
        data = data if isinstance(data, dict) else {}
        if response.status_code >= 400 or not data.get("access_token"):
            raise self._token_error(data, response.status_code)
        expires_in = data.get("expires_in")
        expires_at = time.monotonic() + float(expires_in) if isinstance(expires_in, (int, float)) else None
        logger.debug("zendesk: OAuth access token issued (%s), valid %s s", s.auth, expires_in or "until revoked")
        extra: dict[str, Any] = {"scheme": "Bearer"}
        if s.auth == "refresh_token" and data.get("refresh_token"):  # rotated: saved before the token is used
            extra["refresh_token"] = str(data["refresh_token"])
        return Token(str(data["access_token"]), expires_at, extra)

    async def verify(self, *, deadline: Deadline) -> str:
        """``GET /api/v2/users/me.json``: Zendesk answers a credential it does not know with the anonymous user."""
        response = await self.request("GET", f"{self.settings.base_url}/api/v2/users/me.json", deadline=deadline,
                                      operation="verify")  # fmt: skip
        user = lookup_path(self.json_of(response, "verify"), "user")
        if not isinstance(user, dict) or not user.get("id"):
            raise AuthError("Zendesk did not recognise the credentials (it answered as the anonymous user): check "
                            "the email and API token, or the OAuth token", kind=self.kind, operation="verify",
                            reason="http_401")  # fmt: skip
        return f"signed in as {user.get('name') or user.get('email') or user['id']} ({user.get('role') or 'user'})"

    def _token_error(self, data: dict, status: int) -> AuthError:
        error, described = str(data.get("error") or f"HTTP {status}"), str(data.get("error_description") or "")
        args = {"kind": self.kind, "operation": "authenticate"}
        if error == "invalid_grant":
            return AuthError("Zendesk token rejected: refresh token revoked, expired or already used (invalid_grant);"
                             " authorize again and store the new refresh token", reason="token_rejected", **args)  # fmt: skip
        if error in ("invalid_client", "unauthorized_client"):
            return AuthError(f"Zendesk refused the OAuth client id/secret ({error}); check the client in Admin Center "
                             f"> Apps and integrations > OAuth clients", reason="invalid_client", **args)  # fmt: skip
        return AuthError(f"Zendesk refused the token request ({error})" + (f": {described[:160]}" if described else ""),
                         reason="auth", **args)  # fmt: skip

    async def request(self, method: str, url: str, **kwargs: Any) -> CappedResponse:
        response = await super().request(method, url, **kwargs)
        limit, left = response.headers.get("x-rate-limit", ""), response.headers.get("x-rate-limit-remaining", "")
        if limit.isdigit() and left.isdigit() and int(left) * 10 < int(limit):
            logger.warning("zendesk: %s of %s API requests left this minute", left, limit)
        return response

    # --- finding records -----------------------------------------------------------------------

    async def find_record(
        self, key: LookupKey, module: str, *, fields: Sequence[str] = (), deadline: Deadline
    ) -> Record | None:
        zmodule = self.vendor_module(module)
        if key.source == "dtmf":
            return await self._find_by_key(key.value.strip(), zmodule, deadline)
        forms = self.phone(key)
        digits = forms.national_digits or forms.digits
        if not digits:
            return None
        query = f"type:user phone:*{digits}" + (" role:end-user" if self.settings.end_users_only else "")
        users, total = await self._search(query, deadline)
        if zmodule == "users":
            return self._record("users", users, total) if users else None
        with_org = [u for u in users if u.get("organization_id")]
        if not with_org:
            return None
        user, _ = self.pick(with_org, PICK_FIELD)
        organization = await self._get("organizations", str(user["organization_id"]), deadline)
        if organization is None:
            return None
        count = len({u["organization_id"] for u in with_org})
        url = self._url("organizations", organization)
        return Record("organizations", str(organization["id"]), organization, count, url)

    async def _search(self, query: str, deadline: Deadline, result_type: str = "user") -> tuple[list[dict], int]:
        params = {"query": query, "sort_by": PICK_FIELD, "sort_order": "desc"}
        response = await self.request("GET", f"{self.settings.base_url}/api/v2/search.json", params=params,
                                      deadline=deadline, operation="find_record")  # fmt: skip
        data = self.json_of(response, "find_record")
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, list):
            raise UnexpectedResponse(f"{self.title} answered a search without results", kind=self.kind,
                                     operation="find_record", reason="bad_shape")  # fmt: skip
        rows = [r for r in results if isinstance(r, dict) and r.get("result_type") == result_type and "id" in r]
        count = data.get("count") if isinstance(data.get("count"), int) else len(rows)
        return rows, max(count, len(rows))

    def _record(self, zmodule: str, rows: list[dict], total: int) -> Record:
        row, count = self.pick(rows, PICK_FIELD)
        return Record(zmodule, str(row["id"]), row, max(count, total), self._url(zmodule, row))

    def _url(self, zmodule: str, row: dict) -> str:
        return f"{self.settings.base_url}/agent/{zmodule}/{row['id']}"

    async def _get(self, zmodule: str, record_id: str, deadline: Deadline) -> dict | None:
        url = f"{self.settings.base_url}/api/v2/{zmodule}/{record_id}.json"
        response = await self.request("GET", url, ok=(404,), deadline=deadline, operation="find_record")
        if response.status_code == 404:
            return None
        row = lookup_path(self.json_of(response, "find_record"), SINGULAR[zmodule])
        if not isinstance(row, dict) or "id" not in row:
            raise UnexpectedResponse(f"{self.title} answered without the {SINGULAR[zmodule]}", kind=self.kind,
                                     operation="find_record", reason="bad_shape")  # fmt: skip
        return row

    async def _find_by_key(self, key: str, zmodule: str, deadline: Deadline) -> Record | None:
        if not key:
            return None
        key_field = self.settings.key_field
        if not key_field:
            if not key.isdigit():
                return None
            row = await self._get(zmodule, key, deadline)
            return Record(zmodule, str(row["id"]), row, 1, self._url(zmodule, row)) if row else None
        clean = key.replace('"', "")
        value = f'"{clean}"' if re.search(r"[\s:]", clean) else clean  # phrase search for spaces and colons
        rows, _ = await self._search(f"type:{SINGULAR[zmodule]} {key_field}:{value}", deadline, SINGULAR[zmodule])
        exact = [r for r in rows if field_text(self._value(r, zmodule, key_field)) == key]
        return self._record(zmodule, exact, len(exact)) if exact else None

    @staticmethod
    def _value(row: dict, zmodule: str, name: str) -> Any:
        if name in row:
            return row[name]
        custom = row.get(CUSTOM_FIELDS[zmodule])
        return custom.get(name) if isinstance(custom, dict) else None

    # --- reading fields -------------------------------------------------------------------------

    async def read_field(self, record: Record, api_name: str, *, deadline: Deadline) -> str | None:
        head, _, rest = api_name.partition(".")
        if record.module == "users" and head == "organization" and rest:
            organization = record.fields.get("organization")
            if not isinstance(organization, dict):
                org_id = record.fields.get("organization_id")
                organization = await self._get("organizations", str(org_id), deadline) if org_id else None
                record.fields["organization"] = organization
            if organization is None:
                return None
            return await self._read(organization, "organizations", rest, deadline)
        return await self._read(record.fields, record.module, api_name, deadline)

    async def _read(self, row: dict, zmodule: str, name: str, deadline: Deadline) -> str | None:
        value = lookup_path(row, name)
        if value is not None or "." in name or name in row:
            return field_text(value)
        custom = row.get(CUSTOM_FIELDS.get(zmodule, ""))
        if not isinstance(custom, dict):
            return None
        if name in custom:
            return field_text(custom[name])
        if name not in await self._field_keys(zmodule, deadline):
            raise UnexpectedResponse(f"field {name} does not exist on Zendesk {zmodule} (neither a standard property "
                                     f"nor a {SINGULAR[zmodule]} field key)", kind=self.kind, operation="read_field",
                                     reason="no_field")  # fmt: skip
        return None  # a defined field this record has no value for

    async def _field_keys(self, zmodule: str, deadline: Deadline) -> set[str]:
        """The custom field keys of users/organizations (``GET /api/v2/user_fields.json``), cached a minute."""
        cached = self._keys.get(zmodule)
        if cached is not None and time.monotonic() - cached[0] < FIELD_KEYS_TTL:
            return cached[1]
        listing = CUSTOM_FIELDS[zmodule]
        keys: set[str] = set()
        url: str | None = f"{self.settings.base_url}/api/v2/{listing}.json"
        for _ in range(MAX_FIELD_PAGES):
            if not url:
                break
            response = await self.request("GET", url, deadline=deadline, operation="read_field")
            data = self.json_of(response, "read_field")
            items = data.get(listing) if isinstance(data, dict) else None
            keys |= {str(f["key"]) for f in items or [] if isinstance(f, dict) and f.get("key")}
            following = data.get("next_page") if isinstance(data, dict) else None
            url = following if isinstance(following, str) and following.startswith(self.settings.base_url) else None
        self._keys[zmodule] = (time.monotonic(), keys)
        return keys

    # --- call log -------------------------------------------------------------------------------

    # --- users (agents sync) -------------------------------------------------------------

    async def list_users(self, *, deadline: Deadline) -> list[CrmUser]:
        """``GET /api/v2/users.json?role[]=agent&role[]=admin``, 100 a page by cursor (``page[after]`` while
        ``meta.has_more``): the people tickets and organizations are assigned to. Deleted users left out."""
        url = f"{self.settings.base_url}/api/v2/users.json"
        users: list[CrmUser] = []
        after = ""
        for _ in range(1000):
            params = [("role[]", "agent"), ("role[]", "admin"), ("page[size]", "100")] + ([("page[after]", after)] if after else [])
            response = await self.request("GET", url, params=params, deadline=deadline, operation="list_users",
                                          limit=USER_LIST_BYTES)  # fmt: skip
            data = self.json_of(response, "list_users")
            rows = data.get("users") if isinstance(data, dict) else None
            if not isinstance(rows, list):
                raise UnexpectedResponse("Zendesk sent a user list without users", kind=self.kind,
                                         operation="list_users", reason="bad_response")  # fmt: skip
            users += [CrmUser(str(u["id"]), str(u.get("name") or ""), str(u.get("email") or ""))
                      for u in rows if isinstance(u, dict) and u.get("id") is not None and u.get("active") is not False]
            after = str(lookup_path(data, "meta.after_cursor") or "")
            if lookup_path(data, "meta.has_more") is not True or not after:
                return users
        return users

    async def log_call(self, call: CallActivity, options: Any, *, deadline: Deadline) -> str:
        base = self.settings.base_url
        external_id = f"{EXTERNAL_ID_PREFIX}{call.call_id}"
        response = await self.request("GET", f"{base}/api/v2/tickets.json", params={"external_id": external_id},
                                      deadline=deadline, operation="log_call")  # fmt: skip
        existing = lookup_path(self.json_of(response, "log_call"), "tickets")
        if isinstance(existing, list) and existing and isinstance(existing[0], dict) and "id" in existing[0]:
            logger.info("zendesk: call %s already logged as ticket %s", call.call_id, existing[0]["id"])
            return str(existing[0]["id"])
        requester, organization = await self._requester(call, options, deadline)
        ticket: dict[str, Any] = {"subject": ticket_subject(call), "external_id": external_id,
                                  "tags": ["crmroute", "phone_call"], "voice_comment": self._voice_comment(call)}  # fmt: skip
        if requester:
            ticket["requester_id"] = int(requester)
        if organization:
            ticket["organization_id"] = int(organization)
        if self.settings.call_log == "talk_partner":
            ticket["via_id"] = VIA_INBOUND_CALL if call.direction == "inbound" else VIA_OUTBOUND_CALL
            url = f"{base}/api/v2/channels/voice/tickets.json"
        else:
            url = f"{base}/api/v2/tickets.json"
        response = await self.request("POST", url, json={"ticket": ticket}, deadline=deadline, operation="log_call")
        ticket_id = lookup_path(self.json_of(response, "log_call"), "ticket.id")
        if ticket_id is None:
            raise UnexpectedResponse(f"{self.title} did not return the new ticket", kind=self.kind,
                                     operation="log_call", reason="not_created")  # fmt: skip
        logger.info("zendesk: call %s logged as ticket %s", call.call_id, ticket_id)
        return str(ticket_id)

    async def _requester(self, call: CallActivity, options: Any, deadline: Deadline) -> tuple[str, str]:
        """The ticket's requester (a user id) and organization id, as far as they are known."""
        record, organization = call.record, ""
        if record is not None and record.module == "organizations":
            organization, record = record.id, None
        if record is None:
            record = await self.find_record(LookupKey(call.external_number, "caller_id"), "contacts", deadline=deadline)
        if record is None and getattr(options, "create_unknown", False):
            record = await self._create_user(call, deadline)
        if record is None:
            return "", organization
        org = record.fields.get("organization_id")
        return record.id, organization or (str(org) if org else "")

    async def _create_user(self, call: CallActivity, deadline: Deadline) -> Record:
        forms = self.phone(LookupKey(call.external_number, "caller_id"))
        number = forms.e164 or forms.raw
        body = {"user": {"name": f"Caller {number}", "phone": number, "role": "end-user"}}
        response = await self.request("POST", f"{self.settings.base_url}/api/v2/users.json", json=body,
                                      deadline=deadline, operation="log_call")  # fmt: skip
        user = lookup_path(self.json_of(response, "log_call"), "user")
        if not isinstance(user, dict) or "id" not in user:
            raise UnexpectedResponse(f"{self.title} did not return the new user", kind=self.kind,
                                     operation="log_call", reason="not_created")  # fmt: skip
        logger.info("zendesk: created end-user %s for unknown caller of call %s", user["id"], call.call_id)
        return Record("users", str(user["id"]), user, 1, self._url("users", user))

    def _voice_comment(self, call: CallActivity) -> dict[str, Any]:
        forms = self.phone(LookupKey(call.external_number, "caller_id"))
        external, extension = forms.e164 or call.external_number, call.extension or "unknown"
        inbound = call.direction == "inbound"
        recording = call.recording if call.recording.startswith(("https://", "http://")) else ""
        started = call.started_at if call.started_at.tzinfo else call.started_at.replace(tzinfo=timezone.utc)
        return {"from": external if inbound else extension, "to": extension if inbound else external,
                "recording_url": recording, "started_at": zendesk_time(started),
                "call_duration": max(0, int(call.talk_seconds))}  # fmt: skip

    # --- errors -----------------------------------------------------------------------------------

    def vendor_message(self, response: CappedResponse) -> str:
        try:
            data = json.loads(response.text)
        except ValueError:
            return super().vendor_message(response)
        if not isinstance(data, dict):
            return ""
        error = data.get("error")
        if isinstance(error, dict):
            parts = [str(error.get("title") or ""), str(error.get("message") or "")]
        else:
            parts = [str(error or ""), str(data.get("description") or data.get("error_description") or "")]
        details = data.get("details")
        if isinstance(details, dict):
            for name, problems in details.items():
                for problem in problems if isinstance(problems, list) else [problems]:
                    text = problem.get("description") if isinstance(problem, dict) else problem
                    if text:
                        parts.append(f"{name}: {text}")
        return "; ".join(p for p in parts if p)[:300]

    def error_for(self, response: CappedResponse, operation: str) -> ConnectorError:
        if response.status_code == 403:
            return AuthError(f"Zendesk refused {operation}: the API user lacks permission "
                             f"({self.vendor_message(response) or 'forbidden'})", kind=self.kind, operation=operation,
                             reason="forbidden")  # fmt: skip
        return super().error_for(response, operation)


def zendesk_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def ticket_subject(call: CallActivity) -> str:
    if call.subject.strip():
        return " ".join(call.subject.split())
    if call.direction == "inbound":
        return f"{'Missed call' if call.outcome != 'answered' else 'Call'} from {call.external_number}"
    return f"Call to {call.external_number}"
