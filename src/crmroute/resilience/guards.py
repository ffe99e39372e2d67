"""``Guards``: the value cache, single-flight, and each CRM source's breaker and budget.

``crmroute.router`` passes every CRM lookup through them (the order is drawn
in this package's docstring). A source is an integration
(``integration:<id>``) or a Custom CRM host (``custom:https://host:port``).

Alone, a node keeps them in its process. With ``shared`` (Redis, see
``resilience/shared.py``) they hold for every node: a value any node read
serves all within its TTL (a copy is kept locally for what is left of it),
one node asks the CRM for a lookup while the others wait for its answer
(``claim`` / ``await_peer``), the breaker is the cluster's (``admit`` /
``outcome``), and budgets are ``SharedBudget``s. While Redis is away each
node works as alone, with its share of each budget.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from crmroute.resilience.breaker import Admission, BreakerState, CircuitBreaker
from crmroute.resilience.budget import QUOTA_WARN, Budget, Quota
from crmroute.resilience.cache import ValueCache
from crmroute.resilience.flight import SingleFlight
from crmroute.resilience.shared import POLL_S, TTL_JITTER, SharedState, SharedUnavailable, digest
from crmroute.resilience.shared_budget import SharedBudget
from crmroute.settings import Settings

DEFAULT_MAX_IN_FLIGHT = 100  # requests in flight to one source when the caller names no bound
LEASE_GRACE_S = 0.25  # a lease outlives the request it stands for by this much (its holder may die)


@dataclass(frozen=True, slots=True)
class Claim:
    """What the shared state says of a lookup nobody on this node is asking for."""

    kind: str  # "value" (cached by a node), "lease" (ask the CRM), "wait" (a node asks it), "local" (no Redis)
    answer: Any = None
    age: float = 0.0  # of a "value": seconds since a node asked the CRM for it


LOCAL = Claim("local")


class Guards:
    """The value cache, single-flight, and each CRM source's breaker and budget (see the module docstring)."""

    def __init__(
        self, settings: Settings, *, clock: Callable[[], float] = time.monotonic,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, shared: SharedState | None = None,
        encode: Callable[[Any], dict] = dict, decode: Callable[[dict], Any] = dict,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.shared = shared
        self._encode, self._decode = encode, decode  # an answer to and from JSON, for the shared cache
        # Never more in flight to one source than the shared HTTP client has connections: requests past
        # that would queue in its pool, whose bookkeeping grows with the queue and stalls every call.
        self.max_in_flight = max_in_flight
        self.clock = clock  # of the cache and the breakers (tests move it); budgets follow the deadline's clock
        self.cache: ValueCache = ValueCache(settings.cache_max_entries, clock=clock)
        self.flights: SingleFlight[Any] = SingleFlight()
        self._breakers: dict[str, tuple[str, CircuitBreaker]] = {}  # source id -> (name, breaker)
        self._budgets: dict[str, tuple[tuple, Budget]] = {}  # source id -> (its limits, budget)
        self._origins: dict[str, str] = {}

    def breaker(self, source_id: str, name: str) -> CircuitBreaker:
        known = self._breakers.get(source_id)
        if known is None:
            breaker = CircuitBreaker(self.settings.breaker_failures, self.settings.breaker_cooldown_s, clock=self.clock)
            self._breakers[source_id] = (name, breaker)
            return breaker
        if known[0] != name:  # an integration was renamed
            self._breakers[source_id] = (name, known[1])
        return known[1]

    def breakers(self) -> Iterator[tuple[str, CircuitBreaker]]:
        """(source name, breaker) of every source asked so far."""
        return iter(list(self._breakers.values()))

    def circuit(self, source_id: str) -> str:
        """A source's circuit for people: ``closed``, ``open (next try in 12 s)``... ``""`` if never asked."""
        known = self._breakers.get(source_id)
        if known is None:
            return ""
        breaker = known[1]
        state = breaker.state
        if state is BreakerState.OPEN:
            return f"open (next try in {breaker.retry_in():.0f} s)"
        return "half-open (probing)" if state is BreakerState.HALF_OPEN else "closed"

    def quotas(self) -> dict[str, str]:
        """Sources whose quota is 80 % used or more: ``{"integration 'Main'": "85,012 of 100,000 per 24 h"}``."""
        found = {}
        for _, budget in self.budgets():
            for quota in budget.quotas:
                used = quota.used()
                if used >= QUOTA_WARN * quota.limit:
                    window = quota.quota.describe().partition(" per ")[2]
                    spent = " (spent)" if quota.spent() else ""
                    found[budget.name] = f"{used:,} of {quota.limit:,} per {window}{spent}"
        return found

    def circuits(self) -> dict[str, str]:
        """Each asked source's name and circuit state (``closed``, ``open``, ``half_open``)."""
        return {name: breaker.state.label for name, breaker in self.breakers()}

    def origin(self, url: str) -> str:
        """``https://host:port`` of a Custom CRM URL: the unit of its budget and breaker."""
        origin = self._origins.get(url)
        if origin is None:
            parsed = urlsplit(url)
            origin = f"{parsed.scheme}://{parsed.hostname}:{parsed.port or 443}"
            if len(self._origins) > 10_000:  # URLs come from rules: a bound against the absurd
                self._origins.clear()
            self._origins[url] = origin
        return origin

    def _budget(
        self, source_id: str, name: str, kind: str, rate: float | None, concurrency: int, *,
        burst: float | None = None, quotas: tuple[Quota, ...] = (),
    ) -> Budget:  # fmt: skip
        concurrency = min(concurrency, self.max_in_flight)
        nodes = self.shared.live_nodes if self.shared is not None else 1
        limits = (rate, concurrency, burst, quotas, nodes)
        known = self._budgets.get(source_id)
        if known is not None and known[0] == limits:
            return known[1]
        # This node's share: all of it alone, else what it may use while Redis is away.
        budget: Any = Budget(name, None if rate is None else rate / nodes, max(1, math.ceil(concurrency / nodes)),
                             burst=None if burst is None else burst / nodes, quotas=quotas, kind=kind)  # fmt: skip
        if self.shared is not None:
            budget = SharedBudget(budget, self.shared, source_id, rate, burst, concurrency)
        self._budgets[source_id] = (limits, budget)
        return budget

    def forget_budgets(self) -> None:
        self._budgets.clear()

    def budgets(self) -> Iterator[tuple[str, Budget]]:
        """(source id, budget) of every source asked so far."""
        return iter([(source_id, budget) for source_id, (_, budget) in list(self._budgets.items())])

    def custom_budget(self, url: str) -> Budget:
        origin = self.origin(url)
        return self._budget(f"custom:{origin}", f"the Custom CRM at {origin}", "custom",
                            self.settings.custom_requests_per_second, self.settings.custom_max_concurrency)  # fmt: skip

    def integration_budget(self, spec: Any, connector: Any) -> Budget:
        """The vendor's published limits (the connector's class data), or the integration's own settings.

        ``spec`` is a ``ConnectorSpec`` and ``connector`` a ``Connector`` (read, not imported: the
        connectors use this package, not the other way round).
        """
        cls, own = type(connector), connector.settings
        own_pace = own.requests_per_second
        rate, burst = (own_pace, None) if own_pace else (cls.requests_per_second, cls.burst)
        concurrency = own.max_concurrency or cls.max_concurrency
        quotas = cls.quotas
        if own.daily_quota is not None:  # the account's own 24-hour allocation replaces the documented one
            daily = Quota(own.daily_quota, 86_400, "requests per 24 h (the integration's daily_quota)")
            quotas = tuple(q for q in quotas if q.window_s != 86_400) + ((daily,) if own.daily_quota else ())
        return self._budget(f"integration:{spec.integration_id}", f"integration {spec.name!r}", spec.kind,
                            rate, concurrency, burst=burst, quotas=quotas)  # fmt: skip

    # --- across nodes -----------------------------------------------------------

    @property
    def clustered(self) -> bool:
        """Shared state is configured and Redis answers now."""
        return self.shared is not None and self.shared.up

    def shared_status(self) -> str:
        """For /healthz: ``off`` (one node), ``redis (3 live nodes)``, or ``local fallback: ...``."""
        shared = self.shared
        if shared is None:
            return "off"
        if shared.up:
            return f"redis ({shared.live_nodes} live node{'s' if shared.live_nodes != 1 else ''})"
        return f"local fallback: Redis unreachable, each budget at 1/{shared.live_nodes}"

    async def claim(self, lookup: Hashable, deadline_at: float, lease_s: float) -> Claim:
        """A node's cached answer, else the lease to ask the CRM (held ``lease_s`` at most), else "wait"."""
        if self.shared is None or not self.shared.up:
            return LOCAL
        try:
            kind, data, ttl_ms = await self.shared.claim(digest(lookup), lease_s + LEASE_GRACE_S, deadline_at)
        except SharedUnavailable:
            return LOCAL
        if kind != "value" or data is None:
            return Claim(kind)
        answer = self._decode(data["a"])
        self.cache.put(lookup, answer, ttl_ms / 1000)  # the local copy ends with the shared one
        return Claim("value", answer, max(0.0, time.time() - data["t"]))

    async def await_peer(self, lookup: Hashable, deadline_at: float, lease_s: float) -> Claim:
        """Wait for the node holding the lease: its answer, else (it failed, or died) the lease, else ``LOCAL``.

        ``TimeoutError`` once ``deadline_at`` passes.
        """
        while True:
            if time.monotonic() + POLL_S >= deadline_at:
                raise TimeoutError
            await asyncio.sleep(POLL_S)
            claim = await self.claim(lookup, deadline_at, lease_s)
            if claim.kind != "wait":
                return claim

    def keep(self, lookup: Hashable, answer: Any, ttl: float, *, leased: bool) -> None:
        """Cache an answer here and, with the lease, for every node (which frees the lease)."""
        self.cache.put(lookup, answer, ttl)
        if leased and self.shared is not None:
            ttl_ms = int(ttl * 1000 * (1 - random.uniform(0, TTL_JITTER)))  # not a herd expiring at once
            self.shared.store(digest(lookup), {"a": self._encode(answer), "t": time.time()}, ttl_ms)

    def give_back(self, lookup: Hashable) -> None:
        """Free a lease without an answer (the request failed): a waiting node may ask in its turn."""
        if self.shared is not None:
            self.shared.store(digest(lookup), None, 0)

    async def admit(self, source_id: str, name: str, deadline_at: float, probe_s: float) -> Admission | None:
        """The source's breaker: the cluster's while Redis answers, else this node's."""
        breaker = self.breaker(source_id, name)
        if self.shared is None or not self.shared.up or breaker.threshold == 0:
            return breaker.allow()
        try:
            verdict, retry_s = await self.shared.admit(source_id, int((probe_s + LEASE_GRACE_S) * 1000), deadline_at)
        except SharedUnavailable:
            return breaker.allow()
        if verdict == "refuse":
            if retry_s > 0:
                breaker.mirror(retry_s)
            breaker.refused_total += 1
            return None
        if verdict == "normal":
            breaker.mirror(None)
        return Admission(probe=verdict == "probe", shared=True, quiet=verdict == "normal" and retry_s == 0)

    def outcome(self, source_id: str, name: str, admission: Admission, outcome: str) -> None:
        """``success``, ``failure`` or ``release`` (says nothing of the CRM's health) of an admitted request."""
        breaker = self.breaker(source_id, name)
        if admission.quiet and outcome != "failure":
            return
        if admission.shared and self.shared is not None and self.shared.up:
            self.shared.outcome(source_id, outcome, admission.probe, breaker.threshold, breaker.cooldown,
                                breaker.mirror)  # fmt: skip
        else:
            getattr(breaker, outcome)(Admission(admission.probe) if admission.shared else admission)

    async def aclose(self) -> None:
        await self.flights.aclose()


