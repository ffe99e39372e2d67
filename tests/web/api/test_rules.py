"""/api/v1/rules: CRUD, validation paths, secrets, search and paging, the deletion policy."""

from __future__ import annotations

from sqlalchemy import select

from crmroute.store.models import Rule
from crmroute.store.secrets import MASK
from tests.web.api.conftest import HEADER_SECRET, PASSWORD_SECRET, SQLITE_ONLY, create, fields, rule_body


def stored_rule(web, name: str) -> Rule | None:
    with web.store.factory() as session:
        rule = session.scalar(select(Rule).where(Rule.name == name))
        if rule is not None:
            rule.rows  # noqa: B018 (load them before the session closes)
        return rule


def test_create_get_update_delete(web, seeded):
    created = create(seeded, "rules", rule_body())
    assert created == {"id": created["id"], **rule_body(), "custom_post": False,
                       "custom_headers": [{"name": "X-Api-Key", "value": MASK}],
                       "used_by": {"dids": [], "ivrs": []}}  # fmt: skip
    row = stored_rule(web, "VIP")
    assert row is not None and [(r.position, r.option) for r in row.rows] == [(1, "103"), (2, "5")]
    assert web.store.box.decrypt_json(row.custom_headers_enc, []) == [{"name": "X-Api-Key", "value": HEADER_SECRET}]

    url = f"/api/v1/rules/{created['id']}"
    assert seeded.get(url).json() == created
    changed = {k: v for k, v in created.items() if k not in ("id", "used_by")} | {
        "name": "Gold", "rows": [{"operator": "contains", "value": "GOLD", "destination": "recording", "option": "closed-today"}],
    }  # fmt: skip
    response = seeded.put(url, json=changed)
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Gold" and response.json()["rows"][0]["option"] == "closed-today"
    renamed = stored_rule(web, "Gold")
    assert stored_rule(web, "VIP") is None and renamed is not None and len(renamed.rows) == 1
    assert web.store.box.decrypt_json(renamed.custom_headers_enc, [])[0]["value"] == HEADER_SECRET  # mask kept it

    assert seeded.delete(url).status_code == 204
    assert seeded.get(url).status_code == 404
    assert stored_rule(web, "Gold") is None


@SQLITE_ONLY  # request validation: the same on both engines
def test_unknown_ids_are_404(seeded):
    assert seeded.get("/api/v1/rules/999").json() == {"detail": "no rule with id 999"}
    assert seeded.put("/api/v1/rules/999", json=rule_body()).status_code == 404
    assert seeded.delete("/api/v1/rules/999").status_code == 404
    assert fields(seeded.get("/api/v1/rules/99999999999999999999")).keys() == {"rule_id"}  # beyond 64 bits
    assert fields(seeded.get("/api/v1/rules/abc")).keys() == {"rule_id"}
    bad_json = seeded.post("/api/v1/rules", content=b"{oops", headers={"Content-Type": "application/json"})
    assert fields(bad_json)[""].startswith("not valid JSON")


def test_validation_names_each_field(seeded):
    body = rule_body("http://crm.example.com/lookup")
    del body["crm_field"]
    body["rows"] = [
        {"operator": "regex", "value": "([unclosed", "destination": "queue", "option": "103"},
        {"operator": "is about", "value": "x", "destination": "queue", "option": "103"},
        {"operator": "=", "value": "x", "destination": "queue", "option": "999"},
    ]
    problems = fields(seeded.post("/api/v1/rules", json=body))
    assert problems["custom_url"] == "must start with https://"
    assert problems["crm_field"] == "required"
    assert "regular expression" in problems["rows[0].value"]
    assert "rows[1].operator" in problems
    assert not any(f.startswith("body") for f in problems)
    # references are checked once the fields are valid, with the same relative paths
    body = rule_body(default_destination="101")
    body["rows"][1]["option"] = "999"
    assert fields(seeded.post("/api/v1/rules", json=body)) == {
        "default_destination": "no extension '101' among destinations",
        "rows[1].option": "no ivr '999' among destinations",
    }
    problems = fields(seeded.post("/api/v1/rules", json=rule_body(crm_source="integration", integration="Nope", crm_module="leads")))  # fmt: skip
    assert problems == {"integration": "no integration named 'Nope'"}


