"""The one HTTP client every connector shares, and the rules for using it.

- ``make_client(settings)`` builds the process-wide ``httpx.AsyncClient``:
  TLS verification always on (system CAs + certifi + ``CRMROUTE_CA_BUNDLE``
  in one ``ssl.SSLContext``, built once), pooled keep-alive connections,
  timeouts from the named constants below, redirects never followed,
  ``User-Agent: crmroute/<version>``.
- Its connections run on ``crmroute.connectors._transport``: httpcore's pool
  and HTTP/1.1 code over plain asyncio transports.
- ``send_capped(...)`` sends one request under a total time budget and reads
  at most ``MAX_RESPONSE_BYTES`` of body; a bigger answer is
  ``UnexpectedResponse(reason="too_large")``.
- ``map_http_error(exc, ...)`` is the one place an httpx (or timeout) exception
  becomes a ``ConnectorError``; callers ``raise map_http_error(exc) from exc``:

      ConnectTimeout ReadTimeout WriteTimeout PoolTimeout, our own budget
                                  -> ConnectorTimeout      reason "timeout"
      ConnectError caused by an ssl.SSLError (bad certificate, handshake)
                                  -> ConnectorUnavailable  reason "tls"
      other ConnectError          -> ConnectorUnavailable  reason "connect"
      DecodingError (bad gzip...) -> UnexpectedResponse    reason "bad_encoding"
      any other transport/protocol error
                                  -> ConnectorUnavailable  reason "network"

Messages are safe to show an admin: they quote URLs through ``safe_url``
(no userinfo, no query string, no fragment) and never include header values
or the text of the underlying exception (h11 errors can quote headers); TLS
failures add the certificate verifier's own short reason.
"""

from __future__ import annotations

import asyncio
import codecs
import ssl
from dataclasses import dataclass
from email.message import Message
from typing import Any

import certifi
import httpx

from crmroute import __version__
from crmroute.connectors._transport import Transport
from crmroute.errors import ConnectorError, ConnectorTimeout, ConnectorUnavailable, UnexpectedResponse
from crmroute.settings import Settings

MAX_RESPONSE_BYTES = 64 * 1024

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
WRITE_TIMEOUT = 10.0
POOL_TIMEOUT = 5.0
DEFAULT_TIMEOUT = httpx.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT, write=WRITE_TIMEOUT, pool=POOL_TIMEOUT)

MAX_CONNECTIONS = 100
MAX_KEEPALIVE_CONNECTIONS = 20
KEEPALIVE_EXPIRY = 30.0
DEFAULT_LIMITS = httpx.Limits(
    max_connections=MAX_CONNECTIONS,
    max_keepalive_connections=MAX_KEEPALIVE_CONNECTIONS,
    keepalive_expiry=KEEPALIVE_EXPIRY,
)

USER_AGENT = f"crmroute/{__version__}"


def ssl_context(ca_bundle: str | None = None) -> ssl.SSLContext:
    """A verifying client context trusting the system CAs, certifi's, and ``ca_bundle``'s."""
    context = ssl.create_default_context()  # system store, CERT_REQUIRED, check_hostname
    context.load_verify_locations(cafile=certifi.where())
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)
    return context


