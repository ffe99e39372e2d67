"""The shared client's connections (``_transport.AsyncioBackend``) against a raw HTTP/1.1 server we control."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpcore
import httpx
import pytest
import trustme

from crmroute.connectors._http import make_client, send_capped, ssl_context
from crmroute.connectors._transport import AsyncioBackend, Transport
from crmroute.errors import ConnectorTimeout, ConnectorUnavailable, UnexpectedResponse
from crmroute.settings import Settings

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"value\": \"GOLD\"}"


@dataclass
class RawServer:
    """HTTPS on 127.0.0.1: ``answer(n)`` gives the bytes for the n-th request of a connection (None: stay silent)."""

    url: str
    ca_path: Path
    answer: Callable[[int], bytes | None]
    close_after_answer: bool = False
    connections: int = 0
    closed: int = 0  # connections the client closed (or that ended)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)


@pytest.fixture
async def raw(tmp_path: Path) -> AsyncIterator[RawServer]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    server_state: list[RawServer] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state = server_state[0]
        state.connections += 1
        state.writers.append(writer)
        try:
            n = 0
            while True:
                await reader.readuntil(b"\r\n\r\n")
                answer = state.answer(n)
                n += 1
                if answer is None:
                    await reader.read()  # silent until the client hangs up
                    return
                writer.write(answer)
                await writer.drain()
                if state.close_after_answer:
                    return
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            state.closed += 1
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    server_state.append(RawServer(f"https://127.0.0.1:{port}/lookup", ca_path, lambda n: OK))
    try:
        yield server_state[0]
    finally:
        for writer in server_state[0].writers:
            writer.close()
        server.close()


async def get(http, url: str, timeout: float = 10.0):
    return await send_capped(http, "GET", url, timeout=timeout, kind="custom", operation="fetch")


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


def test_the_shared_client_pools_connections_on_the_asyncio_backend():
    http = make_client(Settings())
    pool = http._transport._pool  # httpx builds it with anyio; _transport.Transport must have replaced it
    assert isinstance(pool, httpcore.AsyncConnectionPool)
    assert isinstance(pool._network_backend, AsyncioBackend)


async def test_keep_alive_reuses_one_connection(raw):
    async with make_client(Settings(ca_bundle=raw.ca_path)) as http:
        for _ in range(5):
            response = await get(http, raw.url)
            assert response.status_code == 200 and response.content == b'{"value": "GOLD"}'
    assert raw.connections == 1


async def test_concurrent_requests_each_get_a_connection_then_share_them(raw):
    async with make_client(Settings(ca_bundle=raw.ca_path)) as http:
        for _ in range(3):
            answers = await asyncio.gather(*(get(http, raw.url) for _ in range(5)))
            assert all(a.status_code == 200 for a in answers)
    assert raw.connections <= 5


async def test_an_idle_connection_the_server_closed_is_not_reused(raw):
    raw.close_after_answer = True  # keep-alive promised (no Connection: close), then hung up
    async with make_client(Settings(ca_bundle=raw.ca_path)) as http:
        assert (await get(http, raw.url)).status_code == 200
        await eventually(lambda: raw.closed == 1)
        await asyncio.sleep(0.2)  # the end of the connection reaches the client
        assert (await get(http, raw.url)).status_code == 200
    assert raw.connections == 2


async def test_a_silent_server_times_out_and_its_connection_is_closed(raw):
    raw.answer = lambda n: None
    async with make_client(Settings(ca_bundle=raw.ca_path)) as http:
        with pytest.raises(ConnectorTimeout):
            await get(http, raw.url, timeout=0.2)
        await eventually(lambda: raw.closed == 1)  # the socket is not left open for a TLS goodbye


async def test_a_server_hanging_up_mid_answer_is_a_network_error(raw):
    raw.answer = lambda n: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"
    raw.close_after_answer = True
    async with make_client(Settings(ca_bundle=raw.ca_path)) as http:
        with pytest.raises(ConnectorUnavailable) as caught:
            await get(http, raw.url)
    assert caught.value.reason == "network"


async def test_a_large_body_is_cut_at_the_cap(raw):
    body = b"x" * (1024 * 1024)
    raw.answer = lambda n: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + (
        b"%x\r\n" % len(body)) + body + b"\r\n0\r\n\r\n"  # fmt: skip
    async with make_client(Settings(ca_bundle=raw.ca_path)) as http:
        with pytest.raises(UnexpectedResponse) as caught:
            await get(http, raw.url)
    assert caught.value.reason == "too_large"


async def test_a_certificate_for_another_host_is_a_tls_failure(raw):
    url = raw.url.replace("127.0.0.1", "localhost")  # the certificate names 127.0.0.1 only
    async with make_client(Settings(ca_bundle=raw.ca_path)) as http:
        with pytest.raises(ConnectorUnavailable) as caught:
            await get(http, url)
    assert caught.value.reason in ("tls", "connect")  # "connect" only where localhost is not 127.0.0.1
    if caught.value.reason == "tls":
        assert "certificate verify failed" in str(caught.value)


async def test_requests_past_max_connections_wait_for_one(raw):
    context = ssl_context(str(raw.ca_path))
    limits = httpx.Limits(max_connections=2, max_keepalive_connections=2, keepalive_expiry=30)
    async with httpx.AsyncClient(transport=Transport(context, limits)) as http:
        answers = await asyncio.gather(*(get(http, raw.url) for _ in range(7)))
    assert [a.status_code for a in answers] == [200] * 7
    assert raw.connections == 2


async def test_idle_connections_beyond_the_keep_alive_limit_are_closed(raw):
    context = ssl_context(str(raw.ca_path))
    limits = httpx.Limits(max_connections=10, max_keepalive_connections=2, keepalive_expiry=30)
    transport = Transport(context, limits)
    async with httpx.AsyncClient(transport=transport) as http:
        await asyncio.gather(*(get(http, raw.url) for _ in range(6)))
        assert raw.connections == 6
        assert len(transport._pool.connections) == 2
        await eventually(lambda: raw.closed == 4)
        assert (await get(http, raw.url)).status_code == 200
    assert raw.connections == 6  # the kept ones served the next request


async def test_expired_keep_alive_connections_are_replaced(raw):
    context = ssl_context(str(raw.ca_path))
    limits = httpx.Limits(max_connections=10, max_keepalive_connections=10, keepalive_expiry=0.05)
    async with httpx.AsyncClient(transport=Transport(context, limits)) as http:
        assert (await get(http, raw.url)).status_code == 200
        await asyncio.sleep(0.1)
        assert (await get(http, raw.url)).status_code == 200
    assert raw.connections == 2
