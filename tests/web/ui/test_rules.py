"""The rules pages: list, search, add, edit, delete, validation, secrets."""

from __future__ import annotations

import re

import pytest

from crmroute.schemas import DidIn, RuleIn
from crmroute.store import assignments, rules
from crmroute.store.db import transaction
from crmroute.store.models import Rule
from tests.web.ui.conftest import add_integration, field_error, follow, input_value, post, selected

pytestmark = pytest.mark.usefixtures("dests")

CUSTOM = {
    "name": "VIP", "crm_field": "Status", "location": "did", "crm_source": "custom",
    "custom_url": "https://crm.example.com/lookup", "custom_post": "no",
    "custom_headers-0-name": "X-Api-Key", "custom_headers-0-value": "sekrit-header-value",
    "default_destination": "100", "default_voicemail": "not_set",
    "rows-0-operator": "=", "rows-0-value": "GOLD", "rows-0-destination": "queue", "rows-0-option": "103",
    "rows-1-operator": "=", "rows-1-value": "SILVER", "rows-1-destination": "ivr", "rows-1-option": "5",
}  # fmt: skip


def stored(web, name: str) -> Rule | None:
    with web.store.factory() as session:
        found = [r for r in rules.list_all(session) if r.name == name]
        return found[0] if found else None


def public(web, name: str) -> dict:
    with web.store.factory() as session:
        rule = next(r for r in rules.list_all(session) if r.name == name)
        return rules.to_public(rules.get(session, rule.id), web.store.box)


def secrets_of(web, name: str) -> tuple[str, list]:
    rule = stored(web, name)
    box = web.store.box
    return box.decrypt(rule.crm_password_enc), box.decrypt_json(rule.custom_headers_enc, [])


def create(web, **fields) -> int:
    data = {k: v for k, v in CUSTOM.items() if "-" not in k} | {
        "custom_post": False, "custom_headers": [{"name": "X-Api-Key", "value": "sekrit-header-value"}],
        "rows": [{"operator": "=", "value": "GOLD", "destination": "queue", "option": "103"}],
    } | fields  # fmt: skip
    with transaction(web.store.factory) as session:
        return rules.create(session, web.store.box, RuleIn.model_validate(data)).id


# --- sign-in and CSRF --------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/rules", "/rules/new", "/rules/1/edit", "/rules?search=a%20b"])
def test_pages_need_sign_in(web, path):
    response = web.client().get(path)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login?next=/rules")
    if "search" in path:
        assert "search%3Da%2520b" in response.headers["location"]


def test_posts_need_the_csrf_token(web, admin):
    rule_id = create(web)
    for url in ("/rules/new", f"/rules/{rule_id}/edit", f"/rules/{rule_id}/delete"):
        assert admin.post(url, data=CUSTOM).status_code == 403
        assert admin.post(url, data=CUSTOM | {"csrf_token": "wrong"}).status_code == 403
    assert stored(web, "VIP") is not None


# --- list ---------------------------------------------------------------------------------


def test_list_shows_the_seed_columns_and_confirmation(web, admin):
    rule_id = create(web, name="VIP Customers", crm_field="Account_Name")
    html = admin.get("/rules").text
    for heading in ("Rule Name", "CRM Field Name", "Location"):
        assert f">{heading}</th>" in html
    assert "VIP Customers" in html and "Account_Name" in html and ">DID<" in html
    assert f'href="/rules/{rule_id}/edit"' in html
    assert f'action="/rules/{rule_id}/delete" data-confirm="Are you sure you want to remove &#39;VIP Customers&#39;?"' in html
    assert 'class="stack"' in html and 'data-label="Rule Name"' in html


def test_search_filters_and_pages(web, admin):
    for i in range(55):
        create(web, name=f"Rule {i:02d}", crm_field="Status" if i % 2 else "Account_Name")
    html = admin.get("/rules", params={"search": "rule 0"}).text
    names = re.findall(r'<a href="/rules/\d+/edit">(Rule \d+)</a>', html)
    assert names == [f"Rule 0{i}" for i in range(10)]
    first = admin.get("/rules").text
    assert "1–50 of 55" in first and 'rel="next"' in first
    second = admin.get("/rules", params={"offset": 50}).text
    assert re.findall(r'<a href="/rules/\d+/edit">(Rule \d+)</a>', second) == [f"Rule {i}" for i in range(50, 55)]
    assert "51–55 of 55" in second
    nothing = admin.get("/rules", params={"search": "<b>zzz</b>"}).text
    assert "No rule matches" in nothing and "<b>zzz</b>" not in nothing and "&lt;b&gt;zzz&lt;/b&gt;" in nothing


# --- create -------------------------------------------------------------------------------


