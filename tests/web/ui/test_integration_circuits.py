"""Circuit breaker state where an admin looks: the integrations list, /healthz and /metrics."""

from __future__ import annotations

from tests.web.ui.conftest import add_integration


def open_circuit(web, integration_id: int, name: str) -> None:
    breaker = web.app.state.router.guards.breaker(f"integration:{integration_id}", name)
    for _ in range(breaker.threshold):
        breaker.failure(breaker.allow())


def test_the_integrations_list_shows_each_circuit(web, admin):
    add_integration(web, "Main Zoho")
    add_integration(web, "Spare Zoho")
    html = admin.get("/integrations").text
    assert "<th scope=\"col\">Circuit</th>" in html
    with web.store.factory() as session:
        from crmroute.store import integrations

        ids = {row.name: row.id for row in integrations.list_all(session)}
    open_circuit(web, ids["Main Zoho"], "Main Zoho")
    web.app.state.router.guards.breaker(f"integration:{ids['Spare Zoho']}", "Spare Zoho")  # asked, healthy
    html = admin.get("/integrations").text
    assert 'class="error">open (next try in 30 s)</td>' in html
    assert '<td data-label="Circuit">closed</td>' in html


def test_healthz_and_metrics_name_open_circuits(web):
    open_circuit(web, 7, "Main Zoho")
    response = web.api().get("/healthz")
    assert response.status_code == 200  # a CRM being down does not make crmroute unhealthy
    assert response.json()["crm_circuits"] == {"Main Zoho": "open"}
    text = web.client().get("/metrics").text
    assert 'crmroute_circuit_state{source="Main Zoho"} 1.0' in text
    assert 'crmroute_circuit_opened{source="Main Zoho"} 1.0' in text
