"""The one HTTP client every connector shares, and the rules for using it.

- ``make_client(settings)`` builds the process-wide ``httpx.AsyncClient``:
  TLS verification always on (system CAs + certifi + ``CRMROUTE_CA_BUNDLE``
  in one ``ssl.SSLContext``, built once), pooled keep-alive connections,
  timeouts from the named constants below, redirects never followed,
  ``User-Agent: crmroute/<version>``.
- Its connections run on ``AsyncioBackend``: httpcore's pool and HTTP/1.1
  code over plain asyncio transports instead of anyio streams. The pool asks
  every idle connection "is the socket readable?" on each request; here that
  is a flag the protocol keeps, not a ``poll()`` syscall behind anyio's
  attribute lookups, and a read or write is one ``await`` with no extra
  cancel scopes or checkpoints.
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
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import Message
from typing import Any

import certifi
import httpcore
import httpx

from crmroute import __version__
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

READ_BUFFER_LIMIT = 256 * 1024  # received bytes held before the socket stops being read
HAPPY_EYEBALLS_DELAY = 0.25  # seconds before the next address of a host is tried too (as anyio does)


def ssl_context(ca_bundle: str | None = None) -> ssl.SSLContext:
    """A verifying client context trusting the system CAs, certifi's, and ``ca_bundle``'s."""
    context = ssl.create_default_context()  # system store, CERT_REQUIRED, check_hostname
    context.load_verify_locations(cafile=certifi.where())
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)
    return context


class _Protocol(asyncio.Protocol):
    """One connection's received bytes, end of stream and write flow control, kept for ``_Stream``."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False  # the peer will send nothing more (EOF, close_notify or connection lost)
        self.error: BaseException | None = None  # why the connection was lost, if not cleanly
        self.lost = False
        self.reading_paused = False
        self.writing_paused = False
        self.waiter: asyncio.Future[None] | None = None  # a read or a write waiting for this connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > READ_BUFFER_LIMIT and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = self.eof = True
        self.error = exc
        self._wake()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class _Stream(httpcore.AsyncNetworkStream):
    """An ``httpcore`` network stream over an asyncio transport (TCP, or TLS after ``start_tls``)."""

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol

    async def _wait(self, timeout: float | None) -> None:
        """Until the protocol has news (data, EOF, loss, write room); ``TimeoutError`` after ``timeout`` s."""
        loop = asyncio.get_running_loop()
        waiter = self._protocol.waiter = loop.create_future()
        timer = None if timeout is None else loop.call_later(max(timeout, 0.0), _expire, waiter)
        try:
            await waiter
        finally:
            self._protocol.waiter = None
            if timer is not None:
                timer.cancel()

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        protocol = self._protocol
        if not protocol.buffer and not protocol.eof:
            try:
                await self._wait(timeout)
            except TimeoutError as exc:
                raise httpcore.ReadTimeout("timed out reading the response") from exc
        if protocol.buffer:
            data = bytes(protocol.buffer[:max_bytes])
            del protocol.buffer[:max_bytes]
            if protocol.reading_paused and len(protocol.buffer) <= READ_BUFFER_LIMIT // 2 and not protocol.lost:
                protocol.reading_paused = False
                self._transport.resume_reading()
            return data
        if protocol.error is not None:
            raise httpcore.ReadError("the connection was lost") from protocol.error
        return b""  # end of stream: httpcore reports what that means at this point of the exchange

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        protocol = self._protocol
        if protocol.lost or self._transport.is_closing():
            if protocol.error is not None:
                raise httpcore.WriteError("the connection was lost") from protocol.error
            raise httpcore.WriteError("the connection is closed")
        self._transport.write(buffer)
        while protocol.writing_paused and not protocol.lost:
            try:
                await self._wait(timeout)
            except TimeoutError as exc:
                raise httpcore.WriteTimeout("timed out sending the request") from exc
        if protocol.error is not None:
            raise httpcore.WriteError("the connection was lost") from protocol.error

    async def aclose(self) -> None:
        # Like anyio's TLS streams without standard_compatible: no close_notify exchange
        # to wait for, the socket is closed now (a server that never answers holds no fd).
        self._transport.abort()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(self._transport, self._protocol, ssl_context,
                                                 server_hostname=server_hostname)  # fmt: skip
        except TimeoutError as exc:
            self._transport.abort()
            raise httpcore.ConnectTimeout("timed out in the TLS handshake") from exc
        except OSError as exc:  # ssl.SSLError included: map_http_error finds it in the cause chain
            self._transport.abort()
            raise httpcore.ConnectError("the TLS handshake failed") from exc
        if transport is None:  # the connection closed during the handshake
            self._transport.abort()
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        self._protocol.transport = transport
        return _Stream(transport, self._protocol)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # asked of every idle pooled connection on every request: no syscall
            protocol = self._protocol
            return bool(protocol.buffer) or protocol.eof
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend on asyncio transports (see the module docstring)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_connection(
                    _Protocol, host, port, local_addr=(local_address, 0) if local_address else None,
                    happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY,
                )  # fmt: skip
        except TimeoutError as exc:  # before OSError: TimeoutError is one
            raise httpcore.ConnectTimeout(f"timed out connecting to {host}:{port}") from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"could not connect to {host}:{port}") from exc
        sock = transport.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return _Stream(transport, protocol)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _Pool(httpcore.AsyncConnectionPool):
    """httpcore's pool with its per-request bookkeeping made linear in the pooled connections.

    httpcore 1.0's ``_assign_requests_to_connections`` (run when a request
    arrives and again when its response is closed) counts every pooled
    connection once per idle one: quadratic, and at 20 kept-alive connections
    the largest CPU cost of a request. This is the same decision in one pass:
    drop closed connections, close expired ones, close idle ones while the
    pool holds more than ``max_keepalive_connections`` (all counted, as
    upstream does), then give each queued request the first available
    connection for its origin, else a new one if under ``max_connections``,
    else one that replaces the first idle connection.
    """

    def _assign_requests_to_connections(self) -> list[httpcore.AsyncConnectionInterface]:
        closing: list[httpcore.AsyncConnectionInterface] = []
        kept: list[httpcore.AsyncConnectionInterface] = []
        remaining = len(self._connections)
        for connection in self._connections:
            if connection.is_closed():
                remaining -= 1
            elif connection.has_expired() or (connection.is_idle() and remaining > self._max_keepalive_connections):
                remaining -= 1
                closing.append(connection)
            else:
                kept.append(connection)
        self._connections = kept
        for pool_request in self._requests:
            if not pool_request.is_queued():
                continue
            origin = pool_request.request.url.origin
            for connection in kept:
                if connection.can_handle_request(origin) and connection.is_available():
                    pool_request.assign_to_connection(connection)
                    break
            else:
                if len(kept) < self._max_connections:
                    connection = self.create_connection(origin)
                else:
                    idle = next((c for c in kept if c.is_idle()), None)
                    if idle is None:
                        continue  # stays queued until a connection frees up
                    kept.remove(idle)
                    closing.append(idle)
                    connection = self.create_connection(origin)
                kept.append(connection)
                pool_request.assign_to_connection(connection)
        return closing


class Transport(httpx.AsyncHTTPTransport):
    """httpx's HTTP transport with its connection pool on ``AsyncioBackend``."""

    def __init__(self, context: ssl.SSLContext, limits: httpx.Limits = DEFAULT_LIMITS) -> None:
        super().__init__(verify=context, limits=limits, trust_env=False)
        # httpx builds its pool with httpcore's default (anyio) backend and has no parameter
        # for another; tests/connectors/test_http.py checks this replacement took effect.
        self._pool = _Pool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=AsyncioBackend(),
        )


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
        transport=transport if transport is not None else Transport(context),
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
