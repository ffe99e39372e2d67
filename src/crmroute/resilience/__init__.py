"""What stands between a call and a CRM: value cache, single-flight, rate budget, circuit breaker.

Each mechanism is a small module without I/O (clocks are injected, so tests
run on fake time); ``Guards`` keeps them per CRM source, and ``crmroute.router``
wires them around every CRM lookup:

    cache hit?                  -> the value, the CRM is not asked
    same lookup already asked?  -> wait for that request (single-flight)
    circuit open?               -> fallback at once (reason ``circuit_open``)
    quota spent?                -> fallback at once (reason ``quota_exhausted``)
    pace / concurrency          -> wait within the call's deadline, else
                                   fallback (reason ``rate_budget``)
    the request                 -> success or "not found" is cached; failures
                                   never are, and count towards the breaker
"""

from crmroute.resilience.breaker import Admission, BreakerState, CircuitBreaker
from crmroute.resilience.budget import Budget, Quota, QuotaCounter, TokenBucket
from crmroute.resilience.cache import CacheEntry, ValueCache
from crmroute.resilience.flight import SingleFlight
from crmroute.resilience.guards import Guards

__all__ = [
    "Admission",
    "BreakerState",
    "Budget",
    "CacheEntry",
    "CircuitBreaker",
    "Guards",
    "Quota",
    "QuotaCounter",
    "SingleFlight",
    "TokenBucket",
    "ValueCache",
]
