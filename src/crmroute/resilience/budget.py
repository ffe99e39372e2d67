"""Rate budget, quotas and concurrency limit for one CRM source.

A vendor publishes two different things, and they are kept apart:

- a **pace** (HubSpot: 4 searches a second; Pipedrive: a burst window of 2 s;
  Zendesk: requests per minute) is a ``TokenBucket`` with the vendor's burst,
  so a call waits only when the source really is that busy; a source without
  a published pace has none (``rate`` ``math.inf``) and only the concurrency
  limit applies;
- a **quota** (Salesforce: requests per rolling 24 h; Dynamics Online: per
  5 minutes) is a ``QuotaCounter``: requests are counted, never spread out;
  at 80 % a warning is logged once per window, and when it is spent every call
  falls back at once (``RateLimited`` with reason ``quota_exhausted``) without
  sending anything. A vendor that reports its own count (a header) corrects it
  (``sync``). Counts are per process; in a cluster the count is Redis's
  (``shared_budget.py``): each node's counter ``adopt``s it and counts on
  from there while Redis is away, and passes the vendor's count on (``on_sync``).

``TokenBucket`` is the arithmetic: ``rate`` tokens a second up to ``burst``;
taking a token may mean waiting for it, and a caller only takes one when the
wait fits what it can afford (``reserve(max_wait)``), so waiters queue in
order without polling. ``pause(seconds)`` (a 429 with ``Retry-After``) stops
the refill until then: every call of that source waits (or gives up) too.

``Budget`` adds the concurrency limit and the waiting, bounded by the
caller's deadline::

    async with budget.slot(deadline.at):    # RateLimited(reason="rate_budget") if it would not fit
        ... one request ...

No I/O; ``clock`` (monotonic seconds, the ``Deadline`` clock) and ``sleep``
are injected so tests run on fake time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from crmroute.errors import RateLimited

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

DEFAULT_PAUSE_S = 1.0  # a 429 without Retry-After pauses the source this long
MAX_PAUSE_S = 3600.0  # a Retry-After beyond this is taken as this
QUOTA_WARN = 0.8  # share of a quota whose use is logged as a warning, once per window
QUOTA_SLOTS = 96  # a quota's window is counted in this many slots (15 minutes of a day)
NO_PACE = math.inf  # the rate of a source whose vendor publishes no pace


@dataclass(frozen=True)
class Quota:
    """A vendor's counted limit: ``limit`` requests per rolling ``window_s`` seconds."""

    limit: int
    window_s: float
    name: str = ""  # how people call it, e.g. "daily API requests"

    def describe(self) -> str:
        window = {86_400: "24 h", 3600: "hour", 300: "5 minutes", 60: "minute"}.get(int(self.window_s))
        return f"{self.limit:,} per {window or f'{self.window_s:g} s'}"


class QuotaCounter:
    """Requests counted over a rolling window (in ``QUOTA_SLOTS`` slots), with a warning at 80 %."""

    def __init__(self, quota: Quota, source: str, *, clock: Clock = time.monotonic) -> None:
        self.quota = quota
        self.limit = quota.limit
        self.source = source
        self.clock = clock
        self._slot_s = quota.window_s / QUOTA_SLOTS
        self._slots: deque[list[float]] = deque()  # [slot start, count], oldest first
        self._offset = 0  # what the vendor said it counted beyond our own requests (sync)
        self._warned_at: float | None = None
        self.on_sync: Callable[[int, int | None], None] | None = None  # a cluster passes the vendor's count on

    def _expire(self, now: float) -> None:
        while self._slots and self._slots[0][0] <= now - self.quota.window_s:
            self._slots.popleft()

    def used(self) -> int:
        self._expire(self.clock())
        return max(0, int(sum(count for _, count in self._slots)) + self._offset)

    def spent(self) -> bool:
        return self.used() >= self.limit

    def count(self, *, warn: bool = True) -> None:
        now = self.clock()
        self._expire(now)
        start = now - now % self._slot_s
        if self._slots and self._slots[-1][0] == start:
            self._slots[-1][1] += 1
        else:
            self._slots.append([start, 1])
        if warn:
            self._warn(now)

    def sync(self, used: int, limit: int | None = None) -> None:
        """The vendor's own count (and limit) for this window, e.g. Salesforce's ``Sforce-Limit-Info``."""
        if limit:
            self.limit = limit
        self._expire(self.clock())
        self._offset = used - int(sum(count for _, count in self._slots))
        self._warn(self.clock())
        if self.on_sync is not None:
            self.on_sync(used, limit)

    def adopt(self, used: int, limit: int) -> None:
        """The cluster's count (Redis's, this node's requests in it): local counting goes on from there."""
        self.limit = limit
        self._expire(self.clock())
        self._offset = used - int(sum(count for _, count in self._slots))
        self._warn(self.clock())

    def _warn(self, now: float) -> None:
        if self._warned_at is not None and now - self._warned_at < self.quota.window_s:
            return
        used = self.used()
        if used >= QUOTA_WARN * self.limit:
            self._warned_at = now
            logger.warning("%s: %s of %s %s used (%.0f %%)%s", self.source, f"{used:,}", f"{self.limit:,}",
                           self.quota.name or f"requests per {self.quota.describe().split(' per ')[1]}",
                           100 * used / max(self.limit, 1), "; calls fall back (quota_exhausted) until it frees up"
                           if used >= self.limit else "")  # fmt: skip


