"""Test rule: a dry run against a real (loopback HTTPS) Custom CRM; nothing written."""

from __future__ import annotations

import pytest

from crmroute.schemas import DidIn
from crmroute.store import assignments, decisions
from crmroute.store.db import transaction
from crmroute.service import build_router
from crmroute.web.app import create_app
from tests.web.ui.conftest import field_error, post
from tests.web.ui.test_rules import create

pytestmark = pytest.mark.usefixtures("dests")


def test_page_needs_sign_in_and_csrf(web, admin):
    assert web.client().get("/test-rule").status_code == 303
    assert admin.post("/test-rule", data={"target": "rule", "rule": "VIP"}).status_code == 403


def test_dry_run_by_did_shows_the_trace(web, admin, custom_crm):
    custom_crm.values = {"Status": "SILVER"}
    create(web, custom_url=custom_crm.url, rows=[
        {"operator": "=", "value": "GOLD", "destination": "queue", "option": "103"},
        {"operator": "=", "value": "SILVER", "destination": "ivr", "option": "5"}])  # fmt: skip
    with transaction(web.store.factory) as session:
        assignments.create_did(session, DidIn(number="5551000", rule="VIP"))
    form = admin.get("/test-rule").text
    assert '<option value="VIP">VIP (DID)</option>' in form
    response = post(admin, "/test-rule", {"target": "did", "did": "5551000", "caller": "+15551230001", "rule": "x"})
    assert response.status_code == 200, response.text
    html = response.text
    for text in ('class="badge matched"', "<code>SILVER</code>", "2: = SILVER → ivr 5", "ivr 5",
                 "<code>crmroute-ivr,5,1</code>", "+15551230001", "DID</dt><dd>5551000"):  # fmt: skip
        assert text in html, text
    assert custom_crm.last.params["caller_id"] == "+15551230001"
    with web.store.factory() as session:
        assert decisions.search(session)[0] == 0  # a dry run is not logged


def test_dry_run_by_rule_with_dtmf_and_failures(web, admin, custom_crm):
    create(web, name="Slow", custom_url=custom_crm.url, deadline_ms=300)
    custom_crm.respond(500, "boom")
    html = post(admin, "/test-rule", {"target": "rule", "rule": "Slow", "caller": "+1555", "dtmf": "4242"}).text
    assert 'class="badge fallback"' in html and "4242" in html and "typed digits" in html
    assert "100" in html  # the default destination


def test_unknown_did_and_missing_target(web, admin):
    html = post(admin, "/test-rule", {"target": "did", "did": "999", "caller": "1"}).text
    assert 'class="badge no_rule"' in html
    response = post(admin, "/test-rule", {"target": "ivr", "ivr": "", "caller": "1"})
    assert response.status_code == 422 and field_error(response.text, "ivr")


def test_web_only_process_has_a_router_for_the_dry_run(web, custom_crm):
    router = build_router(web.store, with_log=False)  # `crmroute web` runs without the AGI half
    web.app = create_app(web.store.settings, web.store, router=router, owns_router=True)
    assert web.app.state.router.decision_log is None  # dry runs only: it routes no calls
    custom_crm.values = {"Status": "GOLD"}
    create(web, custom_url=custom_crm.url)
    with web.browser() as admin:
        html = post(admin, "/test-rule", {"target": "rule", "rule": "VIP", "caller": "+15551230001"}).text
    assert 'class="badge matched"' in html and "queue 103" in html
