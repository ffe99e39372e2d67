"""/api/v1/dids: numbers and patterns attached to DID rules."""

from __future__ import annotations

from sqlalchemy import select

from crmroute.store.models import Did
from tests.web.api.conftest import create, fields, rule_body


def test_crud(web, seeded):
    rule = create(seeded, "rules", rule_body())
    create(seeded, "rules", rule_body(name="Other"))
    did = create(seeded, "dids", {"number": "5551000", "rule": "VIP", "name": "Main line"})
    assert did == {"id": did["id"], "number": "5551000", "name": "Main line", "rule": "VIP", "rule_id": rule["id"]}
    pattern = create(seeded, "dids", {"number": "_555XXXX", "rule": "Other"})
    listed = seeded.get("/api/v1/dids").json()
    assert listed["total"] == 2 and {d["number"] for d in listed["items"]} == {"5551000", "_555XXXX"}
    assert [d["number"] for d in seeded.get("/api/v1/dids?search=other").json()["items"]] == ["_555XXXX"]

    url = f"/api/v1/dids/{did['id']}"
    updated = seeded.put(url, json={"number": "+15551000", "rule": "Other"}).json()
    assert updated["number"] == "+15551000" and updated["rule"] == "Other" and updated["name"] == ""
    with web.store.factory() as session:
        assert session.scalar(select(Did.number).where(Did.id == did["id"])) == "+15551000"
    assert seeded.delete(url).status_code == 204
    assert seeded.get(url).json() == {"detail": f"no DID with id {did['id']}"}
    assert seeded.get(f"/api/v1/dids/{pattern['id']}").status_code == 200


def test_bad_input_conflicts_and_references(seeded):
    create(seeded, "rules", rule_body())
    create(seeded, "rules", rule_body(name="Menu", location="ivr"))
    assert "number" in fields(seeded.post("/api/v1/dids", json={"number": "not a number", "rule": "VIP"}))
    assert fields(seeded.post("/api/v1/dids", json={"number": "5551000", "rule": "Nope"})) == {
        "rule": "no rule named 'Nope'"
    }
    assert fields(seeded.post("/api/v1/dids", json={"number": "5551000", "rule": "Menu"})) == {
        "rule": "rule 'Menu' has location ivr, not did"
    }
    create(seeded, "dids", {"number": "5551000", "rule": "VIP"})
    response = seeded.post("/api/v1/dids", json={"number": "5551000", "rule": "VIP"})
    assert response.status_code == 409 and response.json()["detail"] == "a DID numbered '5551000' already exists"
