"""The guards around every CRM lookup, end to end: real FastAGI calls, the store, the loopback Custom CRM.

Value cache (hit, miss, expiry, "not found" briefly, failures never, TTL from
rule / integration / global), single-flight, the circuit breaker, the rate
budget and 429 pauses; the trace, the decision log and /metrics saying so.
"""

from __future__ import annotations

import asyncio
import copy
import re
import time
from typing import Any

import pytest
from sqlalchemy import select

from crmroute.connectors._http import MAX_CONNECTIONS
from crmroute.connectors.base import Connector, ConnectorSettings, Record
from crmroute.resilience.budget import Budget, Quota
from crmroute import router as router_module
from crmroute.resilience import Guards
from crmroute.router import Target
from crmroute.routing.engine import decide as engine_decide
from crmroute.store.models import DecisionRecord
from tests.agi.conftest import base_rules
from tests.agi.fakeasterisk import call_agi
from tests.resilience.clock import FakeClock

GOLD = "+15551230001"
OTHER = "+15551230002"


async def call(stack, caller: str = GOLD, **env: str):
    return await call_agi(stack.port, "did", env={"extension": "5551000", "callerid": caller, **env})


async def logged(stack) -> list[DecisionRecord]:
    await stack.router.decision_log.flush()
    with stack.store.factory() as session:
        return list(session.scalars(select(DecisionRecord).order_by(DecisionRecord.id)))


def metric(stack, name: str, **labels: str) -> float | None:
    text = stack.router.metrics.render().decode()
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}{re.escape('{' + wanted + '}') if labels else ''} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else None


def with_clock(stack) -> FakeClock:
    """Put the router's cache and breakers on a fake clock."""
    clock = FakeClock(time.monotonic())
    stack.router.guards = Guards(stack.router.settings, clock=clock, max_in_flight=MAX_CONNECTIONS)
    return clock


def rules_with(url: str, **vip: Any) -> dict:
    rules = copy.deepcopy(base_rules(url))
    rules["rules"][0].update(vip)
    return rules


# --- the value cache -----------------------------------------------------------------------------


async def test_second_call_comes_from_the_cache(stack_factory, custom_crm):
    stack = await stack_factory(cache_ttl_s="60")
    custom_crm.records = {GOLD: {"Status": "GOLD"}}
    first, second = await call(stack), await call(stack)
    assert first.variables["CRMROUTE_STATUS"] == second.variables["CRMROUTE_STATUS"] == "matched"
    assert second.variables["CRMROUTE_VALUE"] == "GOLD" and second.jump == ("crmroute-queue", "103", "1")
    assert len(custom_crm.requests) == 1
    rows = await logged(stack)
    assert [r.cached for r in rows] == [False, True]
    assert rows[0].crm_ms is not None and rows[1].crm_ms is None
    assert any(step.startswith("value from the cache") for step in rows[1].trace), rows[1].trace
    assert metric(stack, "crmroute_cache_lookups_total", result="hit") == 1
    assert metric(stack, "crmroute_cache_lookups_total", result="miss") == 1
    assert metric(stack, "crmroute_cache_entries") == 1


async def test_values_expire_and_not_found_is_kept_only_briefly(stack_factory, custom_crm):
    stack = await stack_factory(cache_ttl_s="60", cache_negative_ttl_s="10")
    clock = with_clock(stack)
    custom_crm.records = {GOLD: {"Status": "GOLD"}}
    assert (await call(stack, OTHER)).variables["CRMROUTE_VALUE"] == ""  # 404: no such record
    custom_crm.records[OTHER] = {"Status": "GOLD"}  # the record is created in the CRM
    assert (await call(stack, OTHER)).variables["CRMROUTE_VALUE"] == ""  # still the cached "not found"
    clock.advance(10)
    assert (await call(stack, OTHER)).variables["CRMROUTE_VALUE"] == "GOLD"  # negative TTL over
    custom_crm.records[OTHER] = {"Status": "SILVER"}
    clock.advance(59)
    assert (await call(stack, OTHER)).variables["CRMROUTE_VALUE"] == "GOLD"  # a found value lives 60 s
    clock.advance(1)
    assert (await call(stack, OTHER)).variables["CRMROUTE_VALUE"] == "SILVER"
    assert len(custom_crm.requests) == 3


