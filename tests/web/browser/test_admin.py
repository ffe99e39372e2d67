"""Shared page parts in a real browser: the license banner, error pages in the layout, labelled errors with rows
counted from 1, the token's Copy button and the decision log's Reason column. Screenshots at 1366x900 and
390x844 go to tmp_path (or to $CRMROUTE_SCREENSHOTS, to look at them)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete
from playwright.sync_api import Browser, Page, expect

from crmroute.routing.trace import Decision, Destination, DestType, Status
from crmroute.store.db import transaction
from crmroute.store.models import License
from crmroute.store.decisions import CallMeta, to_record
from tests.web.browser.conftest import Requests, _open
from tests.web.browser.test_rules import fill_general, fill_row
from tests.web.ui.test_license import PUBLIC, license_text

SIZES = {"wide": {"width": 1366, "height": 900}, "phone": {"width": 390, "height": 844}}


@pytest.fixture(params=list(SIZES))
def sized(request, browser: Browser, site, traffic: Requests, signed_in_state: dict) -> Iterator[Page]:
    """A signed-in page at 1366x900 and at 390x844."""
    options = {"viewport": SIZES[request.param]}
    if request.param == "phone":
        options |= {"device_scale_factor": 2, "is_mobile": True, "has_touch": True}
    opened = _open(browser, site, traffic, signed_in_state, **options)
    page_ = next(opened)
    page_.size = request.param  # type: ignore[attr-defined]
    yield page_
    next(opened, None)  # closes the context and checks the page's traffic


def shot(page: Page, tmp_path: Path, name: str) -> None:
    folder = Path(os.environ.get("CRMROUTE_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}-{getattr(page, 'size', 'page')}.png"), full_page=True)


@pytest.fixture
def enforced(site):
    """Licenses enforced, none installed (the site is shared by the module's tests)."""
    with transaction(site.store.factory) as session:
        session.execute(delete(License))
    settings = site.app.state.settings
    site.app.state.settings = dataclasses.replace(settings, license_key=PUBLIC)
    yield
    site.app.state.settings = settings


@pytest.mark.usefixtures("enforced")
def test_license_banner_appears_and_disappears(sized: Page, tmp_path):
    page = sized
    page.goto("/rules")
    banner = page.locator("#license-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("CRM routing is off: every call gets status unlicensed")
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]
    shot(page, tmp_path, "rules-unlicensed")
    page.goto("/license")
    page.get_by_label("License text").fill(license_text(expires=_days(-2)))
    page.get_by_role("button", name="Install").click()
    expect(page.locator("#license-error")).to_contain_text(f"this license expired on {_days(-2)}")
    expect(page.locator("#license-state")).to_have_text("Missing")
    shot(page, tmp_path, "license-refused")
    page.get_by_label("License text").fill(license_text(expires=_days(10)))
    page.get_by_role("button", name="Install").click()
    expect(page.locator(".flash.ok")).to_contain_text("Installed the license for Example Telecom.")
    expect(banner).to_contain_text("The license expires in 10 days")
    expect(page.locator("#license-state")).to_have_text("Valid, expiring soon")
    shot(page, tmp_path, "license-expiring")
    page.get_by_label("License text").fill(license_text(expires=_days(200)))
    page.get_by_role("button", name="Install").click()
    expect(page.locator(".flash.ok")).to_be_visible()
    expect(banner).to_have_count(0)
    page.goto("/rules")
    expect(banner).to_have_count(0)


def _days(n: int) -> str:
    from datetime import date, timedelta

    return (date.today() + timedelta(days=n)).isoformat()


def test_error_page_in_the_layout(sized: Page, tmp_path):
    page = sized
    response = page.goto("/no-such-page")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    if page.size == "phone":  # type: ignore[attr-defined]
        page.get_by_role("button", name="Menu").click()
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("group", name="CRM ›").get_by_role("link", name="Integrations")).to_be_visible()
    expect(nav.get_by_role("group", name="CRM ›").get_by_role("link", name="Routing")).to_be_visible()
    shot(page, tmp_path, "not-found")


def test_rule_errors_name_labels_and_rows_from_one(sized: Page, site, tmp_path):
    page = sized
    page.goto("/rules/new")
    fill_general(page, f"Müller VIP {page.size}", "https://crm.example.com/lookup")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Add row").click()
    page.get_by_role("button", name="Add row").click()
    fill_row(page, 0, "=", "GOLD", "queue", "103")
    page.locator("#rows-1-value").fill("SILVER")  # no destination option chosen
    page.get_by_role("button", name="Save").click()
    summary = page.locator("#error-summary")
    expect(summary).to_contain_text("Row 2, Destination Option: required")
    expect(summary).not_to_contain_text("rows[1]")
    expect(page.locator("#rows-1-option-error")).to_have_text("required for a queue destination")
    shot(page, tmp_path, "rule-errors")
    folder = Path(os.environ.get("CRMROUTE_SCREENSHOTS") or tmp_path)
    page.locator("#error-summary").screenshot(path=str(folder / f"rule-errors-summary-{page.size}.png"))  # type: ignore[attr-defined]
    page.locator(".rows-table").screenshot(path=str(folder / f"rule-errors-rows-{page.size}.png"))  # type: ignore[attr-defined]
    if page.size == "phone":  # type: ignore[attr-defined]  # stacked rows still say their number
        expect(page.locator(".rows-table td.num").nth(1)).to_be_visible()
    page.locator("#rows-1-option").fill("104")  # typed, as the form's option is
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".flash.ok")).to_contain_text(f"Müller VIP {page.size}")  # type: ignore[attr-defined]
    page.goto("/rules/new")
    fill_general(page, f"MÜLLER  vip {page.size}", "https://crm.example.com/lookup")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#error-summary, .field-error, .flash.error").first).to_contain_text("already exists")


def test_new_token_has_a_copy_button(page: Page, tmp_path):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto("/users")
    page.locator("#token-form").get_by_role("button").last.click()
    token = page.locator("#new-token").inner_text().strip()
    page.get_by_role("button", name="Copy token").click()
    expect(page.get_by_role("status").filter(has_text="Copied.")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == token


def test_decision_log_shows_the_reason(sized: Page, site, tmp_path):
    with transaction(site.store.factory) as session:
        decision = Decision(Status.FALLBACK, rule="VIP", destination=Destination(DestType.EXTENSION, "100"),
                            reason="timeout", error="the CRM did not answer in 2000 ms", total_ms=2001.0)  # fmt: skip
        meta = CallMeta(call_id=f"reason-{sized.size}", caller="+15550001", did="5551000")  # type: ignore[attr-defined]
        session.add(to_record(decision, meta))
    sized.goto("/decisions")
    cell = sized.locator("#decisions-table tbody tr").first.locator('[data-label="Reason"]')
    expect(cell).to_have_text("timeout")
    expect(cell.locator("span")).to_have_attribute("title", "the CRM did not answer in 2000 ms")
    expect(sized.locator("#decisions-table tbody tr").first.locator(".badge.fallback")).to_be_visible()
    shot(sized, tmp_path, "decisions")
