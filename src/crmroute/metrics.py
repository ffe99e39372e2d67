"""Prometheus metrics for /metrics: calls, latencies, CRM errors, AGI sessions,
the value cache, CRM requests, circuit breakers and the decision log buffer.

Each ``Metrics`` has its own registry (no process-global state), so tests and
several apps in one process do not collide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from crmroute.resilience.breaker import CircuitBreaker
from crmroute.resilience.budget import Budget
from crmroute.routing.trace import Decision

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.calls = Counter("crmroute_calls", "Calls routed, by status and rule", ["status", "rule"], registry=r)
        self.decision_seconds = Histogram(
            "crmroute_decision_seconds", "Time to decide a call (CRM included)", buckets=LATENCY_BUCKETS, registry=r
        )
        self.crm_seconds = Histogram(
            "crmroute_crm_request_seconds", "Time the CRM took to answer, per integration and kind",
            ["integration", "kind"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.crm_errors = Counter(
            "crmroute_crm_errors", "CRM failures by reason", ["integration", "kind", "reason"], registry=r
        )
        self.agi_sessions = Gauge("crmroute_agi_active_sessions", "FastAGI sessions in progress", registry=r)
        self.agi_probes = Gauge(
            "crmroute_agi_health_checks", "Connections to the AGI port closed before sending anything (health "
            "checks from balancers and monitoring), since start", registry=r,
        )  # fmt: skip
        self.decisions_pending = Gauge(
            "crmroute_decision_log_pending", "Decision rows waiting to be written", registry=r
        )
        self.decisions_dropped = Gauge(
            "crmroute_decision_log_dropped", "Decision rows dropped because the buffer was full", registry=r
        )
        lookups = Counter("crmroute_cache_lookups", "CRM values looked up in the value cache", ["result"], registry=r)
        self.cache_hits, self.cache_misses = lookups.labels(result="hit"), lookups.labels(result="miss")
        self.cache_entries = Gauge("crmroute_cache_entries", "Values in the value cache", registry=r)
        self.crm_requests = Counter(
            "crmroute_crm_lookups", "Lookups sent to a CRM (after cache and single-flight), per source", ["source"],
            registry=r,
        )  # fmt: skip
        self.node_info = Gauge("crmroute_node_info", "This node's name (CRMROUTE_NODE_ID); always 1", ["node"],
                               registry=r)  # fmt: skip
        self.shared_state_up = Gauge(
            "crmroute_shared_state_up", "With CRMROUTE_REDIS_URL: 1 while the cache, budgets and breakers are shared "
            "in Redis, 0 while Redis is away and this node works from its local state", registry=r,
        )  # fmt: skip
        self.cluster_nodes = Gauge("crmroute_cluster_nodes", "Live nodes as last counted in Redis", registry=r)
        self._breakers = _BreakerCollector()
        r.register(self._breakers)
        self._quotas = _QuotaCollector()
        r.register(self._quotas)

    def observe(self, decision: Decision, *, integration: str = "", kind: str = "") -> None:
        self.calls.labels(status=str(decision.status), rule=decision.rule or "-").inc()
        self.decision_seconds.observe(decision.total_ms / 1000)
        if not kind:
            return
        if decision.crm_ms is not None and not decision.cached:
            self.crm_seconds.labels(integration=integration, kind=kind).observe(decision.crm_ms / 1000)
        if decision.status == "fallback":
            self.crm_errors.labels(integration=integration, kind=kind, reason=decision.reason or "unknown").inc()

    def track(self, gauge: Gauge, read: Callable[[], float]) -> None:
        """Have ``gauge`` read its value from ``read`` at scrape time."""
        gauge.set_function(read)

    def track_refused_credentials(self, read: Callable[[], Iterable[str]]) -> None:
        """``crmroute_credentials_refused{integration}``: 1 per integration whose CRM refused its credentials."""
        if getattr(self, "_refused", None) is None:
            self._refused = _RefusedCollector()
            self.registry.register(self._refused)
        self._refused.read = read

    def track_breakers(self, read: Callable[[], Iterable[tuple[str, CircuitBreaker]]]) -> None:
        """Report each (source name, breaker) ``read`` gives as ``crmroute_circuit_state`` at scrape time."""
        self._breakers.read = read

    def track_quotas(self, read: Callable[[], Iterable[tuple[str, Budget]]]) -> None:
        """Report each (source name, budget) ``read`` gives as ``crmroute_crm_quota_*`` at scrape time."""
        self._quotas.read = read

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _QuotaCollector(Collector):
    """``crmroute_crm_quota_used{source,window}`` and ``..._limit``: each CRM source's counted quotas."""

    def __init__(self) -> None:
        self.read: Callable[[], Iterable[tuple[str, Budget]]] = lambda: ()

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        used = GaugeMetricFamily("crmroute_crm_quota_used", "Requests counted against a CRM source's quota in its "
                                 "rolling window (at the limit, calls fall back: quota_exhausted)",
                                 labels=["source", "window"])  # fmt: skip
        limit = GaugeMetricFamily("crmroute_crm_quota_limit", "A CRM source's quota per rolling window",
                                  labels=["source", "window"])  # fmt: skip
        for name, budget in self.read():
            for quota in budget.quotas:
                window = f"{quota.quota.window_s:g}s"
                used.add_metric([name, window], quota.used())
                limit.add_metric([name, window], quota.limit)
        yield used
        yield limit


class _BreakerCollector(Collector):
    """``crmroute_circuit_state{source}``: 0 closed, 1 open, 2 half-open; and the times each opened."""

    def __init__(self) -> None:
        self.read: Callable[[], Iterable[tuple[str, CircuitBreaker]]] = lambda: ()

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = GaugeMetricFamily("crmroute_circuit_state", "Circuit breaker per CRM source: 0 closed, 1 open, "
                                  "2 half-open (probing)", labels=["source"])  # fmt: skip
        opened = GaugeMetricFamily("crmroute_circuit_opened", "Times the circuit of a CRM source opened",
                                   labels=["source"])  # fmt: skip
        for name, breaker in self.read():
            state.add_metric([name], int(breaker.state))
            opened.add_metric([name], breaker.opened_total)
        yield state
        yield opened


class _RefusedCollector(Collector):
    """Read at scrape time from the credential store (every process's refusals, not just this one's)."""

    def __init__(self) -> None:
        self.read: Callable[[], Iterable[str]] = lambda: ()

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())  # not read at registration: the database may not be there yet

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "crmroute_credentials_refused", "1 while the CRM refuses the integration's credentials (calls fall "
            "back with credentials_refused)", labels=["integration"],
        )  # fmt: skip
        try:
            names = list(self.read())
        except Exception:  # the database is away: /healthz says so; the scrape still works
            names = []
        for name in names:
            family.add_metric([name], 1)
        yield family
