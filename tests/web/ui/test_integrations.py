"""The CRM integrations pages: settings drawn from the connector, write-only secrets, log options, Test."""

from __future__ import annotations

import pytest

from crmroute.schemas import LogOptions
from crmroute.store import integrations
from tests.web.ui.conftest import add_integration, field_error, follow, input_value, post, selected

FORM = {
    "name": "Main Zoho", "kind": "zoho", "enabled": "on",
    "zoho-data_centre": "eu", "zoho-api_domain": "https://www.zohoapis.eu", "zoho-client_id": "1000.X",
    "zoho-client_secret": "very-secret-client-secret", "zoho-refresh_token": "very-secret-refresh-token",
    "zoho-api_version": "v8", "zoho-match_pick": "newest",
    "hubspot-api_url": "https://ignored.example",  # another kind's fields are not read
    "log_options-inbound_answered": "on", "log_options-outbound": "on", "log_options-log_level": "debug",
}  # fmt: skip


def stored(web) -> list[tuple[dict, dict]]:
    """(public form, decrypted secrets) of each integration."""
    with web.store.factory() as session:
        return [(integrations.to_public(r, web.store.box), web.store.box.decrypt_json(r.secrets_enc, {}))
                for r in integrations.list_all(session)]  # fmt: skip


@pytest.mark.parametrize("path", ["/integrations", "/integrations/new", "/integrations/1/edit"])
def test_pages_need_sign_in(web, path):
    response = web.client().get(path)
    assert response.status_code == 303 and response.headers["location"] == f"/login?next={path}"


def test_posts_need_the_csrf_token(web, admin):
    add_integration(web, "Old")
    for url in ("/integrations/new", "/integrations/1/edit", "/integrations/1/delete"):
        assert admin.post(url, data=FORM).status_code == 403
    assert [p["name"] for p, _ in stored(web)] == ["Old"]


def test_create_through_the_form(web, admin):
    form = admin.get("/integrations/new").text
    assert "Zoho CRM" in form and "Microsoft Dynamics CRM 2015" in form
    assert 'id="zoho-client_secret"' in form and 'type="password"' in form  # drawn from the connector's settings
    assert 'data-show-when="kind=zoho"' in form and '<label for="zoho-client_id">Client ID (required)</label>' in form
    html = follow(admin, post(admin, "/integrations/new", FORM))
    assert "Saved the integration &#39;Main Zoho&#39;." in html and "Zoho CRM" in html
    public, secrets = stored(web)[0]
    assert public["settings"] == {"data_centre": "eu", "api_domain": "https://www.zohoapis.eu", "client_id": "1000.X",
                                  "api_version": "v8", "match_pick": "newest"}  # fmt: skip
    assert secrets == {"client_secret": "very-secret-client-secret", "refresh_token": "very-secret-refresh-token"}
    assert public["log_options"] == LogOptions(inbound_answered=True, outbound=True, log_level="debug").model_dump()
    assert public["enabled"] is True


def test_secrets_are_write_only(web, admin):
    follow(admin, post(admin, "/integrations/new", FORM))
    integration_id = stored(web)[0][0]["id"]
    for page in ("/integrations", f"/integrations/{integration_id}/edit"):
        html = admin.get(page).text
        assert "very-secret" not in html
    html = admin.get(f"/integrations/{integration_id}/edit").text
    assert input_value(html, "zoho-client_secret") == "" and 'placeholder="********"' in html
    assert "A value is stored; leave empty to keep it." in html
    assert input_value(html, "zoho-client_id") == "1000.X"
    # empty keeps, typed replaces, "remove" drops; the enabled box unticked disables
    edit = {k: v for k, v in FORM.items() if k != "enabled"} | {
        "zoho-client_secret": "", "zoho-refresh_token": "", "zoho-refresh_token-clear": "on", "zoho-org_id": "9001",
        "zoho-auth_method": "client_credentials"}
    follow(admin, post(admin, f"/integrations/{integration_id}/edit", edit))
    public, secrets = stored(web)[0]
    assert secrets == {"client_secret": "very-secret-client-secret"}
    assert public["enabled"] is False and public["settings"]["org_id"] == "9001"


