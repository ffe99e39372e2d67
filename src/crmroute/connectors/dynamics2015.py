"""Microsoft Dynamics CRM 2015 (7.0 on-premises, CRM Online 2015 Update) over the OData v2 Organization Data Service.

Every call goes to ``{org_url}/XRMServices/2011/OrganizationData.svc`` with
``Accept: application/json``; ``org_url`` is the organization root:
``https://crm.contoso.com/Contoso`` (on-premises), ``https://contoso.crm.contoso.com``
(IFD) or ``https://contoso.crm.dynamics.com`` (Online; ``crm2``, ``crm4``... per region).

Authentication (``auth``)
    ``oauth_password``           OAuth 2 resource-owner password grant at ``token_url``:
                                 CRM Online 2015 with Azure AD
                                 (``https://login.microsoftonline.com/{tenant}/oauth2/token``,
                                 a native app's client id, an organizational account), or
                                 AD FS 2016+ for on-premises IFD
                                 (``https://adfs.contoso.com/adfs/oauth2/token``). A rule's
                                 CRM Username/Password replace the integration's.
    ``oauth_refresh_token``      ``grant_type=refresh_token`` with a refresh token obtained
                                 once by an interactive authorization-code login: the only
                                 OAuth grant AD FS on Windows Server 2012 R2 offers
                                 on-premises IFD, and fine for Azure AD too.
    ``oauth_client_credentials`` client id + secret ("application user"); Microsoft
                                 documents it from Dynamics 365 (2016) on, so for
                                 2015 it is **unconfirmed**.
    ``ntlm``                     on-premises with Active Directory (non-IFD): Windows
                                 integrated authentication, NTLM over HTTPS, with
                                 ``username`` as ``DOMAIN\\user`` (a rule's credentials win).
                                 Needs the ``pyspnego`` package. NTLM authenticates a
                                 connection, not a request, so the handshake (a probe of
                                 ``SystemUserSet?$top=1``) and the requests that follow use
                                 one connection: this connector sends one request at a time
                                 in NTLM mode. IIS Extended Protection (channel binding)
                                 must be Off or Accept. Microsoft documents the OData
                                 endpoint for web resources and OAuth clients; NTLM from
                                 outside is common practice but **unconfirmed** as supported.
    OAuth tokens are Azure AD v1 / AD FS shaped: ``access_token``, ``expires_in``
    (seconds, a string in Azure AD v1) and usually a ``refresh_token``; the token is
    renewed a minute before ``expires_in`` runs out, with the refresh token it came
    with when there is one. ``resource`` defaults to ``org_url``'s origin. A refused
    refresh token is ``AuthError("... token rejected: refresh token revoked or expired")``.

Modules: accounts -> ``Account`` (``AccountSet``), contacts -> ``Contact``
(``ContactSet``), leads -> ``Lead`` (``LeadSet``).

Finding a record
    Phone keys: CRM compares phone attributes as stored text (``eq`` exact,
    ``substringof``/``endswith`` a LIKE), with no normalisation (reference section 4
    and the phone appendix: "each stored format; or the last digits, then verify").
    Users type numbers in any format (``(415) 555-2671``, ``415-555-2671``,
    ``+1 415 555 2671``), and only the last four digits are reliably contiguous in all
    of them, so one request asks ``endswith(<attr>,'2671')`` on every phone attribute
    (Account ``Telephone1..3``; Contact and Lead ``Telephone1..3``, ``MobilePhone``),
    ordered by ``ModifiedOn`` as ``match_pick`` wants, and each candidate is kept only
    when the digits of one of its phones end with the caller's national number.
    Pages of 50 (``__next``) are followed up to 200 candidates, within the deadline.
    Typed (DTMF) keys: ``$filter=<key_field> eq '12345'`` (a number attribute is retried
    once unquoted and remembered); with no ``key_field`` the key is tried as the record's
    GUID (``ContactSet(guid'...')``) only when it is shaped like one.
    The asked fields are in the same request's ``$select``. Values are flattened:
    OptionSetValue / Money to their ``Value`` (option labels need the SOAP metadata
    service and are not read), ``/Date(ms)/`` to ISO-8601, and a lookup (EntityReference
    ``{Id, LogicalName, Name}``) reads as its ``Name``. Dotted names reach into a lookup:
    ``ParentCustomerId.Name`` comes with the record; any other attribute of the looked-up
    record (``ParentCustomerId.AccountNumber``) costs one more request to its entity set
    (account, contact, lead, systemuser, team, businessunit). Several matches give the
    ``match_pick`` record by ``ModifiedOn``.

Call log: ``POST PhoneCallSet`` with ``Subject``, ``PhoneNumber``, ``DirectionCode``
(false = incoming), ``ActualDurationMinutes``, ``Description`` (the call's details
and its Asterisk id) and ``RegardingObjectId`` ``{Id, LogicalName}``. Idempotent
through the activity's own id: ``ActivityId`` is a UUID derived from the call id
(UUID 5), so ``GET PhoneCallSet(guid'...')`` tells whether the call is logged (and a
second create could never duplicate it). With no record from routing the number is
looked up in contacts, then leads, then accounts; an unknown caller becomes a lead
(``LastName``, ``Subject``, ``Telephone1`` in E.164) or a contact (``create_as``)
when the log options ask for it. Not done (shapes **unconfirmed** for OData v2):
the from/to activity parties (``phonecall_activity_parties``) and closing the
activity (SetState), so the phone call stays open; ``ActualStart`` is not sent
(OData v2 dates are ``\\/Date(ms)\\/``), the start time is in the description.

Errors: OData v2 bodies ``{"error": {"code", "message": {"lang", "value"}}}`` (the
WCF Data Services shape; CRM's own codes are **unconfirmed**). "No property 'X' exists
in type '....Contact'" becomes "field X does not exist on Contact"; 401 is refreshed
once, then ``AuthError``; 403 (no privilege) ``AuthError``; 404 of an entity set
``UnexpectedResponse``; 5xx ``ConnectorUnavailable``; 429 + ``Retry-After`` (Online's
service protection) waited out when it fits.

Limits: on-premises 2015 has none but the server's; Online's service protection
allows 6,000 requests per user per 5-minute sliding window (unconfirmed; 429 with
Retry-After): counted as a quota, never spread out as a pace.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import urlsplit

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
from crmroute.errors import AuthError, ConnectorError, ConnectorUnavailable, UnexpectedResponse
from crmroute.connectors.base import USER_LIST_BYTES, CrmUser
from crmroute.resilience.budget import Quota
from crmroute.routing.engine import LookupKey

logger = logging.getLogger(__name__)

SERVICE_PATH = "/XRMServices/2011/OrganizationData.svc"
PAGE_SIZE = 50  # fixed by the service
MAX_CANDIDATES = 200  # phone candidates read before giving up on more pages
MODIFIED = "ModifiedOn"
PROBE = "SystemUserSet?$select=SystemUserId&$top=1"  # any user may read users: the NTLM handshake target
CALL_IDS = uuid.UUID("6f1d3c2e-9a57-5b8e-8c11-2f0e6d4a7b90")  # namespace of the UUID-5 activity ids
LOOKUP_ORDER = ("Contact", "Lead", "Account")


@dataclass(frozen=True)
class Entity:
    schema: str  # Contact
    set: str  # ContactSet
    logical: str  # contact
    id: str  # ContactId
    name: str  # FullName
    phones: tuple[str, ...]


PHONES = ("Telephone1", "Telephone2", "Telephone3")
ENTITIES = {
    "Account": Entity("Account", "AccountSet", "account", "AccountId", "Name", PHONES),
    "Contact": Entity("Contact", "ContactSet", "contact", "ContactId", "FullName", (*PHONES, "MobilePhone")),
    "Lead": Entity("Lead", "LeadSet", "lead", "LeadId", "FullName", (*PHONES, "MobilePhone")),
}
LOOKUP_SETS = {"account": "AccountSet", "contact": "ContactSet", "lead": "LeadSet", "systemuser": "SystemUserSet",
               "team": "TeamSet", "businessunit": "BusinessUnitSet"}  # fmt: skip
_ATTRIBUTE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)?$")
_GUID = re.compile(r"^\{?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}?$")
_DATE = re.compile(r"^/Date\((-?\d+)(?:[+-]\d{4})?\)/$")
_NO_PROPERTY = re.compile(r"No property '([^']+)' exists in type '(?:[\w.]+\.)?(\w+)'")
_NOT_ON_TYPE = re.compile(r"The property '([^']+)' does not exist on type '(?:[\w.]+\.)?(\w+)'")
_INCOMPATIBLE = re.compile(r"Operator '\w+' incompatible with operand types")


class Dynamics2015Settings(ConnectorSettings):
    org_url: str = Field(
        ..., description="Organization root URL: https://crm.contoso.com/Contoso (on-premises), "
        "https://contoso.crm.contoso.com (IFD) or https://contoso.crm.dynamics.com (Online)"
    )  # fmt: skip
    auth: Literal["oauth_password", "oauth_refresh_token", "oauth_client_credentials", "ntlm"] = Field(
        "oauth_password",
        description="oauth_password (Online with Azure AD, or AD FS 2016+), oauth_refresh_token (refresh token "
        "from a one-time login; AD FS 2012 R2), oauth_client_credentials (application user, unconfirmed for "
        "2015) or ntlm (on-premises Active Directory, needs pyspnego)",
    )
    token_url: str = Field(
        "", description="OAuth token endpoint: https://login.microsoftonline.com/<tenant>/oauth2/token (Azure AD) "
        "or https://<adfs host>/adfs/oauth2/token (AD FS); not used with ntlm"
    )  # fmt: skip
    resource: str = Field("", description="OAuth resource (the CRM's URL as registered); empty: org_url's origin")
    client_id: str = Field("", description="Application (client) id registered in Azure AD or AD FS")
    client_secret: SecretStr | None = Field(None, description="Client secret (confidential apps, client credentials)")
    username: str = Field(
        "", description="CRM user: user@contoso.onmicrosoft.com for OAuth, DOMAIN\\user for ntlm (a rule's CRM "
        "Username wins)"
    )  # fmt: skip
    password: SecretStr | None = Field(None, description="That user's password (a rule's CRM Password wins)")
    refresh_token: SecretStr | None = Field(None, description="Refresh token for oauth_refresh_token")
    create_as: Literal["leads", "contacts"] = Field(
        "leads", description="What to create for an unknown caller when the log options ask for it"
    )

    @field_validator("org_url", "token_url", "resource")
    @classmethod
    def _https(cls, value: str, info: Any) -> str:
        value = value.rstrip("/")
        if value and not value.startswith("https://") and info.field_name != "resource":
            raise ValueError("must start with https://")
        return value

    @model_validator(mode="after")
    def _auth_needs(self) -> "Dynamics2015Settings":
        needs: tuple[str, ...] = {
            "oauth_password": ("token_url", "client_id"),
            "oauth_refresh_token": ("token_url", "client_id", "refresh_token"),
            "oauth_client_credentials": ("token_url", "client_id", "client_secret"),
            "ntlm": (),
        }[self.auth]
        missing = [name for name in needs if not _plain(getattr(self, name))]
        if missing:
            raise ValueError(f"auth {self.auth} needs {', '.join(missing)}")
        return self


class Dynamics2015Connector(Connector):
    kind = "dynamics2015"
    title = "Microsoft Dynamics CRM 2015"
    docs_url = "https://learn.microsoft.com/en-us/previous-versions/dynamicscrm-2015/developers-guide/gg334767(v=crm.7)"
    Settings = Dynamics2015Settings
    MODULES = {"accounts": "Account", "contacts": "Contact", "leads": "Lead"}
    quotas = (Quota(6_000, 300, "requests per 5 minutes (service protection)"),)
    limits_source = "Online service protection: 6,000 per user per 5 minutes (reference section 4, unconfirmed)"
    owner_field = "OwnerId"

    settings: Dynamics2015Settings

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.service = f"{self.settings.org_url}{SERVICE_PATH}"
        self._unquoted: set[tuple[str, str]] = set()  # (entity set, attribute) compared as numbers
        self._ntlm_lock = asyncio.Lock()
        self._ntlm_owner: asyncio.Task | None = None

    @property
    def ntlm(self) -> bool:
        return self.settings.auth == "ntlm"

    # --- auth ---------------------------------------------------------------------------

    async def authenticate(self, *, deadline: Deadline, force: bool = False, refused: Token | None = None) -> Token:
        if not self.ntlm:
            return await super().authenticate(deadline=deadline, force=force, refused=refused)
        async with self._ntlm_turn(deadline, "authenticate"):  # always taken before the token lock
            return await super().authenticate(deadline=deadline, force=force, refused=refused)

    async def _login(self, *, deadline: Deadline) -> Token:
        if self.ntlm:
            return await self._ntlm_login(deadline=deadline)
        remembered = self.refresh_token()  # the one the last sign-in returned, shared through the store
        if remembered and remembered != _plain(self.settings.refresh_token):
            try:  # the refresh token the last sign-in returned (Azure AD rotates them)
                return await self._oauth(
                    {"grant_type": "refresh_token", "refresh_token": remembered}, deadline=deadline
                )
            except AuthError:
                logger.info("dynamics2015: the remembered refresh token was refused; signing in again")
        return await self._oauth(self._grant(), deadline=deadline)

    def _grant(self) -> dict[str, str]:
        s = self.settings
        if s.auth == "oauth_refresh_token":
            return {"grant_type": "refresh_token", "refresh_token": _plain(s.refresh_token)}
        if s.auth == "oauth_client_credentials":
            return {"grant_type": "client_credentials"}
        username, password = self.username or s.username, self.password or _plain(s.password)
        if not username or not password:
            raise AuthError("Dynamics CRM oauth_password needs a username and password (integration or rule)",
                            kind=self.kind, operation="authenticate", reason="misconfigured")  # fmt: skip
        return {"grant_type": "password", "username": username, "password": password}

    async def _oauth(self, grant: dict[str, str], *, deadline: Deadline) -> Token:
        s = self.settings
        data = grant | {"client_id": s.client_id, "resource": s.resource or _origin(s.org_url)}
        if _plain(s.client_secret):
            data["client_secret"] = _plain(s.client_secret)
        response = await Connector.request(
            self, "POST", s.token_url, data=data, headers={"Accept": "application/json"}, deadline=deadline,
            operation="authenticate", auth=False, ok=(400, 401, 403),
        )  # fmt: skip
        body = self.json_of(response, "authenticate")
        if response.status_code != 200 or not isinstance(body, dict) or not body.get("access_token"):
            raise self._login_error(response, body, grant["grant_type"])
        lifetime = str(body.get("expires_in", "")).strip()
        expires_at = time.monotonic() + int(lifetime) if lifetime.isdigit() else None
        extra = {"refresh_token": body["refresh_token"]} if isinstance(body.get("refresh_token"), str) else {}
        logger.debug("dynamics2015: OAuth %s grant gave a token for %s s", grant["grant_type"], lifetime or "?")
        return Token(str(body["access_token"]), expires_at, extra)

    def _login_error(self, response: CappedResponse, body: Any, grant: str) -> AuthError:
        error = str(body.get("error") or "") if isinstance(body, dict) else ""
        detail = str(body.get("error_description") or "").strip().splitlines() if isinstance(body, dict) else []
        first = detail[0].strip() if detail else ""
        if grant == "refresh_token" and error == "invalid_grant":
            text = f"Dynamics CRM token rejected: refresh token revoked or expired ({first or error}); log in again"
        elif error:
            text = f"Dynamics CRM sign-in refused ({grant}): {error}" + (f": {first}" if first else "")
        else:
            text = f"the token endpoint answered HTTP {response.status_code} to the {grant} sign-in"
        return AuthError(text, kind=self.kind, operation="authenticate", reason="auth")

    async def _ntlm_login(self, *, deadline: Deadline) -> Token:
        try:
            import spnego
        except ImportError:
            raise ConnectorUnavailable("Dynamics CRM ntlm authentication needs the pyspnego package installed",
                                       kind=self.kind, operation="authenticate", reason="misconfigured") from None  # fmt: skip
        username = self.username or self.settings.username
        password = self.password or _plain(self.settings.password)
        if not username or not password:
            raise AuthError("Dynamics CRM ntlm needs a username (DOMAIN\\user) and password (integration or rule)",
                            kind=self.kind, operation="authenticate", reason="misconfigured")  # fmt: skip
        context = spnego.client(username, password, hostname=urlsplit(self.service).hostname or "",
                                service="HTTP", protocol="ntlm")  # fmt: skip
        url = f"{self.service}/{PROBE}"
        offer = await self._ntlm_leg(url, context.step(), deadline)
        challenge = _ntlm_challenge(offer.headers.get_list("www-authenticate"))
        if offer.status_code != 401 or challenge is None:
            raise AuthError(f"Dynamics CRM did not offer NTLM (HTTP {offer.status_code}); is Windows "
                            "authentication enabled on the CRM web site?", kind=self.kind,
                            operation="authenticate", reason="auth")  # fmt: skip
        try:
            answer = context.step(challenge)
        except spnego.exceptions.SpnegoError:
            raise AuthError("Dynamics CRM sent an NTLM challenge that could not be answered", kind=self.kind,
                            operation="authenticate", reason="auth") from None  # fmt: skip
        done = await self._ntlm_leg(url, answer, deadline)
        if done.status_code == 401:
            raise AuthError(f"Dynamics CRM refused the NTLM credentials of {username}", kind=self.kind,
                            operation="authenticate", reason="auth")  # fmt: skip
        logger.debug("dynamics2015: NTLM handshake done")
        return Token("ntlm", None)

    async def _ntlm_leg(self, url: str, message: bytes | None, deadline: Deadline) -> CappedResponse:
        headers = {"Accept": "application/json", "Authorization": f"NTLM {base64.b64encode(message or b'').decode()}"}
        return await Connector.request(self, "GET", url, headers=headers, deadline=deadline, operation="authenticate",
                                       auth=False, ok=(401,))  # fmt: skip

    @asynccontextmanager
    async def _ntlm_turn(self, deadline: Deadline, operation: str) -> AsyncIterator[None]:
        """One request (or handshake) at a time on the NTLM-authenticated connection; re-entrant per task."""
        task = asyncio.current_task()
        if self._ntlm_owner is task:
            yield
            return
        try:
            async with asyncio.timeout(deadline.remaining()):
                await self._ntlm_lock.acquire()
        except TimeoutError:
            raise self.timeout_error(operation) from None
        self._ntlm_owner = task
        try:
            yield
        finally:
            self._ntlm_owner = None
            self._ntlm_lock.release()

    def _auth_headers(self, token: Token) -> dict[str, str]:
        return {} if self.ntlm else {"Authorization": f"Bearer {token.value}"}

    async def request(
        self, method: str, url: str, *, deadline: Deadline, operation: str, **kwargs: Any
    ) -> CappedResponse:
        if not self.ntlm:
            return await super().request(method, url, deadline=deadline, operation=operation, **kwargs)
        async with self._ntlm_turn(deadline, operation):
            return await super().request(method, url, deadline=deadline, operation=operation, **kwargs)

    # --- OData plumbing ----------------------------------------------------------------

    async def verify(self, *, deadline: Deadline) -> str:
        """``SystemUserSet?$select=SystemUserId&$top=1``: any user may read users (OData v2 has no WhoAmI)."""
        await self._odata("GET", PROBE, deadline=deadline, operation="verify")
        return "signed in (NTLM)" if self.ntlm else "token accepted"

    async def _odata(
        self, method: str, path: str, *, deadline: Deadline, operation: str, ok: Sequence[int] = (), **kwargs: Any
    ) -> tuple[int, Any]:
        url = path if path.startswith("https://") else f"{self.service}/{path}"
        headers = {"Accept": "application/json"}
        if "json" in kwargs:
            headers["Content-Type"] = "application/json"
            kwargs["content"] = json.dumps(kwargs.pop("json")).encode()
        response = await self.request(method, url, headers=headers, deadline=deadline, operation=operation, ok=ok,
                                      **kwargs)  # fmt: skip
        if response.status_code in ok:
            return response.status_code, None
        body = self.json_of(response, operation)
        data = body.get("d") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise UnexpectedResponse(f"Dynamics CRM sent an answer without its \"d\" object to {operation}",
                                     kind=self.kind, operation=operation, reason="bad_response")  # fmt: skip
        return response.status_code, data

    def entity(self, module: str) -> Entity:
        return ENTITIES[self.vendor_module(module)]

    def _select(self, entity: Entity, fields: Sequence[str], *, phones: bool) -> list[str]:
        columns = [entity.id, entity.name, MODIFIED] + (list(entity.phones) if phones else [])
        for name in fields:
            name = name.strip()
            if not _ATTRIBUTE.match(name):
                raise UnexpectedResponse(f"{name!r} is not a Dynamics CRM attribute name (SchemaName, or "
                                         "Lookup.Attribute)", kind=self.kind, operation="find_record",
                                         reason="bad_field")  # fmt: skip
            head = name.split(".", 1)[0]
            if head.casefold() not in {c.casefold() for c in columns}:
                columns.append(head)
        return columns

    def _orderby(self) -> dict[str, str]:
        pick = self.settings.match_pick
        return {} if pick == "first" else {"$orderby": f"{MODIFIED} {'desc' if pick == 'newest' else 'asc'}"}

    # --- finding records ---------------------------------------------------------------------

    async def find_record(
        self, key: LookupKey, module: str, *, fields: Sequence[str] = (), deadline: Deadline
    ) -> Record | None:
        entity = self.entity(module)
        if key.source == "dtmf":
            rows = await self._by_key(entity, key.value, self._select(entity, fields, phones=False), deadline=deadline)
        else:
            rows = await self._by_phone(entity, key.value, self._select(entity, fields, phones=True), deadline=deadline)
        return self._record(entity, rows)

    async def _by_phone(self, entity: Entity, number: str, select: list[str], *, deadline: Deadline) -> list[dict]:
        forms = self.phone(LookupKey(number, "caller_id"))
        wanted = forms.national_digits if forms.valid else forms.digits
        if len(wanted) < 4:
            return []
        tail = wanted[-4:]
        params = {"$select": ",".join(select),
                  "$filter": " or ".join(f"endswith({phone},'{tail}')" for phone in entity.phones)} | self._orderby()  # fmt: skip
        url: str | None = entity.set
        kept, seen = [], 0
        while url and seen < MAX_CANDIDATES:
            _, data = await self._odata("GET", url, params=params, deadline=deadline, operation="find_record")
            page = [r for r in data.get("results") or [] if isinstance(r, dict)]
            seen += len(page)
            kept += [r for r in page if any(forms.matches(r.get(p)) for p in entity.phones)]
            url, params = data.get("__next"), None
            if not isinstance(url, str) or not url.startswith(self.service):
                url = None  # a next link elsewhere is not followed
        return kept

    async def _by_key(self, entity: Entity, value: str, select: list[str], *, deadline: Deadline) -> list[dict]:
        field = self.settings.key_field.strip()
        if not field:
            if not _GUID.match(value):
                return []  # typed digits are never a record's GUID
            status, data = await self._odata("GET", f"{entity.set}(guid'{value.strip('{}')}')",
                                             params={"$select": ",".join(select)}, ok=(404,), deadline=deadline,
                                             operation="find_record")  # fmt: skip
            return [] if status == 404 else [data]
        if not _ATTRIBUTE.match(field) or "." in field:
            raise UnexpectedResponse(f"key_field {field!r} is not a Dynamics CRM attribute name", kind=self.kind,
                                     operation="find_record", reason="bad_field")  # fmt: skip
        number = re.fullmatch(r"-?\d+", value) is not None
        quoted = (entity.set, field.casefold()) not in self._unquoted or not number
        try:
            return await self._by_filter(entity, f"{field} eq {odata_literal(value) if quoted else value}", select,
                                         deadline=deadline)  # fmt: skip
        except UnexpectedResponse as exc:
            if not (quoted and number and exc.reason == "not_text"):
                raise
        self._unquoted.add((entity.set, field.casefold()))
        return await self._by_filter(entity, f"{field} eq {value}", select, deadline=deadline)

    async def _by_filter(self, entity: Entity, condition: str, select: list[str], *, deadline: Deadline) -> list[dict]:
        params = {"$select": ",".join(select), "$filter": condition, "$top": str(PAGE_SIZE)} | self._orderby()
        _, data = await self._odata("GET", entity.set, params=params, deadline=deadline, operation="find_record")
        return [r for r in data.get("results") or [] if isinstance(r, dict)]

    def _record(self, entity: Entity, rows: list[dict]) -> Record | None:
        if not rows:
            return None
        flat = [{k: _flatten(v) for k, v in row.items() if k != "__metadata"} for row in rows]
        chosen, matches = self.pick(flat, MODIFIED)
        record_id = chosen.get(entity.id)
        if not isinstance(record_id, str):
            raise UnexpectedResponse(f"Dynamics CRM sent a {entity.schema} without its {entity.id}", kind=self.kind,
                                     operation="find_record", reason="bad_response")  # fmt: skip
        url = f"{self.settings.org_url}/main.aspx?etn={entity.logical}&pagetype=entityrecord&id=%7B{record_id}%7D"
        return Record(module=entity.schema, id=record_id, fields=chosen, matches=matches, url=url)

    async def read_field(self, record: Record, api_name: str, *, deadline: Deadline) -> str | None:
        value = lookup_path(record.fields, api_name)
        head, _, tail = api_name.partition(".")
        reference = lookup_path(record.fields, head)
        if (
            tail
            and value is None
            and _is_reference(reference)
            and tail.casefold() not in {k.casefold() for k in reference}
        ):
            value = await self._follow(reference, tail, deadline=deadline)
        if _is_reference(value):
            value = value.get("Name")
        return field_text(value)

    async def _follow(self, reference: dict, attribute: str, *, deadline: Deadline) -> Any:
        """An attribute of the record a lookup points to: one more request."""
        entity_set = LOOKUP_SETS.get(str(reference.get("LogicalName") or ""))
        if entity_set is None:
            raise UnexpectedResponse(f"cannot follow a lookup to {reference.get('LogicalName')}; read its Name, Id "
                                     "or LogicalName", kind=self.kind, operation="read_field",
                                     reason="bad_field")  # fmt: skip
        if not _ATTRIBUTE.match(attribute) or "." in attribute:
            raise UnexpectedResponse(f"{attribute!r} is not a Dynamics CRM attribute name", kind=self.kind,
                                     operation="read_field", reason="bad_field")  # fmt: skip
        status, data = await self._odata("GET", f"{entity_set}(guid'{reference['Id']}')", params={"$select": attribute},
                                         ok=(404,), deadline=deadline, operation="read_field")  # fmt: skip
        if status == 404:
            return None
        value = _flatten(lookup_path(data, attribute))
        reference[attribute] = value  # cached on the record: a second read costs nothing
        return value

    # --- call logging ---------------------------------------------------------------------------

    # --- users (agents sync) -------------------------------------------------------------

    async def list_users(self, *, deadline: Deadline) -> list[CrmUser]:
        """``GET SystemUserSet`` of the enabled users (``IsDisabled eq false``), following ``__next`` (the OData
        service pages by 50): the ids ``OwnerId`` holds, with ``InternalEMailAddress``."""
        path = "SystemUserSet"
        params: dict[str, str] | None = {"$select": "SystemUserId,FullName,InternalEMailAddress",
                                         "$filter": "IsDisabled eq false"}  # fmt: skip
        users: list[CrmUser] = []
        for _ in range(10_000):
            _, data = await self._odata("GET", path, params=params, deadline=deadline, operation="list_users",
                                        limit=USER_LIST_BYTES)  # fmt: skip
            results = data.get("results")
            if not isinstance(results, list):
                raise UnexpectedResponse("Dynamics CRM sent a user list without results", kind=self.kind,
                                         operation="list_users", reason="bad_response")  # fmt: skip
            for row in results:
                if isinstance(row, dict) and row.get("SystemUserId"):
                    users.append(CrmUser(str(row["SystemUserId"]), str(row.get("FullName") or ""),
                                         str(row.get("InternalEMailAddress") or "")))  # fmt: skip
            following = data.get("__next")
            if not isinstance(following, str) or not following.startswith(self.service + "/"):
                return users
            path, params = following, None
        return users

    async def log_call(self, call: CallActivity, options: Any, *, deadline: Deadline) -> str:
        activity_id = str(uuid.uuid5(CALL_IDS, call.call_id))
        if await self._logged(activity_id, deadline=deadline):
            return activity_id
        record = call.record or await self._lookup_caller(call.external_number, deadline=deadline)
        if record is None and getattr(options, "create_unknown", False):
            record = await self._create_caller(call.external_number, deadline=deadline)
        body = self._phonecall(activity_id, call, record)
        try:
            _, data = await self._odata("POST", "PhoneCallSet", json=body, deadline=deadline, operation="log_call")
        except ConnectorError:
            if await self._logged(activity_id, deadline=deadline):  # a concurrent logger got there first
                return activity_id
            raise
        created = data.get("ActivityId") or activity_id
        logger.info("dynamics2015: call %s logged as phonecall %s", call.call_id, created)
        return str(created)

    async def _logged(self, activity_id: str, *, deadline: Deadline) -> bool:
        status, _ = await self._odata("GET", f"PhoneCallSet(guid'{activity_id}')", params={"$select": "ActivityId"},
                                      ok=(404,), deadline=deadline, operation="log_call")  # fmt: skip
        return status != 404

    async def _lookup_caller(self, number: str, *, deadline: Deadline) -> Record | None:
        for schema in LOOKUP_ORDER:
            entity = ENTITIES[schema]
            rows = await self._by_phone(entity, number, self._select(entity, (), phones=True), deadline=deadline)
            record = self._record(entity, rows)
            if record is not None:
                return record
        return None

    async def _create_caller(self, number: str, *, deadline: Deadline) -> Record:
        forms = self.phone(LookupKey(number, "caller_id"))
        phone = forms.e164 or forms.raw
        entity = ENTITIES[self.MODULES[self.settings.create_as]]
        body: dict[str, Any] = {"LastName": f"Caller {phone}", "Telephone1": phone}
        if entity.schema == "Lead":
            body["Subject"] = f"Call from {phone}"
        _, data = await self._odata("POST", entity.set, json=body, deadline=deadline, operation="log_call")
        new_id = data.get(entity.id)
        if not isinstance(new_id, str):
            raise UnexpectedResponse(f"Dynamics CRM created a {entity.schema} without telling its id", kind=self.kind,
                                     operation="log_call", reason="bad_response")  # fmt: skip
        logger.info("dynamics2015: created %s %s for an unknown caller", entity.logical, new_id)
        return Record(module=entity.schema, id=new_id, fields=body)

    @staticmethod
    def _phonecall(activity_id: str, call: CallActivity, record: Record | None) -> dict[str, Any]:
        inbound = call.direction == "inbound"
        subject = call.subject or f"{'Inbound' if inbound else 'Outbound'} call {'from' if inbound else 'to'} " \
                                  f"{call.external_number}"  # fmt: skip
        lines = [call.description] if call.description else []
        lines += [f"Outcome: {call.outcome}", f"Started: {call.started_at.isoformat()}",
                  f"Ringing {call.ring_seconds} s, talk {call.talk_seconds} s"]  # fmt: skip
        if call.extension:
            lines.append(f"Extension: {call.extension}")
        if call.recording:
            lines.append(f"Recording: {call.recording}")
        lines.append(f"Asterisk call id: {call.call_id}")
        body: dict[str, Any] = {
            "ActivityId": activity_id,
            "Subject": subject[:200],
            "PhoneNumber": call.external_number[:200],
            "DirectionCode": not inbound,
            "ActualDurationMinutes": math.ceil(max(0, call.talk_seconds) / 60),
            "Description": "\n".join(lines),
        }
        if record is not None:
            logical = ENTITIES[record.module].logical if record.module in ENTITIES else record.module.lower()
            body["RegardingObjectId"] = {"Id": record.id, "LogicalName": logical}
        return body

    # --- errors ---------------------------------------------------------------------------------------

    def vendor_message(self, response: CappedResponse) -> str:
        message = _odata_error(response)
        return message[:300] if message else super().vendor_message(response)

    def error_for(self, response: CappedResponse, operation: str) -> ConnectorError:
        status = response.status_code
        message = _odata_error(response)
        args = {"kind": self.kind, "operation": operation}
        missing = _NO_PROPERTY.search(message) or _NOT_ON_TYPE.search(message)
        if status == 400 and missing:
            return UnexpectedResponse(
                f"field {missing[1]} does not exist on {missing[2]}", reason="unknown_field", **args
            )
        if status == 400 and _INCOMPATIBLE.search(message):
            return UnexpectedResponse(f"Dynamics CRM: {message}", reason="not_text", **args)
        if status == 401:
            how = "NTLM credentials" if self.ntlm else "token"
            return AuthError(f"Dynamics CRM refused the {how} ({operation})", reason="auth", **args)
        if status == 403:
            return AuthError(f"Dynamics CRM denied {operation}: {message or 'the user lacks a privilege'}",
                             reason="forbidden", **args)  # fmt: skip
        if status == 404:
            return UnexpectedResponse(f"Dynamics CRM answered 404 to {operation}: {message or 'not found'} "
                                      "(check org_url)", reason="http_404", **args)  # fmt: skip
        return super().error_for(response, operation)


def odata_literal(value: str) -> str:
    """``value`` as an OData string literal (quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def _is_reference(value: Any) -> bool:
    return isinstance(value, dict) and "LogicalName" in value and "Id" in value


def _flatten(value: Any) -> Any:
    """An OData v2 value as a plain one: complex types to their ``Value``, dates to ISO-8601."""
    if isinstance(value, dict):
        kind = str(lookup_path(value, "__metadata.type") or "")
        if kind.endswith(("OptionSetValue", "Money", "BooleanManagedProperty")):
            return value.get("Value")
        if "__deferred" in value:
            return None  # a navigation property that was not expanded
        if "LogicalName" in value and "Id" in value and value.get("Id") is None:
            return None  # an empty lookup
        return {k: _flatten(v) for k, v in value.items() if k != "__metadata"}
    if isinstance(value, list):
        return [_flatten(v) for v in value]
    if isinstance(value, str):
        found = _DATE.match(value)
        if found:
            moment = datetime.fromtimestamp(int(found[1]) / 1000, tz=timezone.utc)
            return moment.isoformat().replace("+00:00", "Z")
    return value


def _ntlm_challenge(values: list[str]) -> bytes | None:
    for value in values:
        for part in value.split(","):
            scheme, _, data = part.strip().partition(" ")
            if scheme.upper() == "NTLM" and data.strip():
                try:
                    return base64.b64decode(data.strip())
                except ValueError:
                    return None
    return None


def _odata_error(response: CappedResponse) -> str:
    try:
        data = json.loads(response.text)
    except ValueError:
        return ""
    message = lookup_path(data, "error.message")
    if isinstance(message, dict):
        message = message.get("value")
    return str(message).strip() if isinstance(message, str) else ""


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _plain(value: SecretStr | str | None) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value or ""
