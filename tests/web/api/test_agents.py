"""/api/v1/agents: CRUD, errors naming the field, resolve, availability, sync refusals."""

from __future__ import annotations

from tests.web.api.conftest import SQLITE_ONLY, create, fields

HUB = {"name": "Hub", "kind": "hubspot", "secrets": {"access_token": "pat-never-shown"}}
OLIVIA = {"name": "Olivia Owner", "extension": "201", "identities": {"Hub": "Olivia.Owner@Example.com"}}


@SQLITE_ONLY
def test_agent_crud(api):
    create(api, "integrations", HUB)
    agent = create(api, "agents", OLIVIA)
    assert agent["identities"] == {"Hub": {"user_id": "", "email": "Olivia.Owner@Example.com"}}
    assert agent["devices"] == [] and agent["watched_devices"] == ["PJSIP/201"]
    assert agent["availability"]["state"] == "unknown"  # no AMI in this process: routing assumes available
    assert api.get(f"/api/v1/agents/{agent['id']}").json() == agent
    body = OLIVIA | {"devices": ["PJSIP/201", "PJSIP/201-mobile"], "identities": {"Hub": {"user_id": "77", "email": "o@example.com"}}}
    updated = api.put(f"/api/v1/agents/{agent['id']}", json=body).json()
    assert updated["watched_devices"] == ["PJSIP/201", "PJSIP/201-mobile"]
    assert updated["identities"] == {"Hub": {"user_id": "77", "email": "o@example.com"}}
    listed = api.get("/api/v1/agents", params={"search": "20"}).json()
    assert listed["total"] == 1 and listed["items"][0]["name"] == "Olivia Owner"
    assert api.get("/api/v1/agents", params={"search": "nobody"}).json()["total"] == 0
    assert api.delete(f"/api/v1/agents/{agent['id']}").status_code == 204
    assert api.get(f"/api/v1/agents/{agent['id']}").status_code == 404


@SQLITE_ONLY
def test_bad_agents_are_422_naming_the_field_and_duplicates_409(api):
    create(api, "integrations", HUB)
    assert fields(api.post("/api/v1/agents", json={"name": "A", "extension": "2 1"})) == {
        "extension": "use digits, letters and * # + - _ . only"}
    assert fields(api.post("/api/v1/agents", json={"name": "A", "extension": "1", "identities": {"Nope": "x"}})) == {
        "identities.Nope": "no integration named 'Nope'"}
    assert fields(api.post("/api/v1/agents", json={"name": "A", "extension": "1", "identities": {"Hub": "a b"}})) == {
        "identities.Hub.user_id": "a CRM user id has no spaces and no @ (an e-mail goes in email)"}
    assert fields(api.post("/api/v1/agents", json={"name": "A", "extension": "1", "devices": ["x"]})) == {
        "devices": "'x' is not an Asterisk device such as PJSIP/201 or Local/201@agents"}
    create(api, "agents", OLIVIA)
    assert api.post("/api/v1/agents", json=OLIVIA | {"extension": "202"}).status_code == 409
    response = api.post("/api/v1/agents", json={"name": "Other", "extension": "201"})
    assert response.status_code == 409 and "extension '201'" in response.json()["detail"]


@SQLITE_ONLY
def test_resolve_explains_the_match(api):
    create(api, "integrations", HUB)
    create(api, "agents", OLIVIA | {"identities": {"Hub": {"user_id": "77", "email": "Olivia.Owner@Example.com"}}})
    found = api.get("/api/v1/agents/resolve", params={"integration": "Hub", "user": "olivia.owner@example.COM"}).json()
    assert found["agent"]["extension"] == "201" and found["by"] == "email"
    assert found["explanation"] == "olivia.owner@example.COM → extension 201 (agent Olivia Owner)"
    assert api.get("/api/v1/agents/resolve", params={"integration": "Hub", "user": "77"}).json()["by"] == "user_id"
    assert api.get("/api/v1/agents/resolve", params={"integration": "Hub", "user": "78"}).status_code == 404
    assert api.get("/api/v1/agents/resolve", params={"integration": "Nope", "user": "77"}).status_code == 404


@SQLITE_ONLY
def test_sync_refuses_unknown_integrations_and_kinds_without_a_user_list(api):
    assert fields(api.post("/api/v1/agents/sync", json={"integration": "Nope"})) == {
        "integration": "no integration named 'Nope'"}
    create(api, "integrations", {"name": "Own", "kind": "proprietary", "settings": {"auth": "none",
                                 "lookup_url": "https://crm.example.com/lookup?phone={phone}"}})  # fmt: skip
    problems = fields(api.post("/api/v1/agents/sync", json={"integration": "Own"}))
    assert "integrations cannot list their users yet" in problems["integration"]


@SQLITE_ONLY
def test_agents_are_in_the_export(api):
    create(api, "integrations", HUB)
    create(api, "agents", OLIVIA)
    exported = api.get("/api/v1/export", params={"format": "json"}).json()
    assert exported["agents"] == [{"name": "Olivia Owner", "extension": "201",
                                   "identities": {"Hub": "Olivia.Owner@Example.com"}}]
