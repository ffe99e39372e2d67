"""Faults of the CRM, against loopback stand-ins: every call gets the right fallback within its deadline,
no session hangs, and the service routes normally afterwards.

Custom CRM (HTTPS on 127.0.0.1): timeout, 5xx, 429 with Retry-After, malformed
JSON, a 10 MB body (declared and streamed), a TLS failure (a server that does
not speak TLS), a connection reset, a server that accepts and never answers.
An integration connector (token auth through ``Connector.request``): 401,
then a refreshed token and success; a refresh that is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from crmroute.connectors.base import Connector, ConnectorSettings, Record, Token
from crmroute.store.models import DecisionRecord
from tests.agi.conftest import CRM_KEY, base_rules, sessions_ended
from tests.agi.fakeasterisk import call_agi
from tests.resilience.test_router import integration_rules

DEADLINE_S = 1.0  # VIP's deadline_ms in base_rules
MARGIN_S = 3.5  # only catches hangs (the fakes stall 30 s, the client waits DEADLINE_S + 5): a starved 2-core CI took 2.7 s
CALLS = 10
# A burst's calls may rightly time out before a loaded machine has even served the fault (ten 10 MB
# answers over TLS, in this process): the exact reason is checked on one call with time to spare.
SPARE_DEADLINE_MS = 15_000


async def burst(stack, n: int = CALLS, prefix: str = "+1555600") -> list:
    return await asyncio.gather(*(call_agi(stack.port, "did", env={"extension": "5551000", "callerid": f"{prefix}{i:04d}"},
                                           timeout=DEADLINE_S + 5) for i in range(n)))  # fmt: skip


async def reasons(stack) -> list[str]:
    await stack.router.decision_log.flush()
    with stack.store.factory() as session:
        return list(session.scalars(select(DecisionRecord.reason).order_by(DecisionRecord.id)))


async def reason_with_time_to_spare(stack, url: str) -> str:
    """The reason of one more call, under a deadline no loaded machine comes near."""
    rules = base_rules(url)
    rules["rules"][0]["deadline_ms"] = SPARE_DEADLINE_MS
    stack.import_rules(rules, {"CRM_KEY": CRM_KEY})
    result = await call_agi(stack.port, "did", env={"extension": "5551000", "callerid": "+15556000999"},
                            timeout=SPARE_DEADLINE_MS / 1000 + 5)  # fmt: skip
    assert result.variables.get("CRMROUTE_STATUS") == "fallback", result.variables
    return (await reasons(stack))[-1]


def assert_fell_back_in_time(results: list) -> None:
    for result in results:
        assert result.closed_by_server, "the session hung"
        assert result.variables.get("CRMROUTE_STATUS") == "fallback", result.variables
        assert result.jump == ("crmroute-extension", "100", "1")  # VIP's default destination
        assert result.seconds < DEADLINE_S + MARGIN_S


async def assert_healthy_afterwards(stack) -> None:
    stack.crm.reset()
    stack.crm.values = {"Status": "GOLD"}
    result = await call_agi(stack.port, "did", env={"extension": "5551000", "callerid": "+15556999999"})
    assert result.variables["CRMROUTE_STATUS"] == "matched"
    assert await sessions_ended(stack.server)


@pytest.fixture
async def stack(stack_factory):  # noqa: F811
    """Breaker off: each call meets the fault itself (the breaker has its own tests)."""
    return await stack_factory(breaker_failures="0")


@pytest.mark.parametrize(("reply", "expected"), [
    (dict(status=200, json={"value": "GOLD"}, delay=30), {"timeout"}),
    (dict(status=500, body="internal error"), {"http_500"}),
    (dict(status=503, body="maintenance"), {"http_503"}),
    (dict(status=429, body="slow down", headers={"Retry-After": "1"}), {"http_429", "rate_budget"}),
    (dict(status=200, body="{not json", content_type="application/json"), {"bad_json"}),
    (dict(status=200, body=b"x" * (10 * 1024 * 1024)), {"too_large"}),  # declared: 10 MB Content-Length
    (dict(status=200, stream=10 * 1024 * 1024), {"too_large"}),  # streamed, no length
    (dict(status=302, headers={"Location": "https://elsewhere.example/"}), {"http_302"}),
], ids=["timeout", "500", "503", "429-retry-after", "malformed-json", "10MB-declared", "10MB-streamed", "redirect"])  # fmt: skip
async def test_custom_crm_faults(stack, reply: dict[str, Any], expected: set[str]):
    stack.crm.respond(**reply)
    results = await burst(stack)
    assert_fell_back_in_time(results)
    assert set(await reasons(stack)) <= expected | {"timeout"}, await reasons(stack)
    if expected != {"timeout"}:  # a fault that answers at once is named for what it is
        assert await reason_with_time_to_spare(stack, stack.crm.url) in expected
    if "Retry-After" in reply.get("headers", {}):
        await asyncio.sleep(1.1)  # the host is paused until then: rightly, calls would fall back meanwhile
    await assert_healthy_afterwards(stack)


# --- servers that misbehave below HTTP ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def raw_server(mode: str) -> AsyncIterator[int]:
    """A TCP server on 127.0.0.1: ``plain`` answers HTTP without TLS, ``reset`` resets the connection,
    ``silent`` accepts and never says anything."""
    held: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if mode == "silent":
            held.append(writer)
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader.read(1024), 2)
        if mode == "plain":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"value\":\"GOLD\"}")
            with contextlib.suppress(Exception):
                await writer.drain()
            writer.close()
        else:  # reset: SO_LINGER 0 makes close() send an RST
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.transport.abort()
        server.close()


@pytest.mark.parametrize(("mode", "expected"), [
    ("plain", {"tls"}),
    ("reset", {"tls", "connect", "network"}),
    ("silent", {"timeout"}),
], ids=["tls-failure", "connection-reset", "never-answers"])  # fmt: skip
async def test_transport_faults(stack_factory, custom_crm, mode: str, expected: set[str]):
    async with raw_server(mode) as port:
        rules = copy.deepcopy(base_rules(f"https://127.0.0.1:{port}/lookup"))
        stack = await stack_factory(rules, breaker_failures="0")
        results = await burst(stack)
        assert_fell_back_in_time(results)
        assert set(await reasons(stack)) <= expected | {"timeout"}, await reasons(stack)
        if expected != {"timeout"}:
            assert await reason_with_time_to_spare(stack, f"https://127.0.0.1:{port}/lookup") in expected
    await assert_healthy_afterwards_with_rules(stack, custom_crm)


async def assert_healthy_afterwards_with_rules(stack, custom_crm) -> None:
    stack.import_rules(base_rules(custom_crm.url), {"CRM_KEY": CRM_KEY})
    await assert_healthy_afterwards(stack)


async def test_a_hung_crm_does_not_hold_other_callers_or_outlive_deadlines(stack):
    stack.crm.respond(200, json={"value": "GOLD"}, delay=30)
    results = await burst(stack, 50)
    assert_fell_back_in_time(results)
    assert max(r.seconds for r in results) < DEADLINE_S + MARGIN_S


# --- an integration: 401 then a refreshed token ------------------------------------------------------------


class TokenConnector(Connector):
    """Bearer-token auth against the loopback fake: /token issues, /lookup answers."""

    kind = "tokenstub"
    title = "Token CRM"

    def __init__(self, base_url: str, http) -> None:
        super().__init__(ConnectorSettings(), http)
        self.base_url = base_url
        self.logins = 0

    async def _login(self, *, deadline) -> Token:
        self.logins += 1
        response = await self.request("POST", f"{self.base_url}/token", deadline=deadline, operation="login",
                                      auth=False)  # fmt: skip
        return Token(self.json_of(response, "login")["access_token"])

    async def find_record(self, key, module, *, fields=(), deadline) -> Record | None:
        response = await self.request("GET", f"{self.base_url}/lookup", deadline=deadline, operation="find_record",
                                      params={"phone": key.value})  # fmt: skip
        data = self.json_of(response, "find_record")
        return Record("Contact", "c-1", data) if data else None


def token_stack_pool(stack, base_url: str) -> TokenConnector:
    connector = TokenConnector(base_url, stack.router.http)
    stack.router.pool.get = lambda spec: connector  # type: ignore[method-assign]
    return connector


async def test_a_401_is_refreshed_once_and_the_call_routed(stack_factory, custom_crm):
    stack = await stack_factory(integration_rules(custom_crm.url), breaker_failures="0")
    connector = token_stack_pool(stack, custom_crm.base_url)
    custom_crm.respond(200, json={"access_token": "first"}, once=True)
    custom_crm.respond(200, json={"Status": "GOLD"}, once=True)
    result = await call_agi(stack.port, "did", env={"extension": "5551000", "callerid": "+15556000001"})
    assert result.variables["CRMROUTE_STATUS"] == "matched"
    custom_crm.respond(401, json={"message": "token expired"}, once=True)
    custom_crm.respond(200, json={"access_token": "second"}, once=True)
    custom_crm.respond(200, json={"Status": "GOLD"}, once=True)
    result = await call_agi(stack.port, "did", env={"extension": "5551000", "callerid": "+15556000002"})
    assert result.variables["CRMROUTE_STATUS"] == "matched"
    assert connector.logins == 2
    assert custom_crm.requests[-1].headers["authorization"] == "Bearer second"


async def test_a_refused_refresh_falls_back_as_auth(stack_factory, custom_crm):
    stack = await stack_factory(integration_rules(custom_crm.url), breaker_failures="0")
    token_stack_pool(stack, custom_crm.base_url)
    custom_crm.respond(200, json={"access_token": "first"}, once=True)
    custom_crm.respond(401, json={"message": "token expired"}, once=True)
    custom_crm.respond(401, json={"message": "refresh token revoked"}, once=True)
    result = await call_agi(stack.port, "did", env={"extension": "5551000", "callerid": "+15556000003"})
    assert result.variables["CRMROUTE_STATUS"] == "fallback"
    assert (await reasons(stack)) == ["http_401"]
