"""SugarCRM (REST API v10/v11, Sugar 7+ self-hosted and Sugar Cloud) — ``shared/reference/crm-apis.md`` section 7.

Every call goes to ``{site_url}/rest/{api_version}`` (``v11`` by default; ``v10``
or ``v11_N`` where a release wants it): ``https://acme.sugarondemand.com`` for
Sugar Cloud, the install's root (``https://crm.example.com/sugar``) when
self-hosted, or a sandbox / test server.

Authentication: OAuth 2 password grant, the only grant Sugar's token endpoint
offers besides refresh (``/oauth2/token POST`` reference page: "Available grant
types are password and refresh_token")
    ``POST /oauth2/token`` JSON ``{"grant_type": "password", "client_id",
    "client_secret", "username", "password", "platform"}``: ``client_id``
    ``sugar`` (built in, empty secret) or a key from Admin > OAuth Keys; a
    rule's CRM Username/Password replace the integration's ``username`` /
    ``password``. ``platform`` is a setting of its own (default ``crmroute``):
    logging in again on a platform ends the user's earlier session on it, so
    ``base`` (the browser's) is refused; Sugar 7.9+ and Sugar Cloud want a
    custom platform registered (Admin > Configure API Platforms; unconfirmed).
    The answer: ``access_token``, ``expires_in`` (3600), ``refresh_token``,
    ``refresh_expires_in``, ``download_token``. Every call sends
    ``OAuth-Token: <access_token>``. The token is renewed before
    ``expires_in`` runs out (a minute early, or at half the life of a short
    one) with ``grant_type=refresh_token`` (same client id/secret/platform);
    Sugar rotates refresh tokens, so only the newest is kept, in memory. A
    refused refresh token (401 ``invalid_grant``) falls back to the password
    grant once; a refused password is ``AuthError``. An API call answered
    401 (``invalid_grant`` "The access token provided is invalid", or
    ``need_login``) renews the token and is retried once.

Modules: accounts -> ``Accounts``, contacts -> ``Contacts``, leads -> ``Leads``.

Finding a record: ``POST /{Module}/filter`` (JSON ``filter``, ``fields``,
``max_num``, ``order_by``), one request.
    Sugar compares phone fields as stored text with no normalisation
    (reference section 7, "Phone matching"; operators confirmed in Sugar's
    ``FilterApi::addFieldFilter``: ``$equals $starts $ends $contains $in
    $not_in $is_null $not_null $empty $not_empty`` ...). One ``$or`` over the
    module's phone fields (Contacts/Leads ``phone_work phone_mobile phone_home
    phone_other``, Accounts ``phone_office phone_alternate``; fax numbers are
    not callers) asks for (a) the stored formats, ``$in`` [E.164
    ``+14155552671``, national ``(415) 555-2671``, international ``+1
    415-555-2671``, national digits, digits with country code], and (b) a
    suffix search that survives any separators between the number's groups:
    ``$ends`` its last group (``2671``) ``$and`` ``$contains`` each other group
    of the international grouping (``415``, ``555``). Every candidate is then
    verified here: the digits of one of its phone fields must be the caller's
    national number, alone or after the country code, a trunk ``0`` or an
    international prefix. ``max_num`` 50, ordered by ``date_modified`` the way
    ``match_pick`` wants, so the newest (or oldest) match survives the limit.
    Typed (DTMF) keys: ``{key_field: {"$equals": key}}`` (an unknown field is
    Sugar's 422 "Unknown field X"), or ``{"id": {"$equals": key}}`` with no
    ``key_field``; matches are checked for exact equality.
    The asked fields come back in the same request (``fields``). Sugar leaves
    out of a record every field that is NULL *and* every name it does not
    know (``SugarBeanApiHelper::formatForApi`` walks the module's field
    definitions), so a field missing from the answer is checked once per
    module and field: ``{"id": {"$equals": <id>}}, {field: {"$is_null": ""}}``
    is refused with "Unknown field" when the field does not exist, which
    becomes "field status_c does not exist on Contacts".
    Several matches: the ``match_pick`` record by ``date_modified``, with
    ``Record.matches`` set.

Reading fields: ``records[i].{field}`` (custom fields end in ``_c``; relate
fields such as ``account_name`` are flat and come in the same request). A
dotted name ``<link>.<field>`` (``accounts.industry``) reads the first
related record through ``GET /{Module}/{id}/link/{link}?fields=<field>``
(``{"next_offset", "records"}``): one more request.

Call log: ``POST /Calls`` ``{"name", "direction": Inbound|Outbound, "status":
Held|Not Held, "date_start" (ISO 8601 with offset), "duration_hours",
"duration_minutes", "parent_type", "parent_id", "description"}`` (Calls
``name`` is 50 characters: the subject is cut to fit ``[<call id>]``), then for
a contact or lead ``POST /Calls/{id}/link/contacts|leads/{record id}`` so it
shows as a participant. Idempotent: ``Calls/filter`` ``{"name": {"$ends":
"[<call id>]"}}`` first, the id of an existing call returned. With no record
from routing the caller is looked up in Contacts, then Leads, then Accounts;
an unknown caller becomes a Lead (``last_name``, ``account_name``,
``phone_work`` in E.164) or a Contact (``create_as``) when the log options ask.
``assigned_user_id`` is left to Sugar (the API user).

Errors (one place: ``error_for``): ``{"error": "<code>", "error_message": "..."}``.
401 ``invalid_grant``/``need_login`` -> renew once, then ``AuthError``; 403
``not_authorized`` -> ``AuthError``; 422 "Unknown field X" -> ``UnexpectedResponse``
("field X does not exist on Contacts"); "Did not recognize the operand" and
other 422s -> ``UnexpectedResponse``; 404 ``not_found`` -> ``UnexpectedResponse``;
429 -> waited out when ``Retry-After`` fits, else ``RateLimited``; 503
``maintenance``/``service_unavailable`` and other 5xx -> ``ConnectorUnavailable``.

Limits: no published rate limit for self-hosted Sugar; Sugar Cloud's API limits
are unconfirmed (reference section 7): no pace, only the concurrency limit; a 429
with ``Retry-After`` is honoured.

Unconfirmed and kept as the reference has it: custom-platform registration,
Sugar Cloud limits, ``refresh_expires_in``'s default. Not used: linked-record
entries inside ``fields`` (``{"name": "accounts", "fields": [...]}``), whose
answer shape is not documented; the documented ``/link/`` endpoint is used
instead.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Sequence
from datetime import timezone
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
from crmroute.connectors.base import USER_LIST_BYTES, CrmUser
from crmroute.routing.engine import LookupKey

logger = logging.getLogger(__name__)

MODIFIED = "date_modified"
MAX_MATCHES = 50
NAME_MAX = 50  # Calls.name is varchar(50)
PHONE_FIELDS: dict[str, tuple[str, ...]] = {
    "Contacts": ("phone_work", "phone_mobile", "phone_home", "phone_other"),
    "Leads": ("phone_work", "phone_mobile", "phone_home", "phone_other"),
    "Accounts": ("phone_office", "phone_alternate"),
}
DISPLAY_FIELDS: dict[str, tuple[str, ...]] = {
    "Contacts": ("first_name", "last_name", "account_name", "account_id"),
    "Leads": ("first_name", "last_name", "account_name"),
    "Accounts": ("name",),
}
LOOKUP_ORDER = ("contacts", "leads", "accounts")
LINKS = {"Contacts": "contacts", "Leads": "leads"}  # Calls links for participants
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_UNKNOWN_FIELD = re.compile(r"Unknown field:? '?([A-Za-z0-9_.]+)'?")
_NO_ACCESS = re.compile(r"Access for field '?([A-Za-z0-9_.]+)'? is not allowed")
_NON_EXISTING = re.compile(r"Non existing field: ([A-Za-z0-9_]+) in module: ([A-Za-z0-9_]+)")


class SugarSettings(ConnectorSettings):
    site_url: str = Field(
        ..., description="Address of the Sugar instance: https://yourcompany.sugarondemand.com (Sugar Cloud), "
        "a self-hosted install's root such as https://crm.example.com/sugar, or a sandbox"
    )  # fmt: skip
    api_version: str = Field(
        "v11", description="REST API version in request paths (/rest/v11/...): v11 for Sugar 8 and later, v11_N where "
        "a release asks for it, v10 for Sugar 7"
    )  # fmt: skip
    username: str = Field(
        "", description="Sugar user the integration logs in as (a rule's CRM Username wins); it needs read access "
        "to the modules and create access to Calls"
    )  # fmt: skip
    password: SecretStr | None = Field(None, description="That user's password (a rule's CRM Password wins)")
    client_id: str = Field(
        "sugar", min_length=1, description="OAuth key: sugar (built in) or a key created under Admin > OAuth Keys"
    )
    client_secret: SecretStr | None = Field(
        None, description="The OAuth key's secret; empty for the built-in sugar key"
    )
    platform: str = Field(
        "crmroute", description="Platform name sent with the login; a login ends the user's earlier session on the "
        "same platform, so crmroute has its own (register it under Admin > Configure API Platforms on Sugar 7.9+ "
        "and Sugar Cloud)"
    )  # fmt: skip
    create_as: Literal["leads", "contacts"] = Field(
        "leads", description="What to create for an unknown caller when the log options ask for it"
    )

    @field_validator("site_url")
    @classmethod
    def _site(cls, value: str) -> str:
        value = re.sub(r"/rest/v[0-9_]+/?$", "", value.rstrip("/")).rstrip("/")
        if not value.startswith("https://"):
            raise ValueError("must start with https://")
        return value

    @field_validator("api_version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not re.fullmatch(r"v\d{2}(_\d+)?", value):
            raise ValueError("must look like v11, v11_4 or v10")
        return value

    @field_validator("platform")
    @classmethod
    def _platform(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
            raise ValueError("letters, digits, - and _ only")
        if value.lower() == "base":
            raise ValueError("base is the browser's platform: a login there would end the user's web session; "
                             "use one of crmroute's own, e.g. crmroute")  # fmt: skip
        return value


class SugarCRMConnector(Connector):
    kind = "sugarcrm"
    title = "SugarCRM"
    docs_url = ("https://support.sugarcrm.com/documentation/sugar_developer/sugar_developer_guide_14.0/"
                "integration/web_services/rest_api/")  # fmt: skip
    Settings = SugarSettings
    MODULES = {"accounts": "Accounts", "contacts": "Contacts", "leads": "Leads"}
    limits_source = "none published for self-hosted; Sugar Cloud's unconfirmed (reference section 7)"
    owner_field = "assigned_user_id"

    settings: SugarSettings

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._known_fields: set[tuple[str, str]] = set()  # (module, field) confirmed to exist

    @property
    def api_base(self) -> str:
        return f"{self.settings.site_url}/rest/{self.settings.api_version}"

    # --- auth ---------------------------------------------------------------------------

    def _auth_headers(self, token: Token) -> dict[str, str]:
        return {"OAuth-Token": token.value}

    async def _login(self, *, deadline: Deadline) -> Token:
        previous = self._token
        refresh = self.refresh_token()  # the latest one, shared through the credential store
        refresh_until = previous.extra.get("refresh_expires_wall", math.inf) if previous is not None else math.inf
        if refresh and time.time() < refresh_until:
            try:
                return await self._grant({"grant_type": "refresh_token", "refresh_token": refresh}, "refresh_token",
                                         deadline)  # fmt: skip
            except AuthError as exc:
                logger.info("sugarcrm: %s; logging in with the password again", exc)
        username = self.username or self.settings.username
        password = self.password or _plain(self.settings.password)
        if not username or not password:
            raise AuthError("SugarCRM needs a username and password (the integration's, or the rule's CRM "
                            "Username/Password)", kind=self.kind, operation="authenticate", reason="misconfigured")  # fmt: skip
        return await self._grant({"grant_type": "password", "username": username, "password": password}, "password",
                                 deadline)  # fmt: skip

    async def _grant(self, body: dict[str, str], flow: str, deadline: Deadline) -> Token:
        s = self.settings
        body = body | {"client_id": s.client_id, "client_secret": _plain(s.client_secret), "platform": s.platform}
        response = await self.request(
            "POST", f"{self.api_base}/oauth2/token", json=body, headers={"Accept": "application/json"},
            deadline=deadline, operation="authenticate", auth=False, ok=(400, 401, 403),
        )  # fmt: skip
        data = self.json_of(response, "authenticate")
        if response.status_code != 200 or not isinstance(data, dict) or not data.get("access_token"):
            raise self._login_error(response.status_code, data if isinstance(data, dict) else {}, flow, body)
        now = time.monotonic()
        expires_in, refresh_in = data.get("expires_in"), data.get("refresh_expires_in")
        extra: dict[str, Any] = {}
        if data.get("refresh_token"):
            extra["refresh_token"] = str(data["refresh_token"])
            if isinstance(refresh_in, (int, float)) and not isinstance(refresh_in, bool):
                extra["refresh_expires_wall"] = time.time() + float(refresh_in) - 60  # wall clock: stored
        expires_at = now + float(expires_in) if isinstance(expires_in, (int, float)) and expires_in > 0 else None
        logger.debug("sugarcrm: access token from the %s grant, valid %s s", flow, expires_in)
        return Token(str(data["access_token"]), expires_at, extra, issued_at=now)

    def _login_error(self, status: int, data: dict, flow: str, body: dict[str, str]) -> AuthError:
        error = str(data.get("error") or "")
        message = str(data.get("error_message") or data.get("error_description") or "").strip()[:200]
        detail = f"{error}: {message}" if error and message else (error or message or f"HTTP {status}")
        args = {"kind": self.kind, "operation": "authenticate"}
        if flow == "refresh_token":
            return AuthError(f"SugarCRM token rejected: refresh token revoked or expired ({detail})",
                             reason="token_rejected", **args)  # fmt: skip
        if error == "invalid_client":
            return AuthError(f"SugarCRM refused the OAuth key {self.settings.client_id!r} ({detail}); check "
                             "client_id and client_secret under Admin > OAuth Keys", reason="auth", **args)  # fmt: skip
        return AuthError(f"SugarCRM refused the login of {body.get('username')!r} on platform "
                         f"{self.settings.platform!r} ({detail}); check the username and password, that the user "
                         "is active, and that the platform is allowed", reason="auth", **args)  # fmt: skip

    # --- API plumbing -------------------------------------------------------------------

    async def _api(self, method: str, path: str, *, deadline: Deadline, operation: str, **kwargs: Any) -> Any:
        response = await self.request(method, f"{self.api_base}{path}", headers={"Accept": "application/json"},
                                      deadline=deadline, operation=operation, **kwargs)  # fmt: skip
        return self.json_of(response, operation)

    async def verify(self, *, deadline: Deadline) -> str:
        """``GET /rest/{version}/me``: the signed-in user."""
        data = await self._api("GET", "/me", deadline=deadline, operation="verify")
        user = lookup_path(data, "current_user")
        user = user if isinstance(user, dict) else {}
        return f"signed in as {user.get('full_name') or user.get('user_name') or user.get('id') or 'a Sugar user'}"

    async def _filter(
        self, smodule: str, conditions: list[dict[str, Any]], fields: Sequence[str], *, deadline: Deadline,
        operation: str, max_num: int = MAX_MATCHES,
    ) -> list[dict[str, Any]]:  # fmt: skip
        body: dict[str, Any] = {"filter": conditions, "fields": ",".join(fields), "max_num": max_num}
        if self.settings.match_pick != "first":
            body["order_by"] = f"{MODIFIED}:{'asc' if self.settings.match_pick == 'oldest' else 'desc'}"
        data = await self._api("POST", f"/{smodule}/filter", json=body, deadline=deadline, operation=operation)
        return self._records(data, operation)

    def _records(self, data: Any, operation: str) -> list[dict[str, Any]]:
        records = data.get("records") if isinstance(data, dict) else None
        if not isinstance(records, list) or not all(isinstance(r, dict) and r.get("id") for r in records):
            raise UnexpectedResponse(f"SugarCRM answered {operation} without a records list", kind=self.kind,
                                     operation=operation, reason="bad_response")  # fmt: skip
        return records

    # --- finding records -----------------------------------------------------------------

    async def find_record(
        self, key: LookupKey, module: str, *, fields: Sequence[str] = (), deadline: Deadline
    ) -> Record | None:
        smodule = self.vendor_module(module)
        if key.source == "dtmf":
            value = key.value.strip()
            if not value:
                return None
            field = self.settings.key_field.strip() or "id"
            check_name(field, "key_field")
            wanted = self._wanted(smodule, fields, field)
            rows = await self._filter(smodule, [{field: {"$equals": value}}], wanted, deadline=deadline,
                                      operation="find_record")  # fmt: skip
            rows = [r for r in rows if field_text(r.get(field)) == value]
            return self._record(smodule, rows)
        forms = self.phone(key)
        conditions = phone_filter(forms, PHONE_FIELDS[smodule])
        if conditions is None:
            return None
        wanted = self._wanted(smodule, fields)
        rows = await self._filter(smodule, conditions, wanted, deadline=deadline, operation="find_record")
        rows = [r for r in rows if any(forms.matches(r.get(f)) for f in PHONE_FIELDS[smodule])]
        return self._record(smodule, rows)

    def _wanted(self, smodule: str, fields: Sequence[str], *extra: str) -> list[str]:
        names = [MODIFIED, *DISPLAY_FIELDS[smodule], *PHONE_FIELDS[smodule], *extra]
        for name in fields:
            name = name.strip()
            if not name or "." in name:  # link.field is read through the link endpoint
                continue
            check_name(name, "field")
            names.append(name)
        return list(dict.fromkeys(names))

    def _record(self, smodule: str, rows: list[dict[str, Any]]) -> Record | None:
        if not rows:
            return None
        chosen, matches = self.pick(rows, MODIFIED)
        fields = {k: v for k, v in chosen.items() if k not in ("_acl", "locked_fields")}
        return Record(module=smodule, id=str(chosen["id"]), fields=fields, matches=matches,
                      url=f"{self.settings.site_url}/#{smodule}/{chosen['id']}")  # fmt: skip

    # --- reading fields --------------------------------------------------------------------

    async def read_field(self, record: Record, api_name: str, *, deadline: Deadline) -> str | None:
        name = api_name.strip()
        head, _, rest = name.partition(".")
        if not rest:
            if head in record.fields:
                return field_text(record.fields[head])
            check_name(head, "field")
            await self._check_field(record, head, deadline)  # absent: NULL, or no such field
            return None
        value = lookup_path(record.fields, name)
        if value is not None:
            return field_text(value)
        check_name(head, "link")
        remote = rest.split(".", 1)[0]
        check_name(remote, "field")
        params = {"fields": remote, "max_num": "1", "order_by": f"{MODIFIED}:desc"}
        response = await self.request("GET", f"{self.api_base}/{record.module}/{record.id}/link/{head}",
                                      params=params, headers={"Accept": "application/json"}, ok=(404,),
                                      deadline=deadline, operation="read_field")  # fmt: skip
        if response.status_code == 404:
            raise UnexpectedResponse(f"link {head} does not exist on {record.module} (dotted names are "
                                     "<link>.<field>, e.g. accounts.industry)", kind=self.kind,
                                     operation="read_field", reason="unknown_field")  # fmt: skip
        related = self._records(self.json_of(response, "read_field"), "read_field")
        if not related:
            return None
        if remote not in related[0]:  # NULL, or no such field on the related module
            target = str(related[0].get("_module") or "")
            if _NAME.match(target):
                await self._check_field(Record(module=target, id=str(related[0]["id"]), fields={}), remote, deadline)
            return None
        return field_text(lookup_path(related[0], rest))

    async def _check_field(self, record: Record, field: str, deadline: Deadline) -> None:
        """Raise "field X does not exist on M" when Sugar does not know ``field``; once per module and field."""
        if (record.module, field) in self._known_fields:
            return
        conditions = [{"id": {"$equals": record.id}}, {field: {"$is_null": ""}}]
        await self._filter(record.module, conditions, ["id"], deadline=deadline, operation="read_field", max_num=1)
        self._known_fields.add((record.module, field))

    # --- call log -------------------------------------------------------------------------

    # --- users (agents sync) -------------------------------------------------------------

    async def list_users(self, *, deadline: Deadline) -> list[CrmUser]:
        """``POST /Users/filter`` for the active users (``status`` Active), 100 a page while ``next_offset`` is not
        -1: the ids ``assigned_user_id`` holds. The e-mail is ``email1`` (the primary address)."""
        users: list[CrmUser] = []
        offset = 0
        for _ in range(1000):
            body = {"filter": [{"status": {"$equals": "Active"}}], "fields": "id,full_name,user_name,email1",
                    "max_num": 100, "offset": offset, "order_by": "user_name:asc"}  # fmt: skip
            data = await self._api("POST", "/Users/filter", json=body, deadline=deadline, operation="list_users",
                                   limit=USER_LIST_BYTES)  # fmt: skip
            records = data.get("records") if isinstance(data, dict) else None
            if not isinstance(records, list):
                raise UnexpectedResponse("Sugar sent a user list without records", kind=self.kind,
                                         operation="list_users", reason="bad_response")  # fmt: skip
            for row in records:
                if isinstance(row, dict) and row.get("id"):
                    name = str(row.get("full_name") or row.get("user_name") or "")
                    users.append(CrmUser(str(row["id"]), name, str(row.get("email1") or "")))
            following = data.get("next_offset")
            if not isinstance(following, int) or following < 0 or following <= offset:
                return users
            offset = following
        return users

    async def log_call(self, call: CallActivity, options: Any, *, deadline: Deadline) -> str:
        marker = f"[{call.call_id}]"
        existing = await self._filter("Calls", [{"name": {"$ends": marker}}], ["name"], deadline=deadline,
                                      operation="log_call", max_num=10)  # fmt: skip
        for row in existing:
            if str(row.get("name") or "").endswith(marker):
                logger.info("sugarcrm: call %s already logged as Calls/%s", call.call_id, row["id"])
                return str(row["id"])
        record = call.record or await self._lookup_caller(call.external_number, deadline=deadline)
        if record is None and getattr(options, "create_unknown", False):
            record = await self._create_caller(call, deadline=deadline)
        created = await self._api("POST", "/Calls", json=call_body(call, record), deadline=deadline,
                                  operation="log_call")  # fmt: skip
        call_id = created.get("id") if isinstance(created, dict) else None
        if not isinstance(call_id, str) or not call_id:
            raise UnexpectedResponse("SugarCRM answered the Calls create without an id", kind=self.kind,
                                     operation="log_call", reason="bad_response")  # fmt: skip
        if record is not None and record.module in LINKS:
            await self._api("POST", f"/Calls/{call_id}/link/{LINKS[record.module]}/{record.id}", json={},
                            deadline=deadline, operation="log_call")  # fmt: skip
        logger.info("sugarcrm: call %s logged as Calls/%s", call.call_id, call_id)
        return call_id

    async def _lookup_caller(self, number: str, *, deadline: Deadline) -> Record | None:
        key = LookupKey(number, "caller_id")
        for module in LOOKUP_ORDER:
            record = await self.find_record(key, module, deadline=deadline)
            if record is not None:
                return record
        return None

    async def _create_caller(self, call: CallActivity, *, deadline: Deadline) -> Record:
        forms = self.phone(LookupKey(call.external_number, "caller_id"))
        phone = forms.e164 or forms.raw
        smodule = self.MODULES[self.settings.create_as]
        body: dict[str, Any] = {"last_name": f"Caller {phone}", "phone_work": phone,
                                "description": f"Created by crmroute for an unknown caller (call {call.call_id})"}  # fmt: skip
        if smodule == "Leads":
            body["account_name"] = "Unknown caller"
        created = await self._api("POST", f"/{smodule}", json=body, deadline=deadline, operation="log_call")
        new_id = created.get("id") if isinstance(created, dict) else None
        if not isinstance(new_id, str) or not new_id:
            raise UnexpectedResponse(f"SugarCRM answered the {smodule} create without an id", kind=self.kind,
                                     operation="log_call", reason="bad_response")  # fmt: skip
        logger.info("sugarcrm: created %s/%s for the unknown caller of call %s", smodule, new_id, call.call_id)
        return Record(module=smodule, id=new_id, fields={"id": new_id, **body})

    # --- errors ------------------------------------------------------------------------------

    def vendor_message(self, response: CappedResponse) -> str:
        error, message = _sugar_error(response)
        if error or message:
            return f"{error}: {message}" if error and message else (error or message)
        return super().vendor_message(response)

    def error_for(self, response: CappedResponse, operation: str) -> ConnectorError:
        status = response.status_code
        error, message = _sugar_error(response)
        module = _module_of(response, self.settings.api_version)
        args = {"kind": self.kind, "operation": operation}
        unknown = _UNKNOWN_FIELD.search(message) or _NON_EXISTING.search(message)
        if status == 422 and unknown:
            return UnexpectedResponse(f"field {unknown[1]} does not exist on {module or 'this module'}",
                                      reason="unknown_field", **args)  # fmt: skip
        no_access = _NO_ACCESS.search(message)
        if status == 403 and no_access:
            return AuthError(f"the SugarCRM user may not read field {no_access[1]} on {module} ({error})",
                             reason="field_access", **args)  # fmt: skip
        if status >= 500:
            return ConnectorUnavailable(f"SugarCRM answered HTTP {status} to {operation}"
                                        + (f": {error or message}" if (error or message) else ""),
                                        reason=f"http_{status}", **args)  # fmt: skip
        if status in (401, 403):
            return AuthError(f"SugarCRM refused {operation}" + (f" on {module}" if module else "")
                             + f" (HTTP {status} {error}: {message})", reason=f"http_{status}", **args)  # fmt: skip
        if error or message:
            return UnexpectedResponse(f"SugarCRM answered HTTP {status} to {operation}: {error}: {message}",
                                      reason=f"http_{status}", **args)  # fmt: skip
        return super().error_for(response, operation)


# --- helpers --------------------------------------------------------------------------------


def check_name(name: str, what: str) -> None:
    if not _NAME.match(name):
        raise UnexpectedResponse(f"{name!r} is not a SugarCRM {what} name", kind="sugarcrm", operation="find_record",
                                 reason="bad_field")  # fmt: skip


def number_groups(forms: PhoneForms) -> list[str]:
    """The digit groups of the international format after the country code: ``+1 415-555-2671`` -> 415, 555, 2671."""
    groups = [g for g in re.split(r"\D+", forms.international) if g]
    return groups[1:] if len(groups) > 1 else []


def phone_filter(forms: PhoneForms, fields: Sequence[str]) -> list[dict[str, Any]] | None:
    """One ``$or``: the stored formats (``$in``) and the grouped suffix search, on each phone field."""
    formats = forms.distinct("e164", "national", "international", "national_digits", "digits")
    groups = number_groups(forms)
    if not forms.valid:
        if len(forms.digits) < 4:
            return None
        formats, groups = [forms.digits], [forms.digits[-4:]]
    branches: list[dict[str, Any]] = [{f: {"$in": formats}} for f in fields]
    if groups:
        last, others = groups[-1], groups[:-1]
        for f in fields:
            branches.append({"$and": [{f: {"$ends": last}}, *({f: {"$contains": g}} for g in others)]})
    return [{"$or": branches}]


def call_subject(call: CallActivity) -> str:
    """The Call's name, at most 50 characters, ending with ``[<call id>]`` (the idempotency key)."""
    marker = f" [{call.call_id}]"
    inbound = call.direction == "inbound"
    default = f"{'Inbound' if inbound else 'Outbound'} call {'from' if inbound else 'to'} {call.external_number}"
    text = " ".join((call.subject or default).split())
    room = max(0, NAME_MAX - len(marker))
    return (text[:room] + marker).strip()


