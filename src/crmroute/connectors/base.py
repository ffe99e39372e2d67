"""What every CRM connector is: class data, settings, and the async operations.

A connector is a subclass of :class:`Connector` in ``connectors/<kind>.py``;
it is found by scanning the package (``connectors.registry()``), never listed.

Class data
    ``kind`` (slug), ``title``, ``docs_url``, ``Settings`` (a pydantic model
    derived from :class:`ConnectorSettings`; fields typed ``SecretStr`` are
    secrets: stored encrypted, masked in the API, UI and exports, redacted in
    logs; the UI form and ``crmroute crm kinds`` are drawn from it),
    ``MODULES`` (accounts/contacts/leads to the vendor's objects), and the
    vendor's published limits, defaults of the budget the router attaches
    (``budget``, see ``resilience/budget.py``): ``requests_per_second`` and
    ``burst`` (a pace, only where the vendor publishes one; ``None``: none),
    ``quotas`` (counted limits: per 24 h, per 5 minutes), ``max_concurrency``
    and ``limits_source`` (where the figures come from). An integration's
    settings ``requests_per_second``, ``max_concurrency`` and ``daily_quota``
    override them.

Operations (async; network ones take ``deadline=``, never outlive it)
    ``authenticate()``   get or refresh a token, cached; ``AuthError`` if refused
    ``verify()``         the vendor's cheapest authenticated request: proves the credential
    ``find_record()``    by phone (forms from ``_phone``) or typed key; ``None`` if none
    ``read_field()``     any field by API name, dotted names for nested/lookups
    ``fetch()``          find + read: what a routing rule needs
    ``test()``           the integration's Test action (authenticate, verify, look up), steps timed,
                         never raises
    ``log_call()``       one call activity linked to the record; idempotent

Every request goes through :meth:`Connector.request`: the rate budget when
one is attached (a token and a slot, waited for only within the deadline),
the shared client, the auth header, one refresh-and-retry after a 401,
``Retry-After`` waited out only when it fits the deadline (and, with a
budget, pausing every call of the integration until then), and one mapping
from vendor status codes to ``ConnectorError`` subclasses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Union, get_args, get_origin

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from crmroute.connectors._http import CappedResponse, safe_url, send_capped
from crmroute.connectors._phone import PhoneForms, phone_forms
from crmroute.deadline import Deadline
from crmroute.errors import (
    AuthError,
    ConnectorError,
    ConnectorTimeout,
    ConnectorUnavailable,
    RateLimited,
    UnexpectedResponse,
)
from crmroute.resilience.budget import Budget, Quota
from crmroute.routing.engine import LookupKey

if TYPE_CHECKING:
    from crmroute.store.credentials import SharedCredentials

logger = logging.getLogger(__name__)

MODULE_NAMES = ("accounts", "contacts", "leads")
TOKEN_MARGIN = 60.0  # refresh a token this many seconds before it expires
TEST_TIMEOUT = 15.0  # the Test action is interactive, not on a call's deadline
DEFAULT_MAX_CONCURRENCY = 10  # requests in flight to one integration, unless its settings say otherwise


class ConnectorSettings(BaseModel):
    """Settings every connector has; a kind adds its own fields."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    match_pick: Literal["newest", "oldest", "first"] = Field(
        "newest", description="When several records match: the most recently modified (newest), the oldest, "
        "or the first the CRM lists"
    )  # fmt: skip
    key_field: str = Field(
        "", description="API name of the field a typed (DTMF) key is looked up by, e.g. AccountNumber; "
        "empty: the record id"
    )  # fmt: skip
    cache_ttl_s: int | None = Field(
        None, ge=0, le=86_400, description="Seconds a value read from this CRM is reused for the same key and "
        "field (0: never; empty: CRMROUTE_CACHE_TTL_S, default 60); a rule's own setting wins"
    )  # fmt: skip
    requests_per_second: float | None = Field(
        None, gt=0, le=10_000, description="Requests per second crmroute may send to this CRM; a call that "
        "would exceed it waits within its deadline, else falls back (empty: the vendor's published pace, if any)"
    )  # fmt: skip
    daily_quota: int | None = Field(
        None, ge=0, le=100_000_000, description="Requests this CRM account allows per rolling 24 hours (your "
        "edition's API allocation); at 80 % a warning is logged, when spent calls go to the default (empty: the "
        "kind's documented default; 0: not counted)"
    )  # fmt: skip
    max_concurrency: int | None = Field(
        None, ge=1, le=1_000, description="Requests in flight at once to this CRM (empty: 10)"
    )  # fmt: skip