class TokenBucket:
    def __init__(self, rate: float, burst: float | None = None, *, clock: Clock = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = max(1.0, float(burst if burst is not None else rate))
        self.clock = clock
        self._tokens = self.burst
        self._updated = clock()  # refill counted up to here; in the future while paused
        self.pauses = 0  # how many times pause() moved the end of a pause

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now

    def wait_time(self) -> float:
        """Seconds until a token would be free for the next caller (0: now)."""
        now = self.clock()
        self._refill(now)
        return max(0.0, self._updated - now) + max(0.0, (1.0 - self._tokens) / self.rate)

    def reserve(self, max_wait: float) -> float | None:
        """Take a token if it is free within ``max_wait`` s: the seconds to wait first, else ``None``."""
        wait = self.wait_time()
        if wait > max_wait:
            return None
        self._tokens -= 1.0
        return wait

    def pause(self, seconds: float) -> None:
        """No token before ``seconds`` from now (tokens already promised are not given back)."""
        now = self.clock()
        self._refill(now)
        until = now + min(max(0.0, seconds), MAX_PAUSE_S)
        if until > self._updated:
            self._updated = until
            self._tokens = min(self._tokens, 0.0)  # no burst saved up across a pause
            self.pauses += 1

    def paused_for(self) -> float:
        """Seconds the source is still paused (0: not paused)."""
        return max(0.0, self._updated - self.clock())


class Budget:
    """A token bucket (the pace), quota counters, and at most ``max_concurrency`` requests in flight."""

    def __init__(
        self,
        name: str,
        rate: float | None,
        max_concurrency: int,
        *,
        burst: float | None = None,
        quotas: Sequence[Quota] = (),
        kind: str = "",
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.name = name
        self.kind = kind
        self.max_concurrency = max_concurrency
        self.bucket = TokenBucket(NO_PACE if rate is None else rate, burst, clock=clock)
        self.quotas = [QuotaCounter(q, name, clock=clock) for q in quotas]
        self.clock = clock
        self._sleep = sleep
        self._slots = asyncio.Semaphore(max_concurrency)
        self.active = 0
        self.rejected = 0  # calls that could not fit their deadline, or found a quota spent
        self.waited_s = 0.0  # seconds calls spent waiting for the pace (0 while the source is idle)

    @property
    def rate(self) -> float | None:
        """Requests a second of the pace; ``None``: no pace, only the concurrency limit."""
        return None if self.bucket.rate == NO_PACE else self.bucket.rate

    def pause(self, seconds: float | None) -> None:
        """The source said "too many requests": everyone waits ``seconds`` (``None``: a default pause)."""
        self.bucket.pause(DEFAULT_PAUSE_S if seconds is None else seconds)

    def _refuse(self, why: str, operation: str) -> RateLimited:
        self.rejected += 1
        return RateLimited(f"{self.name}: {why} before the call's deadline", kind=self.kind, operation=operation,
                           reason="rate_budget")  # fmt: skip

    def quota_refusal(self, spent: QuotaCounter, operation: str) -> RateLimited:
        self.rejected += 1
        return RateLimited(f"{self.name}: the quota of {spent.quota.describe()} requests is spent "
                           f"({spent.used():,} used)", kind=self.kind, operation=operation,
                           reason="quota_exhausted")  # fmt: skip

    def quota_spent(self) -> QuotaCounter | None:
        return next((q for q in self.quotas if q.spent()), None)

    def sync_quota(self, window_s: float, used: int, limit: int | None = None) -> None:
        """The vendor's own count for its quota over ``window_s`` (ignored when no such quota is kept)."""
        for quota in self.quotas:
            if quota.quota.window_s == window_s:
                quota.sync(used, limit)

    async def acquire(self, deadline_at: float, operation: str = "fetch") -> None:
        """Wait (until ``deadline_at`` at most) for a token and a free slot; ``RateLimited`` if they do not fit.

        A spent quota refuses at once (reason ``quota_exhausted``); the request is counted in every quota.
        """
        spent = self.quota_spent()
        if spent is not None:
            raise self.quota_refusal(spent, operation)
        while True:
            pauses = self.bucket.pauses
            wait = self.bucket.reserve(deadline_at - self.clock())
            if wait is None:
                paused = self.bucket.paused_for()
                raise self._refuse(f"paused for {paused:.1f} s by the CRM" if paused else
                                   f"no request left in the budget of {self.bucket.rate:g}/s", operation)  # fmt: skip
            if wait > 0:
                self.waited_s += wait
                await self._sleep(wait)
            if self.bucket.pauses == pauses:
                break  # else a 429 paused the source while we waited: wait for that pause too
        left = deadline_at - self.clock()
        if self._slots.locked():
            if left <= 0:
                raise self._refuse(f"all {self.max_concurrency} request slots busy", operation)
            try:
                async with asyncio.timeout(left):  # (not wait_for: 3.11's can lose a cancel, CPython gh-86296)
                    await self._slots.acquire()
            except TimeoutError:
                raise self._refuse(f"all {self.max_concurrency} request slots busy", operation) from None
        else:
            await self._slots.acquire()
        self.active += 1
        for quota in self.quotas:
            quota.count()

    def release(self) -> None:
        self.active -= 1
        self._slots.release()

    @contextlib.asynccontextmanager
    async def slot(self, deadline_at: float, operation: str = "fetch") -> AsyncIterator[None]:
        await self.acquire(deadline_at, operation)
        try:
            yield
        finally:
            self.release()
