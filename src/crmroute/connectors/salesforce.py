"""Salesforce (REST API): OAuth 2 via a Connected App, SOSL phone search, ``Task`` call logs.

Authentication (``auth_flow``; token endpoint ``{login_url}/services/oauth2/token``,
``login_url`` is ``https://login.salesforce.com``, ``https://test.salesforce.com``
for sandboxes, or the org's My Domain)
    ``refresh_token``       the web-server flow was run once (scope ``api refresh_token``);
                            the stored refresh token buys access tokens
                            (``grant_type=refresh_token`` + client id/secret)
    ``client_credentials``  the app's run-as user (client id + secret); Salesforce
                            serves this flow on the org's My Domain only
    ``password``            username + password + security token appended
                            (``grant_type=password``; Salesforce issues no refresh
                            token and newer orgs disable the flow); a rule's CRM
                            Username/Password replace the integration's
    ``jwt_bearer``          ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer``
                            with an RS256 assertion (iss = client id, sub = username,
                            aud = ``login_url``, or login/test.salesforce.com for a
                            My Domain) signed by ``private_key`` (PEM; the
                            certificate is on the app); a rule's CRM Username is ``sub``
    The token answer carries ``instance_url`` (every API call goes there unless
    ``instance_url`` is set) and **no** ``expires_in``: the session lives until
    the org's inactivity timeout, so the token is kept until an API call answers
    401 ``INVALID_SESSION_ID``, then the flow is run again once (an ``expires_in``,
    if one is ever sent, is honoured). A refused refresh token (``invalid_grant``)
    is ``AuthError("... token rejected: refresh token revoked or expired")``.

Modules: accounts -> ``Account``, contacts -> ``Contact``, leads -> ``Lead``.

Finding a record
    Phone keys: one SOSL search, ``GET /services/data/vXX.X/search/?q=FIND
    {4155552671 OR 14155552671} IN PHONE FIELDS RETURNING Contact(Id, Name,
    LastModifiedDate, <fields> ORDER BY LastModifiedDate DESC LIMIT 50)``. SOSL
    matches on the search index of every phone-type field (Contact ``Phone``,
    ``MobilePhone``, ``HomePhone``, ``OtherPhone``, ``AssistantPhone``; Lead
    ``Phone``, ``MobilePhone``; Account ``Phone``), and the vendor's own sample
    searches bare digits against formatted values (reference section 6 and the
    phone appendix: "bare digits, national and with country code"), so the
    national significant number, the country-code form and (where a country
    writes a trunk prefix, e.g. GB ``020 7946 0958``) the national form's digits
    are sent, OR-ed, in one request; ``+`` is a SOSL reserved character and
    never sent. The
    index's exact normalisation rules are unconfirmed, and the index is updated
    asynchronously: a record created seconds ago may not be found yet.
    Typed (DTMF) keys: SOQL ``SELECT ... FROM Contact WHERE <key_field> = '12345'``
    (a number field is retried once without quotes, as Salesforce demands, and
    remembered); with no ``key_field`` the digits are tried as a record ``Id``
    only when they have an id's shape.
    The asked fields (relationship paths such as ``Account.Name`` or
    ``Parent__r.Name`` included) come back in the same call; several matches
    give the ``match_pick`` record by ``LastModifiedDate`` (the search is
    ordered by it, so ``LIMIT`` keeps the right end).

Call log: ``POST /sobjects/Task`` with ``TaskSubtype=Call``, ``CallType``
``Inbound``/``Outbound``, ``CallDurationInSeconds``, ``CallObject`` = the
Asterisk call id, ``CallDisposition``, ``Status=Completed``, ``ActivityDate``,
``Subject``/``Description``, and ``WhoId`` (Contact/Lead) or ``WhatId``
(Account). Idempotent: ``SELECT Id FROM Task WHERE CallObject = '<id>'``
first. With no record from routing the number is searched in Contact, Lead
and Account in one SOSL request; unknown callers become a Lead (``LastName``,
``Company``, ``Phone`` in E.164) or a Contact (``create_as``) when the log
options ask for it.

Errors: Salesforce answers ``[{"message", "errorCode", "fields"}]``. 403
``REQUEST_LIMIT_EXCEEDED`` (the rolling 24-hour API allocation) is
``RateLimited`` with reason ``quota_exhausted`` and marks the quota spent; ``INVALID_FIELD`` "No such column 'X' on entity 'Y'" becomes
"field X does not exist on Y"; 401 ``INVALID_SESSION_ID`` is refreshed once,
then ``AuthError``; other 401/403 are ``AuthError``; 5xx ``ConnectorUnavailable``.

Limits: no per-second limit is published; the org has a rolling 24-hour
allocation (Enterprise: 100,000 + 1,000 per licence), shown in every answer's
``Sforce-Limit-Info: api-usage=used/total`` (kept in ``api_usage``, warned about
above 90 %). That allocation is a quota, counted (the header corrects the count
and the limit), never a pace: an uncached call does not wait.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from crmroute.connectors._http import CappedResponse
from crmroute.connectors._phone import digits_of, phone_forms
from crmroute.connectors.base import CallActivity, Connector, ConnectorSettings, Record, Token, https_url, lookup_path
from crmroute.deadline import Deadline
from crmroute.errors import AuthError, ConnectorError, ConnectorUnavailable, RateLimited, UnexpectedResponse
from crmroute.connectors.base import USER_LIST_BYTES, CrmUser
from crmroute.resilience.budget import Quota
from crmroute.routing.engine import LookupKey

logger = logging.getLogger(__name__)

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
JWT_LIFETIME = 180  # seconds; Salesforce accepts assertions valid for at most 3 minutes
SEARCH_LIMIT = 50  # records per object in one search
MODIFIED = "LastModifiedDate"
LOOKUP_ORDER = ("Contact", "Lead", "Account")  # which object wins when a call is logged by number
_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*$")
_RECORD_ID = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")
_NO_COLUMN = re.compile(r"No such column '([^']+)' on (?:entity|sobject of type) '?([A-Za-z0-9_]+)'?")
_NO_RELATION = re.compile(r"Didn't understand relationship '([^']+)' in field path")
_LIMIT_INFO = re.compile(r"api-usage=(\d+)/(\d+)")


class SalesforceSettings(ConnectorSettings):
    login_url: str = Field(
        "https://login.salesforce.com",
        description="Where to log in: https://login.salesforce.com, https://test.salesforce.com for a sandbox, "
        "or your My Domain (https://yourcompany.my.salesforce.com)",
    )
    auth_flow: Literal["refresh_token", "client_credentials", "password", "jwt_bearer"] = Field(
        "refresh_token",
        description="OAuth flow of the Connected App: refresh_token (from a one-time web-server login), "
        "client_credentials (the app's run-as user), password (username + password + security token) "
        "or jwt_bearer (certificate on the app, private key here)",
    )
    client_id: str = Field(..., min_length=1, description="The Connected App's Consumer Key")
    client_secret: SecretStr | None = Field(
        None, description="The Connected App's Consumer Secret (not needed for jwt_bearer)"
    )
    refresh_token: SecretStr | None = Field(None, description="Refresh token for the refresh_token flow")
    username: str = Field(
        "", description="Salesforce username for the password and jwt_bearer flows (a rule's CRM Username wins)"
    )
    password: SecretStr | None = Field(None, description="Password for the password flow (a rule's CRM Password wins)")
    security_token: SecretStr | None = Field(
        None, description="The user's security token, appended to the password (password flow, when the "
        "server's address is not trusted by the org)"
    )  # fmt: skip
    private_key: SecretStr | None = Field(
        None, description="PEM RSA private key matching the certificate uploaded to the Connected App (jwt_bearer)"
    )
    instance_url: str = Field(
        "", description="API base URL; empty: the instance_url the token endpoint returns (the usual choice)"
    )
    api_version: str = Field("63.0", description="REST API version, e.g. 63.0 (see GET /services/data/)")
    create_as: Literal["leads", "contacts"] = Field(
        "leads", description="What to create for an unknown caller when the log options ask for it"
    )

    @field_validator("login_url", "instance_url")
    @classmethod
    def _https(cls, value: str) -> str:
        return https_url(value)

    @field_validator("api_version")
    @classmethod
    def _version(cls, value: str) -> str:
        value = value.removeprefix("v")
        if not re.fullmatch(r"\d{2,3}\.\d", value):
            raise ValueError("must look like 63.0")
        return value

    @model_validator(mode="after")
    def _flow_secrets(self) -> "SalesforceSettings":
        needs = {
            "refresh_token": ("client_secret", "refresh_token"),
            "client_credentials": ("client_secret",),
            "password": ("client_secret",),
            "jwt_bearer": ("private_key", "username"),
        }[self.auth_flow]
        missing = [name for name in needs if not _plain(getattr(self, name))]
        if missing:
            raise ValueError(f"the {self.auth_flow} flow needs {', '.join(missing)}")
        return self


class SalesforceConnector(Connector):
    kind = "salesforce"
    title = "Salesforce"
    docs_url = "https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/intro_rest.htm"
    Settings = SalesforceSettings
    MODULES = {"accounts": "Account", "contacts": "Contact", "leads": "Lead"}
    quotas = (Quota(100_000, 86_400, "API requests per 24 h"),)  # Enterprise base; Sforce-Limit-Info corrects it
    limits_source = "rolling 24 h allocation, Enterprise base 100,000 (reference section 6); no per-second limit"
    owner_field = "OwnerId"

    settings: SalesforceSettings

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.api_usage: tuple[int, int] | None = None  # from Sforce-Limit-Info
        self._unquoted: set[tuple[str, str]] = set()  # (object, field) compared as numbers in SOQL

    # --- auth -------------------------------------------------------------------------

    async def _login(self, *, deadline: Deadline) -> Token:
        s = self.settings
        flow = s.auth_flow
        data: dict[str, str] = {"client_id": s.client_id}
        if flow == "refresh_token":
            data |= {"grant_type": "refresh_token", "refresh_token": _plain(s.refresh_token)}
        elif flow == "client_credentials":
            data |= {"grant_type": "client_credentials"}
        elif flow == "password":
            password = self.password or _plain(s.password)
            username = self.username or s.username
            if not username or not password:
                raise AuthError("Salesforce password flow needs a username and password", kind=self.kind,
                                operation="authenticate", reason="misconfigured")  # fmt: skip
            data |= {"grant_type": "password", "username": username, "password": password + _plain(s.security_token)}
        else:
            data = {"grant_type": JWT_GRANT, "assertion": self._jwt_assertion()}
        if flow != "jwt_bearer":
            data["client_secret"] = _plain(s.client_secret)
        response = await self.request(
            "POST", f"{s.login_url}/services/oauth2/token", data=data, headers={"Accept": "application/json"},
            deadline=deadline, operation="authenticate", auth=False, ok=(400, 401, 403),
        )  # fmt: skip
        body = self.json_of(response, "authenticate")
        if response.status_code != 200 or not isinstance(body, dict) or not body.get("access_token"):
            raise self._login_error(response, body)
        instance = s.instance_url or str(body.get("instance_url") or "").rstrip("/")
        if not instance.startswith("https://"):
            raise UnexpectedResponse("Salesforce's token answer has no https instance_url", kind=self.kind,
                                     operation="authenticate", reason="bad_response")  # fmt: skip
        expires_at = None
        if str(body.get("expires_in", "")).isdigit():  # Salesforce sends none; honour one if it ever does
            expires_at = time.monotonic() + int(body["expires_in"])
        logger.debug("salesforce: logged in with the %s flow", flow)
        return Token(str(body["access_token"]), expires_at, {"instance_url": instance})

    def _login_error(self, response: CappedResponse, body: Any) -> ConnectorError:
        error = str(lookup_path(body, "error") or "") if isinstance(body, dict) else ""
        detail = str(lookup_path(body, "error_description") or "") if isinstance(body, dict) else ""
        flow = self.settings.auth_flow
        if flow == "refresh_token" and error == "invalid_grant":
            text = f"Salesforce token rejected: refresh token revoked or expired ({detail or error}); " \
                   "log in again to get a new refresh token"  # fmt: skip
        elif error == "invalid_client" or error == "invalid_client_id":
            text = f"Salesforce refused the Connected App: {detail or error} (check client_id and client_secret)"
        elif error:
            text = f"Salesforce refused the {flow} login: {error}" + (f" ({detail})" if detail else "")
        else:
            text = f"Salesforce answered HTTP {response.status_code} to the {flow} login"
        return AuthError(text, kind=self.kind, operation="authenticate", reason="auth")

    def _jwt_assertion(self) -> str:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        s = self.settings
        try:
            key = serialization.load_pem_private_key(_plain(s.private_key).encode(), password=None)
        except (ValueError, TypeError):
            raise AuthError("Salesforce jwt_bearer: private_key is not a PEM private key without a passphrase",
                            kind=self.kind, operation="authenticate", reason="misconfigured") from None  # fmt: skip
        if not isinstance(key, rsa.RSAPrivateKey):
            raise AuthError("Salesforce jwt_bearer needs an RSA private key", kind=self.kind,
                            operation="authenticate", reason="misconfigured")  # fmt: skip
        claims = {"iss": s.client_id, "sub": self.username or s.username, "aud": jwt_audience(s.login_url),
                  "exp": int(time.time()) + JWT_LIFETIME}  # fmt: skip
        signing_input = f"{_b64({'alg': 'RS256'})}.{_b64(claims)}"
        signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"

    # --- API plumbing ------------------------------------------------------------------

    async def verify(self, *, deadline: Deadline) -> str:
        """``GET /services/data/vXX.X/``: the version's resource list needs a valid session and no permission."""
        await self._api("GET", "/", deadline=deadline, operation="verify")
        token = self._token
        instance = token.extra.get("instance_url", "") if token is not None else ""
        used = f"; {self.api_usage[0]:,} of {self.api_usage[1]:,} daily API requests used" if self.api_usage else ""
        return f"session accepted by {instance}{used}"

    async def _api(self, method: str, path: str, *, deadline: Deadline, operation: str, **kwargs: Any) -> Any:
        """One REST call below ``/services/data/vXX.X``; the JSON answer."""
        token = self._token or await self.authenticate(deadline=deadline)  # request() refreshes a stale one
        url = f"{token.extra['instance_url']}/services/data/v{self.settings.api_version}{path}"
        response = await self.request(method, url, deadline=deadline, operation=operation,
                                      headers={"Accept": "application/json"}, **kwargs)  # fmt: skip
        self._note_usage(response)
        return self.json_of(response, operation)

    def _note_usage(self, response: CappedResponse) -> None:
        match = _LIMIT_INFO.search(response.headers.get("sforce-limit-info", ""))
        if match:
            used, total = int(match[1]), int(match[2])
            self.api_usage = (used, total)
            if self.budget is not None:  # the org's own count and allocation correct the quota
                self.budget.sync_quota(86_400, used, total)
            if total and used >= 0.9 * total:
                logger.warning("salesforce: %d of %d API requests of the 24-hour allocation used", used, total)

    async def _soql(self, soql: str, *, deadline: Deadline, operation: str) -> list[dict[str, Any]]:
        body = await self._api("GET", "/query/", params={"q": soql}, deadline=deadline, operation=operation)
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list):
            raise self._shape_error(operation, "a query answer without records")
        return [r for r in records if isinstance(r, dict)]

    async def _sosl(self, sosl: str, *, deadline: Deadline, operation: str) -> list[dict[str, Any]]:
        body = await self._api("GET", "/search/", params={"q": sosl}, deadline=deadline, operation=operation)
        records = body.get("searchRecords") if isinstance(body, dict) else body  # API <= 35: a bare array
        if not isinstance(records, list):
            raise self._shape_error(operation, "a search answer without searchRecords")
        return [r for r in records if isinstance(r, dict)]

    def _shape_error(self, operation: str, what: str) -> UnexpectedResponse:
        return UnexpectedResponse(f"Salesforce sent {what} to {operation}", kind=self.kind, operation=operation,
                                  reason="bad_response")  # fmt: skip

    # --- finding records ------------------------------------------------------------------

    async def find_record(
        self, key: LookupKey, module: str, *, fields: Sequence[str] = (), deadline: Deadline
    ) -> Record | None:
        sobject = self.vendor_module(module)
        columns = self._columns(fields)
        if key.source == "dtmf":
            rows = await self._by_key(sobject, key.value, columns, deadline=deadline)
        else:
            rows = await self._by_phone(key.value, [sobject], columns, deadline=deadline)
        return self._record(sobject, rows)

    def _columns(self, fields: Sequence[str]) -> list[str]:
        columns = ["Id", "Name", MODIFIED]
        for name in fields:
            name = name.strip()
            if not _FIELD_NAME.match(name):
                raise UnexpectedResponse(f"{name!r} is not a Salesforce field API name", kind=self.kind,
                                         operation="find_record", reason="bad_field")  # fmt: skip
            if name.casefold() not in {c.casefold() for c in columns}:
                columns.append(name)
        return columns

    def _order(self) -> str:
        pick = self.settings.match_pick
        return "" if pick == "first" else f" ORDER BY {MODIFIED} {'DESC' if pick == 'newest' else 'ASC'}"

    async def _by_phone(
        self, number: str, sobjects: Sequence[str], columns: list[str], *, deadline: Deadline
    ) -> list[dict[str, Any]]:
        forms = phone_terms(number, self.region)
        if not forms:
            return []
        returning = ", ".join(f"{o}({', '.join(columns)}{self._order()} LIMIT {SEARCH_LIMIT})" for o in sobjects)
        sosl = f"FIND {{{' OR '.join(forms)}}} IN PHONE FIELDS RETURNING {returning}"
        return await self._sosl(sosl, deadline=deadline, operation="find_record")

    async def _by_key(
        self, sobject: str, value: str, columns: list[str], *, deadline: Deadline
    ) -> list[dict[str, Any]]:
        field = self.settings.key_field.strip()
        select = f"SELECT {', '.join(columns)} FROM {sobject}"
        if not field:
            if not _RECORD_ID.match(value):
                return []  # typed digits are never a record id
            return await self._soql(
                f"{select} WHERE Id = '{value}' LIMIT 1", deadline=deadline, operation="find_record"
            )
        if not _FIELD_NAME.match(field) or "." in field:
            raise UnexpectedResponse(f"key_field {field!r} is not a Salesforce field API name", kind=self.kind,
                                     operation="find_record", reason="bad_field")  # fmt: skip
        number = re.fullmatch(r"-?\d+(?:\.\d+)?", value) is not None
        tail = f"{self._order()} LIMIT {SEARCH_LIMIT}"
        if (sobject, field.casefold()) in self._unquoted and number:
            return await self._soql(
                f"{select} WHERE {field} = {value}{tail}", deadline=deadline, operation="find_record"
            )
        try:
            return await self._soql(f"{select} WHERE {field} = {soql_literal(value)}{tail}", deadline=deadline,
                                    operation="find_record")  # fmt: skip
        except UnexpectedResponse as exc:
            if not (number and exc.reason == "not_text"):
                raise
        self._unquoted.add((sobject, field.casefold()))
        return await self._soql(f"{select} WHERE {field} = {value}{tail}", deadline=deadline, operation="find_record")

    def _record(self, sobject: str, rows: list[dict[str, Any]]) -> Record | None:
        rows = [r for r in rows if lookup_path(r, "attributes.type") in (None, sobject)]
        if not rows:
            return None
        chosen, matches = self.pick(rows, MODIFIED)
        if not isinstance(chosen.get("Id"), str):
            raise self._shape_error("find_record", "a record without an Id")
        fields = {k: v for k, v in chosen.items() if k != "attributes"}
        instance = self._token.extra.get("instance_url", "") if self._token else ""
        return Record(module=sobject, id=chosen["Id"], fields=fields, matches=matches,
                      url=f"{instance}/{chosen['Id']}" if instance else "")  # fmt: skip

    # --- call logging ---------------------------------------------------------------------------

    # --- users (agents sync) -------------------------------------------------------------

    async def list_users(self, *, deadline: Deadline) -> list[CrmUser]:
        """SOQL over the active ``User`` records (the ids ``OwnerId`` holds), following ``nextRecordsUrl``
        while the answer is not ``done`` (Salesforce sends query results in batches)."""
        soql = "SELECT Id, Name, Email FROM User WHERE IsActive = true ORDER BY Name"
        body = await self._api("GET", "/query/", params={"q": soql}, deadline=deadline, operation="list_users",
                               limit=USER_LIST_BYTES)
        users: list[CrmUser] = []
        for _ in range(1000):
            records = body.get("records") if isinstance(body, dict) else None
            if not isinstance(records, list):
                raise self._shape_error("list_users", "a query answer without records")
            users += [CrmUser(str(r["Id"]), str(r.get("Name") or ""), str(r.get("Email") or ""))
                      for r in records if isinstance(r, dict) and r.get("Id")]  # fmt: skip
            following = body.get("nextRecordsUrl")
            if body.get("done") is not False or not isinstance(following, str) or not following.startswith("/"):
                return users
            token = self._token or await self.authenticate(deadline=deadline)
            response = await self.request("GET", f"{token.extra['instance_url']}{following}", deadline=deadline,
                                          operation="list_users", headers={"Accept": "application/json"},
                                          limit=USER_LIST_BYTES)  # fmt: skip
            body = self.json_of(response, "list_users")
        return users

    async def log_call(self, call: CallActivity, options: Any, *, deadline: Deadline) -> str:
        existing = await self._soql(
            f"SELECT Id FROM Task WHERE CallObject = {soql_literal(call.call_id)} LIMIT 1",
            deadline=deadline, operation="log_call",
        )  # fmt: skip
        if existing and isinstance(existing[0].get("Id"), str):
            return existing[0]["Id"]
        record = call.record or await self._lookup_caller(call.external_number, deadline=deadline)
        if record is None and getattr(options, "create_unknown", False):
            record = await self._create_caller(call.external_number, deadline=deadline)
        task = self._task(call, record)
        body = await self._api("POST", "/sobjects/Task", json=task, deadline=deadline, operation="log_call")
        task_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(task_id, str) or not body.get("success", True):
            raise self._shape_error("log_call", "a Task create answer without an id")
        logger.info("salesforce: call %s logged as Task %s", call.call_id, task_id)
        return task_id

    async def _lookup_caller(self, number: str, *, deadline: Deadline) -> Record | None:
        rows = await self._by_phone(number, LOOKUP_ORDER, ["Id", "Name", MODIFIED], deadline=deadline)
        for sobject in LOOKUP_ORDER:
            record = self._record(sobject, [r for r in rows if lookup_path(r, "attributes.type") == sobject])
            if record is not None:
                return record
        return None

    async def _create_caller(self, number: str, *, deadline: Deadline) -> Record:
        forms = self.phone(LookupKey(number, "caller_id"))
        phone = forms.e164 or forms.raw
        sobject = self.MODULES[self.settings.create_as]
        fields: dict[str, Any] = {"LastName": f"Caller {phone}", "Phone": phone}
        if sobject == "Lead":
            fields["Company"] = "Unknown caller"  # required on Lead
        body = await self._api("POST", f"/sobjects/{sobject}", json=fields, deadline=deadline, operation="log_call")
        new_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(new_id, str):
            raise self._shape_error("log_call", f"a {sobject} create answer without an id")
        logger.info("salesforce: created %s %s for unknown caller", sobject, new_id)
        return Record(module=sobject, id=new_id, fields=fields)

    @staticmethod
    def _task(call: CallActivity, record: Record | None) -> dict[str, Any]:
        inbound = call.direction == "inbound"
        subject = call.subject or f"{'Inbound' if inbound else 'Outbound'} call {'from' if inbound else 'to'} " \
                                  f"{call.external_number}"  # fmt: skip
        lines = [call.description] if call.description else []
        lines.append(f"Asterisk call id: {call.call_id}")
        if call.extension:
            lines.append(f"Extension: {call.extension}")
        lines.append(
            f"Started: {call.started_at.isoformat()}; ringing {call.ring_seconds} s, talk {call.talk_seconds} s"
        )
        if call.recording:
            lines.append(f"Recording: {call.recording}")
        task: dict[str, Any] = {
            "Subject": subject[:255],
            "TaskSubtype": "Call",
            "CallType": "Inbound" if inbound else "Outbound",
            "CallDurationInSeconds": max(0, int(call.talk_seconds)),
            "CallObject": call.call_id[:255],
            "CallDisposition": call.outcome.capitalize(),
            "Status": "Completed",
            "ActivityDate": call.started_at.date().isoformat(),
            "Description": "\n".join(lines),
        }
        if record is not None:
            task["WhatId" if record.module == "Account" else "WhoId"] = record.id
        return task

    # --- errors -------------------------------------------------------------------------------

    def vendor_message(self, response: CappedResponse) -> str:
        code, message = _sf_error(response)
        if message:
            return f"{code}: {message}" if code else message
        return super().vendor_message(response)

    def error_for(self, response: CappedResponse, operation: str) -> ConnectorError:
        status = response.status_code
        code, message = _sf_error(response)
        args = {"kind": self.kind, "operation": operation}
        if code == "REQUEST_LIMIT_EXCEEDED":
            if self.budget is not None:  # the allocation is spent: no call asks again until it frees up
                for quota in self.budget.quotas:
                    if quota.quota.window_s == 86_400:
                        quota.sync(quota.limit, None)
            return RateLimited(f"Salesforce API request limit exceeded ({operation}): {message}",
                               reason="quota_exhausted", **args)  # fmt: skip
        if code == "INVALID_FIELD" or code == "INVALID_QUERY_FILTER_OPERATOR":
            missing = _NO_COLUMN.search(message)
            if missing:
                return UnexpectedResponse(
                    f"field {missing[1]} does not exist on {missing[2]}", reason="unknown_field", **args
                )
            relation = _NO_RELATION.search(message)
            if relation:
                return UnexpectedResponse(f"relationship {relation[1]} does not exist (use the __r name for custom "
                                          "lookups, e.g. Parent__r.Name)", reason="unknown_field", **args)  # fmt: skip
            if "should not be enclosed in quotes" in message:
                return UnexpectedResponse(f"Salesforce: {message.strip()}", reason="not_text", **args)
        if code == "INVALID_TYPE":
            return UnexpectedResponse(f"Salesforce: {_last_line(message)}", reason="unknown_object", **args)
        if code == "INVALID_SESSION_ID":
            return AuthError(f"Salesforce rejected the session ({operation}): {message}", reason="auth", **args)
        if status >= 500:
            return ConnectorUnavailable(f"Salesforce answered HTTP {status} to {operation}"
                                        + (f": {code or message}" if (code or message) else ""),
                                        reason=f"http_{status}", **args)  # fmt: skip
        if code and status not in (401, 403):
            return UnexpectedResponse(f"Salesforce answered HTTP {status} to {operation}: {code}: "
                                      f"{_last_line(message)}", reason=f"http_{status}", **args)  # fmt: skip
        return super().error_for(response, operation)


