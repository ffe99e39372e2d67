"""Rate budget and concurrency limit for one CRM source.

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
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from crmroute.errors import RateLimited

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

DEFAULT_PAUSE_S = 1.0  # a 429 without Retry-After pauses the source this long
MAX_PAUSE_S = 3600.0  # a Retry-After beyond this is taken as this


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
    """A token bucket plus at most ``max_concurrency`` requests in flight."""

    def __init__(
        self,
        name: str,
        rate: float,
        max_concurrency: int,
        *,
        burst: float | None = None,
        kind: str = "",
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.name = name
        self.kind = kind
        self.max_concurrency = max_concurrency
        self.bucket = TokenBucket(rate, burst, clock=clock)
        self.clock = clock
        self._sleep = sleep
        self._slots = asyncio.Semaphore(max_concurrency)
        self.active = 0
        self.rejected = 0  # calls that could not fit their deadline

    @property
    def rate(self) -> float:
        return self.bucket.rate

    def pause(self, seconds: float | None) -> None:
        """The source said "too many requests": everyone waits ``seconds`` (``None``: a default pause)."""
        self.bucket.pause(DEFAULT_PAUSE_S if seconds is None else seconds)

    def _refuse(self, why: str, operation: str) -> RateLimited:
        self.rejected += 1
        return RateLimited(f"{self.name}: {why} before the call's deadline", kind=self.kind, operation=operation,
                           reason="rate_budget")  # fmt: skip

    async def acquire(self, deadline_at: float, operation: str = "fetch") -> None:
        """Wait (until ``deadline_at`` at most) for a token and a free slot; ``RateLimited`` if they do not fit."""
        while True:
            pauses = self.bucket.pauses
            wait = self.bucket.reserve(deadline_at - self.clock())
            if wait is None:
                paused = self.bucket.paused_for()
                raise self._refuse(f"paused for {paused:.1f} s by the CRM" if paused else
                                   f"no request left in the budget of {self.rate:g}/s", operation)  # fmt: skip
            if wait > 0:
                await self._sleep(wait)
            if self.bucket.pauses == pauses:
                break  # else a 429 paused the source while we waited: wait for that pause too
        left = deadline_at - self.clock()
        if self._slots.locked():
            if left <= 0:
                raise self._refuse(f"all {self.max_concurrency} request slots busy", operation)
            try:
                await asyncio.wait_for(self._slots.acquire(), left)
            except TimeoutError:
                raise self._refuse(f"all {self.max_concurrency} request slots busy", operation) from None
        else:
            await self._slots.acquire()
        self.active += 1

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
