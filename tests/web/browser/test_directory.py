"""The directory kind's table edited on the integration page in Chromium, then used by Test."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from crmroute.store import integrations


def entries(site, name: str) -> list[dict]:
    with site.store.factory() as session:
        row = integrations.by_name(session)[name]
        return list(row.settings.get("entries", []))


def test_edit_the_directory_table_and_test_it(page: Page, site, traffic, tmp_path):
    page.goto("/integrations/new")
    page.get_by_label("Name", exact=True).fill("Front desk")
    page.get_by_label("CRM", exact=True).select_option("directory")
    table = page.locator("#directory-entries")
    expect(table).to_be_visible()
    table.get_by_label("Column 4 name").fill("Status")  # a blank header adds a column
    table.get_by_label("Row 1 phone").fill("(555) 123-0001")
    table.get_by_label("Row 1 name").fill("Alice Gold")
    table.get_by_label("Row 1 owner").fill("olivia.owner@example.com")
    table.get_by_label("Row 1 column 4").fill("GOLD")
    table.get_by_label("Row 2 phone").fill("555.123.0002")
    table.get_by_label("Row 2 name").fill("Bob Silver")
    page.screenshot(path=str(tmp_path / "directory-new.png"), full_page=True)
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".flash")).to_contain_text("Saved the integration 'Front desk'.")
    assert entries(site, "Front desk") == [
        {"phone": "(555) 123-0001", "name": "Alice Gold", "owner": "olivia.owner@example.com", "Status": "GOLD"},
        {"phone": "555.123.0002", "name": "Bob Silver"},
    ]

    page.get_by_role("link", name="Front desk", exact=True).click()
    table = page.locator("#directory-entries")
    expect(table.get_by_label("Column 4 name")).to_have_value("Status")
    table.get_by_label("Row 1 Status").fill("SILVER")
    table.get_by_label("Remove row 2").check()
    table.get_by_label("Row 3 phone").fill("call me")  # refused, naming the row
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#directory-entries-error")).to_have_text("row 2: phone 'call me' is not a phone number")
    assert entries(site, "Front desk")[0]["Status"] == "GOLD"  # nothing saved
    table = page.locator("#directory-entries")
    table.get_by_label("Row 2 phone").fill("555 123 0003")  # the form came back with what was typed
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".flash")).to_contain_text("Saved the integration 'Front desk'.")
    assert [e["phone"] for e in entries(site, "Front desk")] == ["(555) 123-0001", "555 123 0003"]

    page.get_by_role("link", name="Front desk", exact=True).click()
    page.get_by_label("Phone number or key (optional)").fill("+15551230001")
    page.get_by_label("Fields to read (optional)").fill("Status, owner")
    page.get_by_role("button", name="Test", exact=True).click()
    result = page.locator("#test-result")
    expect(result.locator(".badge")).to_have_text("passed")
    expect(result).to_contain_text("2 records in the table")
    expect(result.locator("dl.fields")).to_contain_text("SILVER")
    expect(result.locator("dl.fields")).to_contain_text("olivia.owner@example.com")
    page.screenshot(path=str(tmp_path / "directory-test.png"), full_page=True)
    assert traffic.csp_violations == [] and traffic.not_local() == []
