"""The token bucket and the budget: timing on a fake clock, deadlines, pauses, the concurrency limit."""

from __future__ import annotations

import asyncio
import time

import pytest

from crmroute.errors import RateLimited
from crmroute.resilience.budget import DEFAULT_PAUSE_S, Budget, Quota, QuotaCounter, TokenBucket
from tests.resilience.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_burst_then_one_token_per_interval(clock):
    bucket = TokenBucket(rate=4, clock=clock)  # 4 a second, burst 4
    assert [bucket.reserve(0) for _ in range(4)] == [0, 0, 0, 0]
    assert bucket.reserve(0) is None  # the fifth must wait, and may not
    assert bucket.reserve(1) == pytest.approx(0.25)  # it may wait a quarter second
    assert bucket.reserve(1) == pytest.approx(0.5)  # the next queues behind it
    clock.advance(0.5)
    assert bucket.reserve(0.0) is None and bucket.reserve(0.25) == pytest.approx(0.25)


def test_refill_is_capped_at_the_burst(clock):
    bucket = TokenBucket(rate=2, burst=3, clock=clock)
    for _ in range(3):
        assert bucket.reserve(0) == 0
    clock.advance(3600)
    assert [bucket.reserve(0) for _ in range(4)] == [0, 0, 0, None]


def test_slow_rates_keep_a_burst_of_one(clock):
    bucket = TokenBucket(rate=1 / 30, clock=clock)  # one every 30 s
    assert bucket.reserve(0) == 0
    assert bucket.reserve(10) is None
    assert bucket.reserve(60) == pytest.approx(30)


def test_a_pause_stops_everything_until_it_ends(clock):
    bucket = TokenBucket(rate=10, clock=clock)
    bucket.pause(5)
    assert bucket.paused_for() == 5
    assert bucket.reserve(4.9) is None
    assert bucket.reserve(5.2) == pytest.approx(5.1)  # the pause, then a token at the refill rate (none saved)
    clock.advance(6)
    assert bucket.paused_for() == 0
    bucket.pause(1)
    bucket.pause(0.5)  # a shorter pause never shortens a longer one
    assert bucket.paused_for() == 1


async def test_budget_waits_within_the_deadline(clock):
    budget = Budget("test", rate=2, max_concurrency=10, clock=clock, sleep=clock.sleep)
    deadline = clock() + 2.5
    for _ in range(2):
        await budget.acquire(deadline)
    await budget.acquire(deadline)  # waits 0.5 s
    assert clock.slept == [pytest.approx(0.5)]
    assert budget.active == 3


async def test_budget_refuses_what_would_miss_the_deadline(clock):
    budget = Budget("integration 'Main'", rate=1, max_concurrency=10, kind="hubspot", clock=clock, sleep=clock.sleep)
    await budget.acquire(clock() + 0.3)
    with pytest.raises(RateLimited) as caught:
        await budget.acquire(clock() + 0.3)  # the next token is 1 s away
    assert caught.value.reason == "rate_budget" and caught.value.kind == "hubspot"
    assert "integration 'Main'" in str(caught.value)
    assert clock.slept == [] and budget.rejected == 1  # refused at once, without waiting


async def test_a_pause_set_while_waiting_is_waited_for_too(clock):
    budget = Budget("test", rate=1, max_concurrency=10, clock=clock)
    await budget.acquire(clock() + 10)  # the burst
    paused = False

    async def sleep(seconds: float) -> None:
        nonlocal paused
        clock.slept.append(seconds)
        clock.advance(seconds)
        if not paused:  # a 429 arrives while this call waits for its token
            paused = True
            budget.pause(2)

    budget._sleep = sleep
    started = clock()
    await budget.acquire(started + 10)
    assert clock() - started >= 2


async def test_pause_without_retry_after_uses_the_default(clock):
    budget = Budget("test", rate=100, max_concurrency=10, clock=clock, sleep=clock.sleep)
    budget.pause(None)
    assert budget.bucket.paused_for() == DEFAULT_PAUSE_S
    with pytest.raises(RateLimited, match="paused"):
        await budget.acquire(clock() + DEFAULT_PAUSE_S / 2)