def test_create_custom_rule_through_the_form(web, admin):
    form = admin.get("/rules/new").text
    assert "100 – Test" in form and "103 – Sales" in form and "closed-today" in form
    for section in ("General", "CRM Settings", "Default Destination", "Rules"):
        assert f"<legend>{section}</legend>" in form
    html = follow(admin, post(admin, "/rules/new", CUSTOM))
    assert "Saved the rule &#39;VIP&#39;." in html
    data = public(web, "VIP")
    assert data["crm_source"] == "custom" and data["custom_url"] == "https://crm.example.com/lookup"
    assert [(r["value"], r["destination"], r["option"]) for r in data["rows"]] == [
        ("GOLD", "queue", "103"), ("SILVER", "ivr", "5")]
    assert secrets_of(web, "VIP")[1] == [{"name": "X-Api-Key", "value": "sekrit-header-value"}]
    assert "Saved the rule" not in admin.get("/rules").text  # the confirmation is shown once


def test_rows_are_stored_in_index_order_and_irrelevant_fields_ignored(web, admin):
    form = CUSTOM | {
        "location": "did", "greeting": "should-be-ignored", "integration": "nope", "crm_module": "leads",
        "crm_password": "ignored-password",
        "rows-1-operator": "contains", "rows-1-value": "A", "rows-1-destination": "queue", "rows-1-option": "104",
        "rows-0-operator": "empty", "rows-0-value": "", "rows-0-destination": "recording", "rows-0-option": "closed-today",
        "rows-2-operator": ">=", "rows-2-value": "50", "rows-2-destination": "ivr", "rows-2-option": "5",
    }  # fmt: skip
    follow(admin, post(admin, "/rules/new", form))
    data = public(web, "VIP")
    assert [r["operator"] for r in data["rows"]] == ["empty", "contains", ">="]
    assert "greeting" not in data and "integration" not in data
    assert secrets_of(web, "VIP")[0] == ""


def test_create_integration_rule(web, admin):
    add_integration(web, "Main Zoho")
    form = admin.get("/rules/new").text
    assert '<option value="Main Zoho">Main Zoho</option>' in form
    html = follow(admin, post(admin, "/rules/new", {
        "name": "Accounts", "crm_field": "Account_Name", "location": "ivr", "greeting": "enter-account",
        "dtmf_timeout_ms": "4000", "dtmf_max_digits": "6", "crm_source": "integration", "integration": "Main Zoho",
        "crm_module": "accounts", "crm_username": "bob", "crm_password": "hunter2-password",
        "custom_url": "http://ignored", "default_destination": "101", "default_voicemail": "yes", "deadline_ms": "1500",
    }))  # fmt: skip
    assert "Accounts" in html
    data = public(web, "Accounts")
    assert data["integration"] == "Main Zoho" and data["crm_module"] == "accounts" and data["greeting"] == "enter-account"
    assert (data["dtmf_timeout_ms"], data["dtmf_max_digits"], data["deadline_ms"]) == (4000, 6, 1500)
    assert data["default_voicemail"] == "yes" and "custom_url" not in data
    assert secrets_of(web, "Accounts")[0] == "hunter2-password"


# --- validation ---------------------------------------------------------------------------


def test_errors_are_shown_next_to_their_fields_with_the_typed_values(web, admin):
    bad = CUSTOM | {
        "name": "VIP!", "custom_url": "http://crm.example.com/lookup", "rows-1-operator": "regex",
        "rows-1-value": "(a+)+", "rows-0-option": "", "custom_headers-0-name": "Bad Header",
    }  # fmt: skip
    response = post(admin, "/rules/new", bad)
    assert response.status_code == 422
    html = response.text
    assert "letters, digits, spaces" in field_error(html, "name")
    assert "https://" in field_error(html, "custom_url")
    assert field_error(html, "rows-1-value")
    assert field_error(html, "rows-0-option")
    assert field_error(html, "custom_headers-0-name")
    assert input_value(html, "name") == "VIP!"
    assert input_value(html, "custom_url") == "http://crm.example.com/lookup"
    assert input_value(html, "rows-1-value") == "(a+)+" and selected(html, "rows-1-operator") == "regex"
    assert input_value(html, "rows-1-option") == "5" and selected(html, "rows-1-destination") == "ivr"
    assert input_value(html, "custom_headers-0-name") == "Bad Header"
    assert "sekrit-header-value" not in html  # typed secrets are not sent back ...
    assert "type the new ones again" in html  # ... and the admin is told so
    assert 'id="error-summary"' in html and 'href="#custom_url"' in html
    assert stored(web, "VIP!") is None


def test_store_refusals_are_shown_on_their_fields(web, admin):
    # a typed option that cannot be a destination is not added: the rule's check names it
    response = post(admin, "/rules/new", CUSTOM | {"default_destination": "999", "rows-1-option": "7 7"})
    assert response.status_code == 422
    assert "999" in field_error(response.text, "default_destination")
    assert "7 7" in field_error(response.text, "rows-1-option")
    assert selected(response.text, "default_destination") == "999"  # kept, marked as not found


def test_required_fields_for_integration_rules(web, admin):
    response = post(admin, "/rules/new", {"name": "X", "crm_field": "Status", "location": "did",
                                          "crm_source": "integration", "default_destination": "100"})  # fmt: skip
    assert response.status_code == 422
    assert "required" in field_error(response.text, "integration")
    assert "required" in field_error(response.text, "crm_module")


