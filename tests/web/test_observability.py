"""/healthz and /metrics."""

from __future__ import annotations

from crmroute.routing.trace import Decision, DestType, Destination, Status
from crmroute.store.decisions import CallMeta


def test_healthz_reports_database_and_version(web):
    body = web.client().get("/healthz").json()
    assert body["database"] == "ok" and body["status"] == "ok" and body["version"]
    assert body["agi"] == "not running in this process"


def test_healthz_degrades_when_the_database_is_gone(web, tmp_path):
    from crmroute.store.db import make_engine

    web.store.engine = make_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
    response = web.client().get("/healthz")
    assert response.status_code == 503 and response.json()["database"].startswith("error")


def test_metrics_count_calls_latency_and_errors(web):
    router = web.app.state.router
    router.book.rules.clear()  # unknown rule: counted without CRM labels
    matched = Decision(Status.MATCHED, rule="VIP", destination=Destination(DestType.QUEUE, "103"), key="+1555",
                       crm_ms=12.0, total_ms=13.0)  # fmt: skip
    router.record(matched, CallMeta(call_id="c1"))
    router.record(Decision(Status.NO_RULE, total_ms=0.2), CallMeta(call_id="c2"))
    text = web.client().get("/metrics").text
    assert 'crmroute_calls_total{rule="VIP",status="matched"} 1.0' in text
    assert 'crmroute_calls_total{rule="-",status="no_rule"} 1.0' in text
    assert "crmroute_decision_seconds_count 2.0" in text
    assert "crmroute_decision_log_pending 2.0" in text
    assert "crmroute_agi_active_sessions" in text
