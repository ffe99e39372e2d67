"""The circuit breaker: closed, open, half-open with one probe, closed again; on a fake clock."""

from __future__ import annotations

import pytest

from crmroute.resilience.breaker import BreakerState, CircuitBreaker
from tests.resilience.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        admission = breaker.allow()
        assert admission is not None
        breaker.failure(admission)


def test_opens_after_consecutive_failures(clock):
    breaker = CircuitBreaker(failures=5, cooldown=30, clock=clock)
    fail(breaker, 4)
    assert breaker.state is BreakerState.CLOSED and breaker.consecutive_failures == 4
    fail(breaker, 1)
    assert breaker.state is BreakerState.OPEN and breaker.opened_total == 1
    assert breaker.allow() is None and breaker.refused_total == 1
    assert breaker.retry_in() == 30


def test_a_success_resets_the_count(clock):
    breaker = CircuitBreaker(failures=3, cooldown=30, clock=clock)
    fail(breaker, 2)
    breaker.success(breaker.allow())
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED


def test_one_probe_after_the_cooldown_and_its_success_closes(clock):
    breaker = CircuitBreaker(failures=2, cooldown=30, clock=clock)
    fail(breaker, 2)
    clock.advance(29.9)
    assert breaker.allow() is None
    clock.advance(0.1)
    assert breaker.state is BreakerState.HALF_OPEN
    probe = breaker.allow()
    assert probe is not None and probe.probe
    assert breaker.allow() is None  # only one probe at a time
    breaker.success(probe)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow() is not None and breaker.allow() is not None


def test_a_failed_probe_opens_it_again_for_a_new_cooldown(clock):
    breaker = CircuitBreaker(failures=2, cooldown=30, clock=clock)
    fail(breaker, 2)
    clock.advance(31)
    probe = breaker.allow()
    breaker.failure(probe)
    assert breaker.state is BreakerState.OPEN and breaker.opened_total == 2
    clock.advance(29)
    assert breaker.allow() is None
    clock.advance(1)
    assert breaker.allow().probe


def test_a_released_probe_lets_another_probe_go(clock):
    breaker = CircuitBreaker(failures=1, cooldown=10, clock=clock)
    fail(breaker, 1)
    clock.advance(10)
    probe = breaker.allow()
    breaker.release(probe)  # e.g. our own rate budget refused it: nothing learnt
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow().probe


def test_late_outcomes_of_requests_started_before_opening_are_ignored(clock):
    breaker = CircuitBreaker(failures=2, cooldown=30, clock=clock)
    early = [breaker.allow() for _ in range(4)]  # four requests in flight
    breaker.failure(early[0])
    breaker.failure(early[1])
    assert breaker.state is BreakerState.OPEN
    breaker.success(early[2])  # a slow one that made it: the probe decides, not this
    assert breaker.state is BreakerState.OPEN
    breaker.failure(early[3])
    assert breaker.opened_total == 1  # not opened again (no new cool-down)


def test_zero_failures_disables_it(clock):
    breaker = CircuitBreaker(failures=0, cooldown=30, clock=clock)
    fail(breaker, 100)
    assert breaker.state is BreakerState.CLOSED and breaker.allow() is not None


def test_gauge_values():
    assert [int(s) for s in BreakerState] == [0, 1, 2]
    assert BreakerState.HALF_OPEN.label == "half_open"
