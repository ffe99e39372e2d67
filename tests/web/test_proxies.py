"""X-Forwarded-For/-Proto believed only from CRMROUTE_TRUSTED_PROXIES: the ASGI middleware, the app and
the real web server (whose own proxy-header handling would believe any loopback client)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from crmroute.service import web_config
from crmroute.settings import parse_networks
from crmroute.web.deps import SESSION_COOKIE
from crmroute.web.proxies import ForwardedHeaders
from crmroute.web.throttle import LoginThrottle
from tests.web.conftest import ADMIN, Clock, login_csrf_from, sign_in

TRUSTED = parse_networks("10.0.0.0/8, 2001:db8::1")


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": f"{scope['client'][0]} {scope['scheme']}".encode()})


def seen(peer: str, headers: dict[str, str], trusted=TRUSTED) -> str:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    scope = {"type": "http", "client": (peer, 4711), "scheme": "http", "headers": raw}
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(ForwardedHeaders(echo, trusted)(scope, None, send))  # type: ignore[arg-type]
    return sent[-1]["body"].decode()


@pytest.mark.parametrize(("peer", "headers", "expected"), [
    # loopback is not trusted unless named
    ("127.0.0.1", {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}, "127.0.0.1 http"),
    ("192.0.2.1", {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}, "192.0.2.1 http"),
    ("10.1.2.3", {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}, "203.0.113.7 https"),
    ("10.1.2.3", {"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}, "203.0.113.7 http"),  # the left one is a claim
    ("10.1.2.3", {"X-Forwarded-For": "198.51.100.1, 203.0.113.7, 10.9.9.9"}, "203.0.113.7 http"),  # proxy chain
    ("10.1.2.3", {"X-Forwarded-For": "10.4.4.4, 10.9.9.9"}, "10.4.4.4 http"),  # all trusted: the left-most
    ("10.1.2.3", {"X-Forwarded-For": "203.0.113.7:5060"}, "203.0.113.7 http"),
    ("2001:db8::1", {"X-Forwarded-For": "[2001:db8::77]:443", "X-Forwarded-Proto": "HTTPS"}, "2001:db8::77 https"),
    ("10.1.2.3", {"X-Forwarded-Proto": "gopher"}, "10.1.2.3 http"),
    ("10.1.2.3", {"X-Forwarded-Proto": "http, https"}, "10.1.2.3 https"),  # the nearest proxy's
])  # fmt: skip
def test_forwarded_headers_only_from_trusted_proxies(peer, headers, expected):
    assert seen(peer, headers) == expected


def test_nothing_is_trusted_by_default():
    assert seen("10.1.2.3", {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}, ()) == "10.1.2.3 http"


def test_a_trusted_proxy_gives_each_client_its_own_throttle_and_a_secure_cookie(web):
    behind = web.variant(trusted_proxies=parse_networks("10.0.0.0/8"))
    behind.app.state.throttle = LoginThrottle(clock=Clock())
    client = behind.client(address="10.0.0.2")
    for _ in range(6):
        sign_in(client, ADMIN[0], "wrong", **{"X-Forwarded-For": "203.0.113.66"})
    assert sign_in(client, *ADMIN, **{"X-Forwarded-For": "203.0.113.66"}).status_code == 429
    owner = behind.client(address="10.0.0.2")
    token = login_csrf_from(owner.get("/login").text)  # (the test client keeps Secure cookies from plain http)
    response = owner.post("/login", data={"username": ADMIN[0], "password": ADMIN[1], "csrf_token": token},
                          headers={"X-Forwarded-For": "198.51.100.8", "X-Forwarded-Proto": "https"})  # fmt: skip
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=") and "; Secure" in cookie


@pytest.fixture
def served(web) -> Iterator[str]:
    """The app behind uvicorn configured as ``crmroute serve`` does, on a free loopback port."""
    web.app.state.throttle = LoginThrottle(clock=Clock())  # no wait runs out however slow the machine
    config = web_config(web.app, dataclasses.replace(web.store.settings, http_port=0))
    config.lifespan = "off"
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="crmroute-web-test", daemon=True)
    thread.start()
    started = time.monotonic()
    while not server.started:
        assert thread.is_alive() and time.monotonic() - started < 15, "the web server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_new_forwarded_for_per_try_does_not_escape_the_throttle(served):
    with httpx.Client(base_url=served, timeout=10) as client:
        token = login_csrf_from(client.get("/login").text)
        statuses = []
        for attempt in range(7):
            response = client.post("/login", headers={"X-Forwarded-For": f"198.51.100.{attempt}"},
                                   data={"username": ADMIN[0], "password": "wrong", "csrf_token": token})  # fmt: skip
            statuses.append(response.status_code)
        assert statuses == [401] * 5 + [429, 429]
        assert int(response.headers["retry-after"]) >= 1