@dataclass(frozen=True)
class SettingSpec:
    """One setting as ``crm kinds`` and the UI form show it."""

    name: str
    type: str  # string, url, secret, integer, number, boolean, choice, table
    required: bool
    secret: bool
    help: str
    default: Any = None
    choices: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        data = {"name": self.name, "type": self.type, "required": self.required, "secret": self.secret,
                "help": self.help}  # fmt: skip
        if self.default not in (None, ""):
            data["default"] = self.default
        if self.choices:
            data["choices"] = list(self.choices)
        return data


def setting_specs(model: type[BaseModel]) -> list[SettingSpec]:
    specs = []
    for name, info in model.model_fields.items():
        annotation, choices = info.annotation, ()
        if get_origin(annotation) in (Union, UnionType):  # Optional[X]: describe X
            annotation = next(a for a in get_args(annotation) if a is not type(None))
        if get_origin(annotation) is Literal:
            kind, choices = "choice", tuple(str(a) for a in get_args(annotation))
        elif annotation is SecretStr:
            kind = "secret"
        elif get_origin(annotation) is list:
            kind = "table"  # rows of column: value (the directory kind's entries)
        else:
            kind = {bool: "boolean", int: "integer", float: "number"}.get(annotation, "string")  # type: ignore[arg-type]
            if kind == "string" and name.endswith(("_url", "_domain")):
                kind = "url"
        secret = kind == "secret"
        default = None if info.is_required() or secret else info.get_default(call_default_factory=True)
        specs.append(SettingSpec(name, kind, info.is_required(), secret, info.description or "", default, choices))
    return specs


@dataclass
class Record:
    """A CRM record found for a call."""

    module: str  # the vendor's object, e.g. Contact
    id: str
    fields: dict[str, Any]
    matches: int = 1  # how many records matched the key
    url: str = ""  # where an admin can see it, when the vendor has one
    owner: str = ""  # fetch(owner=True): the CRM user id of the record's owner ("" when it has none)

    def describe(self) -> str:
        extra = f" (picked from {self.matches} matches)" if self.matches > 1 else ""
        return f"{self.module} {self.id}{extra}"


@dataclass
class TestStep:
    name: str
    ok: bool
    ms: float
    detail: str = ""


@dataclass
class TestReport:
    """The integration's Test action: what was tried, how long it took, what was found."""

    ok: bool = True
    steps: list[TestStep] = field(default_factory=list)
    record: dict[str, Any] | None = None  # module, id, matches, fields (as text)
    error_code: str = ""
    error_message: str = ""

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "steps": [s.__dict__ for s in self.steps],
            "record": self.record,
            "error": {"code": self.error_code, "message": self.error_message} if self.error_code else None,
        }


@dataclass
class CallActivity:
    """A finished call to write into the CRM (see ``Connector.log_call``)."""

    call_id: str  # Asterisk's linkedid: the idempotency key
    direction: Literal["inbound", "outbound"]
    outcome: Literal["answered", "missed", "busy", "failed"]
    external_number: str
    started_at: datetime
    ring_seconds: int = 0
    talk_seconds: int = 0
    extension: str = ""  # who answered (or who dialled out)
    recording: str = ""
    subject: str = ""
    description: str = ""
    record: Record | None = None  # the record found during routing, if any


USER_LIST_BYTES = 4 * 1024 * 1024  # one page of a user list may be bigger than a lookup's answer


@dataclass(frozen=True)
class CrmUser:
    """One user of the CRM (``Connector.list_users``): who records are assigned to."""

    id: str
    name: str = ""
    email: str = ""


@dataclass
class Token:
    value: str
    expires_at: float | None = None  # time.monotonic(); None: until refused
    extra: dict[str, Any] = field(default_factory=dict)  # instance_url, rest_url ...
    issued_at: float = field(default_factory=time.monotonic)

    def fresh(self) -> bool:
        """Still usable: refreshed ahead of expiry (by a minute, or half the lifetime of a short token)."""
        if self.expires_at is None:
            return True
        margin = min(TOKEN_MARGIN, (self.expires_at - self.issued_at) / 2)
        return time.monotonic() < self.expires_at - margin


