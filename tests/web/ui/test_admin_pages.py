"""What every page shares: error pages in the layout, the license banner, the favicon, labelled errors."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta

import pytest
from fastapi.testclient import TestClient

from crmroute.routing.trace import Status
from crmroute.store.models import Rule
from tests.web.ui.conftest import add_destinations, follow, post
from tests.web.ui.test_license import PUBLIC, license_text


@pytest.fixture
def enforced(web):
    web.app.state.settings = dataclasses.replace(web.app.state.settings, license_key=PUBLIC)


def test_unknown_page_is_a_404_page_in_the_layout(web, admin):
    response = admin.get("/no-such-page")
    assert response.status_code == 404 and response.headers["content-type"].startswith("text/html")
    assert "Page not found" in response.text and 'aria-label="Main"' in response.text  # the menu is there
    assert "Sign out" in response.text and '"detail"' not in response.text
    anonymous = web.client().get("/no-such-page")
    assert anonymous.status_code == 404 and "Page not found" in anonymous.text
    assert 'aria-label="Main"' not in anonymous.text
    missing = admin.get("/rules/999999")
    assert missing.status_code == 404 and 'aria-label="Main"' in missing.text


def test_api_errors_stay_json(web):
    response = web.api().get("/api/v1/no-such-thing")
    assert response.status_code == 404 and response.json() == {"detail": "Not Found"}


def test_expired_form_is_a_403_page_in_the_layout(admin):
    response = admin.post("/rules/new", data={"csrf_token": "wrong"})
    assert response.status_code == 403 and response.headers["content-type"].startswith("text/html")
    assert "The form expired" in response.text and 'aria-label="Main"' in response.text


def test_a_failing_page_is_a_500_page_in_the_layout(web, admin, monkeypatch):
    from crmroute.store import rules

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(rules, "search", broken)
    client = TestClient(web.app, follow_redirects=False, raise_server_exceptions=False, cookies=admin.cookies)
    response = client.get("/rules")
    assert response.status_code == 500 and "Something went wrong" in response.text
    assert 'aria-label="Main"' in response.text and "boom" not in response.text
    api = TestClient(web.app, raise_server_exceptions=False, headers={"Authorization": f"Bearer {web.token}"})
    monkeypatch.setattr("crmroute.web.api.rules.rules.search", broken, raising=False)
    failed = api.get("/api/v1/rules")
    assert failed.status_code == 500 and failed.json() == {"detail": "internal error; it is logged"}


def test_favicon(web):
    response = web.client().get("/favicon.ico")
    assert response.status_code == 200 and response.headers["content-type"].startswith("image/svg+xml")
    assert 'rel="icon"' in web.client().get("/login").text


def banner(html: str) -> str:
    start = html.find('<div class="license-banner')
    return html[start:html.find("</div>", start)] if start >= 0 else ""


def test_no_banner_when_licenses_are_not_enforced(admin):
    assert banner(admin.get("/rules").text) == ""


@pytest.mark.usefixtures("enforced")
def test_banner_while_unlicensed_then_gone_once_licensed(admin):
    for page in ("/rules", "/dids", "/decisions", "/users"):
        text = banner(admin.get(page).text)
        assert "CRM routing is off: every call gets status unlicensed" in text and 'role="alert"' in text
        assert "No license is installed." in text
    follow(admin, post(admin, "/license", {"license_text": license_text()}))  # valid for 30 more days
    assert banner(admin.get("/rules").text) == ""


@pytest.mark.usefixtures("enforced")
@pytest.mark.parametrize(("days", "said"), [(14, "in 14 days"), (1, "tomorrow"), (0, "today")])
def test_banner_warns_when_the_license_expires_within_14_days(admin, days, said):
    expires = (date.today() + timedelta(days=days)).isoformat()
    follow(admin, post(admin, "/license", {"license_text": license_text(expires=expires)}))
    text = banner(admin.get("/rules").text)
    assert f"The license expires {said} (last day {expires})" in text and "license-banner warning" in text
    assert "expiring soon" in admin.get("/license").text and "license-expiring" in admin.get("/license").text


@pytest.mark.usefixtures("enforced")
def test_expired_or_future_license_is_refused_in_red(web, admin):
    expired = (date.today() - timedelta(days=3)).isoformat()
    response = post(admin, "/license", {"license_text": license_text(expires=expired)})
    assert response.status_code == 422
    assert f"this license expired on {expired}" in response.text and 'class="error"' in response.text
    issued = (date.today() + timedelta(days=5)).isoformat()
    later = (date.today() + timedelta(days=60)).isoformat()
    response = post(admin, "/license", {"license_text": license_text(issued=issued, expires=later)})
    assert response.status_code == 422 and f"issued for {issued}, after today" in response.text
    api = web.api().post("/api/v1/license", content=license_text(expires=expired),
                         headers={"content-type": "text/plain"})
    assert api.status_code == 422
    assert api.json()["detail"] == [{"field": "license", "message": f"License: this license expired on {expired}; "
                                     "installing it would leave CRM routing disabled. Ask for a renewed license."}]


def test_rule_form_errors_name_labels_and_rows_from_one(web, admin):
    add_destinations(web, {"type": "extension", "number": "100"}, {"type": "queue", "number": "103"})
    form = {"name": "Müller VIP", "crm_field": "Status", "location": "did", "crm_source": "custom",
            "custom_url": "https://crm.example.com/x", "default_destination": "100",
            "rows-0-operator": "=", "rows-0-value": "A", "rows-0-destination": "queue", "rows-0-option": "103",
            "rows-1-operator": "=", "rows-1-value": "B", "rows-1-destination": "queue", "rows-1-option": "1 0 3"}  # fmt: skip
    response = post(admin, "/rules/new", form)
    assert response.status_code == 422
    # a number that cannot be a queue (a typed unknown number would be created on save)
    assert '<a href="#rows-1-option">Row 2, Destination Option</a>: no queue &#39;1 0 3&#39;' in response.text
    assert "rows[1]" not in response.text.split('id="error-summary"', 1)[1].split("</div>", 1)[0]
    form["rows-1-option"] = "103"
    follow(admin, post(admin, "/rules/new", form))
    with web.store.factory() as session:
        assert session.query(Rule.name).scalar() == "Müller VIP"
    again = post(admin, "/rules/new", form | {"name": "müller  vip"})
    assert again.status_code in (409, 422) and "already exists" in again.text


def test_decision_log_has_a_reason_column(web, admin):
    from tests.web.ui.test_decisions import log

    log(web, status=Status.FALLBACK, reason="timeout", error="the CRM did not answer in time")
    html = admin.get("/decisions").text
    assert '<th scope="col">Reason</th>' in html
    assert '<td data-label="Reason"><span class="reason" title="the CRM did not answer in time">timeout</span>' in html
