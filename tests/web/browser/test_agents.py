"""The agents page in Chromium: add an agent with a CRM identity, see it explained, resolve a CRM user, delete."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from crmroute.schemas import IntegrationIn
from crmroute.store import integrations
from crmroute.store.db import transaction
from crmroute.web.security_headers import CONTENT_SECURITY_POLICY


def test_add_resolve_and_delete_an_agent(page: Page, site, traffic):
    with transaction(site.store.factory) as session:
        integrations.create(session, site.store.box, IntegrationIn.model_validate(
            {"name": "Agents Zoho", "kind": "zoho", "settings": {"client_id": "1000.X"},
             "secrets": {"client_secret": "s", "refresh_token": "r"}}))  # fmt: skip
    response = page.goto("/agents")
    assert response is not None and response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    page.get_by_role("link", name="Add agent").click()
    page.get_by_label("Name").fill("Olivia Owner")
    page.get_by_label("Extension").fill("201")
    page.get_by_label("Devices").fill("PJSIP/201, PJSIP/201-mobile")
    row = page.locator(".identity-row").filter(has_text="Agents Zoho")
    row.get_by_label("E-mail").fill("Olivia.Owner@example.com")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".flash")).to_contain_text("Saved agent Olivia Owner (extension 201).")
    agent = page.locator("#agents tbody tr").filter(has_text="Olivia Owner")
    expect(agent).to_contain_text("Agents Zoho: Olivia.Owner@example.com → extension 201")
    expect(agent).to_contain_text("PJSIP/201, PJSIP/201-mobile")
    expect(agent.locator(".badge")).to_have_text("unknown")  # no AMI here: routing assumes available

    page.get_by_label("Integration", exact=True).last.select_option("Agents Zoho")
    page.get_by_label("CRM user id or e-mail").fill("olivia.owner@EXAMPLE.com")
    page.get_by_role("button", name="Find").click()
    expect(page.locator("#resolved")).to_have_text("olivia.owner@EXAMPLE.com → extension 201 (agent Olivia Owner)")

    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#agents tbody tr").filter(has_text="Olivia Owner").get_by_role("button", name="Delete Olivia Owner").click()
    expect(page.locator(".flash")).to_contain_text("Removed agent Olivia Owner.")
    expect(page.locator("#agents")).to_have_count(0)
    assert traffic.csp_violations == [] and traffic.not_local() == []