class Connector:
    kind: ClassVar[str] = ""
    title: ClassVar[str] = ""
    docs_url: ClassVar[str] = ""
    Settings: ClassVar[type[ConnectorSettings]] = ConnectorSettings
    MODULES: ClassVar[Mapping[str, str]] = {}
    requests_per_second: ClassVar[float | None] = None  # the vendor's published pace; None: none published
    burst: ClassVar[float | None] = None  # requests the pace allows at once (None: one second's worth)
    quotas: ClassVar[tuple[Quota, ...]] = ()  # counted limits (per 24 h, per 5 minutes)
    max_concurrency: ClassVar[int] = DEFAULT_MAX_CONCURRENCY
    limits_source: ClassVar[str] = ""  # where the limits above come from
    # The field holding a record's owner (a CRM user id), asked in the lookup itself when a rule routes to the
    # owner; "" when the vendor has none (the README lists the gaps).
    owner_field: ClassVar[str] = ""

    def __init__(
        self,
        settings: ConnectorSettings,
        http: httpx.AsyncClient,
        *,
        region: str = "US",
        username: str = "",
        password: str = "",
    ) -> None:
        """No I/O here. ``username``/``password`` are a rule's own CRM credentials, if any."""
        self.settings = settings
        self.http = http
        self.region = region
        self.username = username
        self.password = password
        self._token: Token | None = None
        self._auth_lock = asyncio.Lock()
        self.log_requests = False  # set by the pool when the integration's log level is debug
        self.budget: Budget | None = None  # set by the router for calls: the integration's rate budget
        # The credential store's row for this integration and principal (set by the pool; None: memory only)
        # and the refresh token to log in with: the vendor's latest (rotated) one, else empty.
        self.credentials: SharedCredentials | None = None
        self._refresh_state = ""
        self.data_dir: Path | None = None  # set by the pool: where a relative file setting is (the directory kind)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<settings hidden>)"

    # --- to implement ----------------------------------------------------------

    async def _login(self, *, deadline: Deadline) -> Token:
        """Get a new token from the vendor; ``AuthError`` when refused.

        A kind whose vendor issues refresh tokens logs in with ``self.refresh_token(configured)`` (the latest
        rotated one, shared through the credential store) and returns the new one as
        ``Token.extra["refresh_token"]``: it is taken out of the token and saved before the token is used.
        """
        raise NotImplementedError

    def refresh_token(self, configured: str = "") -> str:
        """The refresh token to use now: the latest the vendor issued (stored), else the configured one."""
        return self._refresh_state or configured

    def _take_refresh_token(self, token: Token) -> None:
        """Move a refresh token the login returned out of the token (an empty one: single-use, now spent)."""
        if "refresh_token" in token.extra:
            self._refresh_state = str(token.extra.pop("refresh_token") or "")

    def _adopted(self, token: Token) -> None:
        """``token`` came from the credential store (another process's login, or one before a restart).

        If the vendor refuses it too, one more renewal is a login of our own (``adopted()``): a stored
        token can be dead as well, and only a token just issued to us proves the credentials refused.
        """
        self._last_adopted = token

    def adopted(self, token: Token | None) -> bool:
        return token is not None and token is getattr(self, "_last_adopted", None)

    def _auth_headers(self, token: Token) -> dict[str, str]:
        return {"Authorization": f"Bearer {token.value}"}

    async def find_record(
        self, key: LookupKey, module: str, *, fields: Sequence[str] = (), deadline: Deadline
    ) -> Record | None:
        raise NotImplementedError

    async def log_call(self, call: CallActivity, options: Any, *, deadline: Deadline) -> str:
        raise NotImplementedError

    async def list_users(self, *, deadline: Deadline) -> list[CrmUser]:
        """The CRM's users (id, name, e-mail), every page, for matching agents by e-mail.

        Kinds whose vendor API has a users endpoint implement it; the rest keep
        this one (``supports_users()`` is false).
        """
        raise NotImplementedError(f"{self.title or self.kind} connector cannot list users")

    @classmethod
    def supports_users(cls) -> bool:
        return cls.list_users is not Connector.list_users

    async def verify(self, *, deadline: Deadline) -> str:
        """Prove the credential with the vendor's cheapest authenticated request; who it signs in as.

        A cached token proves nothing by itself (a pasted API token is never sent to sign in), so
        the Test action asks the vendor this once; ``AuthError`` when it refuses.
        """
        raise NotImplementedError

    # --- shared behaviour ----------------------------------------------------------

    async def authenticate(self, *, deadline: Deadline, force: bool = False, refused: Token | None = None) -> Token:
        """The cached token, refreshed when stale (one refresh for many concurrent calls).

        ``refused`` is the token a 401 answered: if another call already replaced
        it, the replacement is used instead of logging in once more.
        """
        stale = refused if refused is not None else self._token
        if not force and stale is not None and stale.fresh():
            return stale
        async with self._auth_lock:
            if self._token is not None and self._token is not stale and self._token.fresh():
                return self._token  # another call refreshed it while we waited
            if self.credentials is not None:  # shared with every process: see store/credentials.py
                # a newer valid token another process saved is taken; else one login, saved for everyone
                self._token = await self.credentials.renew(self, stale, deadline)
                return self._token
            token = await self._login(deadline=deadline)
            self._take_refresh_token(token)
            self._token = token
            return self._token

    async def read_field(self, record: Record, api_name: str, *, deadline: Deadline) -> str | None:
        """The field's value as text; dotted names walk nested objects. ``None`` if absent or empty."""
        return field_text(lookup_path(record.fields, api_name))

    async def fetch(
        self, key: LookupKey, module: str, api_name: str, *, deadline: Deadline, found: list[Record] | None = None,
        owner: bool = False,
    ) -> str | None:
        """What a routing rule needs: find the record, read one field. ``found`` gets the record, if any."""
        values = await self.fetch_fields(key, module, (api_name,), deadline=deadline, found=found, owner=owner)
        return values[api_name]

    async def fetch_fields(
        self, key: LookupKey, module: str, api_names: Sequence[str], *, deadline: Deadline,
        found: list[Record] | None = None, owner: bool = False,
    ) -> dict[str, str | None]:  # fmt: skip
        """Find the record and read several fields: all are asked in the find request (where the vendor can
        select fields), so a rule whose rows read other fields costs no extra round trip.

        ``owner``: the record's owner is asked in the same request (``owner_field``) and set on ``Record.owner``.
        """
        names = list(dict.fromkeys(api_names))
        asked = names + [self.owner_field] if owner and self.owner_field and self.owner_field not in names else names
        record = await self.find_record(key, module, fields=asked, deadline=deadline)
        if record is None:
            return dict.fromkeys(names)
        if owner:
            record.owner = self.owner_of(record)
        if found is not None:
            found.append(record)
        return {name: await self.read_field(record, name, deadline=deadline) for name in names}

    def owner_of(self, record: Record) -> str:
        """The owner's CRM user id from the fields the lookup brought back (never a request)."""
        if not self.owner_field:
            return ""
        value = lookup_path(record.fields, self.owner_field)
        if isinstance(value, dict):  # a lookup object: {"id": ..., "name": ...}
            value = value.get("id", value.get("Id"))
        return field_text(value) or ""

    async def test(
        self, key: str | None = None, *, module: str = "contacts", fields: Sequence[str] = (), timeout: float = TEST_TIMEOUT
    ) -> TestReport:
        """Authenticate, then (with ``key``) look the number up and read ``fields``. Never raises."""
        report = TestReport()
        deadline = Deadline.after_ms(timeout * 1000)

        async def step(name: str, work: Any) -> Any:
            started = time.monotonic()
            try:
                result = await work
            except ConnectorError as exc:
                report.steps.append(TestStep(name, False, _ms(started), str(exc)))
                report.ok, report.error_code, report.error_message = False, exc.reason, str(exc)
                raise
            report.steps.append(TestStep(name, True, _ms(started)))
            return result

        try:
            await step("authenticate", self.authenticate(deadline=deadline))  # a valid stored token is used
            who = await step("verify credentials", self.verify(deadline=deadline))
            report.steps[-1].detail = who
            if key:
                lookup = LookupKey(key, "caller_id" if phone_forms(key, self.region).valid else "dtmf")
                record = await step(f"find {module} record for {key}", self.find_record(lookup, module, fields=fields, deadline=deadline))  # fmt: skip
                if record is None:
                    report.steps[-1].detail = "no record matches"
                else:
                    report.steps[-1].detail = record.describe()
                    values = {name: await self.read_field(record, name, deadline=deadline) for name in fields}
                    shown = {k: field_text(v) for k, v in record.fields.items() if not isinstance(v, (dict, list))}
                    report.record = {"module": record.module, "id": record.id, "matches": record.matches,
                                     "url": record.url, "fields": shown | values}  # fmt: skip
        except ConnectorError:
            pass
        except Exception as exc:  # a bug must not take the admin's page down
            logger.exception("%s test failed", self.kind)
            report.ok, report.error_code, report.error_message = False, "internal", f"{type(exc).__name__}: {exc}"
        return report

    async def request(
        self,
        method: str,
        url: str,
        *,
        deadline: Deadline,
        operation: str,
        auth: bool = True,
        ok: Sequence[int] = (),
        **kwargs: Any,
    ) -> CappedResponse:
        """Send one request as this connector; statuses in ``ok`` (beside 2xx) are returned as is."""
        retried = renewed = readopted = False
        given = dict(kwargs.pop("headers", None) or {})  # the caller's own; ours are added per attempt
        while True:
            headers = dict(given)
            used: Token | None = None
            if auth:
                used = await self.authenticate(deadline=deadline)
                headers.update(self._auth_headers(used))
            started = time.monotonic()
            if self.budget is None:
                response = await send_capped(
                    self.http, method, url, headers=headers, timeout=deadline.remaining(), kind=self.kind,
                    operation=operation, **kwargs,
                )  # fmt: skip
            else:
                async with self.budget.slot(deadline.at, operation):
                    response = await send_capped(
                        self.http, method, url, headers=headers, timeout=deadline.remaining(), kind=self.kind,
                        operation=operation, **kwargs,
                    )  # fmt: skip
            status = response.status_code
            if self.log_requests:  # the integration's log level is debug: troubleshooting, no secrets
                logger.info("%s %s: %s %s -> HTTP %d, %d bytes in %.0f ms", self.kind, operation, method,
                            safe_url(url), status, len(response.content), _ms(started))  # fmt: skip
            if 200 <= status < 300 or status in ok:
                return response
            if status == 401 and auth and (not retried or (renewed and not readopted and self.adopted(used))):
                readopted = renewed  # a stored token refused as well: this renewal is a login of our own
                retried = renewed = True
                await self.authenticate(deadline=deadline, force=True, refused=used)
                continue
            if status == 401 and renewed and self.credentials is not None and used is self._token \
                    and not self.adopted(used):  # fmt: skip
                # Still 401 with the token just renewed: the credentials themselves are refused.
                await self.credentials.record_refusal(self, str(self.error_for(response, operation)), deadline)
                raise self.credentials.refused_error(self)
            if status == 429 or (status == 503 and "retry-after" in response.headers):
                wait = retry_after_seconds(response)
                if self.budget is not None:
                    self.budget.pause(wait)  # every call of this integration waits, not just this one
                if wait is not None and not retried and wait < deadline.remaining():
                    retried = True
                    if self.budget is None:
                        await asyncio.sleep(wait)
                    continue  # with a budget, its slot() waits out the pause
                raise RateLimited(f"{self.title} is rate limiting ({operation}); retry after {wait or '?'} s",
                                  kind=self.kind, operation=operation, reason="rate_limited")  # fmt: skip
            raise self.error_for(response, operation)

    def error_for(self, response: CappedResponse, operation: str) -> ConnectorError:
        """One mapping from a vendor's failure answer to a ``ConnectorError`` (kinds may refine it)."""
        status = response.status_code
        detail = self.vendor_message(response)
        text = f"{self.title} answered HTTP {status} to {operation}" + (f": {detail}" if detail else "")
        args = {"kind": self.kind, "operation": operation, "reason": f"http_{status}"}
        if status in (401, 403):
            return AuthError(text, **args)
        if status >= 500:
            return ConnectorUnavailable(text, **args)
        return UnexpectedResponse(text, **args)

    def vendor_message(self, response: CappedResponse) -> str:
        """The vendor's own error text, shortened (kinds override for their error shapes)."""
        try:
            data = json.loads(response.text)
        except ValueError:
            return response.text.strip()[:200] if response.media_type.startswith("text/plain") else ""
        for path in ("message", "error_description", "error.message", "[0].message", "errors[0].message",
                     "error", "description", "detail", "title"):  # fmt: skip
            value = lookup_path(data, path)
            if isinstance(value, str) and value.strip():
                return value.strip()[:300]
        return ""

    def json_of(self, response: CappedResponse, operation: str) -> Any:
        try:
            return json.loads(response.content or b"null")
        except ValueError:
            raise UnexpectedResponse(f"{self.title} sent something that is not JSON for {operation} "
                                     f"({safe_url(response.url)})", kind=self.kind, operation=operation,
                                     reason="bad_json") from None  # fmt: skip

    def phone(self, key: LookupKey) -> PhoneForms:
        return phone_forms(key.value, self.region)

    def vendor_module(self, module: str) -> str:
        try:
            return self.MODULES[module]
        except KeyError:
            raise UnexpectedResponse(f"{self.title} has no {module} module", kind=self.kind, operation="find_record",
                                     reason="no_module") from None  # fmt: skip

    def pick(self, records: list[dict[str, Any]], modified: str) -> tuple[dict[str, Any], int]:
        """The record the ``match_pick`` setting chooses among several, and how many there were."""
        if self.settings.match_pick == "first" or len(records) == 1:
            return records[0], len(records)
        ordered = sorted(records, key=lambda r: _when(lookup_path(r, modified)))
        return (ordered[-1] if self.settings.match_pick == "newest" else ordered[0]), len(records)

    async def aclose(self) -> None:
        """Release what this connector holds (the shared client belongs to the pool)."""
        self._token = None

    def timeout_error(self, operation: str) -> ConnectorTimeout:
        return ConnectorTimeout(f"{self.title} did not answer {operation} in time", kind=self.kind,
                                operation=operation, reason="timeout")  # fmt: skip


