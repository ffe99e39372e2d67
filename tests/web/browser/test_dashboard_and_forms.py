"""Issue 15 in a real browser at 1366x900 and 390x844: the dashboard's SVG charts, the per-CRM integration
form, the confirmation of a kind change, a typed destination option. Every page loads only from 127.0.0.1
(the ``_open`` fixture checks). Screenshots go to CRMROUTE_SCREENSHOT_DIR when set, else the test's tmp dir."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import insert

from crmroute.schemas import IntegrationIn, RuleIn
from crmroute.store import integrations, rules
from crmroute.store.db import transaction
from crmroute.store.models import DecisionRecord
from tests.web.browser.conftest import Requests, Site, _open

SIZES = {"wide": {"width": 1366, "height": 900}, "phone": {"width": 390, "height": 844}}


@pytest.fixture(params=list(SIZES))
def screen(request, browser: Browser, site: Site, traffic: Requests, signed_in_state: dict) -> Iterator[Page]:
    size = request.param
    extra = {"device_scale_factor": 2, "is_mobile": True, "has_touch": True} if size == "phone" else {}
    for page in _open(browser, site, traffic, signed_in_state, viewport=SIZES[size], **extra):
        page.size = size  # type: ignore[attr-defined]
        yield page


def shot(page: Page, tmp_path: Path, name: str) -> None:
    folder = Path(os.environ.get("CRMROUTE_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}-{page.size}.png"), full_page=True)  # type: ignore[attr-defined]


def no_sideways_scroll(page: Page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], "the page scrolls sideways"


@pytest.fixture(scope="module")
def seeded(site: Site) -> None:
    """A rule whose second row never matches, and decisions of the last minutes."""
    site.add_rule("Dash VIP", rows=[{"operator": "=", "value": "GOLD", "destination": "queue", "option": "103"},
                                    {"operator": "=", "value": "TIN", "destination": "queue", "option": "104"}])
    at = datetime.now(timezone.utc) - timedelta(minutes=3)
    earlier = at - timedelta(minutes=20)
    rows = [{"created_at": at, "status": "matched", "rule": "Dash VIP", "row": 1, "crm_ms": 40.0} for _ in range(12)]
    rows += [{"created_at": earlier, "status": "matched", "rule": "Dash VIP", "row": 1, "crm_ms": None,
              "cached": True} for _ in range(4)]  # fmt: skip
    rows += [{"created_at": at, "status": "fallback", "rule": "Dash VIP", "reason": "timeout", "crm_ms": 2600.0}
             for _ in range(3)]  # fmt: skip
    rows += [{"created_at": earlier, "status": "default", "rule": "Dash VIP", "reason": "no_match", "crm_ms": 90.0}]
    with transaction(site.store.factory) as session:
        session.execute(insert(DecisionRecord), [r | {"source": "agi", "total_ms": 1.0, "trace": []} for r in rows])


def test_dashboard_draws_the_decision_log(screen: Page, seeded, tmp_path):
    screen.goto("/")
    expect(screen.get_by_role("heading", name="Dashboard")).to_be_visible()
    calls = screen.locator('svg[data-chart="calls"]')
    expect(calls).to_be_visible()
    assert calls.get_attribute("data-buckets") == "60" and calls.get_attribute("data-total") == "20"
    bars = calls.locator("rect[data-status]")
    by_status: dict[str, int] = {}
    for i in range(bars.count()):
        bar = bars.nth(i)
        by_status[bar.get_attribute("data-status")] = by_status.get(bar.get_attribute("data-status"), 0) + int(
            bar.get_attribute("data-calls"))
        assert float(bar.get_attribute("height")) > 0
    assert by_status == {"matched": 16, "fallback": 3, "default": 1}
    tallest = max(float(bars.nth(i).get_attribute("height")) for i in range(bars.count()))
    assert tallest <= 100.0 and bars.first.bounding_box()["height"] > 0  # drawn, inside the plot
    expect(screen.locator('[data-chart="fallbacks"] rect[data-label="timeout"]')).to_have_attribute("data-value", "3")
    ring = screen.locator('svg[data-chart="cache"]')
    assert (ring.get_attribute("data-hits"), ring.get_attribute("data-misses")) == ("4", "16")
    p95 = screen.locator('svg rect[data-integration="custom"][data-percentile="p95"]')
    expect(p95).to_have_attribute("data-ms", "3000")
    dead = screen.locator('[data-chart="rows"] rect[data-label="2. = TIN → queue 104"]')
    expect(dead).to_have_attribute("data-value", "0")
    expect(screen.locator(".bar-row.dead").filter(has_text="TIN")).to_contain_text("never matched")
    no_sideways_scroll(screen)
    shot(screen, tmp_path, "dashboard")
    screen.goto("/?window=week")
    expect(screen.locator('svg[data-chart="calls"]')).to_have_attribute("data-buckets", "168")


def test_integration_form_shows_only_the_chosen_sign_in(screen: Page, tmp_path):
    screen.goto("/integrations/new")
    screen.get_by_label("CRM", exact=True).select_option("hubspot")
    box = screen.locator("#crm-hubspot")
    expect(box.get_by_role("link", name="HubSpot setup page")).to_have_attribute(
        "href", "https://developers.hubspot.com/docs/api/private-apps")
    method = box.get_by_label("Sign in with")
    expect(method).to_have_value("private_app")
    expect(box.get_by_label("Access token")).to_be_visible()
    for hidden in ("Client ID", "Client secret", "Refresh token"):
        expect(box.get_by_label(hidden, exact=True)).to_be_hidden()
    expect(box.get_by_label("Cache values for (seconds)")).to_be_hidden()  # folded under Advanced
    shot(screen, tmp_path, "integration-hubspot")
    method.select_option("oauth")
    expect(box.get_by_label("Access token")).to_be_hidden()
    for shown in ("Client ID", "Client secret", "Refresh token"):
        expect(box.get_by_label(shown, exact=True)).to_be_visible()
    box.locator("details.advanced > summary").click()
    expect(box.get_by_label("Cache values for (seconds)")).to_be_visible()
    # the Proprietary CRM: a handful of fields, not forty
    screen.get_by_label("CRM", exact=True).select_option("proprietary")
    proprietary = screen.locator("#crm-proprietary")
    visible = proprietary.locator("label:visible")
    assert visible.count() <= 11, visible.all_inner_texts()
    expect(proprietary.get_by_label("Token or API key")).to_be_visible()
    proprietary.get_by_label("Sign in with").select_option("basic")
    expect(proprietary.get_by_label("Token or API key")).to_be_hidden()
    expect(proprietary.get_by_label("Username", exact=True)).to_be_visible()
    no_sideways_scroll(screen)
    shot(screen, tmp_path, "integration-proprietary")


def test_changing_the_crm_of_an_integration_in_use_asks(screen: Page, site: Site, tmp_path):
    name = f"Shared {screen.size}"  # type: ignore[attr-defined]
    with transaction(site.store.factory) as session:
        row = integrations.create(session, site.store.box, IntegrationIn.model_validate({
            "name": name, "kind": "zoho", "settings": {"client_id": "1000.X"},
            "secrets": {"client_secret": "zs", "refresh_token": "zr"}}))  # fmt: skip
        for rule in ("Uses A", "Uses B"):
            rules.create(session, site.store.box, RuleIn.model_validate({
                "name": f"{rule} {screen.size}", "crm_field": "Status", "location": "did",  # type: ignore[attr-defined]
                "crm_source": "integration", "integration": name, "crm_module": "contacts",
                "default_destination": "100"}))  # fmt: skip
        integration_id = row.id
    screen.goto(f"/integrations/{integration_id}/edit")
    expect(screen.get_by_role("button", name="Test")).to_be_in_viewport()  # near the top
    shot(screen, tmp_path, "integration-edit")
    screen.get_by_label("CRM", exact=True).select_option("hubspot")
    screen.locator("#crm-hubspot").get_by_label("Access token").fill("pat-browser")
    asked: list[str] = []

    def answer(accept: bool):
        def handle(dialog):
            asked.append(dialog.message)
            dialog.accept() if accept else dialog.dismiss()
        return handle

    screen.once("dialog", answer(False))
    screen.get_by_role("button", name="Save").click()
    assert asked and "Zoho CRM to HubSpot" in asked[0]
    assert f"Uses A {screen.size}" in asked[0]  # type: ignore[attr-defined]
    screen.wait_for_timeout(200)
    with site.store.factory() as session:
        assert integrations.get(session, integration_id).kind == "zoho"
    screen.once("dialog", answer(True))
    screen.get_by_role("button", name="Save").click()
    expect(screen.locator(".flash.ok")).to_contain_text(f"Saved the integration '{name}'")
    with site.store.factory() as session:
        assert integrations.get(session, integration_id).kind == "hubspot"


def test_a_typed_destination_option_is_added_on_save(screen: Page, site: Site, tmp_path):
    name = f"Typed {screen.size}"  # type: ignore[attr-defined]
    number = "260" if screen.size == "wide" else "261"  # type: ignore[attr-defined]
    screen.goto("/rules/new")
    screen.get_by_label("Rule Name").fill(name)
    screen.get_by_label("CRM Field Name").fill("Status")
    screen.get_by_label("CRM To Use").select_option("custom")
    screen.get_by_label("CRM URL").fill("https://crm.example.com/lookup")
    screen.get_by_label("Default destination").select_option("100")
    screen.get_by_role("button", name="Add row").click()
    screen.locator("#rows-0-value").fill("GOLD")
    option = screen.locator("#rows-0-option")
    expect(option).to_have_attribute("list", "dest-options-queue")
    screen.locator("#rows-0-destination").select_option("ivr")
    expect(option).to_have_attribute("list", "dest-options-ivr")
    screen.locator("#rows-0-destination").select_option("queue")
    option.fill(number)
    shot(screen, tmp_path, "rule-form-typed-option")
    screen.get_by_role("button", name="Save").click()
    expect(screen.locator(".flash.ok")).to_have_text(
        f"Saved the rule '{name}'. Added to Destinations: Queue {number}.")
    assert [(r["destination"], r["option"]) for r in site.rule(name)["rows"]] == [("queue", number)]
