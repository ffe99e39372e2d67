"""/api/v1/schedules and rows' conditions through the API: CRUD, references, the dry run at a given time."""

from __future__ import annotations

from tests.web.api.conftest import SQLITE_ONLY, create, fields, rule_body

OFFICE = {"name": "Office hours", "timezone": "Europe/London",
          "hours": {"mon-fri": ["09:00-17:00"]}, "holidays": ["2026-12-25", {"date": "2026-12-26", "name": "Boxing Day"}]}
CONDITIONED_ROWS = [
    {"operator": "=", "value": "GOLD", "destination": "queue", "option": "104",
     "conditions": [{"field": "Region", "value": "EU"}, {"schedule": "Office hours"}]},
    {"operator": "=", "value": "GOLD", "destination": "recording", "option": "closed-today",
     "conditions": [{"schedule": "Office hours", "not": True}]},
    {"operator": "=", "value": "GOLD", "destination": "queue", "option": "103"},
]  # fmt: skip


def test_schedule_crud(seeded):
    made = create(seeded, "schedules", OFFICE)
    assert made["hours"] == {"mon-fri": ["09:00-17:00"]} and made["used_by"] == []
    assert made["holidays"] == ["2026-12-25", {"date": "2026-12-26", "name": "Boxing Day"}]
    listed = seeded.get("/api/v1/schedules", params={"search": "london"}).json()
    assert listed["total"] == 1 and listed["items"][0]["name"] == "Office hours"
    changed = seeded.put(f"/api/v1/schedules/{made['id']}", json=OFFICE | {"hours": {"mon": "08:00-12:00"}}).json()
    assert changed["hours"] == {"mon": ["08:00-12:00"]}
    assert seeded.post("/api/v1/schedules", json=OFFICE).status_code == 409
    assert seeded.delete(f"/api/v1/schedules/{made['id']}").status_code == 204
    assert seeded.get(f"/api/v1/schedules/{made['id']}").status_code == 404


@SQLITE_ONLY
def test_bad_schedules_name_the_field(api):
    problems = fields(api.post("/api/v1/schedules", json={"name": "X", "timezone": "Mars/Olympus",
                                                          "hours": {"mon": "17:00-09:00"}, "holidays": ["2026-02-30"]}))
    assert set(problems) == {"timezone", "hours", "holidays[0].date"}
    assert "ends before it starts" in problems["hours"]


def test_rows_with_conditions_are_stored_and_checked(seeded, custom_crm):
    body = rule_body(custom_crm.url, rows=CONDITIONED_ROWS)
    problems = fields(seeded.post("/api/v1/rules", json=body))
    assert problems == {"rows[0].conditions[1].schedule": "no schedule named 'Office hours'",
                        "rows[1].conditions[0].schedule": "no schedule named 'Office hours'"}
    bad = rule_body(custom_crm.url, rows=[CONDITIONED_ROWS[2] | {"conditions": [{"matches": "two"}, {"country": "XX"},
                                                                                 {"did": "1", "schedule": "Y"}]}])
    assert set(fields(seeded.post("/api/v1/rules", json=bad))) == {
        "rows[0].conditions[0].matches", "rows[0].conditions[1].country", "rows[0].conditions[2].did"}
    schedule = create(seeded, "schedules", OFFICE)
    rule = create(seeded, "rules", body)
    assert rule["rows"][0]["conditions"] == [{"field": "Region", "operator": "=", "value": "EU"},
                                             {"schedule": "Office hours"}]
    assert "conditions" not in rule["rows"][2]  # the seed's single-field row stays as it was
    assert seeded.get(f"/api/v1/schedules/{schedule['id']}").json()["used_by"] == ["VIP"]
    assert seeded.delete(f"/api/v1/schedules/{schedule['id']}").status_code == 409
    renamed = seeded.put(f"/api/v1/schedules/{schedule['id']}", json=OFFICE | {"name": "UK office"})
    assert renamed.status_code == 200
    rows = seeded.get(f"/api/v1/rules/{rule['id']}").json()["rows"]
    assert rows[0]["conditions"][1] == {"schedule": "UK office"} and rows[1]["conditions"][0]["schedule"] == "UK office"


def test_dry_run_checks_conditions_at_the_given_time(seeded, custom_crm):
    create(seeded, "schedules", OFFICE)
    create(seeded, "rules", rule_body(custom_crm.url, rows=CONDITIONED_ROWS))
    custom_crm.records = {"+15551230001": {"Status": "GOLD", "Region": "EU"}}
    monday = seeded.post("/api/v1/route", json={"rule": "VIP", "caller": "+15551230001",
                                                "at": "2026-03-30T09:30:00+01:00"}).json()
    assert (monday["status"], monday["row"], monday["destination"]["option"]) == ("matched", 1, "104")
    assert custom_crm.last.params["fields"] == "Status,Region"  # the other field, asked in the same request
    assert "CRM value for Region: 'EU'" in monday["steps"]
    christmas = seeded.post("/api/v1/route", json={"rule": "VIP", "caller": "+15551230001",
                                                   "at": "2026-12-25T10:00:00Z"}).json()
    assert (christmas["row"], christmas["destination"]["option"]) == (2, "closed-today")
    assert any("row 1 skipped" in s and "is a holiday" in s for s in christmas["steps"]), christmas["steps"]
    custom_crm.records = {"+15551230001": {"Status": "GOLD", "Region": "US"}}
    us = seeded.post("/api/v1/route", json={"rule": "VIP", "caller": "+15551230001",
                                            "at": "2026-03-30T08:30:00Z"}).json()
    assert us["row"] == 3
    assert any("condition 1 (Region = 'EU') failed: Region is 'US'" in s for s in us["steps"]), us["steps"]


@SQLITE_ONLY
def test_openapi_documents_schedules_and_conditions(api):
    doc = api.get("/api/v1/openapi.json").json()
    assert "/api/v1/schedules" in doc["paths"] and "/api/v1/schedules/{schedule_id}" in doc["paths"]
    condition = doc["components"]["schemas"]["ConditionIn"]
    assert {"field", "schedule", "did", "country", "matches", "not"} <= set(condition["properties"])
    assert "at" in doc["components"]["schemas"]["RouteIn"]["properties"]
