"""Prometheus metrics for /metrics: calls, latencies, CRM errors, AGI sessions.

Each ``Metrics`` has its own registry (no process-global state), so tests and
several apps in one process do not collide.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

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
        self.decisions_pending = Gauge(
            "crmroute_decision_log_pending", "Decision rows waiting to be written", registry=r
        )
        self.decisions_dropped = Gauge(
            "crmroute_decision_log_dropped", "Decision rows dropped because the buffer was full", registry=r
        )

    def observe(self, decision: Decision, *, integration: str = "", kind: str = "") -> None:
        self.calls.labels(status=str(decision.status), rule=decision.rule or "-").inc()
        self.decision_seconds.observe(decision.total_ms / 1000)
        if not kind:
            return
        if decision.crm_ms is not None:
            self.crm_seconds.labels(integration=integration, kind=kind).observe(decision.crm_ms / 1000)
        if decision.status == "fallback":
            self.crm_errors.labels(integration=integration, kind=kind, reason=decision.reason or "unknown").inc()

    def track(self, gauge: Gauge, read: Callable[[], float]) -> None:
        """Have ``gauge`` read its value from ``read`` at scrape time."""
        gauge.set_function(read)

    def render(self) -> bytes:
        return generate_latest(self.registry)
