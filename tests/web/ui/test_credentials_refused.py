"""Refused CRM credentials where an admin looks: the integrations pages, /healthz and /metrics."""

from __future__ import annotations

from crmroute.connectors import registry
from crmroute.store import integrations
from crmroute.store.credentials import CredentialStore, origins
from crmroute.store.db import transaction
from tests.web.ui.conftest import add_integration


def refuse(web, name: str) -> int:
    """What a process records when the CRM answers invalid_grant (store/credentials.py)."""
    with web.store.factory() as session:
        row = integrations.by_name(session)[name]
        cls = registry()[row.kind]
        settings = cls.Settings.model_validate(dict(row.settings) | web.store.box.decrypt_json(row.secrets_enc, {}))
        integration_id, kind = row.id, row.kind
    origin, base = origins(kind, settings)
    CredentialStore(web.store.factory, web.store.box).refuse(
        integration_id, "", origin, base, "Zoho token rejected: invalid_grant (refresh token revoked)", ""
    )
    return integration_id


def test_refused_credentials_are_shown_on_the_pages_healthz_and_metrics(web, admin):
    add_integration(web, "Main Zoho")
    add_integration(web, "Spare Zoho")
    assert 'id="credentials-refused"' not in admin.get("/integrations").text
    integration_id = refuse(web, "Main Zoho")
    html = admin.get("/integrations").text
    assert 'id="credentials-refused"' in html and "invalid_grant (refresh token revoked)" in html
    assert html.count("credentials refused</span>") == 1
    edit = admin.get(f"/integrations/{integration_id}/edit").text
    assert 'id="credentials-refused"' in edit and "press Test" in edit
    health = web.api().get("/healthz").json()
    assert [r["integration"] for r in health["credentials_refused"]] == ["Main Zoho"]
    assert "invalid_grant" in health["credentials_refused"][0]["message"]
    assert "credentials_refused" not in web.client().get("/healthz").json()  # strangers see no names
    text = web.client().get("/metrics").text
    assert 'crmroute_credentials_refused{integration="Main Zoho"} 1.0' in text
    assert 'integration="Spare Zoho"' not in text


def test_new_credentials_hide_the_old_refusal(web, admin):
    add_integration(web, "Main Zoho")
    refuse(web, "Main Zoho")
    with transaction(web.store.factory) as session:
        row = integrations.by_name(session)["Main Zoho"]
        row.secrets_enc = web.store.box.encrypt_json({"client_secret": "zs", "refresh_token": "pasted-new"})
    assert 'id="credentials-refused"' not in admin.get("/integrations").text
    assert web.api().get("/healthz").json()["credentials_refused"] == []
