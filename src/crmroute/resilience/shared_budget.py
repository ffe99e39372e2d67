"""One rate budget per CRM source across the nodes, falling back to the node's own share.

``SharedBudget`` has the face of ``Budget`` (the connectors and the router
use ``slot()`` and ``pause()``): while Redis answers, the token bucket and
the limit of requests in flight are Redis's (``SharedState.reserve`` /
``enter``, atomic scripts), so the CRM never sees more than its budget
whatever the number of nodes, and a 429's pause stops every node. When
Redis is away, the local ``Budget`` it wraps takes over; it was built
with this node's share of the limits (the budget divided by the live nodes).

A vendor's quota (Salesforce: per 24 h; Dynamics: per 5 minutes) belongs to
the CRM account, so the nodes count into one counter in Redis, in the same
script call as the token (no extra round trip; cached calls ask nothing):
a spent quota refuses at once (``quota_exhausted``) on every node, and a
vendor's own count (``sync``, e.g. a header) is passed on to Redis for all.
Each node's ``QuotaCounter`` adopts the shared count it last saw (for the
80 % warning, once per window per node, and the metrics); while Redis is
away it counts on locally from there (the other nodes' requests meanwhile
are not seen). A request counted whose slot then never comes is not sent:
the count errs on the safe side.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from crmroute.errors import RateLimited
from crmroute.resilience.budget import DEFAULT_PAUSE_S, Budget, QuotaCounter
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
        for quota in local.quotas:
            quota.on_sync = lambda used, limit, quota=quota: self._sync_quota(quota, used, limit)

    def _sync_quota(self, quota: QuotaCounter, used: int, limit: int | None) -> None:
        if self.shared.up:
            self.shared.sync_quota(self.source_id, quota.quota.window_s, used, limit)

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
        member = new_member()
        slot_ms = int((deadline_at - time.monotonic() + SLOT_GRACE_S) * 1000)
        quotas = local.quotas
        try:
            got = await self.shared.reserve(
                self.source_id, self.shared_rate, self.shared_burst, deadline_at - time.monotonic(), deadline_at,
                self.shared_concurrency, member, slot_ms, [(q.quota.limit, q.quota.window_s) for q in quotas],
            )  # fmt: skip
            wait, paused, entered = got.wait, got.paused, got.entered
            if got.spent is not None:
                index, used, limit = got.spent
                quotas[index].adopt(used, limit)
                raise local.quota_refusal(quotas[index], operation)
            for quota, (used, limit) in zip(quotas, got.quotas):  # counted in Redis with the token
                quota.count(warn=False)  # (adopt warns, on the shared count)
                quota.adopt(used, limit)
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