def test_duplicate_name_is_409(seeded):
    create(seeded, "rules", rule_body())
    response = seeded.post("/api/v1/rules", json=rule_body())
    assert response.status_code == 409 and response.json() == {"detail": "a rule named 'VIP' already exists"}
    other = create(seeded, "rules", rule_body(name="Other"))
    assert seeded.put(f"/api/v1/rules/{other['id']}", json=rule_body()).status_code == 409


def test_secrets_never_come_back(web, seeded):
    integration = create(seeded, "integrations", {"name": "Zoho", "kind": "zoho", "settings": {"client_id": "1000.X"},
                                                         "secrets": {"client_secret": "zs", "refresh_token": "zr"}})
    body = rule_body(crm_source="integration", integration="Zoho", crm_module="accounts",
                     crm_username="bob", crm_password=PASSWORD_SECRET)  # fmt: skip
    created = create(seeded, "rules", body)
    assert created["crm_password"] == MASK and "custom_headers" not in created
    custom = create(seeded, "rules", rule_body(name="Custom"))
    bodies = [seeded.get(f"/api/v1/rules/{r['id']}").text for r in (created, custom)]
    bodies += [seeded.get("/api/v1/rules").text, seeded.get("/api/v1/export").text,
               seeded.get(f"/api/v1/integrations/{integration['id']}").text]  # fmt: skip
    # sending the mask back keeps the password; leaving it out clears it
    back = {k: v for k, v in created.items() if k not in ("id", "used_by")}
    bodies.append(seeded.put(f"/api/v1/rules/{created['id']}", json=back).text)
    for text in bodies:
        assert PASSWORD_SECRET not in text and HEADER_SECRET not in text
    assert web.store.box.decrypt(stored_rule(web, "VIP").crm_password_enc) == PASSWORD_SECRET
    del back["crm_password"]
    assert "crm_password" not in seeded.put(f"/api/v1/rules/{created['id']}", json=back).json()
    assert stored_rule(web, "VIP").crm_password_enc == ""


def test_search_and_paging(seeded):
    for name, field in (("VIP", "Status"), ("accounts", "Account_Name"), ("Billing", "Balance"), ("vip 2", "Tier")):
        create(seeded, "rules", rule_body(name=name, crm_field=field))
    everything = seeded.get("/api/v1/rules").json()
    assert [r["name"] for r in everything["items"]] == ["accounts", "Billing", "VIP", "vip 2"]
    assert (everything["total"], everything["offset"], everything["limit"]) == (4, 0, 50)
    found = seeded.get("/api/v1/rules", params={"search": "VIP"}).json()
    assert found["total"] == 2 and [r["name"] for r in found["items"]] == ["VIP", "vip 2"]
    assert [r["name"] for r in seeded.get("/api/v1/rules?search=account_name").json()["items"]] == ["accounts"]
    page = seeded.get("/api/v1/rules", params={"offset": 1, "limit": 2}).json()
    assert page["total"] == 4 and [r["name"] for r in page["items"]] == ["Billing", "VIP"]
    assert fields(seeded.get("/api/v1/rules?limit=501")).keys() == {"limit"}
    assert fields(seeded.get("/api/v1/rules?limit=0")).keys() == {"limit"}
    assert fields(seeded.get("/api/v1/rules?offset=-1")).keys() == {"offset"}


def test_a_rule_in_use_is_kept(seeded):
    vip = create(seeded, "rules", rule_body())
    menu = create(seeded, "rules", rule_body(name="Menu", location="ivr", greeting="enter-account"))
    create(seeded, "dids", {"number": "5551000", "rule": "VIP"})
    create(seeded, "ivrs", {"number": "7", "rule": "Menu"})
    assert seeded.get(f"/api/v1/rules/{vip['id']}").json()["used_by"] == {"dids": ["5551000"], "ivrs": []}
    refused = seeded.delete(f"/api/v1/rules/{vip['id']}")
    assert refused.status_code == 409
    assert refused.json()["detail"] == "rule 'VIP' is used by DID 5551000; assign it another rule first"
    moved = {k: v for k, v in menu.items() if k not in ("id", "used_by", "greeting")} | {"location": "did"}
    assert fields(seeded.put(f"/api/v1/rules/{menu['id']}", json=moved)) == {
        "location": "rule 'Menu' is used by IVR 7; assign it another rule before changing the location to did"
    }
