"""Errors in the admin's words: ``message`` names the field by its label and rows from 1; ``field`` stays the path."""

from __future__ import annotations

from tests.web.api.conftest import SQLITE_ONLY, create, rule_body


@SQLITE_ONLY
def test_rule_problems_name_labels_and_rows_from_one(seeded):
    body = rule_body(name="", rows=[{"operator": "=", "value": "GOLD", "destination": "queue", "option": "103"},
                                    {"operator": "=", "value": "X", "destination": "queue", "option": ""}],
                     dtmf_timeout_ms=10)  # fmt: skip
    response = seeded.post("/api/v1/rules", json=body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert {"field": "name", "message": "Name: required"} in detail
    assert {"field": "rows[1].option", "message": "Row 2, Destination Option: required for a queue destination"} in detail
    assert {"field": "dtmf_timeout_ms", "message": "DTMF timeout (ms): must be 500 or more"} in detail
    assert not any("String should" in p["message"] or "Input should" in p["message"] for p in detail)
    stored = seeded.post("/api/v1/rules", json=rule_body(rows=[
        {"operator": "=", "value": "GOLD", "destination": "queue", "option": "103"},
        {"operator": "=", "value": "X", "destination": "queue", "option": "999"}]))  # fmt: skip
    assert stored.json()["detail"] == [{"field": "rows[1].option",
                                        "message": "Row 2, Destination Option: no queue '999' among destinations"}]


@SQLITE_ONLY
def test_integration_settings_by_label(seeded):
    response = seeded.post("/api/v1/integrations", json={"name": "Zoho", "kind": "zoho", "settings": {}})
    assert response.status_code == 422
    assert {"field": "settings.client_id", "message": "Client ID: required"} in response.json()["detail"]


@SQLITE_ONLY
def test_dry_run_target(seeded):
    response = seeded.post("/api/v1/route", json={"caller": "+1555"})
    assert response.json()["detail"] == [
        {"field": "did", "message": "DID number: give exactly one of a DID number, an IVR number or a rule"}]


@SQLITE_ONLY
def test_names_in_any_script_unique_ignoring_case(seeded):
    created = create(seeded, "rules", rule_body(name="Müller VIP"))
    assert created["name"] == "Müller VIP"
    assert create(seeded, "rules", rule_body(name="東京  ルール"))["name"] == "東京 ルール"  # spaces made one
    again = seeded.post("/api/v1/rules", json=rule_body(name="MÜLLER vip"))
    assert again.status_code == 409
    assert again.json() == {"detail": "a rule named 'Müller VIP' already exists "
                                      "(names are the same ignoring case and spacing)"}
    refused = seeded.post("/api/v1/rules", json=rule_body(name="VIP/2"))
    assert refused.status_code == 422 and refused.json()["detail"] == [{"field": "name", "message": (
        "Name: use letters (any language), digits, spaces and - _ . only, starting with a letter or digit")}]
