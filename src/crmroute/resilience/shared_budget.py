"""One rate budget per CRM source across the nodes, falling back to the node's own share.

``SharedBudget`` has the face of ``Budget`` (the connectors and the router
use ``slot()`` and ``pause()``): while Redis answers, the token bucket and
the limit of requests in flight are Redis's (``SharedState.reserve`` /
``enter``, atomic scripts), so the CRM never sees more than its budget
whatever the number of nodes, and a 429's pause stops every node. When
Redis is away, the local ``Budget`` it wraps takes over; it was built
with this node's share of the limits (the budget divided by the live nodes).
Quotas are counted by each node (a node's own share is not known to the vendor).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from crmroute.errors import RateLimited
from crmroute.resilience.budget import DEFAULT_PAUSE_S, Budget
from crmroute.resilience.shared import POLL_S, SharedState, SharedUnavailable, new_member

UNPACED = 1_000_000.0  # the shared bucket of a source without a pace: only a 429's pause holds it
SLOT_GRACE_S = 1.0  # a slot outlives its request's deadline by this much, in case the node dies holding it


class SharedBudget:
    def __init__(self, local: Budget, shared: SharedState, source_id: str, rate: float | None,
                 burst: float | None, max_concurrency: int) -> None:  # fmt: skip
        self.local = local
        self.shared = shared
        self.source_id = source_id
        self.shared_rate = rate if rate is not None else UNPACED
        self.shared_burst = max(1.0, burst if burst is not None else self.shared_rate)
        self.shared_concurrency = max_concurrency

    def __getattr__(self, name: str) -> Any:  # name, kind, quotas, rate, active, rejected...: the local budget's
        return getattr(self.local, name)

    def pause(self, seconds: float | None) -> None:
        seconds = DEFAULT_PAUSE_S if seconds is None else seconds
        self.local.pause(seconds)
        if self.shared.up:
            self.shared.pause(self.source_id, seconds, self.shared_rate, self.shared_burst)

    def _refuse(self, why: str, operation: str) -> RateLimited:
        return self.local._refuse(why, operation)

    async def acquire(self, deadline_at: float, operation: str = "fetch") -> str | None:
        """A token and a slot (the slot's id; ``None`` when the local budget gave them)."""
        local = self.local
        if not self.shared.up:
            await local.acquire(deadline_at, operation)
            return None
        spent = local.quota_spent()
        if spent is not None:
            await local.acquire(deadline_at, operation)  # raises quota_exhausted
        member = new_member()
        slot_ms = int((deadline_at - time.monotonic() + SLOT_GRACE_S) * 1000)
        try:
            wait, paused, entered = await self.shared.reserve(
                self.source_id, self.shared_rate, self.shared_burst, deadline_at - time.monotonic(), deadline_at,
                self.shared_concurrency, member, slot_ms,
            )  # fmt: skip
            if wait is None:
                raise self._refuse(f"paused for {paused:.1f} s by the CRM" if paused > 0 else
                                   f"no request left in the budget of {self.shared_rate:g}/s", operation)  # fmt: skip
            if wait > 0:
                local.waited_s += wait
                await asyncio.sleep(wait)
            while not entered and not await self.shared.enter(self.source_id, self.shared_concurrency, member,
                                                              slot_ms, deadline_at):  # fmt: skip
                if time.monotonic() + POLL_S >= deadline_at:
                    raise self._refuse(f"all {self.shared_concurrency} request slots of the cluster busy", operation)
                await asyncio.sleep(POLL_S)
        except SharedUnavailable:
            await local.acquire(deadline_at, operation)
            return None
        local.active += 1
        for quota in local.quotas:
            quota.count()
        return member

    def release(self, member: str | None) -> None:
        if member is None:
            self.local.release()
            return
        self.local.active -= 1
        self.shared.leave(self.source_id, member)

    @contextlib.asynccontextmanager
    async def slot(self, deadline_at: float, operation: str = "fetch") -> AsyncIterator[None]:
        member = await self.acquire(deadline_at, operation)
        try:
            yield
        finally:
            self.release(member)
