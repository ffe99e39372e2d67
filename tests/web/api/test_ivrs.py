"""/api/v1/ivrs: IVR numbers attached to IVR rules."""

from __future__ import annotations

from tests.web.api.conftest import create, fields, rule_body


def test_crud_and_checks(seeded):
    menu = create(seeded, "rules", rule_body(name="Menu", location="ivr", greeting="enter-account"))
    create(seeded, "rules", rule_body())
    ivr = create(seeded, "ivrs", {"number": "7", "rule": "Menu"})
    assert ivr == {"id": ivr["id"], "number": "7", "name": "", "rule": "Menu", "rule_id": menu["id"]}
    assert seeded.get("/api/v1/ivrs").json()["items"] == [ivr]
    assert fields(seeded.post("/api/v1/ivrs", json={"number": "8", "rule": "VIP"})) == {
        "rule": "rule 'VIP' has location did, not ivr"
    }
    duplicate = seeded.post("/api/v1/ivrs", json={"number": "7", "rule": "Menu"})
    assert duplicate.status_code == 409 and duplicate.json()["detail"] == "an IVR numbered '7' already exists"
    url = f"/api/v1/ivrs/{ivr['id']}"
    assert seeded.put(url, json={"number": "8", "rule": "Menu", "name": "Accounts"}).json()["name"] == "Accounts"
    refused = seeded.delete(f"/api/v1/rules/{menu['id']}")
    assert refused.status_code == 409 and refused.json()["detail"] == "rule 'Menu' is used by IVR 8; assign it another rule first"  # fmt: skip
    assert seeded.delete(url).status_code == 204
    assert seeded.get(url).status_code == 404
    assert seeded.delete(f"/api/v1/rules/{menu['id']}").status_code == 204
