"""A rule row's conditions in the browser: folded away until asked for, kept with their row when rows move."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from crmroute.schemas import ScheduleIn
from crmroute.store import schedules
from crmroute.store.db import transaction
from tests.web.browser.test_rules import fill_general, fill_row


def test_conditions_fold_away_and_follow_their_row(page: Page, site, tmp_path):
    with transaction(site.store.factory) as session:
        if "Office hours" not in schedules.names(session):
            schedules.create(session, ScheduleIn.model_validate(
                {"name": "Office hours", "timezone": "Europe/London", "hours": {"mon-fri": "09:00-17:00"}}))
    page.goto("/rules/new")
    fill_general(page, "Conditioned", "https://crm.example.com/lookup")
    add_row = page.get_by_role("button", name="Add row")
    add_row.click()
    add_row.click()
    fill_row(page, 0, "=", "GOLD", "queue", "103")
    fill_row(page, 1, "=", "GOLD", "queue", "104")
    expect(page.locator("#rows-0-conditions")).to_be_hidden()  # the simple case shows no conditions box
    page.locator(".rows-table tbody tr").nth(1).get_by_text("Conditions…").click()
    page.locator("#rows-1-conditions").fill("Region = EU\nschedule Office hours")
    page.locator(".rows-table tbody tr").nth(1).get_by_role("button", name="Move row up").click()
    expect(page.locator("#rows-0-conditions")).to_have_value("Region = EU\nschedule Office hours")
    page.screenshot(path=str(tmp_path / "rule-conditions.png"), full_page=True)
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".flash.ok")).to_have_text("Saved the rule 'Conditioned'.")
    rows = site.rule("Conditioned")["rows"]
    assert rows[0]["option"] == "104" and rows[0]["conditions"] == [
        {"field": "Region", "operator": "=", "value": "EU"}, {"schedule": "Office hours"}]
    assert "conditions" not in rows[1]
    page.get_by_role("link", name="Edit Conditioned").click()
    expect(page.locator(".rows-table tbody tr").nth(0).locator("summary")).to_have_text("2 conditions")
    expect(page.locator("#rows-0-conditions")).to_be_visible()
    expect(page.locator("#rows-1-conditions")).to_be_hidden()