async def test_a_crm_failure_is_never_cached(stack_factory, custom_crm):
    stack = await stack_factory(cache_ttl_s="60")
    custom_crm.respond(500, "boom", once=True)
    custom_crm.values = {"Status": "GOLD"}
    first = await call(stack)
    assert first.variables["CRMROUTE_STATUS"] == "fallback"
    second = await call(stack)
    assert second.variables["CRMROUTE_STATUS"] == "matched" and len(custom_crm.requests) == 2
    third = await call(stack)
    assert third.variables["CRMROUTE_STATUS"] == "matched" and len(custom_crm.requests) == 2


@pytest.mark.parametrize(("global_ttl", "rule_ttl", "requests"), [("60", 0, 2), ("0", 30, 1), ("0", None, 2)])
async def test_the_rules_ttl_wins_over_the_global_one(stack_factory, custom_crm, global_ttl, rule_ttl, requests):
    stack = await stack_factory(rules_with(custom_crm.url, cache_ttl_s=rule_ttl), cache_ttl_s=global_ttl)
    custom_crm.values = {"Status": "GOLD"}
    await call(stack)
    await call(stack)
    assert len(custom_crm.requests) == requests


async def test_the_cache_key_is_the_lookup(stack_factory, custom_crm):
    stack = await stack_factory(cache_ttl_s="60")
    custom_crm.records = {GOLD: {"Status": "GOLD"}, OTHER: {"Status": "SILVER"}}
    assert (await call(stack, GOLD)).variables["CRMROUTE_VALUE"] == "GOLD"
    assert (await call(stack, OTHER)).variables["CRMROUTE_VALUE"] == "SILVER"  # another caller
    ivr = await call_agi(stack.port, "ivr/7", env={"callerid": GOLD}, digits="1234")  # another rule, field, key
    assert ivr.variables["CRMROUTE_STATUS"] == "default"
    assert len(custom_crm.requests) == 3


async def test_a_dry_run_always_asks_the_crm(stack_factory, custom_crm):
    from crmroute.router import Target

    stack = await stack_factory(cache_ttl_s="60")
    custom_crm.values = {"Status": "GOLD"}
    await call(stack)
    trace = await stack.router.dry_run(Target("did", "5551000"), caller_id=GOLD)
    assert trace["status"] == "matched" and trace["cached"] is False
    assert len(custom_crm.requests) == 2


# --- single-flight ---------------------------------------------------------------------------------------


async def test_100_concurrent_calls_for_one_caller_make_one_crm_request(stack_factory, custom_crm):
    stack = await stack_factory(rules_with(custom_crm.url, deadline_ms=5000), cache_ttl_s="60")  # loaded machine
    custom_crm.values = {"Status": "GOLD"}
    custom_crm.delay = 0.3
    results = await asyncio.gather(*(call(stack) for _ in range(100)))
    assert [r.variables["CRMROUTE_STATUS"] for r in results] == ["matched"] * 100
    assert len(custom_crm.requests) == 1
    rows = await logged(stack)
    shared = [r for r in rows if any("shared the CRM request" in step for step in r.trace)]
    assert len(shared) == 99


async def test_without_the_cache_concurrent_identical_calls_still_share(stack_factory, custom_crm):
    # cache_ttl_s 0; a deadline far beyond the CRM's 0.3 s, so that a loaded machine cannot make a call fall back
    stack = await stack_factory(rules_with(custom_crm.url, deadline_ms=5000))
    custom_crm.values = {"Status": "GOLD"}
    custom_crm.delay = 0.3
    results = await asyncio.gather(*(call(stack) for _ in range(20)))
    assert [r.variables["CRMROUTE_STATUS"] for r in results] == ["matched"] * 20
    assert len(custom_crm.requests) == 1
    await call(stack)
    assert len(custom_crm.requests) == 2  # nothing kept afterwards


