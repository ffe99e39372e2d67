"""Several nodes sharing the guards through Redis: two routers (each with its AGI server) on one database.

The machine's Redis on 127.0.0.1:6379 (a key prefix per test), and for the outage a redis-server of the
test's own, stopped mid-load. The Custom CRM fake stands in for the CRM.
"""

from __future__ import annotations

import asyncio
import time

from crmroute.settings import Settings
from crmroute.web.readiness import node_readiness
from tests.agi.fakeasterisk import call_agi
from tests.resilience.redisfix import join, own_redis, redis_prefix  # noqa: F401
from tests.resilience.test_router import GOLD, logged, metric, rules_with

DEADLINE_MS = 2000  # generous: the machine may be loaded


async def call(stack, caller: str = GOLD):
    return await call_agi(stack.port, "did", env={"extension": "5551000", "callerid": caller}, timeout=15)


def caller(i: int) -> str:
    return f"+1555{i:07d}"


async def two_nodes(stack_factory, custom_crm, prefix: str, **env: str):
    rules = rules_with(custom_crm.url, deadline_ms=DEADLINE_MS)
    a = await stack_factory(rules, node_id="node-a", **env)
    b = await stack_factory(rules, node_id="node-b", **env)
    await join(a, prefix, "node-a")
    await join(b, prefix, "node-b")
    until = time.monotonic() + 15
    while a.router.guards.shared.live_nodes < 2 or not a.router.guards.shared.up:  # both counted
        assert time.monotonic() < until, "node a never counted node b"
        await a.router.guards.shared.beat()
    return a, b


async def test_a_burst_of_identical_lookups_on_two_nodes_makes_one_crm_request(stack_factory, custom_crm,
                                                                                redis_prefix):  # fmt: skip
    a, b = await two_nodes(stack_factory, custom_crm, redis_prefix, cache_ttl_s="60")
    custom_crm.respond(200, json={"value": "GOLD"}, delay=0.4)  # slow: the burst meets the request in flight
    results = await asyncio.gather(*[call(node) for _ in range(15) for node in (a, b)])
    assert {r.variables["CRMROUTE_STATUS"] for r in results} == {"matched"}
    assert {r.variables["CRMROUTE_VALUE"] for r in results} == {"GOLD"}
    assert len(custom_crm.requests) == 1
    # Later calls on either node: from the cache, which the node that did not ask also has.
    later = await call(b)
    assert later.variables["CRMROUTE_VALUE"] == "GOLD" and len(custom_crm.requests) == 1
    await logged(a)
    rows = await logged(b)
    assert {r.node for r in rows} == {"node-a", "node-b"}  # the decision log says which node routed each call
    last = [r for r in rows if r.node == "node-b"][-1]
    assert last.cached and any(s.startswith("value from the cache") for s in last.trace)


async def test_a_value_read_by_one_node_serves_the_other(stack_factory, custom_crm, redis_prefix):
    a, b = await two_nodes(stack_factory, custom_crm, redis_prefix, cache_ttl_s="60")
    custom_crm.values = {"Status": "GOLD"}
    assert (await call(a)).variables["CRMROUTE_VALUE"] == "GOLD"
    await a.router.guards.shared.settled()  # the shared copy is written just after the answer
    custom_crm.values = {"Status": "SILVER"}
    assert (await call(b)).variables["CRMROUTE_VALUE"] == "GOLD"  # within the TTL: node a's answer
    assert len(custom_crm.requests) == 1
    await logged(a)
    row = [r for r in await logged(b) if r.node == "node-b"][-1]
    assert row.cached and any(s.startswith("value from the cache") for s in row.trace)
    assert metric(b, "crmroute_shared_state_up") == 1 and metric(b, "crmroute_cluster_nodes") == 2


