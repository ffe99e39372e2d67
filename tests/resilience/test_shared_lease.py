"""The single-flight lease across nodes: its holder renews it while its request runs; a dead holder's lapses.

Two ``SharedState``s on the machine's Redis (a key prefix of the test's own) stand for two nodes.
"""

from __future__ import annotations

import asyncio
import time

from crmroute.resilience import shared as shared_module
from crmroute.resilience.shared import SharedState, digest
from tests.resilience.redisfix import REDIS_URL, redis_prefix  # noqa: F401

HOLD_S = 30.0  # what the request itself may take: far beyond what the tests wait


async def nodes(prefix: str) -> tuple[SharedState, SharedState]:
    a, b = SharedState(REDIS_URL, "node-a", prefix=prefix), SharedState(REDIS_URL, "node-b", prefix=prefix)
    for node in (a, b):
        until = time.monotonic() + 15
        while not node.up:
            assert time.monotonic() < until, "Redis did not answer in 15 s"
            await node.beat()
    return a, b


async def first_lease(node: SharedState, lookup: str, within_s: float) -> float:
    """Seconds until ``node`` wins the lease on ``lookup`` (it waits as a caller would)."""
    started = time.monotonic()
    while True:
        kind, _, _ = await node.claim(lookup, HOLD_S, time.monotonic() + 5)
        if kind == "lease":
            return time.monotonic() - started
        assert kind == "wait"
        assert time.monotonic() - started < within_s, f"no lease in {within_s} s"
        await asyncio.sleep(0.01)


async def test_a_dead_holders_lease_lapses_within_lease_s_not_at_its_requests_end(redis_prefix):
    a, b = await nodes(redis_prefix)
    lookup = digest(("integration:1", "contacts", "+15551230001", "Status"))
    try:
        assert (await a.claim(lookup, HOLD_S, time.monotonic() + 5))[0] == "lease"
        assert (await b.claim(lookup, HOLD_S, time.monotonic() + 5))[0] == "wait"
        await a.close()  # the node dies asking the CRM: nobody renews its lease, nobody frees it
        waited = await first_lease(b, lookup, within_s=10.0)
        # shared.LEASE_S (1 s) and a margin for a loaded machine; a lease for the request's whole bound would hold b
        # for HOLD_S.
        assert waited < 4.0, waited
    finally:
        await b.close()


async def test_a_live_holder_keeps_its_lease_past_lease_s_and_frees_it_with_the_answer(redis_prefix, monkeypatch):
    # A lease of 2 s renewed every 0.1 s: only a stall of the test's own loop over 1.9 s would let it lapse.
    monkeypatch.setattr(shared_module, "LEASE_S", 2.0)
    monkeypatch.setattr(shared_module, "LEASE_RENEW_S", 0.1)
    a, b = await nodes(redis_prefix)
    lookup = digest(("integration:1", "contacts", "+15551230002", "Status"))
    try:
        assert (await a.claim(lookup, HOLD_S, time.monotonic() + 5))[0] == "lease"
        await asyncio.sleep(2.0 * 2)  # twice the lease's own life: renewed meanwhile
        assert (await b.claim(lookup, HOLD_S, time.monotonic() + 5))[0] == "wait"
        a.store(lookup, {"a": "GOLD", "t": time.time()}, 60_000)
        await a.settled()
        kind, answer, ttl_ms = await b.claim(lookup, HOLD_S, time.monotonic() + 5)
        assert (kind, answer["a"]) == ("value", "GOLD") and ttl_ms > 50_000
        assert not a._held  # the renewal ended with the answer
    finally:
        await a.close()
        await b.close()


async def test_a_lease_never_outlives_its_requests_bound(redis_prefix):
    hold_s = 0.5
    a, b = await nodes(redis_prefix)
    lookup = digest(("integration:1", "contacts", "+15551230003", "Status"))
    try:
        started = time.monotonic()
        assert (await a.claim(lookup, hold_s, time.monotonic() + 5))[0] == "lease"  # and never stored
        await first_lease(b, lookup, within_s=hold_s + 3.0)
        assert time.monotonic() - started >= hold_s - 0.05  # not before the holder's request could end
    finally:
        await a.close()
        await b.close()
