"""LoginThrottle on its own: the growing wait, its caps, forgetting, and its bounded size."""

from __future__ import annotations

from crmroute.web.throttle import Backoff, LoginThrottle
from tests.web.conftest import Clock


def test_the_wait_doubles_per_failure_up_to_the_cap():
    backoff = Backoff(free=3, first=2.0, cap=20.0)
    assert [backoff.wait(n) for n in range(8)] == [0, 0, 0, 2, 4, 8, 16, 20]
    assert backoff.wait(10**6) == 20


def test_a_name_is_one_key_however_it_is_typed():
    throttle = LoginThrottle(Backoff(free=2, first=1.0, cap=9.0), Backoff(free=100, first=1.0, cap=1.0), clock=Clock())
    throttle.failed("192.0.2.1", "Admin")
    throttle.failed("192.0.2.1", " admin ")
    assert throttle.retry_after("192.0.2.1", "ADMIN") == 1
    assert throttle.retry_after("192.0.2.2", "admin") == 0  # another address: its own count
    throttle.succeeded("192.0.2.1", "admin")
    assert throttle.retry_after("192.0.2.1", "admin") == 0


def test_an_hour_without_failure_starts_afresh():
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    for _ in range(12):
        throttle.failed("192.0.2.1", "admin")
    assert throttle.retry_after("192.0.2.1", "admin") > 0
    clock.now += 3601
    throttle.failed("192.0.2.1", "admin")  # the first of a new count: no wait
    assert throttle.retry_after("192.0.2.1", "admin") == 0


def test_memory_is_bounded():
    throttle = LoginThrottle(max_keys=100, clock=Clock())
    for i in range(1000):
        throttle.failed("192.0.2.1", f"guess{i}")
    assert len(throttle._failures) == 100