async def test_the_crm_never_sees_more_than_one_budget_across_nodes(stack_factory, custom_crm, redis_prefix):
    rate = 5
    a, b = await two_nodes(stack_factory, custom_crm, redis_prefix, cache_ttl_s="0",
                           custom_requests_per_second=str(rate))  # fmt: skip
    custom_crm.values = {"Status": "GOLD"}
    started = time.monotonic()
    results = await asyncio.gather(*[call(node, caller(i)) for i in range(20) for node in (a, b)])
    statuses = [r.variables["CRMROUTE_STATUS"] for r in results]
    reasons = [r.reason for s in (a, b) for r in await logged(s)]
    assert 0 < statuses.count("matched") <= len(custom_crm.requests), reasons  # (a late answer made a request too)
    assert set(statuses) <= {"matched", "fallback"}  # the rest fell back on the budget (rate_budget)
    times = sorted(r.at for r in custom_crm.requests)
    # A bucket of `rate` a second holding `rate`: never more than that plus the refill, whichever node asked
    # (two unshared buckets would let twice that through). A request sent late on a loaded machine may
    # land in the same second as ones reserved after it: a little slack for that, none for the total.
    for i, first in enumerate(times):
        in_a_second = sum(1 for t in times[i:] if t < first + 1.0)
        assert in_a_second <= 2 * rate + 3, (in_a_second, times)
    assert len(times) <= rate + rate * (time.monotonic() - started)
    assert set(reasons) <= {"", "rate_budget", "timeout"}  # a token due just before the deadline leaves no time to answer


async def test_a_429_pauses_the_source_on_every_node(stack_factory, custom_crm, redis_prefix):
    a, b = await two_nodes(stack_factory, custom_crm, redis_prefix, cache_ttl_s="0")
    custom_crm.respond(429, json={"error": "slow down"}, headers={"Retry-After": "30"}, once=True)
    custom_crm.values = {"Status": "GOLD"}
    assert (await call(a, caller(1))).variables["CRMROUTE_STATUS"] == "fallback"
    await a.router.guards.shared.settled()  # the pause is written in the background
    assert (await call(b, caller(2))).variables["CRMROUTE_STATUS"] == "fallback"
    assert len(custom_crm.requests) == 1  # node b sent nothing while the source is paused
    await logged(a)  # node a's rows are written too, so b's are told apart by node, not by order
    assert [r for r in await logged(b) if r.node == "node-b"][-1].reason == "rate_budget"


async def test_a_circuit_opened_on_one_node_is_open_on_the_other(stack_factory, custom_crm, redis_prefix):
    a, b = await two_nodes(stack_factory, custom_crm, redis_prefix, cache_ttl_s="0", breaker_failures="2",
                           breaker_cooldown_s="60")  # fmt: skip
    custom_crm.respond(500, "boom")
    for i in range(2):
        assert (await call(a, caller(i))).variables["CRMROUTE_STATUS"] == "fallback"
    await a.router.guards.shared.settled()  # outcomes are counted in the background
    sent = len(custom_crm.requests)
    result = await call(b, caller(9))
    assert result.variables["CRMROUTE_STATUS"] == "fallback" and len(custom_crm.requests) == sent == 2
    await logged(a)  # node a's rows are written too, so b's are told apart by node, not by order
    row = [r for r in await logged(b) if r.node == "node-b"][-1]
    assert row.reason == "circuit_open" and row.crm_ms is None
    assert b.router.guards.circuits() == {next(iter(b.router.guards.circuits())): "open"}


