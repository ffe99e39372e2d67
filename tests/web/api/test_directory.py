"""The directory kind's table through the API: kept in the integration's settings, routed at once, bad rows refused."""

from __future__ import annotations

from tests.web.api.conftest import create, fields

TABLE = [
    {"phone": "(555) 123-0001", "name": "Alice Gold", "owner": "olivia.owner@example.com", "Status": "GOLD"},
    {"phone": "555.123.0002", "mobile": "+1 555 987 0002", "name": "Bob Silver", "Status": "SILVER"},
]
RULE = {
    "name": "By directory", "crm_field": "Status", "location": "did", "crm_source": "integration",
    "integration": "Front desk", "crm_module": "contacts", "default_destination": "100",
    "rows": [{"operator": "=", "value": "GOLD", "destination": "queue", "option": "103"},
             {"operator": "=", "value": "SILVER", "destination": "ivr", "option": "5"}],
}  # fmt: skip


def route(api, caller: str) -> dict:
    response = api.post("/api/v1/route", json={"did": "5551000", "caller": caller})
    assert response.status_code == 200, response.text
    return response.json()


def test_the_table_is_edited_through_the_api_and_routes_at_once(seeded):
    integration = create(seeded, "integrations", {"name": "Front desk", "kind": "directory",
                                                  "settings": {"entries": TABLE}})  # fmt: skip
    assert integration["settings"]["entries"] == TABLE and integration["secrets"] == {}
    create(seeded, "rules", RULE)
    create(seeded, "dids", {"number": "5551000", "rule": "By directory"})
    trace = route(seeded, "+15551230001")
    assert trace["status"] == "matched" and trace["value"] == "GOLD" and trace["destination"]["option"] == "103"
    assert "Front desk: table row 1" in trace["steps"]
    assert route(seeded, "+15559870002")["value"] == "SILVER"  # the mobile column

    changed = [TABLE[0] | {"Status": "SILVER"}, TABLE[1]]
    body = {"name": "Front desk", "kind": "directory", "settings": {"entries": changed}}
    response = seeded.put(f"/api/v1/integrations/{integration['id']}", json=body)
    assert response.status_code == 200, response.text
    trace = route(seeded, "+15551230001")
    assert trace["value"] == "SILVER" and trace["destination"] == {"type": "ivr", "option": "5"}

    tested = seeded.post(f"/api/v1/integrations/{integration['id']}/test", json={"key": "(555) 123-0002"}).json()
    assert tested["ok"] and tested["steps"][1]["detail"].startswith("2 records in the table")
    assert tested["record"]["fields"]["name"] == "Bob Silver"


def test_a_bad_row_is_refused_naming_it(api):
    bad = TABLE + [{"phone": "ask Bob", "name": "Carol"}]
    response = api.post("/api/v1/integrations", json={"name": "Front desk", "kind": "directory",
                                                      "settings": {"entries": bad}})  # fmt: skip
    assert fields(response) == {"settings.entries": "row 3: phone 'ask Bob' is not a phone number"}
    both = {"entries": TABLE, "path": "callers.csv"}
    response = api.post("/api/v1/integrations", json={"name": "Front desk", "kind": "directory", "settings": both})
    assert fields(response) == {"settings": "give a file (path) or a table (entries), not both"}
    response = api.post("/api/v1/integrations", json={"name": "Front desk", "kind": "directory",
                                                      "settings": {"entries": [["555"]]}})  # fmt: skip
    assert list(fields(response)) == ["settings.entries[0]"]


def test_a_missing_file_falls_back_with_its_name(web, seeded):
    create(seeded, "integrations", {"name": "Front desk", "kind": "directory", "settings": {"path": "gone.csv"}})
    create(seeded, "rules", RULE)
    create(seeded, "dids", {"number": "5551000", "rule": "By directory"})
    trace = route(seeded, "+15551230001")
    assert trace["status"] == "fallback" and trace["reason"] == "bad_directory"
    data_dir = web.app.state.settings.data_dir.resolve()  # a relative path is in the data directory
    assert f"directory file {data_dir / 'gone.csv'}: No such file or directory" in trace["error"]
