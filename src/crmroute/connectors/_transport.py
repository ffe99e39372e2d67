"""httpx's transport for the shared client: httpcore over plain asyncio transports.

httpcore (the engine under httpx) runs its connections on anyio by default.
Two costs of that showed in every CRM request (py-spy, the uncached
benchmark, at 20 calls in flight):

- the pool asks every idle connection "is the socket readable?" on each
  request: through anyio that is a ``poll()`` syscall behind attribute
  lookups per connection; here it is a flag the protocol keeps;
- httpcore 1.0's pool bookkeeping counts every connection once per idle one,
  twice per request (quadratic in the pool size); ``_Pool`` decides the
  same in one pass.

Both plug into httpcore's documented network-backend interface, except
``_Pool`` (a private method) and ``Transport`` (httpx's private ``_pool``):
httpx and httpcore are pinned, and ``tests/connectors/test_transport.py`` fails if
either stops taking effect. Measured per uncached call: 1.66 -> 0.76 ms of
CPU in the HTTP layer.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

READ_BUFFER_LIMIT = 256 * 1024  # received bytes held before the socket stops being read
HAPPY_EYEBALLS_DELAY = 0.25  # seconds before the next address of a host is tried too (as anyio does)


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

    def __init__(self, context: ssl.SSLContext, limits: httpx.Limits) -> None:
        super().__init__(verify=context, limits=limits, trust_env=False)
        # httpx builds its pool with httpcore's default (anyio) backend and has no parameter
        # for another; tests/connectors/test_transport.py checks this replacement took effect.
        self._pool = _Pool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=AsyncioBackend(),
        )
