"""Proprietary CRM: any in-house REST/JSON API, connected by settings instead of code.

There is no vendor: the request and answer shapes are the integrator's, described
by URL templates, JSON body templates and JSON paths (reference section 12, SPEC
sections 4 and 5). ``proprietary1`` builds on the same machinery for session-token
APIs with form-encoded requests.

Templates
    URL templates (``lookup_url``, ``key_lookup_url``, ``log_url``,
    ``log_lookup_url``, ``create_url``, ``record_url``) must be ``https://`` and
    carry ``{name}`` placeholders in the path and query only, never in the host.
    Values are expanded as RFC 6570 level 1 "simple string expansion": every
    character outside ``A-Z a-z 0-9 - . _ ~`` is percent-encoded (``+1415...``
    is sent as ``%2B1415...``, ``a&b=c`` as ``a%26b%3Dc``, ``/`` as ``%2F``), so a
    caller's number or typed key can never add a parameter or change the path; a
    value made only of dots is encoded too (``%2E%2E``), so it is never a dot
    segment. ``{{`` and ``}}`` are literal braces; an unknown placeholder or a
    lone brace is refused when the integration is saved.
    JSON body templates (``lookup_body``, ``log_body``, ``create_body``) must be
    valid JSON with the placeholders inside strings. The template is parsed
    first and the values put into the parsed strings, then the body is
    serialised: a value can never break out of its string (quotes, backslashes
    and control characters come out JSON-escaped). A string that is exactly one
    placeholder takes the value's type: ``"{ring_seconds}"``/``"{talk_seconds}"``
    become numbers, ``"{record_id}"`` is ``null`` for a call with no record,
    ``"{field}"`` is a list of field names; anything else is text.

    Lookups (``{phone}`` the caller's number in the current phone form, empty for
    a typed key; ``{key}`` the value searched: that number or the typed digits;
    ``{search_field}`` ``phone_field`` for numbers, ``key_field`` (``id`` when
    empty) for typed keys; ``{module}`` the CRM's name of the module; ``{field}``
    the top-level names of the fields the rule reads, comma-separated, so the
    CRM can answer them in the same call — empty when none are asked).
    Call log (``{call_id}`` Asterisk's linkedid, ``{record_id}``, ``{module}``,
    ``{direction}`` inbound/outbound, ``{outcome}`` answered/missed/busy/failed,
    ``{number}`` the other party in E.164 (as dialled when it does not parse),
    ``{phone}`` the same in the first phone form, ``{started_at}`` ISO-8601 UTC
    ``2026-11-26T09:30:00Z``, ``{ring_seconds}``, ``{talk_seconds}``,
    ``{extension}``, ``{recording}``, ``{subject}``, ``{description}``).
    New contacts/leads (``{number}``, ``{phone}``, ``{module}``); ``record_url``
    (``{module}``, ``{id}``).

Answers (JSON paths: dots and ``[n]`` indexes, ``["odd.name"]`` for keys with
dots or brackets, negative indexes from the end, an optional leading ``$``;
keys match exactly, else case-insensitively)
    ``records_path`` finds the records in a lookup answer: a list (its objects
    are the records), an object (one record), or absent/``null`` (none);
    empty means the whole answer. A 404, an empty body or JSON ``null`` is "no
    record" (as for the Custom CRM, SPEC 5). ``id_path`` and ``modified_path``
    are read in each record; ``fields_path`` is where a record keeps its fields
    (``attributes`` for JSON:API) — a rule's field is looked up there first,
    then from the record itself, so ``account.name``, ``phones[0].number`` and
    ``meta.owner`` all work. A field missing from the record is the empty value
    (reference section 12: "missing path -> no value"); whether a field exists
    at all is the CRM's call: its error for an unknown name in ``{field}`` is
    shown as is. ``total_path`` (e.g. ``meta.total``) gives the number of
    matches when the CRM pages (the pick can only choose among the page it
    got: put the CRM's own sort in the template, e.g. ``sort=-updated_at``).
    ``success_path`` names a flag for APIs that report errors in a 200 answer
    (``true``, ``1``, ``"ok"``, ``"success"``, ``"yes"`` or no flag at all mean
    success; ``false``, ``0``, ``"error"`` ... a failure);
    ``error_path`` finds the CRM's error text (else the usual suspects:
    ``message``, ``error.message``, ``errors[0].detail`` ...).

Authentication (``auth``)
    ``none``; ``basic`` (``username`` + ``password``, RFC 7617); ``bearer``
    (``token`` as ``Authorization: Bearer``); ``api_key`` (``token`` in the
    ``api_key_header`` header, ``X-Api-Key`` by default); ``oauth2`` (RFC 6749
    section 4.4 client credentials: ``POST token_url`` form-encoded
    ``grant_type=client_credentials`` [+ ``scope``] with the client id and
    secret, each form-encoded, in HTTP Basic as section 2.3.1 says; the
    answer's ``access_token`` goes as ``Authorization: Bearer`` and its
    ``expires_in`` is honoured: refreshed a minute early, or at half the life of
    a short token, and once more after a 401; ``invalid_client`` and friends
    become ``AuthError("token rejected: ...")``). Static credentials are not
    retried after a 401 (there is nothing to refresh): the answer is an
    ``AuthError`` at once. A rule's CRM Username/Password replace ``username`` and
    ``password`` (basic); its Password replaces ``token`` (bearer, api_key).

Modules: accounts/contacts/leads -> ``accounts_module``, ``contacts_module``,
``leads_module`` (defaults ``accounts``, ``contacts``, ``leads``); an empty
setting means the CRM has no such module (a rule using it fails with "has no
leads module": use contacts instead).

Finding a record
    Phone keys: the number is normalised with ``phonenumbers`` against the
    default region and sent in the forms ``phone_forms`` lists (``e164``
    ``+14155552671``, ``national`` ``(415) 555-2671``, ``national_digits``
    ``4155552671``, ``digits`` ``14155552671``), one request per form, in order,
    stopping at the first that finds something — so a CRM that normalises on its
    side needs one request (``e164``, the default), one that compares stored
    text may list the formats its users type. A number that does not parse is
    sent as its digits. The reference's phone appendix has no row for an
    in-house CRM: the form is the integrator's to choose.
    Mobile numbers: a CRM whose search covers all its phone fields (the usual
    ``?phone=``) finds a mobile-only record in that one request. One that
    takes a single field per request gets ``phone_field`` as a list
    (``phone,mobile``): each field is searched with every form, in order, until
    one finds — one request for a number stored in the first field, more only
    for the others (forms x fields at most, for an unknown caller).
    The form and field that last found a record in a module are tried first
    there next time (kept per connector): a CRM whose numbers are stored one
    way pays one request per found caller after its first hit.
    Requests per uncached call: 1 with a CRM that normalises (``e164``, one
    ``phone_field``), else 1 for a found caller stored the usual way and
    forms x fields for an unknown one; plus the login/token when it expires.
    Typed (DTMF) keys: ``key_lookup_url`` (always GET, e.g.
    ``.../{module}/{key}`` for a record id) or else the lookup itself with
    ``{search_field}`` = ``key_field`` (``id`` when empty) and ``{key}`` the digits.
    Several matches: ``match_pick`` on ``modified_path`` (ISO-8601, epoch
    seconds/milliseconds or OData dates); ``Record.matches`` is the number of
    records, or ``total_path`` when larger. With no ``modified_path`` the first
    record listed is taken.

Call log (``log_call``)
    Linked to the record found while routing, else to a fresh lookup of the
    number in ``log_module``; an unknown number becomes a record through
    ``create_url``/``create_body`` first when the log options say so (without a
    ``create_url`` the call is logged unlinked). Idempotent on the call id: with
    ``log_lookup_url`` (GET, e.g. ``...?filter[external_id]={call_id}``) an
    existing activity is looked for first and its id returned — only a record
    that carries the call id somewhere among its values counts, so a CRM that
    ignores the filter cannot make every call look logged; a 409 on create
    looks again. ``log_method`` ``PUT`` to a URL with ``{call_id}`` is
    idempotent by itself (an upsert); ``POST`` needs ``log_lookup_url``. The
    create request also carries ``Idempotency-Key: <call id>`` (IETF httpapi
    draft; harmless where unknown). The activity id is read like a record's
    (``records_path`` then ``id_path``, else ``id_path`` from the top); a PUT
    answering without one returns the call id.

Limits: no vendor, no published budget: no pace (set ``requests_per_second`` if
the in-house API needs one), the concurrency limit; a 429 (or 503) with
``Retry-After`` is waited out when it fits the deadline, else ``RateLimited``.

Checked with public sources: RFC 6570 section 3.2.2 (simple expansion encodes
all but unreserved characters), RFC 6749 sections 2.3.1 (form-encode client id
and secret before Basic), 4.4 and 5.1/5.2 (client-credentials request, token
answer, ``invalid_client`` errors). The PBXware manuals list "Proprietary CRM"
but document no wire format, so every request and answer shape here is this
project's own (reference section 12), not a vendor's.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import timezone
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, quote, quote_plus, urlencode

import httpx
from pydantic import Field, SecretStr, field_validator, model_validator

from crmroute.connectors._http import CappedResponse, safe_url
from crmroute.connectors._phone import phone_forms
from crmroute.connectors.base import (
    CallActivity,
    Connector,
    ConnectorSettings,
    Record,
    Token,
    field_text,
)
from crmroute.deadline import Deadline
from crmroute.errors import AuthError, ConnectorError, UnexpectedResponse
from crmroute.routing.engine import LookupKey

logger = logging.getLogger(__name__)

# --- templates ------------------------------------------------------------------------------

LOOKUP_NAMES = ("phone", "key", "search_field", "module", "field")
LOG_NAMES = ("call_id", "record_id", "module", "direction", "outcome", "number", "phone", "started_at",
             "ring_seconds", "talk_seconds", "extension", "recording", "subject", "description")  # fmt: skip
CREATE_NAMES = ("number", "phone", "module")
RECORD_URL_NAMES = ("module", "id")
PHONE_FORMS = ("e164", "national", "national_digits", "digits")

_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|[{}]")
_WHOLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 token


def placeholders(text: str) -> list[str]:
    """The placeholder names in ``text``; ``ValueError`` for a lone brace."""
    names = []
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        if match.group(1) is None:
            raise ValueError(f"a lone {token!r} at character {match.start() + 1}: write {token * 2} for a literal brace, "
                             "or {name} for a placeholder")  # fmt: skip
        names.append(match.group(1))
    return names


def check_names(text: str, allowed: Sequence[str]) -> None:
    for name in placeholders(text):
        if name not in allowed:
            raise ValueError(f"unknown placeholder {{{name}}}; use " + ", ".join(f"{{{a}}}" for a in allowed))


def expand(text: str, values: Mapping[str, Any], encode: Any = None) -> str:
    """``text`` with each ``{name}`` replaced by its value (through ``encode``), ``{{``/``}}`` as braces."""

    def substitute(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        if match.group(1) is None:
            return token
        value = _plain_text(values.get(match.group(1)))
        return encode(value) if encode else value

    return _TOKEN.sub(substitute, text)


def url_value(text: str) -> str:
    """RFC 6570 simple expansion: everything but unreserved characters percent-encoded (dot-only values too)."""
    if text and set(text) == {"."}:
        return "%2E" * len(text)
    return quote(text, safe="")


def check_url_template(text: str, allowed: Sequence[str]) -> str:
    """Why ``text`` is not a usable URL template (``ValueError``), else ``text`` trimmed."""
    text = text.strip()
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise ValueError("must not contain spaces or control characters (encode them as %20)")
    if not text.lower().startswith("https://"):
        raise ValueError("must start with https://")
    authority = re.split(r"[/?#]", text[8:], maxsplit=1)[0]
    if "{" in authority or "}" in authority:
        raise ValueError("placeholders may appear in the path and query only, not in the host")
    check_names(text, allowed)
    try:
        url = httpx.URL(expand(text, {name: "x" for name in allowed}, url_value))
    except Exception:
        raise ValueError("is not a valid URL") from None
    if not url.host:
        raise ValueError("must name a host, like https://crm.example.com/api/...")
    return text


def fill_url(template: str, values: Mapping[str, Any]) -> str:
    return expand(template, values, url_value)


def check_json_template(text: str, allowed: Sequence[str]) -> str:
    try:
        data = json.loads(text)
    except ValueError as exc:
        message = getattr(exc, "msg", str(exc))
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise ValueError(f"is not valid JSON ({message}{where}); put placeholders inside strings: "
                         '{"phone": "{phone}"}') from None  # fmt: skip
    for string in _strings(data):
        check_names(string, allowed)
    return text


def fill_json(template: str, values: Mapping[str, Any], typed: Mapping[str, Any]) -> Any:
    """The parsed template with values put into its strings (typed for whole-placeholder strings)."""

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            whole = _WHOLE.fullmatch(node)
            if whole and whole.group(1) in typed:
                return typed[whole.group(1)]
            return expand(node, values)
        if isinstance(node, dict):
            return {expand(k, values): walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    return walk(json.loads(template))


def parse_form(text: str) -> list[tuple[str, str]]:
    """``a=1&b={key}`` as pairs (percent-escapes and ``+`` decoded); ``ValueError`` when malformed."""
    text = text.strip()
    if not text:
        return []
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise ValueError("must be name=value pairs joined by &, like module={module}&phone={phone}") from None
    if any(not name for name, _ in pairs):
        raise ValueError("every pair needs a name before its =")
    return pairs


def check_form_template(text: str, allowed: Sequence[str]) -> str:
    for name, value in parse_form(text):
        check_names(name, allowed)
        check_names(value, allowed)
    return text.strip()


def fill_form(template: str, values: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(expand(name, values), expand(value, values)) for name, value in parse_form(template)]


def with_query(url: str, pairs: Sequence[tuple[str, str]]) -> str:
    """``url`` with ``pairs`` appended to its query (each value percent-encoded, the rest kept as is)."""
    if not pairs:
        return url
    base, hash_, fragment = url.partition("#")
    separator = "" if base.endswith(("?", "&")) else "&" if "?" in base else "?"
    return f"{base}{separator}{urlencode(list(pairs), quote_via=quote)}{hash_}{fragment}"


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _plain_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_plain_text(v) for v in value)
    return str(value)


# --- JSON paths -------------------------------------------------------------------------------

_SEGMENT = re.compile(r"""(\.)?([^.\[\]"']+)|\[\s*(-?\d+)\s*\]|\[\s*"((?:[^"\\]|\\.)*)"\s*\]|\[\s*'((?:[^'\\]|\\.)*)'\s*\]""")


def parse_path(path: str) -> tuple[str | int, ...]:
    """``data[0].attributes.status`` as ``("data", 0, "attributes", "status")``; ``ValueError`` if malformed."""
    text = path.strip()
    if text.startswith("$"):
        text = text[1:]
        if text and text[0] not in ".[":
            raise ValueError(f"cannot read the path {path!r}: after $ comes . or [")
    parts: list[str | int] = []
    position = 0
    while position < len(text):
        match = _SEGMENT.match(text, position)
        if match is None:
            raise ValueError(f"cannot read the path {path!r} at character {position + 1}: use names joined by dots, "
                             '[0] for list items and ["name"] for names with dots')  # fmt: skip
        dot, name, index, double, single = match.groups()
        if name is not None:
            if position > 0 and not dot:
                raise ValueError(f"cannot read the path {path!r} at character {position + 1}: a . goes before a name")
            parts.append(name.strip())
        elif index is not None:
            parts.append(int(index))
        elif double is not None:
            parts.append(json.loads(f'"{double}"'))
        else:
            parts.append(single.replace("\\'", "'").replace("\\\\", "\\"))
        position = match.end()
    return tuple(parts)


MISSING: Any = object()  # get_path's default when a step is absent (as opposed to present and null)


def get_path(data: Any, path: str | Sequence[str | int], default: Any = None) -> Any:
    """``data`` at ``path`` (``default`` when a step is missing); names match exactly, else case-insensitively."""
    parts = parse_path(path) if isinstance(path, str) else path
    current = data
    for part in parts:
        if isinstance(part, int):
            if not isinstance(current, list) or not -len(current) <= part < len(current):
                return default
            current = current[part]
        elif isinstance(current, Mapping):
            if part in current:
                current = current[part]
                continue
            folded = part.casefold()
            found = [value for key, value in current.items() if str(key).casefold() == folded]
            if not found:
                return default
            current = found[0]
        else:
            return default
    return current


def check_path(value: str) -> str:
    parse_path(value)
    return value.strip()


# --- settings --------------------------------------------------------------------------------------

DEFAULT_LOOKUP_BODY = '{"module": "{module}", "filter": {"{search_field}": "{key}"}, "fields": "{field}"}'
DEFAULT_LOG_BODY = (
    '{"call_id": "{call_id}", "record_id": "{record_id}", "module": "{module}", "direction": "{direction}", '
    '"outcome": "{outcome}", "number": "{number}", "started_at": "{started_at}", "ring_seconds": "{ring_seconds}", '
    '"talk_seconds": "{talk_seconds}", "extension": "{extension}", "recording": "{recording}", '
    '"subject": "{subject}", "description": "{description}"}'
)
DEFAULT_CREATE_BODY = '{"name": "{number}", "phone": "{number}"}'

URL_FIELDS = {"lookup_url": LOOKUP_NAMES, "key_lookup_url": LOOKUP_NAMES, "log_url": LOG_NAMES,
              "log_lookup_url": LOG_NAMES, "create_url": CREATE_NAMES, "record_url": RECORD_URL_NAMES}  # fmt: skip
PATH_FIELDS = ("records_path", "id_path", "fields_path", "modified_path", "total_path", "success_path", "error_path",
               "owner_path")  # fmt: skip


PROBE_NUMBER = "+12025550100"  # fictional (NANP 555-0100): what Test looks up to prove the credentials


class TemplateSettings(ConnectorSettings):
    """What both template-driven kinds share: where to ask, how to read the answers, where to log."""

    lookup_url: str = Field(
        description="URL template of the lookup, https only, placeholders {phone} {key} {search_field} {module} "
        "{field} in the path/query, e.g. https://crm.example.com/api/{module}/search?phone={phone}&fields={field}"
    )  # fmt: skip
    phone_forms: str = Field(
        "e164", description="Forms the caller's number is sent in, tried in order until one finds a record: "
        "e164 (+14155552671), national ((415) 555-2671), national_digits (4155552671), digits (14155552671)"
    )  # fmt: skip
    phone_field: str = Field(
        "phone", description="What {search_field} is for a phone lookup: the CRM's phone field; several, "
        "comma-separated (phone,mobile), are searched one after the other for a CRM that takes one field per request"
    )  # fmt: skip
    accounts_module: str = Field("accounts", description="The CRM's name for accounts ({module}); empty: none")
    contacts_module: str = Field("contacts", description="The CRM's name for contacts ({module}); empty: none")
    leads_module: str = Field("leads", description="The CRM's name for leads ({module}); empty: the CRM has none")
    records_path: str = Field(
        "", description="JSON path to the record list (or one record) in a lookup answer, e.g. data or "
        "result.items; empty: the whole answer"
    )  # fmt: skip
    id_path: str = Field("id", description="JSON path to a record's id inside the record, e.g. id or attributes.uuid")
    fields_path: str = Field(
        "", description="JSON path inside a record where its fields are, e.g. attributes; empty: the record itself. "
        "A rule's field is looked up there, then from the record"
    )  # fmt: skip
    modified_path: str = Field(
        "updated_at", description="JSON path inside a record to its last-modified time (ISO-8601 or epoch), "
        "used to pick among several matches; empty: take the first"
    )  # fmt: skip
    total_path: str = Field("", description="JSON path to the total number of matches when the CRM pages, e.g. meta.total")
    owner_path: str = Field(
        "", description="Where a record's owner (a user id or e-mail) is, named as a rule's field (fields_path "
        "first), e.g. owner_id or owner.id; asked in the lookup itself for rules routing to the record owner's "
        "agent; empty: records have no owner"
    )  # fmt: skip
    success_path: str = Field(
        "", description="JSON path to a success flag for APIs that report errors with HTTP 200, e.g. success or "
        "status (true, 1, ok, success, yes or no flag mean success; anything else, a failure)"
    )  # fmt: skip
    error_path: str = Field("", description="JSON path to the error text in a failure answer, e.g. errors[0].detail")
    record_url: str = Field("", description="URL template of a record in the CRM's UI ({module}, {id}), shown by Test")
    log_url: str = Field(
        "", description="URL template where calls are logged ({call_id}, {record_id}, {module} ...); empty: calls "
        "are not logged"
    )  # fmt: skip
    log_lookup_url: str = Field(
        "", description="URL template that finds a logged call by its id, e.g. https://crm.example.com/api/calls?"
        "external_id={call_id}; makes logging idempotent"
    )  # fmt: skip
    log_module: Literal["accounts", "contacts", "leads"] = Field(
        "contacts", description="Where a logged call's number is looked up (and created, if the log options say so)"
    )
    create_url: str = Field(
        "", description="URL template that creates a record for an unknown number ({module}, {number}, {phone}); "
        "empty: such calls are logged unlinked"
    )  # fmt: skip

    @field_validator(*URL_FIELDS, check_fields=False)
    @classmethod
    def _url_template(cls, value: str, info: Any) -> str:
        if info.field_name != "lookup_url" and not value.strip():
            return ""
        return check_url_template(value, URL_FIELDS[info.field_name])

    @field_validator(*PATH_FIELDS)
    @classmethod
    def _path(cls, value: str) -> str:
        return check_path(value)

    @field_validator("phone_field")
    @classmethod
    def _phone_field(cls, value: str) -> str:
        names = [name.strip() for name in value.split(",") if name.strip()]
        if not names:
            raise ValueError("name the CRM's phone field, e.g. phone (several: phone,mobile)")
        return ",".join(dict.fromkeys(names))

    @field_validator("phone_forms")
    @classmethod
    def _phone_forms(cls, value: str) -> str:
        names = [name.strip().lower() for name in value.replace(";", ",").split(",") if name.strip()]
        unknown = [name for name in names if name not in PHONE_FORMS]
        if unknown or not names:
            raise ValueError(f"use one or more of {', '.join(PHONE_FORMS)}, comma-separated"
                             + (f" (not {unknown[0]})" if unknown else ""))  # fmt: skip
        return ",".join(dict.fromkeys(names))


def _secret(value: SecretStr | str | None) -> str:
    if value is None:
        return ""
    return value.get_secret_value() if isinstance(value, SecretStr) else value


_SUCCESS = frozenset({"true", "1", "ok", "success", "succeeded", "yes"})
_PRINTABLE = re.compile(r"[\x21-\x7e]{1,200}")


# --- the shared connector ------------------------------------------------------------------------


class TemplateConnector(Connector):
    """Lookups, field reading and call logging driven by templates and JSON paths (no ``kind``: not registered).

    A kind says how a request is sent (``_plan`` and ``_send``) and how it authenticates.
    """

    settings: TemplateSettings
    MODULES: ClassVar[Mapping[str, str]] = {"accounts": "accounts", "contacts": "contacts", "leads": "leads"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._hit_way: dict[str, tuple[str, int]] = {}  # module -> (phone field, form index) that last found

    # --- what a kind provides ---------------------------------------------------------------

    def _plan(self, what: str) -> tuple[str, str, str | None]:
        """``(method, URL template, payload template or None)`` for lookup, key_lookup, log_lookup, log, create."""
        raise NotImplementedError

    def _payload(self, template: str, values: Mapping[str, Any], typed: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    async def _send(
        self, method: str, url: str, payload: Any, *, deadline: Deadline, operation: str, ok: Sequence[int],
        headers: Mapping[str, str],
    ) -> CappedResponse:  # fmt: skip
        """Send one request as the kind does (encoding, auth, re-login); ``headers`` are the caller's extras."""
        raise NotImplementedError

    # --- modules ---------------------------------------------------------------------------------

    def vendor_module(self, module: str) -> str:
        name = getattr(self.settings, f"{module}_module", "") if module in self.MODULES else ""
        if not name:
            raise UnexpectedResponse(f"{self.title} has no {module} module (set {module}_module, or use another "
                                     "module)", kind=self.kind, operation="find_record", reason="no_module")  # fmt: skip
        return name

    # --- requests ----------------------------------------------------------------------------------

    async def _exchange(
        self, what: str, values: Mapping[str, Any], typed: Mapping[str, Any], *, deadline: Deadline, operation: str,
        ok: Sequence[int] = (), headers: Mapping[str, str] | None = None,
    ) -> tuple[CappedResponse, Any]:  # fmt: skip
        method, template, payload_template = self._plan(what)
        url = fill_url(template, values)
        payload = self._payload(payload_template, values, typed) if payload_template is not None else None
        response = await self._send(method, url, payload, deadline=deadline, operation=operation, ok=ok,
                                    headers=headers or {})  # fmt: skip
        return response, self._answer(response, operation)

    def _answer(self, response: CappedResponse, operation: str) -> Any:
        """The JSON of a 2xx answer (``None`` for empty or null, and for the other statuses a caller accepted,
        like a lookup's 404); a failure flag in it raises."""
        if not 200 <= response.status_code < 300 or not response.content.strip():
            return None
        data = self.json_of(response, operation)
        failure = self._failure(data)
        if failure is not None:
            raise UnexpectedResponse(f"{self.title} refused {operation}: {failure}", kind=self.kind,
                                     operation=operation, reason="refused")  # fmt: skip
        return data

    def _failure(self, data: Any) -> str | None:
        """The CRM's error text when ``success_path`` says the answer is a failure, else ``None``."""
        if not self.settings.success_path or not isinstance(data, (dict, list)):
            return None
        flag = get_path(data, self.settings.success_path)
        if flag is None or flag is True or isinstance(flag, (dict, list)) or str(flag).strip().casefold() in _SUCCESS:
            return None  # only a flag that is there and says otherwise makes a failure
        return self._message_in(data) or f"{self.settings.success_path} is {field_text(flag) or 'missing'}"

    def _rows(self, data: Any, operation: str) -> tuple[list[dict[str, Any]], int]:
        """The records in an answer and the total the CRM reports (0 when it does not)."""
        node = get_path(data, self.settings.records_path) if data is not None else None
        if node is None:
            rows: list[dict[str, Any]] = []
        elif isinstance(node, dict):
            rows = [node] if node else []
        elif isinstance(node, list):
            rows = [item for item in node if isinstance(item, dict)]
            if len(rows) != len(node):
                raise self._shape(operation, f"records_path '{self.settings.records_path}' leads to a list of "
                                  f"{_kind_of(next(i for i in node if not isinstance(i, dict)))}s, not of records")  # fmt: skip
        else:
            where = f"records_path '{self.settings.records_path}'" if self.settings.records_path else "the answer"
            raise self._shape(operation, f"{where} is a {_kind_of(node)}, not a list of records")
        total = 0
        if self.settings.total_path and data is not None:
            raw = get_path(data, self.settings.total_path)
            if isinstance(raw, (int, float)) and not isinstance(raw, bool):
                total = int(raw)
            elif isinstance(raw, str) and raw.strip().isdigit():
                total = int(raw.strip())
        return rows, total

    def _id_of(self, row: dict[str, Any], operation: str) -> str:
        value = get_path(row, self.settings.id_path)
        if isinstance(value, (dict, list)) or field_text(value) is None:
            raise self._shape(operation, f"a record without an id at id_path '{self.settings.id_path}'")
        return field_text(value) or ""

    # --- finding records ----------------------------------------------------------------------------

    async def verify(self, *, deadline: Deadline) -> str:
        """An in-house API has no "who am I": one lookup of a number no record has (NANP's fictional
        555-0100) proves the credentials — any answer but a refusal (401/403) does."""
        module = next((m for m in self.MODULES if getattr(self.settings, f"{m}_module", "")), "contacts")
        obj = self.vendor_module(module)
        form = (self._phone_values(PROBE_NUMBER) or [PROBE_NUMBER])[0]
        field = self.settings.phone_field.split(",")[0]  # one field is enough to prove the credentials
        values = {"module": obj, "field": "", "phone": form, "key": form, "search_field": field}
        response, _ = await self._exchange("lookup", values, {"field": []}, deadline=deadline,
                                           operation=f"verify ({obj} lookup)", ok=(404,))  # fmt: skip
        return f"the {obj} lookup answered HTTP {response.status_code} with these credentials"

    async def find_record(
        self, key: LookupKey, module: str, *, fields: Sequence[str] = (), deadline: Deadline
    ) -> Record | None:
        obj = self.vendor_module(module)
        asked = _top_names(fields)
        base = {"module": obj, "field": ",".join(asked)}
        typed = {"field": asked}
        if key.source == "dtmf":
            value = key.value.strip()
            if not value:
                return None
            attempts = [base | {"phone": "", "key": value, "search_field": self.settings.key_field or "id"}]
            what, operation = "key_lookup", f"find {obj} by {self.settings.key_field or 'id'}"
        else:
            forms = self._phone_values(key.value)
            fields_in_turn = self.settings.phone_field.split(",")
            attempts = [base | {"phone": form, "key": form, "search_field": name, "_way": (name, index)}
                        for name in fields_in_turn for index, form in enumerate(forms)]  # fmt: skip
            attempts.sort(key=lambda a: a["_way"] != self._hit_way.get(obj))
            what, operation = "lookup", f"find {obj}"
        rows: list[dict[str, Any]] = []
        total = 0
        for values in attempts:
            way = values.pop("_way", None)
            _, data = await self._exchange(what, values, typed, deadline=deadline, operation=operation, ok=(404,))
            rows, total = self._rows(data, operation)
            if rows:
                if way is not None:
                    self._hit_way[obj] = way  # the CRM holds numbers this way: ask it first next time
                break
        if not rows:
            return None
        chosen, count = self._pick(rows)
        record_id = self._id_of(chosen, operation)
        return Record(module=obj, id=record_id, fields=chosen, matches=max(count, total), url=self._record_url(obj, record_id))  # fmt: skip

    def _phone_values(self, number: str) -> list[str]:
        forms = phone_forms(number, self.region)
        if not forms.valid:
            return [forms.digits] if forms.digits else []
        return forms.distinct(*self.settings.phone_forms.split(","))

    def _pick(self, rows: list[dict[str, Any]]) -> tuple[dict[str, Any], int]:
        if not self.settings.modified_path:
            return rows[0], len(rows)
        wrapped = [{"modified": get_path(row, self.settings.modified_path), "row": row} for row in rows]
        chosen, count = self.pick(wrapped, "modified")
        return chosen["row"], count

    def _record_url(self, obj: str, record_id: str) -> str:
        if not self.settings.record_url:
            return ""
        return fill_url(self.settings.record_url, {"module": obj, "id": record_id})

    # --- reading fields ------------------------------------------------------------------------------

    @property
    def owner_field(self) -> str:  # type: ignore[override]  # the integration's setting, not class data
        return self.settings.owner_path

    def owner_of(self, record: Record) -> str:
        """The owner at ``owner_path``, read as a rule's field is (``fields_path`` first); an object gives its ``id``."""
        if not self.settings.owner_path:
            return ""
        value = self._value(record, self.settings.owner_path)
        if isinstance(value, dict):
            value = value.get("id")
        return "" if isinstance(value, list) else field_text(value) or ""

    async def read_field(self, record: Record, api_name: str, *, deadline: Deadline) -> str | None:
        return field_text(self._value(record, api_name))

    def _value(self, record: Record, api_name: str) -> Any:
        try:
            path = parse_path(api_name)
        except ValueError as exc:
            raise UnexpectedResponse(f"{self.title}: the field name {api_name!r} is not a path ({exc})",
                                     kind=self.kind, operation=f"read {record.module}", reason="bad_field") from None  # fmt: skip
        if not path:
            return None
        if self.settings.fields_path and not api_name.strip().startswith("$"):
            value = get_path(get_path(record.fields, self.settings.fields_path), path, MISSING)
            if value is not MISSING:  # there, even if null: the record's own keys do not stand in for it
                return value
        return get_path(record.fields, path)

    # --- call log ----------------------------------------------------------------------------------------

    async def log_call(self, call: CallActivity, options: Any, *, deadline: Deadline) -> str:
        if not self.settings.log_url:
            raise UnexpectedResponse(f"{self.title}: no log_url is set, so calls cannot be logged", kind=self.kind,
                                     operation="log call", reason="not_configured")  # fmt: skip
        record = call.record
        if record is None and self._phone_values(call.external_number):
            record = await self.find_record(LookupKey(call.external_number, "caller_id"), self.settings.log_module,
                                            deadline=deadline)  # fmt: skip
            if record is None and getattr(options, "create_unknown", False):
                record = await self._create(call, deadline=deadline)
        values, typed = self._call_values(call, record)
        if self.settings.log_lookup_url:
            existing = await self._logged(call.call_id, values, typed, deadline=deadline)
            if existing:
                logger.info("%s: call %s already logged as %s", self.kind, call.call_id, existing)
                return existing
        method, _, _ = self._plan("log")
        # IETF httpapi Idempotency-Key draft: lets a CRM that knows it refuse a second create of the same call
        extra = {"Idempotency-Key": call.call_id} if _PRINTABLE.fullmatch(call.call_id or "") else {}
        response, data = await self._exchange("log", values, typed, deadline=deadline, operation="log call",
                                              ok=(409,), headers=extra)  # fmt: skip
        if response.status_code == 409:
            existing = await self._logged(call.call_id, values, typed, deadline=deadline) \
                if self.settings.log_lookup_url else None  # fmt: skip
            if existing:
                return existing
            raise self.error_for(response, "log call")
        activity_id = self._created_id(data, "log call")
        if not activity_id:
            if method != "PUT":
                raise self._shape("log call", f"an answer without the new activity's id at '{self.settings.id_path}'")
            activity_id = call.call_id
        logger.info("%s: call %s logged as %s (%s)", self.kind, call.call_id, activity_id,
                    record.describe() if record else "no record")  # fmt: skip
        return activity_id

    def _call_values(self, call: CallActivity, record: Record | None) -> tuple[dict[str, Any], dict[str, Any]]:
        forms = phone_forms(call.external_number, self.region)
        number = forms.e164 or call.external_number.strip()
        phones = self._phone_values(call.external_number)
        started = call.started_at if call.started_at.tzinfo else call.started_at.replace(tzinfo=timezone.utc)
        inbound = call.direction == "inbound"
        if record is not None:
            module = record.module
        else:
            module = getattr(self.settings, f"{self.settings.log_module}_module", "")
        values = {
            "call_id": call.call_id, "record_id": record.id if record else "", "module": module,
            "direction": call.direction, "outcome": call.outcome, "number": number,
            "phone": phones[0] if phones else number,
            "started_at": started.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ring_seconds": max(0, call.ring_seconds), "talk_seconds": max(0, call.talk_seconds),
            "extension": call.extension, "recording": call.recording,
            "subject": call.subject or (f"Inbound call from {number}" if inbound else f"Outbound call to {number}"),
            "description": call.description,
        }  # fmt: skip
        typed = {"record_id": record.id if record else None, "ring_seconds": values["ring_seconds"],
                 "talk_seconds": values["talk_seconds"]}  # fmt: skip
        return values, typed

    async def _logged(
        self, call_id: str, values: Mapping[str, Any], typed: Mapping[str, Any], *, deadline: Deadline
    ) -> str | None:
        """The id of an activity already carrying ``call_id`` (one the CRM lists and that holds the id)."""
        operation = "look up logged call"
        _, data = await self._exchange("log_lookup", values, typed, deadline=deadline, operation=operation, ok=(404,))
        rows, _ = self._rows(data, operation)
        for row in rows:
            if any(isinstance(v, (str, int)) and not isinstance(v, bool) and str(v) == call_id for v in _scalars(row)):
                return self._id_of(row, operation)
        return None

    def _created_id(self, data: Any, operation: str) -> str:
        rows, _ = self._rows(data, operation) if data is not None else ([], 0)
        for candidate in (rows[0] if rows else None, data):
            if isinstance(candidate, dict):
                value = get_path(candidate, self.settings.id_path)
                if not isinstance(value, (dict, list)) and field_text(value):
                    return field_text(value) or ""
        return ""

    async def _create(self, call: CallActivity, *, deadline: Deadline) -> Record | None:
        if not self.settings.create_url:
            logger.warning("%s: call %s is from an unknown number and no create_url is set: logged unlinked",
                           self.kind, call.call_id)  # fmt: skip
            return None
        obj = self.vendor_module(self.settings.log_module)
        forms = phone_forms(call.external_number, self.region)
        phones = self._phone_values(call.external_number)
        number = forms.e164 or (phones[0] if phones else "")
        values = {"number": number, "phone": phones[0] if phones else number, "module": obj}
        operation = f"create {obj}"
        _, data = await self._exchange("create", values, {}, deadline=deadline, operation=operation)
        rows, _ = self._rows(data, operation) if data is not None else ([], 0)
        row = rows[0] if rows else data if isinstance(data, dict) else {}
        record_id = self._created_id(data, operation)
        if not record_id:
            raise self._shape(operation, f"an answer without the new record's id at '{self.settings.id_path}'")
        logger.info("%s: created %s %s for an unknown caller (call %s)", self.kind, obj, record_id, call.call_id)
        return Record(module=obj, id=record_id, fields=row, url=self._record_url(obj, record_id))

    # --- errors ----------------------------------------------------------------------------------------------

    def _message_in(self, data: Any) -> str:
        paths = ([self.settings.error_path] if self.settings.error_path else []) + [
            "message", "error_description", "error.message", "error.detail", "errors[0].detail", "errors[0].message",
            "errors[0].title", "[0].message", "error", "detail", "description", "title"]  # fmt: skip
        for path in paths:
            value = get_path(data, path)
            if isinstance(value, list) and value:
                value = value[0]
            if isinstance(value, (str, int, float)) and not isinstance(value, bool) and str(value).strip():
                return str(value).strip()[:300]
        return ""

    def vendor_message(self, response: CappedResponse) -> str:
        try:
            data = json.loads(response.text)
        except ValueError:
            return super().vendor_message(response)
        return self._message_in(data)

    def error_for(self, response: CappedResponse, operation: str) -> ConnectorError:
        status = response.status_code
        detail = self.vendor_message(response)
        said = f": {detail}" if detail else ""
        args = {"kind": self.kind, "operation": operation, "reason": f"http_{status}"}
        if status == 401:
            return AuthError(f"{self.title}: credentials rejected ({operation}){said}", **args)
        if status == 403:
            return AuthError(f"{self.title}: not allowed to {operation}{said}", **args)
        if status in (404, 405):
            return UnexpectedResponse(f"{self.title} answered HTTP {status} to {operation}{said} (check the URL "
                                      "template and method)", **args)  # fmt: skip
        if 400 <= status < 500 and status != 429:
            return UnexpectedResponse(f"{self.title} refused {operation}{said or f': HTTP {status}'}", **args)
        return super().error_for(response, operation)

    def _shape(self, operation: str, what: str) -> UnexpectedResponse:
        return UnexpectedResponse(f"{self.title} sent {what} ({operation})", kind=self.kind, operation=operation,
                                  reason="bad_shape")  # fmt: skip


def _top_names(fields: Sequence[str]) -> list[str]:
    """The first step of each field path, as the CRM knows them (``account.name`` asks for ``account``).

    ``$``-rooted names point into the record's envelope, not at a CRM field: they are not asked for.
    """
    names: list[str] = []
    for name in fields:
        if name.strip().startswith("$"):
            continue
        try:
            path = parse_path(name)
        except ValueError:
            continue
        if path and isinstance(path[0], str) and path[0] not in names:
            names.append(path[0])
    return names


def _scalars(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _scalars(value)
    elif isinstance(node, list):
        for item in node:
            yield from _scalars(item)
    else:
        yield node


def _kind_of(value: Any) -> str:
    return {str: "string", bool: "boolean", int: "number", float: "number"}.get(type(value), type(value).__name__)


# --- Proprietary CRM ------------------------------------------------------------------------------------


class ProprietarySettings(TemplateSettings):
    auth: Literal["none", "basic", "bearer", "api_key", "oauth2"] = Field(
        "bearer", description="none; basic (username + password); bearer (token); api_key (token in the "
        "api_key_header header); oauth2 (client credentials at token_url)"
    )  # fmt: skip
    username: str = Field("", description="basic: the user name (a rule's CRM Username replaces it)")
    password: SecretStr | None = Field(None, description="basic: the password (a rule's CRM Password replaces it)")
    token: SecretStr | None = Field(
        None, description="bearer: the token sent as Authorization: Bearer; api_key: the key (a rule's CRM "
        "Password replaces it)"
    )  # fmt: skip
    api_key_header: str = Field("X-Api-Key", description="api_key: the header the key goes in")
    token_url: str = Field("", description="oauth2: the token endpoint, e.g. https://auth.example.com/oauth2/token")
    client_id: str = Field("", description="oauth2: the client id")
    client_secret: SecretStr | None = Field(None, description="oauth2: the client secret")
    scope: str = Field("", description="oauth2: the scope to ask for, space-separated; empty: the client's default")
    method: Literal["GET", "POST"] = Field(
        "GET", description="GET: the lookup is the URL alone; POST: lookup_body is sent as JSON"
    )
    lookup_body: str = Field(
        DEFAULT_LOOKUP_BODY, description="POST: JSON template of the lookup body ({phone} {key} {search_field} "
        "{module} {field}; \"{field}\" alone becomes a list)"
    )  # fmt: skip
    key_lookup_url: str = Field(
        "", description="URL template (GET) for typed keys when they need another endpoint, e.g. "
        "https://crm.example.com/api/{module}/{key}; empty: lookup_url with {search_field}=key_field"
    )  # fmt: skip
    log_method: Literal["POST", "PUT"] = Field(
        "POST", description="POST: create (needs log_lookup_url for idempotency); PUT: upsert at a log_url "
        "that contains {call_id}"
    )  # fmt: skip
    log_body: str = Field(DEFAULT_LOG_BODY, description="JSON template of a logged call (see log_url for placeholders)")
    create_body: str = Field(DEFAULT_CREATE_BODY, description="JSON template of a record created for an unknown number")

    @field_validator("lookup_body")
    @classmethod
    def _lookup_body(cls, value: str) -> str:
        return check_json_template(value, LOOKUP_NAMES)

    @field_validator("log_body")
    @classmethod
    def _log_body(cls, value: str) -> str:
        return check_json_template(value, LOG_NAMES)

    @field_validator("create_body")
    @classmethod
    def _create_body(cls, value: str) -> str:
        return check_json_template(value, CREATE_NAMES)

    @field_validator("token_url")
    @classmethod
    def _token_url(cls, value: str) -> str:
        return check_url_template(value, ()) if value.strip() else ""

    @field_validator("api_key_header")
    @classmethod
    def _header(cls, value: str) -> str:
        if not _HEADER_NAME.match(value):
            raise ValueError("must be a header name (letters, digits and !#$%&'*+-.^_`|~)")
        if value.lower() in ("host", "content-length", "content-type", "transfer-encoding", "connection"):
            raise ValueError(f"{value} is set by crmroute")
        return value

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        if ":" in value:
            raise ValueError("may not contain ':' (HTTP Basic splits on it)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "ProprietarySettings":
        needs = {"basic": ("username", "password"), "bearer": ("token",), "api_key": ("token",),
                 "oauth2": ("token_url", "client_id", "client_secret")}.get(self.auth, ())  # fmt: skip
        missing = [name for name in needs if not _secret(getattr(self, name)).strip()]
        if missing:
            raise ValueError(f"auth {self.auth} needs {', '.join(needs)}; missing: {', '.join(missing)}")
        if self.log_url and self.log_method == "PUT" and "call_id" not in placeholders(self.log_url):
            raise ValueError("log_method PUT needs {call_id} in log_url (the same call must go to the same URL)")
        if self.log_url and self.log_method == "POST" and not self.log_lookup_url:
            raise ValueError("log_url with log_method POST needs log_lookup_url, so a call is never logged twice "
                             "(or use log_method PUT with {call_id} in log_url)")  # fmt: skip
        return self


class ProprietaryConnector(TemplateConnector):
    kind = "proprietary"
    title = "Proprietary CRM"
    docs_url = "https://www.rfc-editor.org/rfc/rfc6570#section-3.2.2"
    Settings = ProprietarySettings
    limits_source = "your own API: none published"

    settings: ProprietarySettings

    # --- authentication -------------------------------------------------------------------------

    async def _login(self, *, deadline: Deadline) -> Token:
        if self.settings.auth != "oauth2":
            return Token("", None, {"static": True})  # nothing to fetch: the credentials go as they are
        return await self._client_credentials(deadline=deadline)

    def _static_headers(self) -> dict[str, str]:
        settings = self.settings
        if settings.auth == "basic":
            user = self.username or settings.username
            password = self.password or _secret(settings.password)
            pair = f"{user}:{password}".encode()
            return {"Authorization": f"Basic {base64.b64encode(pair).decode()}"}
        if settings.auth == "bearer":
            return {"Authorization": f"Bearer {self.password or _secret(settings.token)}"}
        if settings.auth == "api_key":
            return {settings.api_key_header: self.password or _secret(settings.token)}
        return {}

    async def _client_credentials(self, *, deadline: Deadline) -> Token:
        settings = self.settings
        pair = f"{quote_plus(settings.client_id)}:{quote_plus(_secret(settings.client_secret))}".encode()
        form = [("grant_type", "client_credentials")] + ([("scope", settings.scope)] if settings.scope else [])
        headers = {"Authorization": f"Basic {base64.b64encode(pair).decode()}", "Accept": "application/json",
                   "Content-Type": "application/x-www-form-urlencoded"}  # fmt: skip
        started = time.monotonic()
        response = await self.request("POST", settings.token_url, auth=False, deadline=deadline,
                                      operation="authenticate", ok=(400, 401, 403), headers=headers,
                                      content=urlencode(form).encode())  # fmt: skip
        try:
            data = json.loads(response.content or b"null")
        except ValueError:
            data = None
        if response.status_code != 200:  # RFC 6749 5.2: {"error": code, "error_description": text}
            code = get_path(data, "error")
            description = get_path(data, "error_description")
            if isinstance(code, str):
                text = code + (f": {description}" if isinstance(description, str) and description else "")
            else:
                text = self.vendor_message(response)
            if code == "invalid_client" or response.status_code == 401:
                what = "client id or secret rejected"
            else:
                what = "the token endpoint refused the request"
            raise AuthError(f"{self.title}: token rejected: {what}" + (f" ({text})" if text else ""), kind=self.kind,
                            operation="authenticate", reason=f"http_{response.status_code}")  # fmt: skip
        access = get_path(data, "access_token") if isinstance(data, dict) else None
        if not isinstance(access, str) or not access:
            raise UnexpectedResponse(f"{self.title}: the token answer from {safe_url(settings.token_url)} has no "
                                     "access_token", kind=self.kind, operation="authenticate", reason="bad_token")  # fmt: skip
        token_type = get_path(data, "token_type")
        if isinstance(token_type, str) and token_type.lower() != "bearer":
            raise UnexpectedResponse(f"{self.title}: the token endpoint issued a {token_type} token; only Bearer "
                                     "tokens are supported", kind=self.kind, operation="authenticate",
                                     reason="bad_token")  # fmt: skip
        lifetime = get_path(data, "expires_in")
        if isinstance(lifetime, str) and lifetime.strip().isdigit():
            lifetime = int(lifetime)
        expires_at = started + float(lifetime) if isinstance(lifetime, (int, float)) and not isinstance(lifetime, bool) \
            and lifetime > 0 else None  # fmt: skip
        logger.debug("%s: access token issued, expires in %s s", self.kind, lifetime)
        return Token(access, expires_at, issued_at=started)

    # --- requests ---------------------------------------------------------------------------------

    def _plan(self, what: str) -> tuple[str, str, str | None]:
        settings = self.settings
        if what == "lookup" or (what == "key_lookup" and not settings.key_lookup_url):
            return settings.method, settings.lookup_url, settings.lookup_body if settings.method == "POST" else None
        if what == "key_lookup":
            return "GET", settings.key_lookup_url, None
        if what == "log_lookup":
            return "GET", settings.log_lookup_url, None
        if what == "log":
            return settings.log_method, settings.log_url, settings.log_body
        if what == "create":
            return "POST", settings.create_url, settings.create_body
        raise ValueError(what)

    def _payload(self, template: str, values: Mapping[str, Any], typed: Mapping[str, Any]) -> Any:
        return fill_json(template, values, typed)

    async def _send(
        self, method: str, url: str, payload: Any, *, deadline: Deadline, operation: str, ok: Sequence[int],
        headers: Mapping[str, str],
    ) -> CappedResponse:  # fmt: skip
        headers = {"Accept": "application/json", **headers}
        kwargs: dict[str, Any] = {}
        if payload is not None:
            headers["Content-Type"] = "application/json"
            kwargs["content"] = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        if self.settings.auth == "oauth2":
            return await self.request(method, url, deadline=deadline, operation=operation, ok=ok, headers=headers,
                                      **kwargs)  # fmt: skip
        return await self.request(method, url, auth=False, deadline=deadline, operation=operation, ok=ok,
                                  headers=headers | self._static_headers(), **kwargs)  # fmt: skip
