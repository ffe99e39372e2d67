"""The integration form laid out per CRM: sign-in method first, its fields only, vendor help, kind changes."""

from __future__ import annotations

import re

from crmroute.schemas import RuleIn
from crmroute.store import integrations, rules
from crmroute.store.db import transaction
from tests.web.ui.conftest import add_integration, follow, post, selected
from tests.web.ui.test_integrations import stored


def section(html: str, kind: str) -> str:
    return re.search(rf'<fieldset data-show-when="kind={kind}".*?</fieldset>\n', html, re.S).group(0)


def test_each_crm_asks_for_its_sign_in_method_and_shows_that_methods_fields(admin):
    html = admin.get("/integrations/new").text
    hubspot = section(html, "hubspot")
    assert '<select id="hubspot-auth_method"' in hubspot
    assert re.search(r'data-show-when="hubspot-auth_method=private_app"[^>]*>\s*<div class="field">\s*'
                     r'<label for="hubspot-access_token">Access token</label>', hubspot)  # fmt: skip
    assert 'data-show-when="hubspot-auth_method=oauth" data-auth-field="refresh_token"' in hubspot
    assert 'href="https://developers.hubspot.com/docs/api/private-apps"' in hubspot
    assert "crm.objects.contacts.read" in hubspot
    # credentials before tuning: the cache and rate settings are folded under Advanced, after the sign-in fields
    assert hubspot.index("hubspot-access_token") < hubspot.index("<details class=\"advanced\"") < hubspot.index(
        "Cache values for (seconds)")
    proprietary = section(html, "proprietary")
    assert 'id="proprietary-auth"' not in proprietary  # the method chooser replaces the raw auth setting
    shown_always = re.sub(r'<div data-show-when="proprietary-auth_method=.*?</div></div>', "",
                          proprietary.split('<details class="advanced"')[0], flags=re.S)
    assert len(re.findall(r"<label for=\"proprietary-", shown_always)) == 9  # not ~40 fields at once, and then
    assert proprietary.count('data-show-when="proprietary-auth_method=') == 8  # the chosen method's (0 to 4)
    assert 'href="https://api-console.zoho.com/"' in section(html, "zoho") and "ZohoSearch.securesearch.READ" in html
    assert "Redirect uri" not in html and "Api url" not in html and "Cache ttl s" not in html


def test_only_the_chosen_methods_credentials_are_saved(web, admin):
    form = {"name": "HS", "kind": "hubspot", "enabled": "on", "hubspot-auth_method": "private_app",
            "hubspot-access_token": "pat-na1-secret", "hubspot-client_id": "cid", "hubspot-client_secret": "cs",
            "hubspot-refresh_token": "rt", "log_options-log_level": "info"}  # fmt: skip
    follow(admin, post(admin, "/integrations/new", form))
    public, secrets = stored(web)[0]
    assert secrets == {"access_token": "pat-na1-secret"} and "client_id" not in public["settings"]
    edit = admin.get(f"/integrations/{public['id']}/edit").text
    assert selected(edit, "hubspot-auth_method") == "private_app"
    # switching to OAuth drops the private app token
    oauth = form | {"hubspot-auth_method": "oauth", "hubspot-access_token": ""}
    follow(admin, post(admin, f"/integrations/{public['id']}/edit", oauth))
    public, secrets = stored(web)[0]
    assert secrets == {"client_secret": "cs", "refresh_token": "rt"} and public["settings"]["client_id"] == "cid"
    assert selected(admin.get(f"/integrations/{public['id']}/edit").text, "hubspot-auth_method") == "oauth"


def test_a_method_with_its_own_setting_stores_it(web, admin):
    form = {"name": "SF", "kind": "salesforce", "enabled": "on", "salesforce-auth_method": "client_credentials",
            "salesforce-client_id": "key", "salesforce-client_secret": "secret", "salesforce-refresh_token": "x",
            "log_options-log_level": "info"}  # fmt: skip
    follow(admin, post(admin, "/integrations/new", form))
    public, secrets = stored(web)[0]
    assert public["settings"]["auth_flow"] == "client_credentials" and secrets == {"client_secret": "secret"}
    suite = {"name": "Suite", "kind": "suitecrm", "enabled": "on", "suitecrm-auth_method": "v4_1",
             "suitecrm-site_url": "https://crm.example.com", "suitecrm-username": "u", "suitecrm-password": "p",
             "log_options-log_level": "info"}  # fmt: skip
    follow(admin, post(admin, "/integrations/new", suite))
    suite_public = next(p for p, _ in stored(web) if p["name"] == "Suite")
    assert suite_public["settings"]["api"] == "v4_1"
    edit = admin.get(f"/integrations/{suite_public['id']}/edit").text
    assert selected(edit, "suitecrm-auth_method") == "v4_1"


def test_changing_the_crm_of_an_integration_in_use_asks_first(web, admin, dests):
    add_integration(web, "Main Zoho")
    with transaction(web.store.factory) as session:
        for name in ("VIP", "Accounts"):
            rules.create(session, web.store.box, RuleIn.model_validate({
                "name": name, "crm_field": "Status", "location": "did", "crm_source": "integration",
                "integration": "Main Zoho", "crm_module": "contacts", "default_destination": "100"}))  # fmt: skip
    integration_id = stored(web)[0][0]["id"]
    change = {"name": "Main Zoho", "kind": "hubspot", "enabled": "on", "hubspot-auth_method": "private_app",
              "hubspot-access_token": "pat-1", "log_options-log_level": "info"}  # fmt: skip
    response = post(admin, f"/integrations/{integration_id}/edit", change)
    assert response.status_code == 200 and 'id="confirm-kind"' in response.text
    assert "from Zoho CRM to HubSpot" in response.text and "Accounts, VIP" in response.text
    assert "Change the CRM and save" in response.text
    assert stored(web)[0][0]["kind"] == "zoho"  # nothing changed yet
    page = follow(admin, post(admin, f"/integrations/{integration_id}/edit", change | {"confirm_kind": "hubspot"}))
    assert "Saved" in page
    public, secrets = stored(web)[0]
    assert public["kind"] == "hubspot" and secrets == {"access_token": "pat-1"}


def test_an_unused_integration_changes_crm_without_asking(web, admin):
    add_integration(web, "Spare")
    integration_id = stored(web)[0][0]["id"]
    change = {"name": "Spare", "kind": "hubspot", "enabled": "on", "hubspot-auth_method": "private_app",
              "hubspot-access_token": "pat-1", "log_options-log_level": "info"}  # fmt: skip
    follow(admin, post(admin, f"/integrations/{integration_id}/edit", change))
    with web.store.factory() as session:
        assert integrations.get(session, integration_id).kind == "hubspot"


def test_the_test_button_is_above_the_settings(web, admin):
    add_integration(web, "Main Zoho")
    html = admin.get(f"/integrations/{stored(web)[0][0]['id']}/edit").text
    assert html.index('id="test-title"') < html.index('id="integration-form"')
