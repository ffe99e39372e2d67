"""POST /api/v1/agents/sync against the strict HubSpot fake: owners matched to agents by e-mail, ids recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from crmroute.settings import Settings
from tests.conftest import make_settings
from tests.connectors.fakecrm import vendor_fixtures
from tests.connectors.test_hubspot import PAT, make_app
from tests.web.api.conftest import SQLITE_ONLY, create

fake_server, fake = vendor_fixtures(make_app)


@pytest.fixture
def settings(data_dir: Path, db_url: str, fake_server) -> Settings:  # the app trusts the HubSpot fake's CA
    return make_settings(data_dir, db_url, ca_bundle=str(fake_server.ca_path))


@SQLITE_ONLY
def test_sync_records_the_owner_ids_and_reports_failures(api, fake):
    fake.tokens.add(PAT)
    fake.state["owners"] = {
        "41629779": {"id": "41629779", "email": "Olivia.Owner@example.com", "firstName": "Olivia", "lastName": "Owner",
                     "archived": False},
        "41629780": {"id": "41629780", "email": "someone@example.com", "firstName": "Some", "lastName": "One",
                     "archived": False},
    }  # fmt: skip
    create(api, "integrations", {"name": "Hub", "kind": "hubspot", "settings": {"api_url": fake.base_url},
                                 "secrets": {"access_token": PAT}})  # fmt: skip
    create(api, "agents", {"name": "Olivia", "extension": "201", "identities": {"Hub": "olivia.owner@EXAMPLE.com"}})
    create(api, "agents", {"name": "Nobody", "extension": "202", "identities": {"Hub": "nobody@example.com"}})
    result = api.post("/api/v1/agents/sync", json={"integration": "Hub"})
    assert result.status_code == 200, result.text
    assert result.json() == {"integration": "Hub", "users": 2, "updated": 1,
                             "matched": ["Olivia Owner, Olivia.Owner@example.com → extension 201 (agent Olivia)"],
                             "unmatched_agents": ["Nobody (nobody@example.com)"]}  # fmt: skip
    olivia = api.get("/api/v1/agents", params={"search": "Olivia"}).json()["items"][0]
    assert olivia["identities"]["Hub"] == {"user_id": "41629779", "email": "Olivia.Owner@example.com"}
    found = api.get("/api/v1/agents/resolve", params={"integration": "Hub", "user": "41629779"}).json()
    assert found["agent"]["name"] == "Olivia" and found["by"] == "user_id"
    fake.tokens.discard(PAT)  # the CRM refuses the token now: 502 with the connector's reason
    refused = api.post("/api/v1/agents/sync", json={"integration": "Hub"})
    assert refused.status_code == 502 and refused.json()["code"].startswith(("http_401", "auth"))


@SQLITE_ONLY
def test_the_sync_button_says_what_it_matched(web, api, fake):
    from tests.web.ui.conftest import follow, post

    fake.tokens.add(PAT)
    fake.state["owners"] = {"77": {"id": "77", "email": "ann@example.com", "firstName": "Ann", "lastName": "Lee",
                                   "archived": False}}  # fmt: skip
    create(api, "integrations", {"name": "Hub", "kind": "hubspot", "settings": {"api_url": fake.base_url},
                                 "secrets": {"access_token": PAT}})  # fmt: skip
    create(api, "agents", {"name": "Ann", "extension": "205", "identities": {"Hub": "ann@example.com"}})
    admin = web.browser()
    html = follow(admin, post(admin, "/agents/sync", {"integration": "Hub"}))
    assert "Synced from Hub: 1 CRM users, 1 agents matched by e-mail, 1 updated." in html
    assert "Ann Lee, ann@example.com → extension 205 (agent Ann)" in html
    assert "Hub: ann@example.com, user id 77 → extension 205" in html  # the list explains the identity now
