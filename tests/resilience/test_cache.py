"""The value cache: hit, miss, expiry, per-entry TTL, LRU bound; on a fake clock."""

from __future__ import annotations

import pytest

from crmroute.resilience.cache import ValueCache
from tests.resilience.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_miss_then_hit(clock):
    cache = ValueCache(10, clock=clock)
    assert cache.get("k") is None
    cache.put("k", "GOLD", 60)
    clock.advance(5)
    entry = cache.get("k")
    assert entry is not None and entry.value == "GOLD" and entry.age(clock()) == 5
    assert (cache.hits, cache.misses) == (1, 1)


def test_entries_expire_after_their_own_ttl(clock):
    cache = ValueCache(10, clock=clock)
    cache.put("found", "GOLD", 60)
    cache.put("not-found", None, 10)  # the shorter negative TTL
    clock.advance(9.999)
    assert cache.get("not-found") is not None and cache.get("not-found").value is None
    clock.advance(0.001)
    assert cache.get("not-found") is None  # expired exactly at its TTL
    assert cache.get("found").value == "GOLD"
    clock.advance(50)
    assert cache.get("found") is None
    assert len(cache) == 0  # expired entries are dropped when met


def test_zero_ttl_stores_nothing_and_forgets(clock):
    cache = ValueCache(10, clock=clock)
    cache.put("k", "A", 60)
    cache.put("k", "B", 0)
    assert cache.get("k") is None and len(cache) == 0


def test_a_new_value_replaces_the_old_one(clock):
    cache = ValueCache(10, clock=clock)
    cache.put("k", "A", 60)
    clock.advance(30)
    cache.put("k", "B", 60)
    clock.advance(45)
    assert cache.get("k").value == "B"


def test_size_bound_drops_the_least_recently_used(clock):
    cache = ValueCache(3, clock=clock)
    for key in "abc":
        cache.put(key, key.upper(), 60)
    assert cache.get("a").value == "A"  # a is now the most recently used
    cache.put("d", "D", 60)
    assert cache.get("b") is None  # b was the least recently used
    assert [cache.get(k).value for k in "acd"] == ["A", "C", "D"]
    assert len(cache) == 3 and cache.evictions == 1


def test_size_zero_keeps_nothing(clock):
    cache = ValueCache(0, clock=clock)
    cache.put("k", "A", 60)
    assert cache.get("k") is None


def test_forget_and_clear(clock):
    cache = ValueCache(5, clock=clock)
    cache.put("a", 1, 60)
    cache.put("b", 2, 60)
    cache.forget("a")
    assert cache.get("a") is None and cache.get("b").value == 2
    cache.clear()
    assert len(cache) == 0
