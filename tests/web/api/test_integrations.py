"""/api/v1/integrations: CRUD, write-only secrets, integrations rules use, the Test action."""

from __future__ import annotations

import dataclasses

from sqlalchemy import select

from crmroute.store.models import Integration
from crmroute.store.secrets import MASK
from crmroute.web.app import create_app
from tests.connectors.contract import CALLER, STORED_PHONE
from tests.connectors.fakecrm import FakeRecord, serve_vendor
from tests.connectors.test_zoho import CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, make_app
from tests.web.api.conftest import create, fields, rule_body
from tests.web.conftest import Web

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
    unreachable = {"name": "Broken", "kind": "zoho",
                   "settings": {"accounts_url": "https://127.0.0.1:9", "client_id": "1000.X"},
                   "secrets": {"client_secret": "cs", "refresh_token": "rt"}}  # fmt: skip
    created = create(api, "integrations", unreachable)
    response = api.post(f"/api/v1/integrations/{created['id']}/test", json={"key": "+15551230001"})
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["ok"] is False and report["error"]["code"] == "connect"
    assert report["steps"][0]["name"] == "authenticate" and not report["steps"][0]["ok"]
    assert api.post("/api/v1/integrations/999/test").status_code == 404


def test_settings_are_checked_against_the_kinds_connector(api):
    response = api.post("/api/v1/integrations", json={
        "name": "Zoho", "kind": "zoho", "settings": {"client_id": "1000.X", "refresh_token": "in clear", "colour": "red"},
    })  # fmt: skip
    assert response.status_code == 422
    secret = "a secret: put it under secrets, where it is stored encrypted"
    assert fields(response) == {"settings.refresh_token": secret}
    response = api.post("/api/v1/integrations", json={"name": "Zoho", "kind": "zoho",
                                                      "settings": {"client_id": "1000.X", "colour": "red"},
                                                      "secrets": {"client_secret": "s", "refresh_token": "r"}})  # fmt: skip
    assert response.json()["detail"] == [{"field": "settings.colour", "message": "Colour: unknown field"}]


def test_test_action_against_a_real_zoho_fake(web, tmp_path):
    """The Test action end to end: the stored integration, its connector, a strict Zoho fake on loopback."""
    with serve_vendor(make_app, tmp_path) as zoho:
        zoho.records = [FakeRecord("contacts", "4150868000000224001", STORED_PHONE, {"Customer_Tier": "GOLD"})]
        settings = dataclasses.replace(web.store.settings, ca_bundle=zoho.ca_path)
        app = create_app(settings, web.store)  # its own router, trusting the fake's CA
        with Web(app, web.store, web.token).api() as api:
            created = create(api, "integrations", {
                "name": "Zoho", "kind": "zoho", "settings": {"accounts_url": zoho.base_url, "client_id": CLIENT_ID},
                "secrets": {"client_secret": CLIENT_SECRET, "refresh_token": REFRESH_TOKEN}})  # fmt: skip
            report = api.post(f"/api/v1/integrations/{created['id']}/test",
                              json={"key": CALLER, "module": "contacts", "fields": ["Customer_Tier"]}).json()  # fmt: skip
    assert report["ok"], report
    assert [s["name"] for s in report["steps"]] == ["authenticate", "verify credentials",
                                                    f"find contacts record for {CALLER}"]  # fmt: skip
    assert report["steps"][1]["detail"].startswith("signed in as ")
    assert report["record"]["id"] == "4150868000000224001"
    assert report["record"]["fields"]["Customer_Tier"] == "GOLD"
    assert CLIENT_SECRET not in str(report) and REFRESH_TOKEN not in str(report)
