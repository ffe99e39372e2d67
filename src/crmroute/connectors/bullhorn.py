"""Bullhorn (REST API): OAuth authorization code for the API user, ``/rest-services/login``, Lucene search, Notes.

Authentication (reference section 2; Bullhorn's "Getting started with the REST API" and
``_login.md``), three hops, each on the host the previous one names:
    1. where: ``GET {login_info_url}?username=<API user>`` (default
       ``https://rest.bullhornstaffing.com/rest-services/loginInfo``) answers the user's
       data-centre ``oauthUrl`` and ``restUrl``; setting ``auth_url`` and ``rest_login_url``
       (e.g. ``https://auth-west.bullhornstaffing.com/oauth`` and
       ``https://rest-west.bullhornstaffing.com/rest-services``, or the sandbox
       ``auth9``/``rest9``) skips it.
    2. OAuth: the server-side authorization-code exchange Bullhorn documents for
       integrations: ``{oauthUrl}/authorize`` with ``client_id``, ``response_type=code``,
       ``action=Login``, ``username``, ``password`` [, ``redirect_uri``] answers a redirect whose
       ``Location`` carries ``code`` (a 307/308 to another data centre is followed); then
       ``{oauthUrl}/token`` with ``grant_type=authorization_code``, ``code``, ``client_id``,
       ``client_secret`` [, ``redirect_uri``] gives ``access_token`` (10 minutes, only used to
       log in), ``expires_in`` and a ``refresh_token``. Bullhorn's pages show these parameters
       in the query string; they are sent as a form-encoded POST body instead (RFC 6749
       2.3.1: a client secret must not be in the URI; integrations POST the authorize form
       and Bullhorn's Java OAuth server reads servlet parameters from either place; reading
       the token parameters from the body is **unconfirmed** against a live tenant). A
       rule's CRM Username/Password replace the integration's API user.
    3. REST session: ``POST {restUrl}/login?version=2.0&access_token=&ttl=<session_minutes>``
       gives ``BhRestToken`` and the customer's own ``restUrl``
       (``https://rest<N>.bullhornstaffing.com/rest-services/<corpToken>/``): every API call
       goes there, with the ``BhRestToken`` header.
    Renewal: the session is renewed a minute before ``session_minutes`` run out (the
    session's default length is unconfirmed, so ``ttl`` is always sent; ``ping`` is not
    needed), or after a 401 "Bad 'BhRestToken' or timed-out." (once). Renewal first spends
    the refresh token (``grant_type=refresh_token``) for a new access token, then logs in
    again. Refresh tokens are single use (each refresh returns the next one and kills the
    previous), so the current one lives in memory only and renewals are serialised; a
    refused refresh token falls back to the authorization-code exchange once, and if that
    fails too the ``AuthError`` says "token rejected: refresh token revoked or expired" and
    why the password login failed. An authorize page that answers without a code means the
    username/password were refused (or the API user never accepted the terms of service in a
    browser). Missing session: 412; ``errorMessage``/``errorMessageKey`` bodies are shown.

Modules: accounts -> ``ClientCorporation``, contacts -> ``ClientContact`` and/or
``Candidate`` (``contact_entities``: staffing firms are called by candidates as much as by
client contacts; both are searched at once and the newest match wins), leads -> ``Lead``.

Finding a record
    Phone keys: ``GET {restUrl}search/{Entity}?query=<lucene>&fields=...&count=20&sort=
    -dateLastModified``, one request per entity (sent at once). Bullhorn documents no phone
    normalisation and its index's treatment of formatted values is unconfirmed; integrations
    search the national significant number on every phone field (reference phone appendix:
    "national significant number"), so the query is ``(phone:4155552671 OR
    phone:14155552671 OR mobile:... OR phone2:... OR phone3:... [OR workPhone:...]) AND
    isDeleted:false`` over ClientContact/Lead ``phone``, ``mobile``, ``phone2``, ``phone3``,
    Candidate also ``workPhone``, ClientCorporation ``phone`` (no ``isDeleted``): the national
    number, with the country code, and as written at home (a trunk-prefixed GB
    ``02079460958``).
    Typed (DTMF) keys: ``<key_field>:"12345"`` (e.g. ``externalID`` or a ``customText``
    field), or ``id:12345`` with no ``key_field``.
    The asked fields come back in the same request; dotted names read to-one associations
    through Bullhorn's sub-field syntax: ``clientCorporation.name`` asks
    ``clientCorporation(name)``, ``owner.email`` asks ``owner(email)``. Several matches
    give the ``match_pick`` record by ``dateLastModified`` (epoch milliseconds).
    Requests per uncached call, once signed in: 1 (accounts, leads, and contacts with
    one ``contact_entities``); 2 for contacts with both, because ``search/{Entity}``
    searches one entity per request and the newest match across both must win (the two
    go out together, so the call waits for one round trip). A new session costs 3
    requests (authorize, token, REST login; 4 with ``loginInfo``), renewed only when it
    runs out. QA's 1.8 per call fits contacts' second entity; a CLI dry run's 5-6 is a
    fresh login each run (no stored session), not the search.

Call log: ``PUT {restUrl}entity/Note`` with ``personReference: {id}`` (which also makes
the NoteEntity link), ``action`` (``note_action_inbound``/``note_action_outbound``: they
must be values of the tenant's ``settings/commentActionList``), ``comments``,
``minutesSpent``, ``dateAdded`` (epoch ms) and ``externalID`` = the Asterisk call id; the
answer's ``changedEntityId`` is the Note id. Idempotent: the person's 50 newest notes
(``GET entity/{Entity}/{id}/notes?fields=id,externalID&count=50&orderBy=-dateAdded``, the
documented to-many association GET; its ``orderBy`` on Notes is unconfirmed) are checked
for the call id first: Note search goes through a lagging index and ``query/Note`` is not
supported. A Note needs
a person: a ClientCorporation found in routing, or no record, means a lookup by number in
the contact entities and Lead; an unknown caller becomes a Lead (or a Candidate,
``create_as``) when the log options ask, else the call is not logged (``""`` returned).

Errors: ``{"errorMessage", "errorMessageKey", "errorCode"}``; OAuth errors
``{"error", "error_description"}``. A search naming a field the entity lacks (Bullhorn
answers 400/404) becomes "field X does not exist on Candidate". 401/403/412 are
``AuthError``, 429 ``RateLimited`` (``Retry-After`` waited out when it fits).

Limits: Bullhorn publishes no numeric limit (unconfirmed); responses carry
``ratelimit-limit``/``ratelimit-remaining``/``ratelimit-reset``, kept in ``rate_limit`` and
warned about under 10 %. So no pace and no quota: only the concurrency limit, and a 429
pauses the integration for its ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Sequence
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import parse_qs, urljoin, urlsplit

from pydantic import Field, SecretStr, field_validator

from crmroute.connectors._http import CappedResponse
from crmroute.connectors._phone import digits_of, phone_forms
from crmroute.connectors.base import (
    CallActivity,
    Connector,
    ConnectorSettings,
    Record,
    Token,
    https_url,
    lookup_path,
)
from crmroute.deadline import Deadline
from crmroute.errors import AuthError, ConnectorError, UnexpectedResponse
from crmroute.connectors.base import USER_LIST_BYTES, CrmUser
from crmroute.routing.engine import LookupKey

logger = logging.getLogger(__name__)

API_VERSION = "2.0"
SEARCH_COUNT = 20
NOTES_COUNT = 50
MODIFIED = "dateLastModified"
MAX_HOPS = 3  # redirects followed to the user's data centre
PHONE_FIELDS = {
    "ClientContact": ("phone", "mobile", "phone2", "phone3"),
    "Candidate": ("phone", "mobile", "phone2", "phone3", "workPhone"),
    "Lead": ("phone", "mobile", "phone2", "phone3"),
    "ClientCorporation": ("phone",),
}
SOFT_DELETED = {"ClientContact", "Candidate", "Lead"}  # entities with isDeleted
PERSONS = ("ClientContact", "Candidate", "Lead")
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class BullhornSettings(ConnectorSettings):
    client_id: str = Field(..., min_length=1, description="OAuth client id of the API key Bullhorn support issued")
    client_secret: SecretStr = Field(..., description="OAuth client secret of that API key")
    username: str = Field("", description="Bullhorn API user (a rule's CRM Username wins)")
    password: SecretStr | None = Field(None, description="The API user's password (a rule's CRM Password wins)")
    login_info_url: str = Field(
        "https://rest.bullhornstaffing.com/rest-services/loginInfo",
        description="Where to ask for the user's data centre (loginInfo); used when auth_url or rest_login_url "
        "is empty",
    )
    auth_url: str = Field(
        "", description="OAuth base URL, e.g. https://auth-west.bullhornstaffing.com/oauth (sandbox: "
        "https://auth9.bullhornstaffing.com/oauth); empty: from loginInfo"
    )  # fmt: skip
    rest_login_url: str = Field(
        "", description="REST login base URL, e.g. https://rest-west.bullhornstaffing.com/rest-services; empty: "
        "from loginInfo"
    )  # fmt: skip
    redirect_uri: str = Field("", description="Redirect URI registered on the API key, if Bullhorn requires one")
    session_minutes: int = Field(60, ge=1, le=2880, description="REST session length asked at login (ttl), minutes")
    contact_entities: Literal["ClientContact,Candidate", "ClientContact", "Candidate"] = Field(
        "ClientContact,Candidate", description="What the contacts module searches: client contacts, candidates, "
        "or both"
    )  # fmt: skip
    note_action_inbound: str = Field(
        "Inbound Call", description="Note action for inbound calls (one of the tenant's commentActionList)"
    )
    note_action_outbound: str = Field(
        "Outbound Call", description="Note action for outbound calls (one of the tenant's commentActionList)"
    )
    create_as: Literal["leads", "candidates"] = Field(
        "leads", description="What to create for an unknown caller when the log options ask for it"
    )
    new_record_status: str = Field("", description="status of a Lead/Candidate created for an unknown caller")

    @field_validator("login_info_url", "auth_url", "rest_login_url")
    @classmethod
    def _https(cls, value: str) -> str:
        return https_url(value)


class BullhornConnector(Connector):
    kind = "bullhorn"
    title = "Bullhorn"
    docs_url = "https://bullhorn.github.io/rest-api-docs/"
    Settings = BullhornSettings
    MODULES = {"accounts": "ClientCorporation", "contacts": "ClientContact", "leads": "Lead"}
    limits_source = "none published (reference section 2); ratelimit-* headers watched"
    owner_field = "owner"

    settings: BullhornSettings

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rate_limit: tuple[int, int] | None = None  # (remaining, limit) from the ratelimit-* headers
        self._endpoints: tuple[str, str] | None = None  # (oauth url, rest login url)
        self._unknown: set[tuple[str, str]] = set()  # (entity, field) an entity was found to lack

    # --- auth ----------------------------------------------------------------------------------

    def _auth_headers(self, token: Token) -> dict[str, str]:
        return {"BhRestToken": token.value}

    def _credentials(self) -> tuple[str, str]:
        username = self.username or self.settings.username
        password = self.password or _plain(self.settings.password)
        if not username or not password:
            raise AuthError("Bullhorn needs the API user's username and password", kind=self.kind,
                            operation="authenticate", reason="misconfigured")  # fmt: skip
        return username, password

    async def _login(self, *, deadline: Deadline) -> Token:
        access, refused = "", None
        refresh = self.refresh_token()  # the current single-use refresh token, shared through the store
        if refresh:
            self._refresh_state = ""
            try:
                access = await self._oauth_token({"grant_type": "refresh_token", "refresh_token": refresh},
                                                 deadline=deadline)  # fmt: skip
            except AuthError as exc:
                refused = exc
                logger.info("bullhorn: refresh token refused; logging the API user in again")
        if not access:
            try:
                code = await self._authorize(deadline=deadline)
                grant = {"grant_type": "authorization_code", "code": code}
                if self.settings.redirect_uri:
                    grant["redirect_uri"] = self.settings.redirect_uri
                access = await self._oauth_token(grant, deadline=deadline)
            except AuthError as exc:
                if refused is None:
                    raise
                raise AuthError(f"{refused}; logging in with the password failed too: {exc}", kind=self.kind,
                                operation="authenticate", reason=exc.reason) from exc  # fmt: skip
        return await self._rest_login(access, deadline=deadline)

    async def _where(self, *, deadline: Deadline) -> tuple[str, str]:
        s = self.settings
        if s.auth_url and s.rest_login_url:
            return s.auth_url, s.rest_login_url
        if self._endpoints is None:
            username, _ = self._credentials()
            response = await self.request("GET", s.login_info_url, params={"username": username},
                                          headers={"Accept": "application/json"}, deadline=deadline,
                                          operation="authenticate", auth=False)  # fmt: skip
            body = self.json_of(response, "authenticate")
            oauth, rest = (body.get("oauthUrl"), body.get("restUrl")) if isinstance(body, dict) else (None, None)
            if not isinstance(oauth, str) or not isinstance(rest, str) or not oauth.startswith("https://"):
                raise UnexpectedResponse("Bullhorn's loginInfo did not name the user's oauthUrl and restUrl",
                                         kind=self.kind, operation="authenticate", reason="bad_response")  # fmt: skip
            self._endpoints = (oauth.rstrip("/"), rest.rstrip("/"))
        return s.auth_url or self._endpoints[0], s.rest_login_url or self._endpoints[1]

    async def _authorize(self, *, deadline: Deadline) -> str:
        username, password = self._credentials()
        oauth, _ = await self._where(deadline=deadline)
        params = {"client_id": self.settings.client_id, "response_type": "code", "action": "Login",
                  "username": username, "password": password}  # fmt: skip
        if self.settings.redirect_uri:
            params["redirect_uri"] = self.settings.redirect_uri
        url = f"{oauth}/authorize"
        for _ in range(MAX_HOPS + 1):  # a form POST keeps the password out of URLs (and 307/308 keep the body)
            response = await self.request("POST", url, data=params, deadline=deadline, operation="authenticate",
                                          auth=False, ok=(200, 301, 302, 303, 307, 308, 400, 401, 403))  # fmt: skip
            location = response.headers.get("location", "")
            query = parse_qs(urlsplit(location).query)
            if response.status_code in (301, 302, 303, 307, 308) and query.get("code"):
                return query["code"][0]
            if query.get("error"):
                detail = (query.get("error_description") or query["error"])[0]
                raise AuthError(f"Bullhorn refused the authorization: {detail}", kind=self.kind,
                                operation="authenticate", reason="auth")  # fmt: skip
            if response.status_code in (307, 308) and location:
                url = urljoin(url, location)  # the user's own data centre
                continue
            break
        detail = self.vendor_message(response) if response.status_code >= 400 else ""
        raise AuthError("Bullhorn did not accept the API user's username/password (the authorize step answered "
                        f"HTTP {response.status_code} without a code"
                        + (f": {detail}" if detail else "; has the API user accepted the terms of service in a "
                           "browser?") + ")", kind=self.kind, operation="authenticate", reason="auth")  # fmt: skip

    async def _oauth_token(self, grant: dict[str, str], *, deadline: Deadline) -> str:
        oauth, _ = await self._where(deadline=deadline)
        s = self.settings
        params = grant | {"client_id": s.client_id, "client_secret": s.client_secret.get_secret_value()}
        response = await self.request("POST", f"{oauth}/token", data=params, headers={"Accept": "application/json"},
                                      deadline=deadline, operation="authenticate", auth=False,
                                      ok=(400, 401, 403))  # fmt: skip
        body = _json(response)
        if response.status_code != 200 or not isinstance(body, dict) or not body.get("access_token"):
            error = str(body.get("error") or "") if isinstance(body, dict) else ""
            detail = str(body.get("error_description") or "") if isinstance(body, dict) else ""
            why = detail or error or f"HTTP {response.status_code}"
            if grant["grant_type"] == "refresh_token":
                text = f"Bullhorn token rejected: refresh token revoked or expired ({why})"
            elif error == "invalid_client":
                text = f"Bullhorn refused the API key: {why} (check client_id and client_secret)"
            else:
                text = f"Bullhorn refused the {grant['grant_type']} token request: {why}"
            raise AuthError(text, kind=self.kind, operation="authenticate", reason="auth")
        self._refresh_state = str(body.get("refresh_token") or "")  # saved with the session, before it is used
        return str(body["access_token"])

    async def _rest_login(self, access_token: str, *, deadline: Deadline) -> Token:
        _, rest = await self._where(deadline=deadline)
        minutes = self.settings.session_minutes
        params = {"version": API_VERSION, "access_token": access_token, "ttl": str(minutes)}
        response = await self.request("POST", f"{rest}/login", params=params, headers={"Accept": "application/json"},
                                      deadline=deadline, operation="authenticate", auth=False,
                                      ok=(400, 401, 403))  # fmt: skip
        body = _json(response)
        token, rest_url = (body.get("BhRestToken"), body.get("restUrl")) if isinstance(body, dict) else (None, None)
        if response.status_code != 200 or not isinstance(token, str) or not isinstance(rest_url, str):
            detail = self.vendor_message(response) or f"HTTP {response.status_code}"
            raise AuthError(f"Bullhorn refused the REST login: {detail}", kind=self.kind, operation="authenticate",
                            reason="auth")  # fmt: skip
        if not rest_url.startswith("https://"):
            raise UnexpectedResponse("Bullhorn's login answered a restUrl that is not https", kind=self.kind,
                                     operation="authenticate", reason="bad_response")  # fmt: skip
        logger.debug("bullhorn: REST session for %d minutes", minutes)
        return Token(token, time.monotonic() + minutes * 60, {"rest_url": rest_url.rstrip("/") + "/"})

    # --- plumbing ----------------------------------------------------------------------------------

    async def verify(self, *, deadline: Deadline) -> str:
        """``GET {restUrl}ping``: the REST session's expiry, the cheapest call that needs the BhRestToken."""
        _, data = await self._api("GET", "ping", deadline=deadline, operation="verify")
        expires = lookup_path(data, "sessionExpires")
        if isinstance(expires, (int, float)) and not isinstance(expires, bool):
            when = datetime.fromtimestamp(expires / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            return f"REST session accepted, valid until {when}"
        return "REST session accepted"

    async def _api(self, method: str, path: str, *, deadline: Deadline, operation: str, ok: Sequence[int] = (),
                   **kwargs: Any) -> tuple[int, Any]:  # fmt: skip
        token = await self.authenticate(deadline=deadline)
        response = await self.request(method, token.extra["rest_url"] + path, deadline=deadline, operation=operation,
                                      headers={"Accept": "application/json"}, ok=ok, **kwargs)  # fmt: skip
        self._note_rate(response)
        if response.status_code in ok and response.status_code >= 300:
            return response.status_code, None
        return response.status_code, self.json_of(response, operation)

    def _note_rate(self, response: CappedResponse) -> None:
        remaining, limit = response.headers.get("ratelimit-remaining", ""), response.headers.get("ratelimit-limit", "")
        if remaining.isdigit() and limit.isdigit():
            self.rate_limit = (int(remaining), int(limit))
            if int(limit) and int(remaining) < 0.1 * int(limit):
                logger.warning("bullhorn: %s of %s API requests left (resets in %s s)", remaining, limit,
                               response.headers.get("ratelimit-reset", "?"))  # fmt: skip

    # --- finding records ------------------------------------------------------------------------------

    def entities(self, module: str) -> list[str]:
        if module == "contacts":
            return self.settings.contact_entities.split(",")
        return [self.vendor_module(module)]

    async def find_record(
        self, key: LookupKey, module: str, *, fields: Sequence[str] = (), deadline: Deadline
    ) -> Record | None:
        columns = field_list(fields)
        queries = {e: self._query(e, key) for e in self.entities(module)}
        wanted = [e for e in queries if queries[e]]
        # an entity known to lack an asked field is left out while another one can answer
        wanted = [e for e in wanted if not any((e, f) in self._unknown for f in fields)] or wanted
        if not wanted:
            return None
        results = await asyncio.gather(*[self._search(e, queries[e], columns, fields, deadline=deadline)
                                         for e in wanted], return_exceptions=True)  # fmt: skip
        rows: list[dict[str, Any]] = []
        lacking: list[UnexpectedResponse] = []
        for entity, result in zip(wanted, results):
            if isinstance(result, UnexpectedResponse) and result.reason == "unknown_field" and len(wanted) > 1:
                lacking.append(result)  # e.g. clientCorporation.name on Candidate: the field is another entity's
                self._unknown.add((entity, getattr(result, "field", "")))
                continue
            if isinstance(result, BaseException):
                raise result
            rows += [dict(row, _entity=entity) for row in result]
        if lacking and len(lacking) == len(wanted):
            raise lacking[0]
        return self._record(rows)

    def _query(self, entity: str, key: LookupKey) -> str:
        if key.source == "dtmf":
            field = self.settings.key_field.strip()
            if not field:
                condition = f"id:{key.value}" if key.value.isdigit() else ""
            elif not _FIELD.match(field) or "." in field:
                raise UnexpectedResponse(f"key_field {field!r} is not a Bullhorn field name", kind=self.kind,
                                         operation="find_record", reason="bad_field")  # fmt: skip
            else:
                condition = f"{field}:{lucene_phrase(key.value)}"
        else:
            terms = phone_terms(key.value, self.region)
            either = " OR ".join(f"{f}:{t}" for f in PHONE_FIELDS[entity] for t in terms)
            condition = f"({either})" if terms else ""
        if condition and entity in SOFT_DELETED:
            condition += " AND isDeleted:false"
        return condition

    async def _search(self, entity: str, query: str, columns: str, asked: Sequence[str], *,
                      deadline: Deadline) -> list[dict[str, Any]]:  # fmt: skip
        params = {"query": query, "fields": columns, "count": str(SEARCH_COUNT)}
        if self.settings.match_pick != "first":
            params["sort"] = f"-{MODIFIED}" if self.settings.match_pick == "newest" else MODIFIED
        try:
            _, body = await self._api("GET", f"search/{entity}", params=params, deadline=deadline,
                                      operation="find_record")  # fmt: skip
        except UnexpectedResponse as exc:
            if exc.reason in ("http_400", "http_404"):
                missing = [name for name in asked
                           if any(re.search(rf"\b{re.escape(part)}\b", str(exc)) for part in name.split("."))]
                if missing:
                    error = UnexpectedResponse(f"field {missing[0]} does not exist on {entity}", kind=self.kind,
                                               operation="find_record", reason="unknown_field")  # fmt: skip
                    error.field = missing[0]  # type: ignore[attr-defined]
                    raise error from exc
            raise
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise UnexpectedResponse(f"Bullhorn sent a search answer without data for {entity}", kind=self.kind,
                                     operation="find_record", reason="bad_response")  # fmt: skip
        return [r for r in data if isinstance(r, dict) and "id" in r]

    def _record(self, rows: list[dict[str, Any]]) -> Record | None:
        if not rows:
            return None
        chosen, matches = self.pick(rows, MODIFIED)
        entity = chosen["_entity"]
        fields = {k: v for k, v in chosen.items() if k not in ("_entity", "_score")}
        return Record(module=entity, id=str(chosen["id"]), fields=fields, matches=matches)

    # --- call logging ---------------------------------------------------------------------------------

    # --- users (agents sync) -------------------------------------------------------------

    async def list_users(self, *, deadline: Deadline) -> list[CrmUser]:
        """``GET query/CorporateUser?where=enabled=true``, 500 a page by ``start`` (ordered by id) until a page
        comes back short: the ids the ``owner`` fields hold."""
        users: list[CrmUser] = []
        start = 0
        for _ in range(1000):
            params = {"where": "enabled=true", "fields": "id,firstName,lastName,email", "count": "500",
                      "start": str(start), "orderBy": "id"}  # fmt: skip
            _, data = await self._api("GET", "query/CorporateUser", params=params, deadline=deadline,
                                      operation="list_users", limit=USER_LIST_BYTES)  # fmt: skip
            rows = data.get("data") if isinstance(data, dict) else None
            if not isinstance(rows, list):
                raise UnexpectedResponse("Bullhorn sent a query answer without data", kind=self.kind,
                                         operation="list_users", reason="bad_response")  # fmt: skip
            for row in rows:
                if isinstance(row, dict) and row.get("id") is not None:
                    name = " ".join(str(row.get(k) or "").strip() for k in ("firstName", "lastName")).strip()
                    users.append(CrmUser(str(row["id"]), name, str(row.get("email") or "")))
            if len(rows) < 500:
                return users
            start += len(rows)
        return users

    async def log_call(self, call: CallActivity, options: Any, *, deadline: Deadline) -> str:
        person = call.record if call.record is not None and call.record.module in PERSONS else None
        if person is None:
            person = await self._lookup_person(call.external_number, deadline=deadline)
        if person is None and getattr(options, "create_unknown", False):
            person = await self._create_person(call.external_number, deadline=deadline)
        if person is None:
            logger.info("bullhorn: call %s not logged: a Note needs a person and none matches", call.call_id)
            return ""
        existing = await self._logged(person, call.call_id, deadline=deadline)
        if existing:
            return existing
        _, body = await self._api("PUT", "entity/Note", json=self._note(call, person), deadline=deadline,
                                  operation="log_call")  # fmt: skip
        note_id = body.get("changedEntityId") if isinstance(body, dict) else None
        if note_id is None:
            raise UnexpectedResponse("Bullhorn did not tell the new Note's id", kind=self.kind, operation="log_call",
                                     reason="bad_response")  # fmt: skip
        logger.info("bullhorn: call %s logged as Note %s on %s %s", call.call_id, note_id, person.module, person.id)
        return str(note_id)

    async def _lookup_person(self, number: str, *, deadline: Deadline) -> Record | None:
        order = [*self.settings.contact_entities.split(","), "Lead"]
        key = LookupKey(number, "caller_id")
        queries = {e: self._query(e, key) for e in order}
        if not all(queries.values()):
            return None
        found = await _first_error([self._search(e, queries[e], f"id,name,{MODIFIED}", (), deadline=deadline)
                                    for e in order])  # fmt: skip
        for entity, batch in zip(order, found):
            record = self._record([dict(row, _entity=entity) for row in batch])
            if record is not None:
                return record
        return None

    async def _create_person(self, number: str, *, deadline: Deadline) -> Record:
        forms = phone_forms(number, self.region)
        phone = forms.e164 or forms.raw
        entity = "Lead" if self.settings.create_as == "leads" else "Candidate"
        body: dict[str, Any] = {"firstName": "Unknown", "lastName": f"Caller {phone}",
                                "name": f"Unknown Caller {phone}", "phone": phone}  # fmt: skip
        if self.settings.new_record_status:
            body["status"] = self.settings.new_record_status
        _, answer = await self._api("PUT", f"entity/{entity}", json=body, deadline=deadline, operation="log_call")
        new_id = answer.get("changedEntityId") if isinstance(answer, dict) else None
        if new_id is None:
            raise UnexpectedResponse(f"Bullhorn did not tell the new {entity}'s id", kind=self.kind,
                                     operation="log_call", reason="bad_response")  # fmt: skip
        logger.info("bullhorn: created %s %s for an unknown caller", entity, new_id)
        return Record(module=entity, id=str(new_id), fields=body)

    async def _logged(self, person: Record, call_id: str, *, deadline: Deadline) -> str:
        params = {"fields": "id,externalID", "count": str(NOTES_COUNT), "orderBy": "-dateAdded"}
        status, body = await self._api("GET", f"entity/{person.module}/{person.id}/notes", params=params, ok=(404,),
                                       deadline=deadline, operation="log_call")  # fmt: skip
        notes = body.get("data") if status == 200 and isinstance(body, dict) else None
        for note in notes if isinstance(notes, list) else []:
            if isinstance(note, dict) and note.get("externalID") == call_id and note.get("id") is not None:
                return str(note["id"])
        return ""

    def _note(self, call: CallActivity, person: Record) -> dict[str, Any]:
        inbound = call.direction == "inbound"
        subject = call.subject or f"{'Inbound' if inbound else 'Outbound'} call {'from' if inbound else 'to'} " \
                                  f"{call.external_number}"  # fmt: skip
        lines = [subject]
        if call.description:
            lines.append(call.description)
        lines += [f"Outcome: {call.outcome}", f"Ringing {call.ring_seconds} s, talk {call.talk_seconds} s"]
        if call.extension:
            lines.append(f"Extension: {call.extension}")
        if call.recording:
            lines.append(f"Recording: {call.recording}")
        lines.append(f"Asterisk call id: {call.call_id}")
        s = self.settings
        return {
            "personReference": {"id": _id(person.id)},
            "action": s.note_action_inbound if inbound else s.note_action_outbound,
            "comments": "\n".join(lines),
            "minutesSpent": (max(0, call.talk_seconds) + 59) // 60,
            "dateAdded": int(call.started_at.timestamp() * 1000),
            "externalID": call.call_id[:100],
        }

    # --- errors -----------------------------------------------------------------------------------------

    def vendor_message(self, response: CappedResponse) -> str:
        body = _json(response)
        if isinstance(body, dict):
            message = str(body.get("errorMessage") or body.get("message") or "").strip()
            details = body.get("errors") if isinstance(body.get("errors"), list) else []
            extra = [str(d.get("detailMessage") or d.get("propertyName") or "") for d in details
                     if isinstance(d, dict)]  # fmt: skip
            extra = [e for e in extra if e]
            if message:
                return (message + (f" ({'; '.join(extra)})" if extra else ""))[:300]
            if body.get("error"):
                return str(body.get("error_description") or body["error"])[:300]
        return super().vendor_message(response)

    def error_for(self, response: CappedResponse, operation: str) -> ConnectorError:
        if response.status_code == 412:
            return AuthError(f"Bullhorn answered HTTP 412 to {operation}: no BhRestToken was sent", kind=self.kind,
                             operation=operation, reason="http_412")  # fmt: skip
        return super().error_for(response, operation)


def phone_terms(number: str, region: str) -> list[str]:
    """The digit strings to search: the national number, with the country code, and as written at home."""
    forms = phone_forms(number, region)
    if not forms.valid:
        return [forms.digits] if len(forms.digits) >= 4 else []
    written = digits_of(forms.national)
    return [t for t in dict.fromkeys([forms.national_digits, forms.digits, written]) if t]


def lucene_phrase(value: str) -> str:
    """``value`` as a quoted Lucene phrase."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def field_list(fields: Sequence[str]) -> str:
    """Bullhorn's ``fields``: ``id,name,dateLastModified`` and the asked ones, dotted names as ``assoc(sub)``."""
    tree: dict[str, dict] = {"id": {}, "name": {}, MODIFIED: {}}
    for name in fields:
        name = name.strip()
        if not _FIELD.match(name):
            raise UnexpectedResponse(f"{name!r} is not a Bullhorn field name", kind="bullhorn",
                                     operation="find_record", reason="bad_field")  # fmt: skip
        node = tree
        for part in name.split("."):
            node = node.setdefault(part, {})
    return _render(tree)


def _render(tree: dict[str, dict]) -> str:
    return ",".join(f"{k}({_render(v)})" if v else k for k, v in tree.items())


async def _first_error(works: list[Awaitable[Any]]) -> list[Any]:
    """Run ``works`` at once; their results, or the first failure (each is bounded by its deadline)."""
    results = await asyncio.gather(*works, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def _id(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _json(response: CappedResponse) -> Any:
    try:
        return json.loads(response.text)
    except ValueError:
        return None


def _plain(value: SecretStr | str | None) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value or ""
