"""The Content-Security-Policy holds on every page: nothing is blocked (the conftest fails every browser
test on any violation the browser reports, so the form scripts of test_rules.py run under it too), and
the watcher does see a violation when there is one."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from crmroute.schemas import IntegrationIn
from crmroute.store import integrations
from crmroute.store.db import transaction
from crmroute.web.security_headers import CONTENT_SECURITY_POLICY

MAIN_PAGES = ("/rules", "/rules/new", "/destinations", "/destinations/new", "/dids", "/dids/new", "/ivrs", "/ivrs/new",
              "/integrations", "/integrations/new", "/agents", "/agents/new", "/decisions", "/calllog", "/test-rule",
              "/users", "/users/new",
              "/license")  # fmt: skip


def test_main_pages_load_under_the_policy(page: Page, site, traffic):
    rule_id = site.add_rule("CSP rule", did="5558000")
    with transaction(site.store.factory) as session:
        integration = integrations.create(session, site.store.box, IntegrationIn.model_validate(
            {"name": "CSP Zoho", "kind": "zoho", "settings": {"client_id": "1000.X"},
             "secrets": {"client_secret": "s", "refresh_token": "r"}}))  # fmt: skip
    for path in (*MAIN_PAGES, f"/rules/{rule_id}/edit", f"/integrations/{integration.id}/edit"):
        response = page.goto(path)
        assert response is not None and response.status == 200, path
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
        expect(page.locator("main h1")).to_be_visible()
    assert traffic.csp_violations == []


def test_sign_in_page_under_the_policy(anonymous: Page, traffic):
    response = anonymous.goto("/login")
    assert response is not None and response.headers["x-frame-options"] == "DENY"
    expect(anonymous.get_by_label("Username")).to_be_focused()


def test_the_watcher_sees_a_violation(page: Page, traffic):
    page.goto("/rules")
    page.evaluate("""() => {
        document.querySelector("main").insertAdjacentHTML("beforeend", '<p style="color: red">inline</p>');
        const script = document.createElement("script");
        script.textContent = "window.ranInline = true";
        document.body.append(script);
    }""")
    page.wait_for_timeout(200)
    assert page.evaluate("window.ranInline") is None  # the inline script was blocked
    assert any("style-src" in v for v in traffic.csp_violations), traffic.csp_violations
    assert any("script-src" in v for v in traffic.csp_violations), traffic.csp_violations
    traffic.csp_violations.clear()  # seen: the fixture's check is for unexpected ones
