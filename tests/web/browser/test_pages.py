"""Test rule, the phone layout, and that no page reaches beyond 127.0.0.1."""

from __future__ import annotations

from playwright.sync_api import Page, expect

PAGES = ("/rules", "/rules/new", "/destinations", "/destinations/new", "/dids", "/dids/new", "/ivrs", "/ivrs/new",
         "/integrations", "/integrations/new", "/decisions", "/test-rule", "/users", "/users/new", "/license")  # fmt: skip


def test_test_rule_shows_the_trace(page: Page, site, custom_crm):
    custom_crm.values = {"Status": "GOLD"}
    site.add_rule("Dry run VIP", url=custom_crm.url, did="5557000")
    page.goto("/test-rule")
    expect(page.get_by_label("DID number")).to_be_visible()
    expect(page.get_by_label("Rule", exact=True)).to_be_hidden()
    page.get_by_label("DID number").fill("5557000")
    page.get_by_label("Caller number").fill("+15551230001")
    page.get_by_role("button", name="Run test").click()
    trace = page.locator("#trace")
    expect(trace.locator(".badge")).to_have_text("matched")
    for text in ("Dry run VIP", "GOLD", "1: = GOLD → queue 103", "queue 103", "crmroute-queue,103,1", "+15551230001"):
        expect(trace).to_contain_text(text)
    expect(trace.locator("ol.steps li").first).to_be_visible()
    assert custom_crm.last.params["caller_id"] == "+15551230001"
    expect(page.get_by_label("DID number")).to_have_value("5557000")  # the form keeps what was typed


def test_phone_layout_and_menu(phone: Page, site, tmp_path):
    site.add_rule("Phone rule with a long name")
    phone.goto("/rules")
    nav_link = phone.get_by_role("navigation", name="Main").get_by_role("link", name="Destinations")
    menu = phone.get_by_role("button", name="Menu")
    expect(menu).to_be_visible()
    expect(nav_link).to_be_hidden()
    row = phone.locator("#rules-table tbody tr").filter(has_text="Phone rule with a long name")
    expect(row).to_be_visible()
    expect(phone.locator("#rules-table thead")).to_be_hidden()  # stacked rows with their own labels
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than the screen
    phone.screenshot(path=str(tmp_path / "rules-phone.png"), full_page=True)
    menu.click()
    expect(menu).to_have_attribute("aria-expanded", "true")
    expect(nav_link).to_be_visible()
    phone.screenshot(path=str(tmp_path / "rules-phone-menu.png"))
    menu.click()
    expect(nav_link).to_be_hidden()
    phone.goto("/rules/new")
    phone.get_by_label("CRM To Use").select_option("custom")
    phone.get_by_role("button", name="Add row").click()
    phone.get_by_role("button", name="Add header").click()
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    phone.screenshot(path=str(tmp_path / "rule-form-phone.png"), full_page=True)


def test_every_page_stays_on_127_0_0_1(page: Page, site, traffic):
    for path in PAGES:
        response = page.goto(path)
        assert response is not None and response.status == 200, path
        expect(page.locator("main h1")).to_be_visible()
    assert len(traffic.urls) >= len(PAGES) * 3  # the page, its stylesheet and its script each time
    assert traffic.not_local() == []
