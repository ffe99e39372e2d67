"""/healthz and /metrics."""

from __future__ import annotations

from crmroute.routing.trace import Decision, DestType, Destination, Status
from crmroute.store.decisions import CallMeta


def test_healthz_reports_database_and_version(web):
    body = web.api().get("/healthz").json()
    assert body["database"] == "ok" and body["status"] == "ok" and body["version"]
    assert body["agi"] == "not running in this process"


def test_healthz_shows_only_status_to_strangers(web):
    public = web.client().get("/healthz")
    assert public.status_code == 200
    node = public.json()["node"]
    assert public.json() == {"status": "ok", "database": "ok", "agi": "not running in this process", "node": node,
                             "ready": False, "shared_state": "ok"}  # fmt: skip
    for client in (web.api(), web.browser()):  # an API token or a session cookie: the details
        details = client.get("/healthz").json()
        assert {"version", "rules_loaded", "crm_circuits", "ami"} <= details.keys()
        assert details["node"] == web.store.settings.node and details["redis"] == "off"  # one node alone
    stranger = web.client()
    stranger.headers["Authorization"] = "Bearer not-a-token"
    assert stranger.get("/healthz").json().keys() == {"status", "database", "agi", "node", "ready", "shared_state"}


def test_metrics_token(web):
    assert web.client().get("/metrics").status_code == 200  # open unless a token is set
    guarded = web.variant(metrics_token="scrape-secret")
    refused = guarded.client().get("/metrics")
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert "crmroute_calls" not in refused.text
    for wrong in ("Bearer nope", "Basic scrape-secret", "scrape-secret", f"Bearer {web.token}"):
        assert guarded.client().get("/metrics", headers={"Authorization": wrong}).status_code == 401, wrong
    scraped = guarded.client().get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
    assert scraped.status_code == 200 and "crmroute_decision_seconds" in scraped.text


def test_healthz_degrades_when_the_database_is_gone(web, tmp_path):
    from crmroute.store.db import make_engine

    web.store.engine = make_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
    response = web.api().get("/healthz")
    assert response.status_code == 503 and response.json()["database"].startswith("error: ")
    public = web.client().get("/healthz")
    assert public.status_code == 503
    assert public.json() == {"status": "degraded", "database": "error", "agi": "not running in this process",
                             "node": public.json()["node"], "ready": False, "shared_state": "degraded"}  # fmt: skip
    assert response.json()["shared_state_problems"] == ["database unreachable"]


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
    assert f'crmroute_node_info{{node="{router.settings.node}"}} 1.0' in text
    assert "crmroute_decision_log_pending 2.0" in text
    assert "crmroute_agi_active_sessions" in text and "crmroute_agi_health_checks" in text
