"""/api/v1/integrations: CRUD, write-only secrets, integrations rules use, the Test action."""

from __future__ import annotations

from sqlalchemy import select

from crmroute.store.models import Integration
from crmroute.store.secrets import MASK
from tests.web.api.conftest import create, fields, rule_body

ZOHO = {
    "name": "Main Zoho", "kind": "zoho",
    "settings": {"accounts_url": "https://accounts.zoho.eu", "client_id": "1000.X"},
    "secrets": {"client_secret": "zs-never-shown", "refresh_token": "zr-never-shown"},
}  # fmt: skip


def stored_secrets(web) -> dict:
    with web.store.factory() as session:
        return web.store.box.decrypt_json(session.scalar(select(Integration.secrets_enc)), {})


def test_crud_and_masked_secrets(web, api):
    created = create(api, "integrations", ZOHO)
    assert created["secrets"] == {"client_secret": MASK, "refresh_token": MASK}
    assert created["log_options"]["log_level"] == "info" and created["used_by"] == {"rules": []}
    url = f"/api/v1/integrations/{created['id']}"
    body = {k: v for k, v in created.items() if k not in ("id", "used_by")}
    body |= {"name": "Zoho EU", "secrets": {"client_secret": MASK, "refresh_token": "rotated"}}
    updated = api.put(url, json=body)
    assert updated.status_code == 200 and updated.json()["name"] == "Zoho EU"
    assert stored_secrets(web) == {"client_secret": "zs-never-shown", "refresh_token": "rotated"}
    texts = [created and api.get(url).text, api.get("/api/v1/integrations").text, updated.text]
    for text in texts:
        assert "never-shown" not in text and "rotated" not in text
    assert [i["name"] for i in api.get("/api/v1/integrations?search=ZOHO").json()["items"]] == ["Zoho EU"]
    assert api.delete(url).status_code == 204
    assert api.get(url).json() == {"detail": f"no integration with id {created['id']}"}


def test_bad_input_duplicates_and_in_use(seeded):
    assert fields(seeded.post("/api/v1/integrations", json=ZOHO | {"kind": "acme"})).keys() == {"kind"}
    assert "name" in fields(seeded.post("/api/v1/integrations", json=ZOHO | {"name": "bad/name"}))
    created = create(seeded, "integrations", ZOHO)
    duplicate = seeded.post("/api/v1/integrations", json=ZOHO)
    assert duplicate.status_code == 409 and duplicate.json()["detail"] == "an integration named 'Main Zoho' already exists"
    create(seeded, "rules", rule_body(crm_source="integration", integration="Main Zoho", crm_module="accounts"))
    assert seeded.get(f"/api/v1/integrations/{created['id']}").json()["used_by"] == {"rules": ["VIP"]}
    refused = seeded.delete(f"/api/v1/integrations/{created['id']}")
    assert refused.status_code == 409
    assert refused.json()["detail"] == "integration 'Main Zoho' is used by rule 'VIP'; give it another CRM first"


def test_test_action_reports_instead_of_failing(api):
    created = create(api, "integrations", {"name": "Broken", "kind": "zoho", "settings": {}})
    response = api.post(f"/api/v1/integrations/{created['id']}/test", json={"key": "+15551230001"})
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["ok"] is False and report["error"]["code"]
    assert api.post("/api/v1/integrations/999/test").status_code == 404
