"""Proprietary CRM I: an in-house CRM with a session-token login and form-encoded requests, by settings.

The same template machinery as ``proprietary`` (URL templates with RFC 6570
level 1 encoding, JSON paths, modules, pick, call log: see that module's
docstring), for the older style of in-house API that SPEC section 4 and
reference section 12 call "Proprietary CRM I": log in with a form, get a
session token, send it on every request, log in again when it is refused.
There is no vendor: every shape is the integrator's, described by settings.

Login (``_login``)
    ``POST login_url`` with ``Content-Type: application/x-www-form-urlencoded``:
    ``{username_field}=<username>&{password_field}=<password>`` plus the fixed
    fields of ``login_form`` (e.g. ``client=crmroute&lang=en``). A rule's CRM
    Username/Password replace ``username``/``password`` (the pool keeps one
    session per rule user). The answer is JSON: the token is read at
    ``token_path`` (``session_id``, ``result.sessionName``, ``data.token`` ...),
    its lifetime in seconds at ``expires_path`` when the CRM says it (the
    session is then renewed a minute before it ends, or at half the life of a
    short one); otherwise it is used until refused. A 400/401/403, or a 200
    whose ``success_path`` flag says failure, is ``AuthError("login refused:
    <the CRM's message>")``; a 200 without a token at ``token_path`` is
    ``UnexpectedResponse`` naming the path to fix.

The session token (``token_in``)
    ``header``: ``<token_name>: <token_prefix> <token>`` (``Authorization:
    Bearer <token>`` by default; an empty prefix sends the bare token, e.g.
    ``X-Session-Id: <token>``); ``query``: ``?<token_name>=<token>`` added to
    every request's URL (never logged: logged URLs drop their query).
    Re-login: a 401 — or, with ``session_error`` set, any failure answer (non-2xx,
    or a 2xx whose ``success_path`` flag says failure) whose body contains that
    text, e.g. ``INVALID_SESSION`` — logs in again once and repeats the request;
    concurrent calls that saw the same stale session share one login.

Requests
    ``method`` ``POST`` (default): the form template (``lookup_form``,
    ``log_lookup_form``, ``log_form``, ``create_form``) is sent form-encoded
    as the body; ``GET``: the same fields go in the query string (each value
    percent-encoded). Logging and creating always POST. A form template is
    ``name=value`` pairs joined by ``&`` (percent-escapes allowed), with the
    placeholders of ``proprietary`` in names or values; it is split into pairs
    first and the values put in afterwards, so a value containing ``&`` or
    ``=`` stays one value. Lookups use ``lookup_form`` for numbers and typed
    keys alike: ``{search_field}={key}`` searches ``phone_field`` with the number
    (each field of a list such as ``phone,mobile`` in turn: such back ends take
    one criterion per search), or ``key_field`` (``id`` when empty) with the
    typed digits.

Modules, phone forms, pick and answers: as ``proprietary`` (``phone_forms``
tried in order until one finds a record; ``records_path``, ``id_path``,
``fields_path``, ``modified_path``, ``total_path``, ``success_path``,
``error_path``). Session-token APIs often answer errors with HTTP 200 and a flag,
hence ``success_path``.

Call log: ``log_form`` POSTed to ``log_url``, after ``log_lookup_url`` +
``log_lookup_form`` found no activity carrying the call id (required: a form
POST is not idempotent by itself); an unknown number becomes a record through
``create_url`` + ``create_form`` when the log options say so. Ids are read as
in ``proprietary``.

Limits: no published budget, no pace; at most 5 requests in flight (session-based
PHP back ends are often single-threaded per session). 429/503 with
``Retry-After`` as everywhere.

Checked with public sources: nothing vendor-specific exists to check (the PBXware
manuals name "Proprietary CRM I" without a wire format); form encoding follows
the WHATWG URL standard's application/x-www-form-urlencoded serializer (what
``urllib.parse.urlencode`` writes: space as ``+``).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlencode

from pydantic import Field, SecretStr, field_validator, model_validator

from crmroute.connectors._http import CappedResponse
from crmroute.connectors.base import Token
from crmroute.connectors.proprietary import (
    CREATE_NAMES,
    LOG_NAMES,
    LOOKUP_NAMES,
    TemplateConnector,
    TemplateSettings,
    check_form_template,
    check_path,
    check_url_template,
    fill_form,
    get_path,
    parse_form,
    with_query,
)
from crmroute.deadline import Deadline
from crmroute.errors import AuthError, UnexpectedResponse

logger = logging.getLogger(__name__)

DEFAULT_LOOKUP_FORM = "module={module}&{search_field}={key}&fields={field}"
DEFAULT_LOG_FORM = (
    "call_id={call_id}&record_id={record_id}&module={module}&direction={direction}&outcome={outcome}"
    "&number={number}&started_at={started_at}&ring_seconds={ring_seconds}&talk_seconds={talk_seconds}"
    "&extension={extension}&recording={recording}&subject={subject}&description={description}"
)
DEFAULT_LOG_LOOKUP_FORM = "call_id={call_id}"
DEFAULT_CREATE_FORM = "name={number}&phone={number}"

_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HEADER_SAFE = re.compile(r"^[\x20-\x7e]+$")
_ANY_4XX = tuple(status for status in range(400, 500) if status != 429)  # 429 stays the framework's


class ProprietaryOneSettings(TemplateSettings):
    login_url: str = Field(description="https URL the login form is POSTed to, e.g. https://crm.example.com/api/login")
    username: str = Field(description="The user crmroute logs in as (a rule's CRM Username replaces it)")
    password: SecretStr = Field(description="That user's password (a rule's CRM Password replaces it)")
    username_field: str = Field("username", description="Name of the login form's user field, e.g. user or login")
    password_field: str = Field("password", description="Name of the login form's password field, e.g. pass")
    login_form: str = Field("", description="Other fixed login fields, e.g. client=crmroute&lang=en")
    token_path: str = Field("token", description="JSON path to the session token in the login answer, e.g. data.session_id")
    expires_path: str = Field(
        "", description="JSON path to the session's lifetime in seconds in the login answer, e.g. data.ttl; "
        "empty: used until refused"
    )  # fmt: skip
    token_in: Literal["header", "query"] = Field(
        "header", description="header: sent as <token_name>: <token_prefix> <token>; query: as ?<token_name>=<token>"
    )
    token_name: str = Field("Authorization", description="The header or query parameter carrying the token, e.g. X-Session-Id or sid")
    token_prefix: str = Field("Bearer", description="header: text before the token, e.g. Bearer or Session; empty: the bare token")
    session_error: str = Field(
        "", description="Text in a failure answer that means the session expired (e.g. INVALID_SESSION): "
        "log in again once, as after a 401"
    )  # fmt: skip
    method: Literal["GET", "POST"] = Field(
        "POST", description="POST: lookup forms go form-encoded in the body; GET: in the query string"
    )
    lookup_form: str = Field(
        DEFAULT_LOOKUP_FORM, description="Form fields of a lookup ({phone} {key} {search_field} {module} {field}), "
        "e.g. action=search&module={module}&{search_field}={key}"
    )  # fmt: skip
    log_form: str = Field(DEFAULT_LOG_FORM, description="Form fields of a logged call (see log_url for placeholders)")
    log_lookup_form: str = Field(DEFAULT_LOG_LOOKUP_FORM, description="Form fields that find a logged call by {call_id}")
    create_form: str = Field(DEFAULT_CREATE_FORM, description="Form fields of a record created for an unknown number")

    @field_validator("login_url")
    @classmethod
    def _login_url(cls, value: str) -> str:
        return check_url_template(value, ())

    @field_validator("login_form")
    @classmethod
    def _login_form(cls, value: str) -> str:
        return check_form_template(value, ())

    @field_validator("lookup_form")
    @classmethod
    def _lookup_form(cls, value: str) -> str:
        return check_form_template(value, LOOKUP_NAMES)

    @field_validator("log_form", "log_lookup_form")
    @classmethod
    def _log_form(cls, value: str) -> str:
        return check_form_template(value, LOG_NAMES)

    @field_validator("create_form")
    @classmethod
    def _create_form(cls, value: str) -> str:
        return check_form_template(value, CREATE_NAMES)

    @field_validator("token_path", "expires_path")
    @classmethod
    def _paths(cls, value: str) -> str:
        return check_path(value)

    @field_validator("username_field", "password_field", "token_name")
    @classmethod
    def _names(cls, value: str) -> str:
        if not value:
            raise ValueError("is required")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "ProprietaryOneSettings":
        if not self.token_path:
            raise ValueError("token_path is required: where the login answer keeps the session token")
        if self.token_in == "header":
            if not _HEADER_NAME.match(self.token_name):
                raise ValueError("token_name must be a header name (letters, digits and !#$%&'*+-.^_`|~) when "
                                 "token_in is header")  # fmt: skip
            if self.token_prefix and not _HEADER_SAFE.match(self.token_prefix):
                raise ValueError("token_prefix must be printable ASCII")
        if self.log_url and not self.log_lookup_url:
            raise ValueError("log_url needs log_lookup_url (with log_lookup_form), so a call is never logged twice")
        if self.username_field == self.password_field:
            raise ValueError("username_field and password_field must differ")
        return self


class ProprietaryOneConnector(TemplateConnector):
    kind = "proprietary1"
    title = "Proprietary CRM I"
    docs_url = "https://url.spec.whatwg.org/#application/x-www-form-urlencoded"
    Settings = ProprietaryOneSettings
    max_concurrency = 5
    limits_source = "your own API: none published"

    settings: ProprietaryOneSettings

    # --- the session ----------------------------------------------------------------------------

    async def _login(self, *, deadline: Deadline) -> Token:
        settings = self.settings
        user = self.username or settings.username
        password = self.password or settings.password.get_secret_value()
        form = parse_form(settings.login_form) + [(settings.username_field, user), (settings.password_field, password)]
        started = time.monotonic()
        response = await self.request(
            "POST", settings.login_url, auth=False, deadline=deadline, operation="authenticate", ok=_ANY_4XX,
            headers={"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"},
            content=urlencode(form).encode(),
        )  # fmt: skip
        try:
            data = json.loads(response.content or b"null")
        except ValueError:
            data = None
        status = response.status_code
        refused = status in (400, 401, 403) or (200 <= status < 300 and self._failure(data) is not None)
        if refused:
            message = self._failure(data) if 200 <= status < 300 else self.vendor_message(response)
            raise AuthError(f"{self.title}: login refused: {message or f'HTTP {status}'}", kind=self.kind,
                            operation="authenticate", reason=f"http_{status}")  # fmt: skip
        if status >= 300:
            raise self.error_for(response, "authenticate")
        if data is None and response.content.strip():
            raise UnexpectedResponse(f"{self.title}: the login answer is not JSON", kind=self.kind,
                                     operation="authenticate", reason="bad_json")  # fmt: skip
        token = get_path(data, settings.token_path)
        if isinstance(token, int) and not isinstance(token, bool):
            token = str(token)
        if not isinstance(token, str) or not token.strip():
            raise UnexpectedResponse(f"{self.title}: the login answer has no session token at "
                                     f"'{settings.token_path}' (check token_path)", kind=self.kind,
                                     operation="authenticate", reason="bad_token")  # fmt: skip
        if not _HEADER_SAFE.match(token):
            raise UnexpectedResponse(f"{self.title}: the session token holds characters a request cannot carry",
                                     kind=self.kind, operation="authenticate", reason="bad_token")  # fmt: skip
        lifetime = get_path(data, settings.expires_path) if settings.expires_path else None
        if isinstance(lifetime, str) and lifetime.strip().isdigit():
            lifetime = int(lifetime)
        seconds = float(lifetime) if isinstance(lifetime, (int, float)) and not isinstance(lifetime, bool) else 0.0
        logger.debug("%s: logged in, session for %s", self.kind, f"{seconds:.0f} s" if seconds > 0 else "until refused")
        return Token(token.strip(), started + seconds if seconds > 0 else None, issued_at=started)

    async def _relogin(self, used: Token, *, deadline: Deadline) -> None:
        """Log in again after ``used`` was refused, unless another call already did."""
        async with self._auth_lock:
            current = self._token
            if current is not None and current is not used and current.fresh():
                return
            self._token = await self._login(deadline=deadline)

    def _session_expired(self, response: CappedResponse) -> bool:
        if response.status_code == 401:
            return True
        marker = self.settings.session_error.strip().casefold()
        if not marker or marker not in response.text.casefold():
            return False
        if not 200 <= response.status_code < 300:
            return True
        try:
            return self._failure(json.loads(response.text)) is not None
        except ValueError:
            return False

    # --- requests ---------------------------------------------------------------------------------

    def _plan(self, what: str) -> tuple[str, str, str | None]:
        settings = self.settings
        if what in ("lookup", "key_lookup"):
            return settings.method, settings.lookup_url, settings.lookup_form
        if what == "log_lookup":
            return settings.method, settings.log_lookup_url, settings.log_lookup_form
        if what == "log":
            return "POST", settings.log_url, settings.log_form
        if what == "create":
            return "POST", settings.create_url, settings.create_form
        raise ValueError(what)

    def _payload(self, template: str, values: Mapping[str, Any], typed: Mapping[str, Any]) -> Any:
        return fill_form(template, values)

    async def _send(
        self, method: str, url: str, payload: Any, *, deadline: Deadline, operation: str, ok: Sequence[int],
        headers: Mapping[str, str],
    ) -> CappedResponse:  # fmt: skip
        settings = self.settings
        pairs: list[tuple[str, str]] = list(payload or [])
        for attempt in (1, 2):
            token = await self.authenticate(deadline=deadline)
            target = url
            sent = {"Accept": "application/json", **headers}
            if settings.token_in == "query":
                target = with_query(target, [(settings.token_name, token.value)])
            else:
                sent[settings.token_name] = f"{settings.token_prefix} {token.value}" if settings.token_prefix \
                    else token.value  # fmt: skip
            kwargs: dict[str, Any] = {}
            if method == "GET":
                target = with_query(target, pairs)
            else:
                sent["Content-Type"] = "application/x-www-form-urlencoded"
                kwargs["content"] = urlencode(pairs).encode()
            response = await self.request(method, target, auth=False, deadline=deadline, operation=operation,
                                          ok=_ANY_4XX, headers=sent, **kwargs)  # fmt: skip
            if attempt == 1 and self._session_expired(response):
                logger.info("%s: session refused (%s), logging in again", self.kind, operation)
                await self._relogin(token, deadline=deadline)
                continue
            if not 200 <= response.status_code < 300 and response.status_code not in ok:
                raise self.error_for(response, operation)
            return response
        raise AssertionError("unreachable")  # pragma: no cover