# --- the circuit breaker -------------------------------------------------------------------------------------


async def test_breaker_opens_falls_back_at_once_and_a_probe_closes_it(stack_factory, custom_crm):
    stack = await stack_factory(breaker_failures="3", breaker_cooldown_s="30")
    clock = with_clock(stack)
    custom_crm.respond(500, "down")
    for n in range(3):
        result = await call(stack, f"+1555999000{n}")
        assert result.variables["CRMROUTE_STATUS"] == "fallback"
    source = f"Custom CRM https://127.0.0.1:{custom_crm.base_url.rsplit(':', 1)[1]}"
    assert metric(stack, "crmroute_circuit_state", source=source) == 1  # open
    custom_crm.respond(200, json={"value": "GOLD"}, delay=5)  # asking it now would take the whole deadline
    result = await call(stack, "+15559990009")
    assert result.variables["CRMROUTE_STATUS"] == "fallback" and result.jump == ("crmroute-extension", "100", "1")
    assert len(custom_crm.requests) == 3  # the CRM was not asked
    row = (await logged(stack))[-1]
    assert (row.reason, row.crm_ms) == ("circuit_open", None) and "circuit open" in row.error
    health = stack.router.guards.breaker(f"custom:https://127.0.0.1:{custom_crm.base_url.rsplit(':', 1)[1]}", source)
    assert health.retry_in() == 30
    clock.advance(30)
    assert metric(stack, "crmroute_circuit_state", source=source) == 2  # half-open: a probe may go
    custom_crm.respond(200, json={"value": "GOLD"})
    result = await call(stack, "+15559990010")
    assert result.variables["CRMROUTE_STATUS"] == "matched"
    assert metric(stack, "crmroute_circuit_state", source=source) == 0
    assert metric(stack, "crmroute_crm_errors_total", integration="custom", kind="custom", reason="circuit_open") == 1


async def test_a_failed_probe_opens_the_circuit_again(stack_factory, custom_crm):
    stack = await stack_factory(breaker_failures="1", breaker_cooldown_s="30")
    clock = with_clock(stack)
    custom_crm.respond(503, "down")
    await call(stack, "+15559990001")
    clock.advance(30)
    assert (await call(stack, "+15559990002")).variables["CRMROUTE_STATUS"] == "fallback"  # the probe, failed
    assert len(custom_crm.requests) == 2
    assert (await logged(stack))[-1].reason == "http_503"
    await call(stack, "+15559990003")
    assert (await logged(stack))[-1].reason == "circuit_open" and len(custom_crm.requests) == 2


async def test_a_not_found_answer_is_not_a_failure(stack_factory, custom_crm):
    stack = await stack_factory(breaker_failures="2")
    for n in range(5):
        assert (await call(stack, f"+1555888000{n}")).variables["CRMROUTE_STATUS"] == "matched"  # 404: empty row
    assert len(custom_crm.requests) == 5


# --- rate budget ----------------------------------------------------------------------------------------


async def test_a_call_past_the_budget_falls_back_at_once(stack_factory, custom_crm):
    stack = await stack_factory(custom_requests_per_second="1")  # VIP's deadline is 1000 ms
    custom_crm.values = {"Status": "GOLD"}
    custom_crm.delay = 0.2
    results = await asyncio.gather(call(stack, GOLD), call(stack, OTHER))
    statuses = sorted(r.variables["CRMROUTE_STATUS"] for r in results)
    assert statuses == ["fallback", "matched"]
    assert len(custom_crm.requests) == 1
    assert sorted(r.reason for r in await logged(stack)) == ["", "rate_budget"]
    assert metric(stack, "crmroute_crm_errors_total", integration="custom", kind="custom", reason="rate_budget") == 1


