"""A vendor's quota counted once for the CRM account across nodes: two nodes' budgets share one count in Redis.

Each node is a ``SharedState`` of its own on the machine's Redis (a key prefix per test) and a ``SharedBudget``
for the same integration, as ``Guards`` builds them; a connector sends its requests to the Custom CRM fake
through that budget. For the outage, a redis-server of the test's own, stopped mid-test.
"""

from __future__ import annotations

import time

import pytest

from crmroute.connectors._http import make_client
from crmroute.deadline import Deadline
from crmroute.errors import RateLimited
from crmroute.resilience.budget import Budget, Quota
from crmroute.resilience.shared import SharedState
from crmroute.resilience.shared_budget import SharedBudget
from crmroute.settings import Settings
from tests.resilience.redisfix import REDIS_URL, own_redis, redis_prefix  # noqa: F401
from tests.resilience.test_connector_budget import Plain

SOURCE = "integration:7"
LIMIT = 5


@pytest.fixture
async def http(custom_crm):
    client = make_client(Settings(ca_bundle=custom_crm.ca_path))
    yield client
    await client.aclose()


@pytest.fixture
async def nodes():
    """Starts nodes (``SharedState`` + budget with a quota of ``LIMIT`` a day); closes them at the end."""
    started: list[SharedState] = []

    async def start(prefix: str, url: str = REDIS_URL, count: int = 2) -> list[SharedBudget]:
        budgets = []
        for n in range(count):
            shared = SharedState(url, f"node-{n}", prefix=prefix)
            await shared.start()
            assert shared.up
            started.append(shared)
            local = Budget("integration 'Main'", None, 10, quotas=(Quota(LIMIT, 86_400, "daily API requests"),),
                           kind="plain")  # fmt: skip
            budgets.append(SharedBudget(local, shared, SOURCE, None, None, 10))
        return budgets

    yield start
    for shared in started:
        if shared.up:  # the quota's count would live a day
            keys = [key async for key in shared.client.scan_iter(match=f"{shared.prefix}quota:*")]
            if keys:
                await shared.client.delete(*keys)
        await shared.close()


def connector(url: str, http, budget: SharedBudget) -> Plain:
    plain = Plain(url, http)
    plain.budget = budget  # type: ignore[assignment]
    return plain


async def refused(plain: Plain) -> str:
    with pytest.raises(RateLimited) as caught:
        await plain.get(Deadline.after_ms(2000))
    return caught.value.reason


async def test_two_nodes_count_into_one_quota(custom_crm, http, nodes, redis_prefix, caplog):
    custom_crm.respond(200, json={"ok": True})
    a, b = [connector(custom_crm.url, http, budget) for budget in await nodes(redis_prefix)]
    with caplog.at_level("WARNING", logger="crmroute.resilience.budget"):
        for plain in (a, b, a, b, a):  # 3 on node a, 2 on node b: each alone is under its limit of 5
            assert (await plain.get(Deadline.after_ms(2000))).status_code == 200
    # 80 % of the shared count: once per node (node b at 4, node a at 5), not once per request
    assert [r.getMessage() for r in caplog.records] == [
        "integration 'Main': 4 of 5 daily API requests used (80 %)",
        "integration 'Main': 5 of 5 daily API requests used (100 %); calls fall back (quota_exhausted) until it "
        "frees up",
    ]
    assert len(custom_crm.requests) == LIMIT
    assert await refused(b) == "quota_exhausted"  # the sixth, on either node
    assert await refused(a) == "quota_exhausted"
    assert len(custom_crm.requests) == LIMIT  # nothing sent
    for plain in (a, b):  # each node's counter shows the account's count (metrics, /healthz, the 80 % warning)
        quota = plain.budget.quotas[0]
        assert (quota.used(), quota.limit, quota.spent()) == (LIMIT, LIMIT, True)


async def test_the_vendors_count_reported_to_one_node_holds_on_the_other(custom_crm, http, nodes, redis_prefix):
    custom_crm.respond(200, json={"ok": True})
    budget_a, budget_b = await nodes(redis_prefix)
    a, b = connector(custom_crm.url, http, budget_a), connector(custom_crm.url, http, budget_b)
    assert (await a.get(Deadline.after_ms(2000))).status_code == 200
    # The vendor says 9 of 10 are used (e.g. Sforce-Limit-Info: api-usage=9/10): node b may send one more.
    budget_a.sync_quota(86_400, used=9, limit=10)
    key = f"{redis_prefix}quota:{SOURCE}:86400"
    until = time.monotonic() + 5  # written in the background
    while await budget_a.shared.client.hget(key, "vendor") is None and time.monotonic() < until:
        await budget_a.shared.client.ping()
    assert (await b.get(Deadline.after_ms(2000))).status_code == 200
    assert await refused(b) == "quota_exhausted"
    assert await refused(a) == "quota_exhausted"
    assert len(custom_crm.requests) == 2
    assert (budget_b.quotas[0].used(), budget_b.quotas[0].limit) == (10, 10)


async def test_redis_away_each_node_counts_on_locally(custom_crm, http, nodes, tmp_path):
    custom_crm.respond(200, json={"ok": True})
    with own_redis(tmp_path) as redis:
        a, b = [connector(custom_crm.url, http, budget) for budget in await nodes("crmroute:", redis.url)]
        for plain in (a, b, a):
            assert (await plain.get(Deadline.after_ms(2000))).status_code == 200
        redis.stop()
        # Node a last saw 3 of 5 used: 2 more locally, then refused; node b saw 2, so 3 more.
        for plain, more in ((a, 2), (b, 3)):
            for _ in range(more):
                assert (await plain.get(Deadline.after_ms(2000))).status_code == 200
            assert await refused(plain) == "quota_exhausted"
            assert not plain.budget.shared.up
    assert len(custom_crm.requests) == 3 + 2 + 3  # while Redis is away a node cannot see the other's requests
