"""The CRM integrations pages: settings, write-only secrets, log options."""

from __future__ import annotations

import pytest

from crmroute.store import integrations
from tests.web.ui.conftest import add_integration, field_error, follow, input_value, post, selected

FORM = {
    "name": "Main Zoho", "kind": "zoho", "enabled": "on",
    "settings-0-key": "api_domain", "settings-0-value": "https://www.zohoapis.eu",
    "settings-1-key": "client_id", "settings-1-value": "1000.X",
    "secrets-0-key": "client_secret", "secrets-0-value": "very-secret-client-secret",
    "secrets-1-key": "refresh_token", "secrets-1-value": "very-secret-refresh-token",
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
    assert ">Test<" not in form  # the Test action arrives with the connectors
    html = follow(admin, post(admin, "/integrations/new", FORM))
    assert "Saved the integration &#39;Main Zoho&#39;." in html and "Zoho CRM" in html
    public, secrets = stored(web)[0]
    assert public["settings"] == {"api_domain": "https://www.zohoapis.eu", "client_id": "1000.X"}
    assert secrets == {"client_secret": "very-secret-client-secret", "refresh_token": "very-secret-refresh-token"}
    assert public["log_options"] == {"inbound_answered": True, "inbound_missed": False, "outbound": True,
                                     "create_unknown": False, "log_level": "debug"}  # fmt: skip
    assert public["enabled"] is True


def test_secrets_are_write_only(web, admin):
    follow(admin, post(admin, "/integrations/new", FORM))
    integration_id = stored(web)[0][0]["id"]
    for page in ("/integrations", f"/integrations/{integration_id}/edit"):
        html = admin.get(page).text
        assert "very-secret" not in html
    html = admin.get(f"/integrations/{integration_id}/edit").text
    assert input_value(html, "secrets-0-key") == "client_secret" and input_value(html, "secrets-0-value") == ""
    assert 'placeholder="********"' in html
    assert input_value(html, "settings-1-value") == "1000.X"
    # empty keeps, typed replaces, a removed row deletes; the enabled box unticked disables
    edit = {k: v for k, v in FORM.items() if not k.startswith("secrets-") and k != "enabled"} | {
        "secrets-0-key": "refresh_token", "secrets-0-value": "", "secrets-1-key": "api_key", "secrets-1-value": "new-key"}
    follow(admin, post(admin, f"/integrations/{integration_id}/edit", edit))
    public, secrets = stored(web)[0]
    assert secrets == {"refresh_token": "very-secret-refresh-token", "api_key": "new-key"}
    assert public["enabled"] is False


def test_errors_keep_the_form(web, admin):
    bad = FORM | {"name": "Bad/name", "kind": "nocrm", "settings-2-key": "", "settings-2-value": "orphan",
                  "log_options-log_level": "loud"}  # fmt: skip
    response = post(admin, "/integrations/new", bad)
    assert response.status_code == 422
    html = response.text
    assert field_error(html, "settings-2-key")
    assert input_value(html, "settings-2-value") == "orphan" and input_value(html, "name") == "Bad/name"
    assert "very-secret" not in html and "type the new ones again" in html
    assert "letters, digits" in field_error(html, "name")
    assert "unknown CRM kind" in field_error(html, "kind") and selected(html, "kind") == "nocrm"
    assert field_error(html, "log_options-log_level")
    assert stored(web) == []


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
