"""The rule-level Custom CRM (SPEC section 5): one HTTPS request, one value back.

Request
    GET  ``custom_url`` with ``field_name``, ``dtmf`` (only when the caller
         typed digits) and ``caller_id`` (the caller's number, empty when
         withheld) appended to any query the URL already has; the existing
         query is kept byte for byte (a duplicate name is sent twice).
    POST ``custom_url`` with ``Content-Type: application/json`` and the body
         ``{"field_name": ..., "dtmf": ..., "caller_id": ..., "did": ...}``;
         every key is always present, ``dtmf`` is ``null`` when no digits
         were typed.
    A rule whose rows' conditions read other fields adds ``fields`` (GET:
    ``fields=Status,Region``; POST: ``"fields": ["Status", "Region"]``),
    the rule's field first; they come back as keys of a JSON object answer.
    The rule's custom headers are added to either (``Content-Type`` of a POST
    stays ours). Only ``https://`` URLs; redirects are never followed.

Answer (2xx)
    JSON object   its ``value`` key, else the key named like the field (exact,
                  then case-insensitive), else the empty value
    JSON scalar   its text: strings as is, numbers as the server wrote them
                  (``50.0`` stays ``50.0``, ``7`` stays ``7``), booleans
                  ``true``/``false``; a nested object/array is its compact JSON
    JSON null, empty body
                  the empty value (``None``)
    anything else the body text, trimmed (JSON arrays included). Bodies are
                  decoded per their charset, else as UTF-8 with bad bytes replaced.
    A body labelled ``application/json`` (or ``+json``) that does not parse is
    ``UnexpectedResponse(reason="bad_json")``: it is a broken answer, not a value.

Failures
    404 -> ``None`` (no such record: rows are walked with the empty value);
    429 -> ``RateLimited(reason="http_429")`` with ``.retry_after`` (seconds or
    ``None``); any other non-2xx, 3xx included
    -> ``UnexpectedResponse(reason="http_<status>")``; timeouts, TLS, network
    and over-64-KB bodies as ``_http.map_http_error``/``send_capped`` say.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

import httpx

from crmroute.connectors._http import MAX_RESPONSE_BYTES, CappedResponse, safe_url, send_capped
from crmroute.connectors.base import retry_after_seconds
from crmroute.errors import ConfigError, RateLimited, UnexpectedResponse
from crmroute.routing.engine import LookupKey

KIND = "custom"
OPERATION = "fetch"

# RFC 7230 section 3.2.6: token = 1*tchar
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Headers the HTTP layer owns: hop-by-hop ones and those describing the message itself.
FORBIDDEN_HEADERS = frozenset(
    {
        "connection",
        "content-length",
        "expect",
        "host",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


def validate_custom_url(url: object) -> str | None:
    """Why ``url`` cannot be a Custom CRM URL, or ``None`` when it can."""
    if not isinstance(url, str) or not url:
        return "is required"
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        return "must not contain spaces or control characters"
    if not url[:8].lower() == "https://":
        return "must start with https://"
    try:
        parsed = httpx.URL(url)
    except Exception:
        return "is not a valid URL"
    if not parsed.host:
        return "must name a host, like https://crm.example.com/lookup"
    return None


def validate_header(name: object, value: object) -> str | None:
    """Why ``name: value`` cannot be a custom header, or ``None`` when it can.

    The message names the header but never quotes its value (it may be a secret).
    """
    if not isinstance(name, str) or not name:
        return "header name is required"
    if not _TOKEN.match(name):
        return f"header name {name!r} may contain only letters, digits and !#$%&'*+-.^_`|~"
    if name.lower() in FORBIDDEN_HEADERS:
        return f"header {name} is set by crmroute and cannot be overridden"
    if not isinstance(value, str):
        return f"header {name} needs a text value"
    if "\r" in value or "\n" in value:
        return f"header {name} value must not contain line breaks"
    if any((ord(ch) < 0x20 and ch != "\t") or ord(ch) >= 0x7F for ch in value):
        return f"header {name} value must be printable ASCII"
    return None


async def fetch_custom(
    client: httpx.AsyncClient,
    *,
    url: str,
    post: bool,
    headers: list[tuple[str, str]],
    field_name: str,
    key: LookupKey,
    caller_id: str,
    did: str,
    timeout: float,
) -> str | None:
    """Ask the Custom CRM at ``url`` for ``field_name`` of the record ``key`` names.

    Returns the value text, or ``None`` for the empty value (404, null, empty
    body, object without the field). Raises ``ConfigError`` for a URL or header
    the rules validator should have refused, ``ConnectorError`` for the rest.
    """
    values = await fetch_custom_fields(client, url=url, post=post, headers=headers, field_name=field_name, key=key,
                                       caller_id=caller_id, did=did, timeout=timeout)  # fmt: skip
    return values[field_name]


async def fetch_custom_fields(
    client: httpx.AsyncClient,
    *,
    url: str,
    post: bool,
    headers: list[tuple[str, str]],
    field_name: str,
    key: LookupKey,
    caller_id: str,
    did: str,
    timeout: float,
    extra_fields: Sequence[str] = (),
) -> dict[str, str | None]:
    """``fetch_custom`` for a rule whose rows read other fields too, in the same one request.

    The request also names them (``fields=Region,Tier``; a POST body's ``"fields"`` list); they are read from
    a JSON object answer by their names (a non-object answer is the rule field's value alone). A 404 is
    ``None`` for every field.
    """
    extra = [name for name in dict.fromkeys(extra_fields) if name != field_name]
    parsed = _checked_url(url)
    for name, value in headers:
        problem = validate_header(name, value)
        if problem:
            raise ConfigError(problem, field="custom_headers")

    dtmf = key.value if key.source == "dtmf" else None
    caller = key.value if key.source == "caller_id" else (caller_id or "")
    request_headers = httpx.Headers(headers)
    if post:
        request_headers["Content-Type"] = "application/json"
        body: dict[str, Any] = {"field_name": field_name, "dtmf": dtmf, "caller_id": caller, "did": did or ""}
        if extra:
            body["fields"] = [field_name, *extra]
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        request = client.build_request("POST", parsed, headers=request_headers, content=content)
    else:
        params = [("field_name", field_name)]
        if dtmf is not None:
            params.append(("dtmf", dtmf))
        params.append(("caller_id", caller))
        if extra:
            params.append(("fields", ",".join([field_name, *extra])))
        request = client.build_request("GET", _with_params(parsed, params), headers=request_headers)

    response = await send_capped(
        client, request, timeout=timeout, limit=MAX_RESPONSE_BYTES, kind=KIND, operation=OPERATION
    )
    status = response.status_code
    if status == 404:
        return dict.fromkeys([field_name, *extra])
    if status == 429:
        limited = RateLimited(
            f"the Custom CRM at {safe_url(url)} is rate limiting (HTTP 429)",
            kind=KIND,
            operation=OPERATION,
            reason="http_429",
        )
        limited.retry_after = retry_after_seconds(response)  # the router pauses this host's budget
        raise limited
    if not 200 <= status < 300:
        raise UnexpectedResponse(
            f"the Custom CRM at {safe_url(url)} answered HTTP {status}",
            kind=KIND,
            operation=OPERATION,
            reason=f"http_{status}",
        )
    values = {field_name: parse_answer(response, field_name)}
    if extra:
        values |= parse_fields(response, extra)
    return values


def parse_fields(response: CappedResponse, names: Sequence[str]) -> dict[str, str | None]:
    """Other fields of a JSON object answer, by name (exact, then case-insensitive); absent or not JSON: ``None``."""
    try:
        data = _loads(response.text.strip() or "null")
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return dict.fromkeys(names)
    folded = {str(k).casefold(): v for k, v in data.items()}
    return {name: _scalar_text(data[name] if name in data else folded.get(name.casefold())) for name in names}


@functools.lru_cache(maxsize=1024)
def _checked_url(url: str) -> httpx.URL:
    """``url`` parsed, once per rule URL rather than per call; ``ConfigError`` when it is no Custom CRM URL."""
    problem = validate_custom_url(url)
    if problem:
        raise ConfigError(problem, field="custom_url")
    return httpx.URL(url)


def _with_params(parsed: httpx.URL, params: list[tuple[str, str]]) -> httpx.URL:
    """``parsed`` with ``params`` appended after its own query, which is kept as is."""
    ours = urlencode(params).encode("ascii")
    existing = parsed.query.rstrip(b"&")
    return parsed.copy_with(query=existing + b"&" + ours if existing else ours, fragment=None)


class _RawNumber(str):
    """A JSON number kept as the text the server wrote."""


def _loads(text: str) -> Any:
    return json.loads(text, parse_int=_RawNumber, parse_float=_RawNumber, parse_constant=_RawNumber)


def parse_answer(response: CappedResponse, field_name: str) -> str | None:
    """The value in a 2xx answer (see the module docstring)."""
    text = response.text.strip()
    if not text:
        return None
    media_type = response.media_type
    labelled_json = media_type == "application/json" or media_type.endswith("+json")
    try:
        data = _loads(text)
    except ValueError:
        if labelled_json:
            raise UnexpectedResponse(
                f"the Custom CRM at {safe_url(response.url)} sent malformed JSON",
                kind=KIND,
                operation=OPERATION,
                reason="bad_json",
            ) from None
        return text
    if isinstance(data, dict):
        if "value" in data:
            return _scalar_text(data["value"])
        if field_name in data:
            return _scalar_text(data[field_name])
        folded = field_name.casefold()
        for name, value in data.items():
            if name.casefold() == folded:
                return _scalar_text(value)
        return None
    if isinstance(data, list):
        return text
    return _scalar_text(data)


def _scalar_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, _RawNumber):
        return str(value)
    if isinstance(value, str):
        return value
    return _json_text(value)


def _json_text(value: Any) -> str:
    """Compact JSON for ``value``, numbers as the server wrote them."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, _RawNumber):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(_json_text(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_json_text(k)}:{_json_text(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"not a JSON value: {type(value).__name__}")
