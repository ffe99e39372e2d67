"""The rules pages in a real browser: sign-in, search, confirmed delete, the rule form's behaviour."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.web.browser.conftest import ADMIN


def test_sign_in(anonymous: Page, site):
    anonymous.goto("/rules?search=x")
    expect(anonymous).to_have_url(re.compile(r"/login\?next=/rules%3Fsearch%3Dx$"))
    anonymous.get_by_label("Username").fill(ADMIN[0])
    anonymous.get_by_label("Password").fill("wrong password")
    anonymous.get_by_role("button", name="Sign in").click()
    expect(anonymous.get_by_role("alert")).to_have_text("Wrong username or password.")
    anonymous.get_by_label("Password").fill(ADMIN[1])
    anonymous.get_by_role("button", name="Sign in").click()
    expect(anonymous).to_have_url(f"{site.url}/rules?search=x")
    expect(anonymous.get_by_role("heading", name="Routing rules")).to_be_visible()


def test_search_filters_rows(page: Page, site):
    for name in ("Search Gold VIP", "Search Silver", "Search Bronze"):
        site.add_rule(name)
    page.goto("/rules")
    expect(page.locator("#rules-table tbody tr").filter(has_text="Search ")).to_have_count(3)
    page.get_by_role("searchbox", name="Search").fill("search gold")
    page.get_by_role("searchbox", name="Search").press("Enter")
    expect(page).to_have_url(re.compile(r"search=search\+gold"))
    rows = page.locator("#rules-table tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first.locator('[data-label="Rule Name"]')).to_have_text("Search Gold VIP")
    expect(rows.first.locator('[data-label="CRM Field Name"]')).to_have_text("Status")
    expect(rows.first.locator('[data-label="Location"]')).to_have_text("DID")


def test_delete_asks_and_only_ok_deletes(page: Page, site):
    site.add_rule("Temp rule")
    page.goto("/rules?search=Temp")
    asked: list[str] = []

    def answer(accept: bool):
        def handle(dialog):
            asked.append(dialog.message)
            dialog.accept() if accept else dialog.dismiss()

        return handle

    page.once("dialog", answer(False))
    page.get_by_role("button", name="Delete Temp rule").click()
    assert asked == ["Are you sure you want to remove 'Temp rule'?"]
    page.wait_for_timeout(200)  # a submit, had there been one, would have happened by now
    expect(page.locator("#rules-table")).to_contain_text("Temp rule")
    assert site.rule("Temp rule") is not None

    page.once("dialog", answer(True))
    page.get_by_role("button", name="Delete Temp rule").click()
    expect(page.locator(".flash.ok")).to_have_text("Removed the rule 'Temp rule'.")
    assert asked[-1] == "Are you sure you want to remove 'Temp rule'?"
    assert site.rule("Temp rule") is None


def test_form_shows_only_the_fields_that_apply(page: Page):
    page.goto("/rules/new")
    greeting, module = page.get_by_label("Greeting Instructions"), page.get_by_label("CRM Modules")
    username, password = page.get_by_label("CRM Username"), page.get_by_label("CRM Password")
    url, post, add_header = page.get_by_label("CRM URL"), page.get_by_text("HTTP Method POST"), page.get_by_role("button", name="Add header")
    expect(greeting).to_be_hidden()
    page.get_by_label("Location").select_option("ivr")
    expect(greeting).to_be_visible()
    expect(page.get_by_label("DTMF timeout (ms)")).to_be_visible()
    page.get_by_label("Location").select_option("did")
    expect(greeting).to_be_hidden()

    expect(page.get_by_label("CRM To Use")).to_have_value("integration")
    for shown in (module, username, password):
        expect(shown).to_be_visible()
    for hidden in (url, post, add_header):
        expect(hidden).to_be_hidden()
    page.get_by_label("CRM To Use").select_option("custom")
    for shown in (url, post, add_header):
        expect(shown).to_be_visible()
    for hidden in (module, username, password):
        expect(hidden).to_be_hidden()


def fill_row(page: Page, index: int, operator: str, value: str, destination: str, option: str) -> None:
    page.locator(f"#rows-{index}-operator").select_option(operator)
    page.locator(f"#rows-{index}-value").fill(value)
    page.locator(f"#rows-{index}-destination").select_option(destination)
    page.locator(f"#rows-{index}-option").fill(option)


def fill_general(page: Page, name: str, url: str) -> None:
    page.get_by_label("Rule Name").fill(name)
    page.get_by_label("CRM Field Name").fill("Status")
    page.get_by_label("CRM To Use").select_option("custom")
    page.get_by_label("CRM URL").fill(url)
    page.get_by_label("Default destination").select_option("100")


def test_rows_added_removed_reordered_and_saved_in_that_order(page: Page, site, tmp_path):
    page.goto("/rules/new")
    fill_general(page, "Ordered rows", "https://crm.example.com/lookup")
    add_row = page.get_by_role("button", name="Add row")
    for _ in range(4):
        add_row.click()
    rows = page.locator(".rows-table tbody tr")
    expect(rows).to_have_count(4)
    fill_row(page, 0, "=", "GOLD", "queue", "103")
    fill_row(page, 1, "contains", "TEMP", "recording", "closed-today")
    fill_row(page, 2, ">=", "50", "ivr", "5")
    fill_row(page, 3, "empty", "", "queue", "104")
    # the option's suggestions follow the row's destination type
    expect(page.locator("#rows-2-option")).to_have_attribute("list", "dest-options-ivr")
    rows.nth(1).get_by_role("button", name="Remove row").click()  # TEMP goes
    expect(rows).to_have_count(3)
    rows.nth(2).get_by_role("button", name="Move row up").click()  # empty above >= 50
    rows.nth(0).get_by_role("button", name="Move row down").click()  # GOLD below empty
    expect(rows.nth(0).locator('[data-label="#"]')).to_have_text("1")
    expect(page.locator("#rows-0-operator")).to_have_value("empty")  # renumbered in screen order
    page.get_by_role("button", name="Add header").click()
    page.locator("#custom_headers-0-name").fill("X-Api-Key")
    page.locator("#custom_headers-0-value").fill("browser-secret")
    page.get_by_role("group", name="Is Voicemail").get_by_label("Yes", exact=True).check()
    page.screenshot(path=str(tmp_path / "rule-form.png"), full_page=True)
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".flash.ok")).to_have_text("Saved the rule 'Ordered rows'.")
    stored = site.rule("Ordered rows")
    assert [(r["operator"], r["value"], r["destination"], r["option"]) for r in stored["rows"]] == [
        ("empty", "", "queue", "104"), ("=", "GOLD", "queue", "103"), (">=", "50", "ivr", "5")]
    assert stored["custom_headers"] == [{"name": "X-Api-Key", "value": "********"}]
    assert stored["default_voicemail"] == "yes"

    # edit: the stored rows come back in order; move the last to the top and save again
    page.get_by_role("link", name="Edit Ordered rows").click()
    expect(rows).to_have_count(3)
    expect(page.locator("#custom_headers-0-value")).to_have_attribute("placeholder", "********")
    rows.nth(2).get_by_role("button", name="Move row up").click()
    rows.nth(1).get_by_role("button", name="Move row up").click()
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".flash.ok")).to_be_visible()
    assert [r["value"] for r in site.rule("Ordered rows")["rows"]] == ["50", "", "GOLD"]


def test_server_error_next_to_its_field_with_typed_values_kept(page: Page, site):
    page.goto("/rules/new")
    fill_general(page, "Plain http", "http://crm.example.com/lookup")
    page.get_by_role("button", name="Add row").click()
    fill_row(page, 0, "regex", "^VIP", "ivr", "5")
    page.get_by_role("button", name="Save").click()
    url = page.get_by_label("CRM URL")
    expect(url).to_be_visible()  # the Custom CRM section is shown again
    expect(url).to_have_value("http://crm.example.com/lookup")
    expect(url).to_have_attribute("aria-invalid", "true")
    error = page.locator("#custom_url-error")
    expect(error).to_contain_text("https://")
    assert "custom_url-error" in url.get_attribute("aria-describedby")
    expect(page.get_by_role("alert").first).to_contain_text("CRM URL")  # the field's label, not its path
    expect(page.get_by_label("Rule Name")).to_have_value("Plain http")
    expect(page.locator("#rows-0-value")).to_have_value("^VIP")
    expect(page.locator("#rows-0-option")).to_have_value("5")
    assert site.rule("Plain http") is None
    url.fill("https://crm.example.com/lookup")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".flash.ok")).to_have_text("Saved the rule 'Plain http'.")