def call_body(call: CallActivity, record: Record | None) -> dict[str, Any]:
    talk = max(0, int(call.talk_seconds))
    minutes = math.ceil(talk / 60)
    lines = [call.description.strip()] if call.description.strip() else []
    lines.append(f"{'Caller' if call.direction == 'inbound' else 'Called'}: {call.external_number}; "
                 f"extension: {call.extension or '-'}; outcome: {call.outcome}; ring {call.ring_seconds} s, "
                 f"talk {talk} s")  # fmt: skip
    if call.recording:
        lines.append(f"Recording: {call.recording}")
    lines.append(f"crmroute call id: {call.call_id}")
    started = call.started_at if call.started_at.tzinfo else call.started_at.replace(tzinfo=timezone.utc)
    body: dict[str, Any] = {
        "name": call_subject(call),
        "direction": "Inbound" if call.direction == "inbound" else "Outbound",
        "status": "Held" if call.outcome == "answered" else "Not Held",
        "date_start": started.isoformat(timespec="seconds"),
        "duration_hours": minutes // 60,
        "duration_minutes": minutes % 60,
        "description": "\n".join(lines),
    }
    if record is not None:
        body["parent_type"] = record.module
        body["parent_id"] = record.id
    return body


def _sugar_error(response: CappedResponse) -> tuple[str, str]:
    try:
        data = json.loads(response.text)
    except ValueError:
        return "", ""
    if not isinstance(data, dict):
        return "", ""
    message = data.get("error_message") or data.get("error_description") or ""
    return str(data.get("error") or ""), str(message).strip()[:300]


def _module_of(response: CappedResponse, version: str) -> str:
    """The Sugar module a request was about: ``/rest/v11/Contacts/filter`` -> Contacts."""
    parts = [p for p in response.url.path.split("/") if p]
    if version in parts:
        rest = parts[parts.index(version) + 1:]
        if rest and rest[0] != "oauth2":
            return rest[0]
    return ""


def _plain(value: SecretStr | str | None) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value or ""