def make_client(
    settings: Settings,
    *,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The shared client; the caller owns it and must ``await client.aclose()``.

    ``transport`` is for tests that want a mock transport instead of the network.
    """
    ca_bundle = str(settings.ca_bundle) if settings.ca_bundle else None
    context = ssl_context(ca_bundle)
    return httpx.AsyncClient(
        verify=context,
        timeout=timeout,
        limits=DEFAULT_LIMITS,
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
        transport=transport if transport is not None else Transport(context, DEFAULT_LIMITS),
        trust_env=False,  # no proxy or netrc surprises from the environment
    )


def safe_url(url: httpx.URL | str) -> str:
    """``url`` fit to quote in a message: no user:password, query or fragment."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
        return str(parsed.copy_with(userinfo=b"", query=None, fragment=None))
    except Exception:  # an unparsable URL: say nothing of it rather than leak it
        return "<invalid URL>"


@dataclass(frozen=True)
class CappedResponse:
    """A response read in full, known to be at most the cap it was read with."""

    status_code: int
    headers: httpx.Headers
    content: bytes
    url: httpx.URL

    @property
    def charset(self) -> str | None:
        """The ``charset`` of ``Content-Type`` if Python knows it, else ``None``."""
        content_type = self.headers.get("content-type")
        if not content_type:
            return None
        message = Message()
        message["content-type"] = content_type
        charset = message.get_param("charset")
        if not isinstance(charset, str):
            return None
        try:
            return codecs.lookup(charset.strip()).name
        except LookupError:
            return None

    @property
    def media_type(self) -> str:
        """``Content-Type`` without parameters, lower-cased (``""`` when absent)."""
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    @property
    def text(self) -> str:
        """The body decoded per its charset, else UTF-8; bad bytes become U+FFFD."""
        charset = self.charset or "utf-8"
        if charset == "utf-8":
            charset = "utf-8-sig"  # drop a byte-order mark if the server sent one
        return self.content.decode(charset, errors="replace")


async def send_capped(
    client: httpx.AsyncClient,
    request: httpx.Request | str,
    url: httpx.URL | str | None = None,
    *,
    timeout: float,
    limit: int = MAX_RESPONSE_BYTES,
    kind: str = "",
    operation: str = "",
    **request_kwargs: Any,
) -> CappedResponse:
    """Send ``request`` (or build one from method, ``url`` and ``request_kwargs``).

    The whole exchange, body included, must finish within ``timeout`` seconds;
    at most ``limit`` body bytes are read (after content decoding). Never
    follows redirects: a 3xx comes back as is. Failures raise ``ConnectorError``.
    """
    if isinstance(request, str):
        if url is None:
            raise TypeError("send_capped(client, method, url, ...) needs a url")
        request = client.build_request(request, url, **request_kwargs)
    elif url is not None or request_kwargs:
        raise TypeError("give either a built request or a method and url, not both")
    timeout = max(0.0, timeout)
    # httpx's per-phase timeouts, capped by the budget; the budget itself bounds the total.
    request.extensions["timeout"] = httpx.Timeout(
        connect=min(CONNECT_TIMEOUT, timeout),
        read=min(READ_TIMEOUT, timeout),
        write=min(WRITE_TIMEOUT, timeout),
        pool=min(POOL_TIMEOUT, timeout),
    ).as_dict()
    try:
        async with asyncio.timeout(timeout):
            response = await client.send(request, stream=True, follow_redirects=False)
            try:
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise _too_large(request.url, limit, kind, operation)
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise _too_large(request.url, limit, kind, operation)
                    chunks.append(chunk)
            finally:
                await response.aclose()
    except (httpx.HTTPError, TimeoutError) as exc:
        raise map_http_error(exc, url=request.url, kind=kind, operation=operation) from exc
    return CappedResponse(
        status_code=response.status_code,
        headers=response.headers,
        content=b"".join(chunks),
        url=request.url,
    )


def _too_large(url: httpx.URL, limit: int, kind: str, operation: str) -> UnexpectedResponse:
    return UnexpectedResponse(
        f"the answer from {safe_url(url)} is larger than {limit // 1024} KB",
        kind=kind,
        operation=operation,
        reason="too_large",
    )


def map_http_error(
    exc: BaseException,
    *,
    url: httpx.URL | str | None = None,
    kind: str = "",
    operation: str = "",
) -> ConnectorError:
    """The ``ConnectorError`` for an httpx exception (or an expired ``asyncio.timeout``).

    Returns it for the caller to ``raise ... from exc``. The message names the
    URL (made safe) and the failure, never the exception's own text.
    """
    where = f" to {safe_url(url)}" if url is not None else ""
    if url is None and isinstance(exc, httpx.RequestError):
        try:
            where = f" to {safe_url(exc.request.url)}"
        except RuntimeError:  # no request attached
            pass
    common = {"kind": kind, "operation": operation}
    if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
        return ConnectorTimeout(f"the request{where} timed out", reason="timeout", **common)
    if isinstance(exc, httpx.ConnectError):
        tls = _ssl_cause(exc)
        if tls is not None:
            return ConnectorUnavailable(f"TLS failure on the request{where}: {_ssl_reason(tls)}", reason="tls", **common)
        return ConnectorUnavailable(f"could not connect{where}", reason="connect", **common)
    if isinstance(exc, httpx.DecodingError):
        return UnexpectedResponse(f"the answer{where} could not be decoded", reason="bad_encoding", **common)
    tls = _ssl_cause(exc)
    if tls is not None:
        return ConnectorUnavailable(f"TLS failure on the request{where}: {_ssl_reason(tls)}", reason="tls", **common)
    return ConnectorUnavailable(f"network error on the request{where} ({type(exc).__name__})", reason="network", **common)


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The ``ssl.SSLError`` somewhere in ``exc``'s cause/context chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _ssl_reason(error: ssl.SSLError) -> str:
    """A short, secret-free description: the verifier's message or OpenSSL's reason code."""
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        return f"certificate verify failed: {error.verify_message}"
    if error.reason:
        return str(error.reason).lower().replace("_", " ")
    return type(error).__name__
