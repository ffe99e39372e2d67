"""``Guards``: the value cache, single-flight, and each CRM source's breaker and budget, kept per process.

``crmroute.router`` passes every CRM lookup through them (the order is drawn
in this package's docstring). A source is an integration
(``integration:<id>``) or a Custom CRM host (``custom:https://host:port``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

from crmroute.resilience.breaker import BreakerState, CircuitBreaker
from crmroute.resilience.budget import QUOTA_WARN, Budget, Quota
from crmroute.resilience.cache import ValueCache
from crmroute.resilience.flight import SingleFlight
from crmroute.settings import Settings

DEFAULT_MAX_IN_FLIGHT = 100  # requests in flight to one source when the caller names no bound


class Guards:
    """The value cache, single-flight, and each CRM source's breaker and budget (see the module docstring)."""

    def __init__(
        self, settings: Settings, *, clock: Callable[[], float] = time.monotonic,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:  # fmt: skip
        self.settings = settings
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
        """How a source's circuit stands, for people: ``closed``, ``open (next try in 12 s)``... ``""`` if never asked."""
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
        limits = (rate, concurrency, burst, quotas)
        known = self._budgets.get(source_id)
        if known is not None and known[0] == limits:
            return known[1]
        budget = Budget(name, rate, concurrency, burst=burst, quotas=quotas, kind=kind)
        self._budgets[source_id] = (limits, budget)
        return budget

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
        rate, burst = (own.requests_per_second, None) if own.requests_per_second else (cls.requests_per_second, cls.burst)
        concurrency = own.max_concurrency or cls.max_concurrency
        quotas = cls.quotas
        if own.daily_quota is not None:  # the account's own 24-hour allocation replaces the documented one
            daily = Quota(own.daily_quota, 86_400, "requests per 24 h (the integration's daily_quota)")
            quotas = tuple(q for q in quotas if q.window_s != 86_400) + ((daily,) if own.daily_quota else ())
        return self._budget(f"integration:{spec.integration_id}", f"integration {spec.name!r}", spec.kind,
                            rate, concurrency, burst=burst, quotas=quotas)  # fmt: skip

    async def aclose(self) -> None:
        await self.flights.aclose()