async def test_a_call_waits_for_the_budget_within_its_deadline(stack_factory, custom_crm):
    stack = await stack_factory(rules_with(custom_crm.url, deadline_ms=2500), custom_requests_per_second="1")
    custom_crm.values = {"Status": "GOLD"}
    results = await asyncio.gather(call(stack, GOLD), call(stack, OTHER))
    assert [r.variables["CRMROUTE_STATUS"] for r in results] == ["matched", "matched"]  # the second waited ~1 s


async def test_a_429_with_retry_after_pauses_the_custom_crm_host(stack_factory, custom_crm):
    stack = await stack_factory()
    custom_crm.respond(429, "slow down", headers={"Retry-After": "30"}, once=True)
    custom_crm.values = {"Status": "GOLD"}
    assert (await call(stack, GOLD)).variables["CRMROUTE_STATUS"] == "fallback"
    assert (await call(stack, OTHER)).variables["CRMROUTE_STATUS"] == "fallback"  # paused: not even sent
    assert len(custom_crm.requests) == 1
    assert [r.reason for r in await logged(stack)] == ["http_429", "rate_budget"]
    assert metric(stack, "crmroute_circuit_state",
                  source=f"Custom CRM https://127.0.0.1:{custom_crm.base_url.rsplit(':', 1)[1]}") == 0  # fmt: skip


# --- integrations: TTL and budget from the integration's settings ----------------------------------------------


class StubConnector(Connector):
    kind = "stub"
    title = "Stub CRM"
    requests_per_second = 7.0

    def __init__(self, settings: ConnectorSettings) -> None:
        super().__init__(settings, None)  # type: ignore[arg-type]
        self.fetches = 0
        self.values: dict[str, str] = {}

    async def fetch_fields(self, key, module, api_names, *, deadline, found=None, owner=False):
        self.fetches += 1
        await asyncio.sleep(0)
        if key.value not in self.values:
            return dict.fromkeys(api_names)
        fields = {name: self.values[key.value] for name in api_names}
        if found is not None:
            found.append(Record("Person", f"p-{key.value[-4:]}", fields | {"big": "x" * 1000}))
        return fields


def integration_rules(url: str, *, integration_ttl: int | None = None, rule_ttl: int | None = None) -> dict:
    rules = copy.deepcopy(base_rules(url))
    settings = {"api_url": "https://example.pipedrive.com"} | ({"cache_ttl_s": integration_ttl} if integration_ttl is not None else {})  # fmt: skip
    rules["integrations"] = [{"name": "Main Pipedrive", "kind": "pipedrive", "settings": settings,
                              "secrets": {"api_token": "t0ken"}}]  # fmt: skip
    rules["rules"][0] = {"name": "VIP", "crm_field": "Status", "location": "did", "crm_source": "integration",
                         "integration": "Main Pipedrive", "crm_module": "contacts", "default_destination": "100",
                         "cache_ttl_s": rule_ttl, "deadline_ms": 1000,
                         "rows": [{"operator": "=", "value": "GOLD", "destination": "queue", "option": "103"}]}  # fmt: skip
    return rules


def stub_pool(stack, **settings: Any) -> StubConnector:
    stub = StubConnector(ConnectorSettings(**settings))
    stack.router.pool.get = lambda spec: stub  # type: ignore[method-assign]
    return stub


@pytest.mark.parametrize(("global_ttl", "integration_ttl", "rule_ttl", "fetches"),
                         [("0", 30, None, 1), ("60", 0, None, 2), ("60", 0, 30, 1), ("0", None, None, 2)])  # fmt: skip