def https_url(value: str) -> str:
    """A settings validator's check of a base URL: ``https://`` (or empty), without a trailing slash."""
    value = value.strip().rstrip("/")
    if value and not value.lower().startswith("https://"):
        raise ValueError("must start with https://")
    return value


def lookup_path(data: Any, path: str) -> Any:
    """``data`` at a dotted path: ``Account.Name``, ``properties.phone``, ``emails[0].value``, ``[0].message``."""
    current = data
    for part in _split_path(path):
        if isinstance(part, int):
            if not isinstance(current, list) or not -len(current) <= part < len(current):
                return None
            current = current[part]
        elif isinstance(current, Mapping):
            if part in current:
                current = current[part]
            else:
                folded = {str(k).casefold(): v for k, v in current.items()}
                if part.casefold() not in folded:
                    return None
                current = folded[part.casefold()]
        else:
            return None
    return current


def _split_path(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for chunk in path.replace("]", "").split("."):
        name, *indexes = chunk.split("[")
        if name:
            parts.append(name)
        parts.extend(int(i) for i in indexes if i.lstrip("-").isdigit())
    return parts


def field_text(value: Any) -> str | None:
    """A field value as the rule engine compares it; ``None`` for absent or empty."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    text = str(value).strip()
    return text or None


def retry_after_seconds(response: CappedResponse) -> float | None:
    """``Retry-After`` in seconds, from either of its forms (delta-seconds or an HTTP date)."""
    value = response.headers.get("retry-after", "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


_EPOCH = datetime.min.replace(tzinfo=timezone.utc)


def _when(value: Any) -> datetime:
    """A modified-time field as an aware datetime for ordering (missing or odd values sort first)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):  # epoch seconds or milliseconds
        return datetime.fromtimestamp(value / 1000 if value > 1e11 else value, timezone.utc)
    text = str(value or "").strip()
    if text.startswith("/Date(") and text.endswith(")/"):  # OData v2: /Date(1714557600000)/
        digits = text[6:-2].split("+")[0].split("-")[0]
        return datetime.fromtimestamp(int(digits) / 1000, timezone.utc) if digits.isdigit() else _EPOCH
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("+0000", "+00:00"))
    except ValueError:
        return _EPOCH
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