async def test_redis_stopped_mid_load_fails_no_call_and_sharing_resumes(stack_factory, custom_crm, tmp_path):
    with own_redis(tmp_path) as redis:
        rules = rules_with(custom_crm.url, deadline_ms=DEADLINE_MS)
        a = await stack_factory(rules, cache_ttl_s="60")
        b = await stack_factory(rules, cache_ttl_s="60")
        options = {"heartbeat_s": 0.2}
        for stack, node in ((a, "node-a"), (b, "node-b")):
            await join(stack, "crmroute:", node, url=redis.url, **options)
        custom_crm.values = {"Status": "GOLD"}
        statuses: list[str] = []

        async def load(first: int, count: int) -> None:
            batch = [call(node, caller(i % 7)) for i in range(first, first + count) for node in (a, b)]
            statuses.extend(r.variables["CRMROUTE_STATUS"] for r in await asyncio.gather(*batch))

        await load(0, 20)
        shared_requests = len(custom_crm.requests)
        assert shared_requests <= 2 * 7  # one per distinct caller (each node's own, had Redis been slow to answer)
        redis.stop()
        await load(20, 20)  # the first calls meet the dead Redis (or cached copies answer them); the rest are local
        until = time.monotonic() + 10  # calls answered from local copies ask nothing: the heartbeat finds it out
        while (a.router.guards.shared.up or b.router.guards.shared.up) and time.monotonic() < until:
            await asyncio.sleep(0.05)
        assert not a.router.guards.shared.up and not b.router.guards.shared.up
        assert a.router.guards.shared_status().startswith("local fallback")
        readiness = node_readiness(a.router.settings, a.router, None, database_ok=True)
        assert readiness["shared_state"] == "degraded"
        assert readiness["shared_state_problems"] == ["Redis unreachable (local cache, budgets and breakers)"]
        assert metric(a, "crmroute_shared_state_up") == 0
        await load(40, 20)
        redis.start()
        until = time.monotonic() + 10
        while not (a.router.guards.shared.up and b.router.guards.shared.up) and time.monotonic() < until:
            await asyncio.sleep(0.1)
        assert a.router.guards.shared.up and b.router.guards.shared.up
        assert statuses.count("matched") == len(statuses) == 2 * 60  # not one call failed
        before = len(custom_crm.requests)
        custom_crm.respond(200, json={"value": "GOLD"}, delay=0.4)
        again = await asyncio.gather(*[call(node, caller(100)) for _ in range(5) for node in (a, b)])
        assert {r.variables["CRMROUTE_STATUS"] for r in again} == {"matched"}
        assert len(custom_crm.requests) - before == 1  # shared again: one request for both nodes


async def test_a_hung_redis_never_holds_a_call_past_its_deadline(stack_factory, custom_crm, tmp_path):
    with own_redis(tmp_path) as redis:
        rules = rules_with(custom_crm.url, deadline_ms=DEADLINE_MS)
        a = await stack_factory(rules, cache_ttl_s="60")
        await join(a, "crmroute:", "node-a", url=redis.url, heartbeat_s=0.2)
        custom_crm.values = {"Status": "GOLD"}
        redis.process.send_signal(19)  # SIGSTOP: connections stay open, nothing answers
        try:
            started = time.monotonic()
            result = await call(a, caller(1))
            assert result.variables["CRMROUTE_STATUS"] == "matched"
            assert time.monotonic() - started < DEADLINE_MS / 1000
            until = time.monotonic() + 5  # the heartbeat sent after the time-out finds Redis hung
            while a.router.guards.shared.up and time.monotonic() < until:
                await asyncio.sleep(0.05)
            assert not a.router.guards.shared.up
            assert (await call(a, caller(2))).variables["CRMROUTE_STATUS"] == "matched"  # alone, at once
        finally:
            redis.process.send_signal(18)  # SIGCONT


def test_redis_needs_postgresql_and_names_the_node():
    base = {"CRMROUTE_DATABASE_URL": "postgresql://u@db/crmroute", "CRMROUTE_AGI_PORT": "4600"}
    settings = Settings.from_env(base | {"CRMROUTE_REDIS_URL": "redis://10.0.0.9:6379/0"})
    assert settings.clustered and settings.node.endswith(":4600")
    assert Settings.from_env(base | {"CRMROUTE_NODE_ID": "pbx-b"}).node == "pbx-b"
    for env, field in (({"CRMROUTE_REDIS_URL": "redis://r"}, "CRMROUTE_REDIS_URL"),
                       (base | {"CRMROUTE_REDIS_URL": "http://r"}, "CRMROUTE_REDIS_URL"),
                       (base | {"CRMROUTE_NODE_ID": "a b"}, "CRMROUTE_NODE_ID")):  # fmt: skip
        try:
            Settings.from_env(env)
        except Exception as exc:  # ConfigError
            assert field in str(exc)
        else:
            raise AssertionError(f"{env} accepted")