async def test_integration_ttl_between_rule_and_global(stack_factory, custom_crm, global_ttl, integration_ttl,
                                                      rule_ttl, fetches):  # fmt: skip
    stack = await stack_factory(integration_rules(custom_crm.url, integration_ttl=integration_ttl, rule_ttl=rule_ttl),
                                cache_ttl_s=global_ttl)  # fmt: skip
    stub = stub_pool(stack, cache_ttl_s=integration_ttl)
    stub.values = {GOLD: "GOLD"}
    for _ in range(2):
        assert (await call(stack)).variables["CRMROUTE_STATUS"] == "matched"
    assert stub.fetches == fetches


async def test_a_cached_integration_value_keeps_the_record_found(stack_factory, custom_crm):
    stack = await stack_factory(integration_rules(custom_crm.url), cache_ttl_s="60")
    stub = stub_pool(stack)
    stub.values = {GOLD: "GOLD"}
    await call(stack)
    await call(stack)
    first, second = await logged(stack)
    assert (first.record_id, second.record_id) == ("p-0001", "p-0001") and second.cached
    assert any("Main Pipedrive: Person p-0001" in step for step in second.trace)
    entry = next(iter(stack.router.guards.cache._entries.values()))
    assert entry.value.record.fields == {}  # the cache keeps the record's identity, not its fields


class MeteredConnector(StubConnector):
    """Sends its one request through the budget, as ``Connector.request`` does."""

    quotas = (Quota(3, 86_400, "API requests per 24 h"),)

    async def fetch_fields(self, key, module, api_names, *, deadline, found=None, owner=False):
        assert self.budget is not None
        async with self.budget.slot(deadline.at, "find_record"):
            return await super().fetch_fields(key, module, api_names, deadline=deadline, found=found)


async def test_a_spent_daily_quota_sends_calls_to_the_default_and_says_so(stack_factory, custom_crm):
    stack = await stack_factory(integration_rules(custom_crm.url), cache_ttl_s="0")
    stub = MeteredConnector(ConnectorSettings())
    stack.router.pool.get = lambda spec: stub  # type: ignore[method-assign]
    stub.values = {GOLD: "GOLD"}
    statuses = [(await call(stack)).variables["CRMROUTE_STATUS"] for _ in range(5)]
    assert statuses == ["matched"] * 3 + ["fallback"] * 2 and stub.fetches == 3
    assert [row.reason for row in await logged(stack)][3:] == ["quota_exhausted"] * 2
    assert stack.router.guards.quotas() == {"integration 'Main Pipedrive'": "3 of 3 per 24 h (spent)"}
    assert metric(stack, "crmroute_crm_quota_used", source="integration 'Main Pipedrive'", window="86400s") == 3
    assert metric(stack, "crmroute_crm_quota_limit", source="integration 'Main Pipedrive'", window="86400s") == 3


async def test_daily_quota_setting_replaces_the_kinds_default(stack_factory, custom_crm):
    stack = await stack_factory(integration_rules(custom_crm.url), cache_ttl_s="0")
    stub = MeteredConnector(ConnectorSettings(daily_quota=10))
    stack.router.pool.get = lambda spec: stub  # type: ignore[method-assign]
    stub.values = {GOLD: "GOLD"}
    statuses = [(await call(stack)).variables["CRMROUTE_STATUS"] for _ in range(5)]
    assert statuses == ["matched"] * 5
    assert [q.limit for q in stub.budget.quotas] == [10]
    off = MeteredConnector(ConnectorSettings(daily_quota=0))  # 0: not counted
    stack.router.pool.get = lambda spec: off  # type: ignore[method-assign]
    off.values = {GOLD: "GOLD"}
    await call(stack)
    assert off.budget.quotas == []


async def test_the_integration_gets_its_budget(stack_factory, custom_crm):
    stack = await stack_factory(integration_rules(custom_crm.url))
    stub = stub_pool(stack)
    stub.values = {GOLD: "GOLD"}
    await call(stack)
    assert isinstance(stub.budget, Budget)
    assert (stub.budget.rate, stub.budget.max_concurrency) == (7.0, 10)  # the class's defaults
    stub_pool(stack, requests_per_second=2.5, max_concurrency=3).values = {GOLD: "GOLD"}
    await call(stack)
    budget = stack.router.pool.get(None).budget
    assert (budget.rate, budget.max_concurrency) == (2.5, 3)  # the integration's own settings


