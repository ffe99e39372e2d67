"""/api/v1/rules with owner / last_agent destinations: the fields, their validation, export and import."""

from __future__ import annotations

import yaml

from tests.web.api.conftest import SQLITE_ONLY, create, fields, rule_body

AGENT_ROWS = [{"operator": "=", "value": "VIP", "destination": "owner"},
              {"operator": "not_empty", "value": "", "destination": "last_agent", "option": ""},
              {"operator": "=", "value": "VIP", "destination": "queue", "option": "103"}]  # fmt: skip
OPTIONS = {"default_agent": "last_agent", "check_availability": False, "last_agent_days": 14,
           "last_agent_outbound": True, "last_agent_min_talk_s": 10}  # fmt: skip


def test_agent_rows_and_options_are_stored_and_shown(seeded):
    created = create(seeded, "rules", rule_body(rows=AGENT_ROWS, **OPTIONS))
    assert [(r["destination"], r["option"]) for r in created["rows"]] == [("owner", ""), ("last_agent", ""),
                                                                           ("queue", "103")]  # fmt: skip
    assert {k: created[k] for k in OPTIONS} == OPTIONS
    again = seeded.get(f"/api/v1/rules/{created['id']}").json()
    assert {k: again[k] for k in OPTIONS} == OPTIONS
    plain = create(seeded, "rules", rule_body(name="Plain"))
    assert plain.get("default_agent", "") == "" and plain.get("check_availability", True) is True


@SQLITE_ONLY
def test_bad_agent_fields_are_named(seeded):
    rows = [{"operator": "=", "value": "VIP", "destination": "owner", "option": "103"},
            {"operator": "=", "value": "VIP", "destination": "queue"},
            {"operator": "=", "value": "VIP", "destination": "boss"}]  # fmt: skip
    problems = fields(seeded.post("/api/v1/rules", json=rule_body(rows=rows, default_agent="boss", last_agent_days=0,
                                                                  check_availability="yes")))  # fmt: skip
    assert "leave empty for owner rows" in problems["rows[0].option"]
    assert "required for a queue destination" in problems["rows[1].option"]
    assert "rows[2].destination" in problems
    assert {"default_agent", "last_agent_days", "check_availability"} <= problems.keys()


@SQLITE_ONLY
def test_export_and_import_round_trip(seeded):
    create(seeded, "rules", rule_body(rows=AGENT_ROWS, **OPTIONS))
    exported = yaml.safe_load(seeded.get("/api/v1/export").text)
    rule = next(r for r in exported["rules"] if r["name"] == "VIP")
    assert {k: rule[k] for k in OPTIONS} == OPTIONS
    assert rule["rows"][0] == {"operator": "=", "value": "VIP", "destination": "owner", "option": ""}
    again = seeded.post("/api/v1/import", content=yaml.safe_dump(exported),
                        headers={"Content-Type": "application/yaml"})  # fmt: skip
    assert again.status_code == 200, again.text
    assert again.json()["rules"]["unchanged"] == 1


def test_openapi_documents_the_agent_types(seeded):
    schema = seeded.get("/api/v1/openapi.json").json()["components"]["schemas"]
    row = schema["RowIn"]["properties"]["destination"]
    assert {"owner", "last_agent"} <= set(row.get("enum", []))
    assert {"default_agent", "check_availability", "last_agent_days", "last_agent_outbound",
            "last_agent_min_talk_s"} <= set(schema["RuleIn"]["properties"])  # fmt: skip
    assert "agent" in schema["RouteResult"]["properties"]
