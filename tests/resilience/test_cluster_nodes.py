"""Three real ``crmroute serve`` nodes (127.0.0.2, .3, .4) sharing PostgreSQL and a Redis of the test's own,
driven by FastAGI calls spread over all three; the CRM is ``bench/crm.py`` (Custom CRM contract over HTTPS,
counting requests), a process the nodes reach like a real CRM.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import trustme

from tests.agi.fakeasterisk import call_agi
from tests.cluster import running_nodes
from tests.cluster import seed as seed_rules
from tests.resilience.redisfix import own_redis

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)

BENCH_CRM = Path(__file__).resolve().parents[2] / "bench" / "crm.py"
DEADLINE_MS = 2000


class Crm:
    """bench/crm.py on a free port: every lookup answers GOLD after ``latency_ms``."""

    def __init__(self, directory: Path, latency_ms: float) -> None:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        self.ca_path, cert_path, key_path = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
        ca.cert_pem.write_to_path(str(self.ca_path))
        cert.private_key_pem.write_to_path(str(key_path))
        cert_path.write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
        self.process = subprocess.Popen(
            [sys.executable, str(BENCH_CRM), "--cert", str(cert_path), "--key", str(key_path),
             "--latency-ms", str(latency_ms)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        line = self.process.stdout.readline().decode()  # type: ignore[union-attr]
        assert line.startswith("PORT "), line
        self.port = int(line.split()[1])
        self.url = f"https://127.0.0.1:{self.port}/lookup"

    def requests(self) -> int:
        context = ssl.create_default_context(cafile=str(self.ca_path))
        with urllib.request.urlopen(f"https://127.0.0.1:{self.port}/_stats", context=context, timeout=10) as answer:
            return int(json.loads(answer.read())["requests"])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def crm(tmp_path):
    server = Crm(tmp_path, latency_ms=50)
    yield server
    server.stop()


def seed(store, crm: Crm) -> str:
    rules = {
        "destinations": [{"type": "extension", "number": "100"}, {"type": "queue", "number": "103"}],
        "rules": [{"name": "VIP", "crm_field": "Status", "location": "did", "crm_source": "custom",
                   "custom_url": crm.url, "default_destination": "100", "deadline_ms": DEADLINE_MS,
                   "rows": [{"operator": "=", "value": "GOLD", "destination": "queue", "option": "103"}]}],
        "dids": [{"number": "5551000", "rule": "VIP"}],
    }  # fmt: skip
    return seed_rules(store, rules)


def caller(i: int) -> str:
    return f"+1555{i:07d}"


async def spread(nodes, callers: list[str], concurrency: int = 30):
    """One call per caller, round-robin over the nodes, ``concurrency`` at a time; the AGI variables of each."""
    gate = asyncio.Semaphore(concurrency)

    async def one(n: int, number: str):
        node = nodes[n % len(nodes)]
        async with gate:
            try:
                result = await call_agi(node.agi_port, host=node.host,
                                        env={"extension": "5551000", "callerid": number}, timeout=30)  # fmt: skip
            except (OSError, asyncio.IncompleteReadError):  # a node gone: Asterisk's AGISTATUS=FAILURE
                return {}
            return result.variables

    return await asyncio.gather(*[one(n, number) for n, number in enumerate(callers)])


def env(redis, crm: Crm, **more: str) -> dict[str, str]:
    return {"redis_url": redis.url, "ca_bundle": str(crm.ca_path), "cache_ttl_s": "60", "log_level": "warning"} | more


async def test_a_burst_over_three_nodes_asks_the_crm_once_per_caller(store, tmp_path, crm):
    seed(store, crm)
    with own_redis(tmp_path) as redis, running_nodes(store, tmp_path, count=3, **env(redis, crm)) as nodes:
        variables = await spread(nodes, [caller(i % 50) for i in range(3000)])
        assert [v.get("CRMROUTE_STATUS") for v in variables].count("matched") == 3000
        assert {v.get("CRMROUTE_DEST") for v in variables} == {"103"}
        assert crm.requests() <= 50  # one per caller, whichever node took the call


async def test_the_crm_never_sees_more_than_the_budget_whatever_the_number_of_nodes(store, tmp_path, crm):
    seed(store, crm)
    rate = 5  # requests/s (burst 5) for the Custom CRM host, for the cluster
    with own_redis(tmp_path) as redis, running_nodes(store, tmp_path, count=3,
                                                     **env(redis, crm, custom_requests_per_second=str(rate))) as nodes:
        started = time.monotonic()
        variables = await spread(nodes, [caller(1000 + i) for i in range(90)], concurrency=90)
        elapsed = time.monotonic() - started
        asked = crm.requests()
    statuses = [v.get("CRMROUTE_STATUS") for v in variables]
    assert set(statuses) <= {"matched", "fallback"} and "matched" in statuses
    # The bucket gives at most its burst and then ``rate`` a second, however many nodes ask (three budgets
    # of their own would have let about three times as many through).
    assert asked <= rate + rate * elapsed, (asked, elapsed)
    assert statuses.count("matched") <= asked


async def test_a_node_killed_mid_load_leaves_the_others_routing(store, tmp_path, crm):
    seed(store, crm)
    with own_redis(tmp_path) as redis, running_nodes(store, tmp_path, count=3, **env(redis, crm)) as nodes:
        load = asyncio.create_task(spread(nodes[:1], [caller(2000 + i) for i in range(200)], concurrency=10))
        await asyncio.sleep(0.5)
        await asyncio.to_thread(nodes[0].kill)
        started = time.monotonic()
        ended = await asyncio.wait_for(load, timeout=DEADLINE_MS / 1000 + 30)  # call_agi answers for a dropped one
        assert time.monotonic() - started < DEADLINE_MS / 1000 + 30
        assert all(v.get("CRMROUTE_STATUS") in (None, "matched", "fallback") for v in ended)
        later = await spread(nodes[1:], [caller(2000 + i) for i in range(40)])
        assert [v.get("CRMROUTE_STATUS") for v in later] == ["matched"] * 40


async def test_redis_stopped_mid_load_fails_no_call_and_shared_state_resumes(store, tmp_path, crm):
    token = seed(store, crm)
    with own_redis(tmp_path) as redis, running_nodes(store, tmp_path, count=3, **env(redis, crm)) as nodes:
        first = await spread(nodes, [caller(3000 + i) for i in range(60)])
        redis.stop()
        during = await spread(nodes, [caller(3100 + i) for i in range(90)])
        assert [v.get("CRMROUTE_STATUS") for v in first + during] == ["matched"] * 150
        for node in nodes:
            await until(lambda node=node: node.health(token)["shared_state"] == "degraded", node)
        redis.start()
        for node in nodes:
            await until(lambda node=node: node.health(token)["shared_state"] == "ok", node)
        # shared again: a value one node reads serves the others
        before = crm.requests()
        await spread(nodes[:1], [caller(3500)])
        await spread(nodes[1:], [caller(3500)] * 4)
        assert crm.requests() == before + 1


async def until(check, node, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, node.log()
        await asyncio.sleep(0.2)