async def test_an_integrations_failures_open_its_own_circuit(stack_factory, custom_crm):
    from crmroute.errors import ConnectorUnavailable

    stack = await stack_factory(integration_rules(custom_crm.url), breaker_failures="2")
    stub = stub_pool(stack)

    async def down(*args, **kwargs):
        stub.fetches += 1
        raise ConnectorUnavailable("Stub CRM answered HTTP 502", kind="stub", operation="find", reason="http_502")

    stub.fetch_fields = down  # type: ignore[method-assign]
    for n in range(3):
        await call(stack, f"+1555777000{n}")
    assert stub.fetches == 2
    assert [r.reason for r in await logged(stack)] == ["http_502", "http_502", "circuit_open"]
    assert metric(stack, "crmroute_circuit_state", source="Main Pipedrive") == 1
    custom_crm.values = {"Status": "GOLD"}  # the Custom CRM rule is another source: unaffected
    ivr = await call_agi(stack.port, "ivr/7", env={"callerid": GOLD}, digits="1234")
    assert ivr.variables["CRMROUTE_STATUS"] == "default" and len(custom_crm.requests) == 1


async def test_no_source_has_more_in_flight_than_the_http_pool(stack_factory, custom_crm):

    stack = await stack_factory(integration_rules(custom_crm.url), custom_max_concurrency="5000")
    assert stack.router.guards.custom_budget(custom_crm.url).max_concurrency == MAX_CONNECTIONS
    stub_pool(stack, max_concurrency=1000).values = {GOLD: "GOLD"}
    await call(stack)
    assert stack.router.pool.get(None).budget.max_concurrency == MAX_CONNECTIONS


async def test_the_deadline_counts_from_the_request_not_from_when_it_was_handled(stack_factory, custom_crm):
    """A call that waited 4 s to be handled (a burst, a slow greeting) has 1 s of its 5 left."""
    stack = await stack_factory(rules_with(custom_crm.url, deadline_ms=5000))
    custom_crm.respond(200, json={"value": "GOLD"}, delay=30)
    rule = stack.router.resolve(Target("rule", "VIP")).rule
    started = time.monotonic()
    decision = await stack.router.decide(rule, caller_id=GOLD, since=started - 4.0)
    assert 0.9 < time.monotonic() - started < 3.0  # its last second, not the whole 5
    assert (decision.status, decision.reason) == ("fallback", "timeout")


@pytest.mark.parametrize(("deadline_ms", "waited_ms"), [(1000, 975), (100, 90)])
async def test_the_crm_is_waited_for_until_a_reserve_before_the_deadline(stack_factory, custom_crm, monkeypatch,
                                                                          deadline_ms, waited_ms):
    """25 ms (at most a tenth of the deadline) are kept to answer the call on time."""
    stack = await stack_factory(rules_with(custom_crm.url, deadline_ms=deadline_ms))
    custom_crm.respond(200, json={"value": "GOLD"}, delay=5)
    rule = stack.router.resolve(Target("rule", "VIP")).rule
    given: list[float] = []

    async def decide(spec, key, fetch, deadline, *args):  # the engine's deadline, read as given (no wall clock)
        given.append(deadline.at)
        return await engine_decide(spec, key, fetch, deadline, *args)

    monkeypatch.setattr(router_module, "decide", decide)
    started = time.monotonic()
    decision = await stack.router.decide(rule, caller_id=GOLD, since=started)
    assert given == [pytest.approx(started + waited_ms / 1000, abs=1e-6)]
    assert (time.monotonic() - started) * 1000 >= waited_ms - 5  # and the CRM was waited for until then
    assert (decision.status, decision.reason) == ("fallback", "timeout")