def phone_terms(number: str, region: str) -> list[str]:
    """The SOSL search terms for a caller: the national number's digits, with country code, as written at home."""
    forms = phone_forms(number, region)
    if not forms.valid:
        return [forms.digits] if len(forms.digits) >= 3 else []
    terms = forms.distinct("national_digits", "digits")
    written = digits_of(forms.national)  # with a trunk prefix where the country writes one: 020 7946 0958
    return terms + ([written] if written not in terms else [])


def jwt_audience(login_url: str) -> str:
    """The JWT ``aud``: the login server itself, or for a My Domain the login server it stands for."""
    host = login_url.removeprefix("https://").split("/", 1)[0].lower()
    if host.endswith(".sandbox.my.salesforce.com"):
        return "https://test.salesforce.com"
    if host.endswith(".my.salesforce.com"):
        return "https://login.salesforce.com"
    return login_url


def soql_literal(value: str) -> str:
    """``value`` as a quoted SOQL string literal."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
    return f"'{escaped}'"


def _sf_error(response: CappedResponse) -> tuple[str, str]:
    try:
        data = json.loads(response.text)
    except ValueError:
        return "", ""
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return str(data[0].get("errorCode") or ""), str(data[0].get("message") or "")
    if isinstance(data, dict) and ("errorCode" in data or "message" in data):
        return str(data.get("errorCode") or ""), str(data.get("message") or "")
    return "", ""


def _last_line(message: str) -> str:
    """Salesforce quotes the query above the reason; the reason is the last line."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "")[:300]


def _plain(value: SecretStr | str | None) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value or ""


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