def test_duplicate_name_is_shown_on_the_name_field(web, admin):
    create(web)
    response = post(admin, "/rules/new", CUSTOM)
    assert response.status_code == 422
    assert "already exists" in field_error(response.text, "name")


def test_greeting_on_did_rule_is_ignored_not_refused(web, admin):
    follow(admin, post(admin, "/rules/new", CUSTOM | {"greeting": "hello", "dtmf_max_digits": "abc"}))
    assert "greeting" not in public(web, "VIP")


# --- edit ---------------------------------------------------------------------------------


def test_edit_shows_stored_values_without_secrets(web, admin):
    add_integration(web, "Main Zoho")
    rule_id = create(web)
    other = create(web, name="Zoho rule", crm_source="integration", integration="Main Zoho", crm_module="leads",
                   crm_password="pa55word-in-clear", custom_headers=[], custom_url="")  # fmt: skip
    html = admin.get(f"/rules/{rule_id}/edit").text
    assert input_value(html, "name") == "VIP" and input_value(html, "custom_url") == "https://crm.example.com/lookup"
    assert input_value(html, "custom_headers-0-name") == "X-Api-Key"
    assert input_value(html, "custom_headers-0-value") == "" and 'placeholder="********"' in html
    assert "sekrit-header-value" not in html
    html = admin.get(f"/rules/{other}/edit").text
    assert "pa55word-in-clear" not in html and "A password is stored" in html
    assert input_value(html, "crm_password") == ""
    assert selected(html, "integration") == "Main Zoho" and selected(html, "crm_module") == "leads"


def test_edit_keeps_secrets_left_empty_and_replaces_typed_ones(web, admin):
    add_integration(web, "Main Zoho")
    rule_id = create(web, custom_headers=[{"name": "X-Api-Key", "value": "k1"}, {"name": "X-Other", "value": "k2"}])
    form = CUSTOM | {"custom_headers-0-value": "", "custom_headers-1-name": "X-Other", "custom_headers-1-value": "new-k2",
                     "custom_headers-2-name": "X-New", "custom_headers-2-value": "k3", "crm_field": "Tier"}  # fmt: skip
    follow(admin, post(admin, f"/rules/{rule_id}/edit", form))
    assert secrets_of(web, "VIP")[1] == [{"name": "X-Api-Key", "value": "k1"}, {"name": "X-Other", "value": "new-k2"},
                                         {"name": "X-New", "value": "k3"}]  # fmt: skip
    assert public(web, "VIP")["crm_field"] == "Tier"

    other = create(web, name="Zoho rule", crm_source="integration", integration="Main Zoho", crm_module="leads",
                   crm_password="first-password", custom_headers=[], custom_url="")  # fmt: skip
    base = {"name": "Zoho rule", "crm_field": "Status", "location": "did", "crm_source": "integration",
            "integration": "Main Zoho", "crm_module": "leads", "default_destination": "100"}  # fmt: skip
    follow(admin, post(admin, f"/rules/{other}/edit", base | {"crm_password": ""}))
    assert secrets_of(web, "Zoho rule")[0] == "first-password"
    follow(admin, post(admin, f"/rules/{other}/edit", base | {"crm_password": "second-password"}))
    assert secrets_of(web, "Zoho rule")[0] == "second-password"
    follow(admin, post(admin, f"/rules/{other}/edit", base | {"clear_password": "on"}))
    assert secrets_of(web, "Zoho rule")[0] == ""


def test_edit_rename_and_errors_keep_the_rule(web, admin):
    rule_id = create(web)
    create(web, name="Other")
    response = post(admin, f"/rules/{rule_id}/edit", CUSTOM | {"name": "Other"})
    assert response.status_code == 422 and "already exists" in field_error(response.text, "name")
    follow(admin, post(admin, f"/rules/{rule_id}/edit", CUSTOM | {"name": "VIP renamed"}))
    assert stored(web, "VIP renamed").id == rule_id


def test_unknown_rule_is_404(web, admin):
    assert admin.get("/rules/999/edit").status_code == 404
    assert post(admin, "/rules/999/delete").status_code == 404


# --- delete -------------------------------------------------------------------------------


def test_delete_removes_the_rule(web, admin):
    rule_id = create(web)
    html = follow(admin, post(admin, f"/rules/{rule_id}/delete"))
    assert "Removed the rule &#39;VIP&#39;." in html
    assert stored(web, "VIP") is None


def test_delete_of_a_used_rule_is_refused_with_the_message(web, admin):
    rule_id = create(web)
    with transaction(web.store.factory) as session:
        assignments.create_did(session, DidIn(number="5551000", rule="VIP"))
    html = follow(admin, post(admin, f"/rules/{rule_id}/delete"))
    assert 'class="flash error"' in html and "DID 5551000" in html
    assert stored(web, "VIP") is not None