def test_errors_keep_the_form(web, admin):
    bad = FORM | {"name": "Bad/name", "kind": "nocrm", "log_options-log_level": "loud"}
    response = post(admin, "/integrations/new", bad)
    assert response.status_code == 422
    html = response.text
    assert input_value(html, "name") == "Bad/name"
    assert "very-secret" not in html and "type new ones again" in html
    assert "letters, digits" in field_error(html, "name")
    assert "unknown CRM kind" in field_error(html, "kind") and selected(html, "kind") == "nocrm"
    assert field_error(html, "log_options-log_level")
    assert stored(web) == []


def test_connector_settings_errors_show_next_to_their_fields(web, admin):
    bad = {k: v for k, v in FORM.items() if k != "zoho-client_id"} | {"zoho-accounts_url": "http://plain.example"}
    response = post(admin, "/integrations/new", bad)
    assert response.status_code == 422
    assert field_error(response.text, "zoho-client_id") == "required"
    assert "https" in field_error(response.text, "zoho-accounts_url")
    assert input_value(response.text, "zoho-api_domain") == "https://www.zohoapis.eu"
    assert stored(web) == []


def test_the_test_button_reports_each_step(web, admin):
    follow(admin, post(admin, "/integrations/new", FORM | {"zoho-accounts_url": "https://127.0.0.1:9"}))
    integration_id = stored(web)[0][0]["id"]
    assert 'action="/integrations/%d/test"' % integration_id in admin.get(f"/integrations/{integration_id}/edit").text
    html = post(admin, f"/integrations/{integration_id}/test", {"test-key": "+15551230001", "test-module": "leads"}).text
    assert 'class="badge error">failed' in html and "<td data-label=\"Step\">authenticate</td>" in html
    assert "<code>connect</code>" in html and "very-secret" not in html
    assert admin.post(f"/integrations/{integration_id}/test", data={}).status_code == 403


def test_duplicate_name_and_delete_refused_when_used(web, admin):
    from crmroute.schemas import DestinationIn, RuleIn
    from crmroute.store import destinations, rules
    from crmroute.store.db import transaction

    add_integration(web, "Main Zoho")
    response = post(admin, "/integrations/new", FORM)
    assert response.status_code == 422 and "already exists" in field_error(response.text, "name")
    with transaction(web.store.factory) as session:
        destinations.create(session, DestinationIn(type="extension", number="100"))
    with transaction(web.store.factory) as session:
        rules.create(session, web.store.box, RuleIn.model_validate({
            "name": "Zoho rule", "crm_field": "Status", "location": "did", "crm_source": "integration",
            "integration": "Main Zoho", "crm_module": "leads", "default_destination": "100"}))  # fmt: skip
    integration_id = stored(web)[0][0]["id"]
    html = follow(admin, post(admin, f"/integrations/{integration_id}/delete"))
    assert 'class="flash error"' in html and "Zoho rule" in html
    assert len(stored(web)) == 1


def test_log_templates_are_checked(web, admin):
    bad = FORM | {"log_options-subject_template": "Call from {caller_name}", "log_options-link_record": "lookup"}
    response = post(admin, "/integrations/new", bad)
    assert response.status_code == 422
    assert "unknown field {caller_name}" in field_error(response.text, "log_options-subject_template")
    good = FORM | {"log_options-subject_template": "{direction} {external_number}", "log_options-link_record": "lookup"}
    follow(admin, post(admin, "/integrations/new", good))
    options = stored(web)[0][0]["log_options"]
    assert options["subject_template"] == "{direction} {external_number}" and options["link_record"] == "lookup"