async def test_concurrency_limit_queues_then_refuses_at_the_deadline():
    budget = Budget("test", rate=1000, max_concurrency=2)
    loop = asyncio.get_running_loop()
    release = asyncio.Event()
    peak = 0

    async def request() -> None:
        nonlocal peak
        async with budget.slot(loop.time() + 5):
            peak = max(peak, budget.active)
            await release.wait()

    tasks = [asyncio.create_task(request()) for _ in range(5)]
    await asyncio.sleep(0.05)
    assert budget.active == 2  # three wait for a slot
    with pytest.raises(RateLimited, match="slots busy"):
        await budget.acquire(time.monotonic() + 0.01)
    release.set()
    await asyncio.gather(*tasks)
    assert peak == 2 and budget.active == 0


async def test_slot_is_released_when_the_request_fails():
    budget = Budget("test", rate=1000, max_concurrency=1)
    with pytest.raises(ValueError):
        async with budget.slot(time.monotonic() + 1):
            raise ValueError("boom")
    async with budget.slot(time.monotonic() + 1):
        assert budget.active == 1
    assert budget.active == 0


def test_bad_limits_are_refused():
    with pytest.raises(ValueError):
        TokenBucket(0)
    with pytest.raises(ValueError):
        Budget("x", 1, 0)


# -- quotas: counted, never a pace ---------------------------------------------------------------------


def test_a_quota_counts_over_a_rolling_window(clock):
    counter = QuotaCounter(Quota(100, 86_400), "integration 'Main'", clock=clock)
    for _ in range(60):
        counter.count()
    clock.advance(12 * 3600)
    for _ in range(40):
        counter.count()
    assert counter.used() == 100 and counter.spent()
    clock.advance(12 * 3600 + 900)  # the first 60 are more than a day old
    assert counter.used() == 40 and not counter.spent()


def test_a_quota_warns_once_at_80_percent(clock, caplog):
    counter = QuotaCounter(Quota(10, 300, "requests per 5 minutes"), "integration 'Main'", clock=clock)
    with caplog.at_level("WARNING", logger="crmroute.resilience.budget"):
        for _ in range(10):
            counter.count()
        clock.advance(301)
        for _ in range(8):
            counter.count()
    warned = [r.getMessage() for r in caplog.records]
    assert warned == ["integration 'Main': 8 of 10 requests per 5 minutes used (80 %)"] * 2  # once per window


def test_the_vendors_own_count_corrects_the_quota(clock):
    counter = QuotaCounter(Quota(100_000, 86_400), "integration 'SF'", clock=clock)
    counter.count()
    counter.sync(used=14_990, limit=15_000)  # Sforce-Limit-Info: api-usage=14990/15000
    assert (counter.used(), counter.limit) == (14_990, 15_000)
    for _ in range(10):
        counter.count()
    assert counter.spent()


async def test_a_spent_quota_refuses_at_once_and_a_pace_free_budget_never_waits(clock):
    budget = Budget("integration 'SF'", None, 10, quotas=(Quota(3, 86_400),), clock=clock, sleep=clock.sleep)
    assert budget.rate is None
    for _ in range(3):
        async with budget.slot(clock() + 0.001):  # no pace: no wait however many at once
            pass
    assert budget.waited_s == 0
    with pytest.raises(RateLimited) as caught:
        await budget.acquire(clock() + 10)
    assert caught.value.reason == "quota_exhausted" and "3 per 24 h" in str(caught.value)
    budget.sync_quota(86_400, used=1, limit=3)  # the vendor says most of them did not count
    async with budget.slot(clock() + 0.001):
        pass


async def test_a_pace_free_budget_still_honours_a_429_pause(clock):
    budget = Budget("integration 'Sugar'", None, 10, clock=clock, sleep=clock.sleep)
    budget.pause(2)
    with pytest.raises(RateLimited) as caught:
        await budget.acquire(clock() + 1)
    assert caught.value.reason == "rate_budget" and "paused" in str(caught.value)
    await budget.acquire(clock() + 3)  # waits the pause out within a longer deadline
    assert clock() >= 2
