"""/api/v1/destinations: CRUD, type filter, duplicates, and destinations rules use."""

from __future__ import annotations

from sqlalchemy import select

from crmroute.store.models import Destination
from tests.web.api.conftest import DESTINATIONS, create, fields, rule_body


def test_crud_and_filters(web, api):
    created = create(api, "destinations", DESTINATIONS[0])
    assert created == {"id": created["id"], **DESTINATIONS[0]}
    recording = create(api, "destinations", DESTINATIONS[4])
    assert recording == {"id": recording["id"], "type": "recording", "name": "closed-today"}
    for dest in DESTINATIONS[1:4]:
        create(api, "destinations", dest)
    queues = api.get("/api/v1/destinations", params={"type": "queue"}).json()
    assert queues["total"] == 2 and [d["number"] for d in queues["items"]] == ["103", "104"]
    assert [d["name"] for d in api.get("/api/v1/destinations?search=gold").json()["items"]] == ["Gold support"]
    assert fields(api.get("/api/v1/destinations?type=fax")).keys() == {"type"}

    url = f"/api/v1/destinations/{created['id']}"
    response = api.put(url, json={"type": "extension", "number": "101", "name": "Front desk"})
    assert response.json() == {"id": created["id"], "type": "extension", "number": "101", "name": "Front desk",
                               "voicemail": False}  # fmt: skip
    with web.store.factory() as session:
        assert session.scalar(select(Destination.name).where(Destination.ref == "101")) == "Front desk"
    assert api.delete(url).status_code == 204
    assert api.get(url).json() == {"detail": f"no destination with id {created['id']}"}


def test_bad_input_and_duplicates(api):
    assert fields(api.post("/api/v1/destinations", json={"type": "queue"})) == {
        "number": "required for a destination of type queue"
    }
    assert "type" in fields(api.post("/api/v1/destinations", json={"type": "fax", "number": "1"}))
    create(api, "destinations", DESTINATIONS[1])
    response = api.post("/api/v1/destinations", json=DESTINATIONS[1])
    assert response.status_code == 409 and response.json()["detail"] == "a queue numbered '103' already exists"


def test_destinations_a_rule_uses_are_kept(seeded):
    create(seeded, "rules", rule_body())
    create(seeded, "rules", rule_body(name="Second"))
    items = {(d["type"], d.get("number") or d["name"]): d for d in seeded.get("/api/v1/destinations").json()["items"]}
    queue, extension, spare = items[("queue", "103")], items[("extension", "100")], items[("queue", "104")]
    refused = seeded.delete(f"/api/v1/destinations/{queue['id']}")
    assert refused.status_code == 409
    assert refused.json()["detail"] == "queue '103' is used by rules 'Second' and 'VIP'; point them at another destination first"  # fmt: skip
    assert seeded.delete(f"/api/v1/destinations/{extension['id']}").status_code == 409
    renumbered = seeded.put(f"/api/v1/destinations/{queue['id']}", json={"type": "queue", "number": "110"})
    assert fields(renumbered).keys() == {"number"}
    renamed = seeded.put(f"/api/v1/destinations/{queue['id']}", json={"type": "queue", "number": "103", "name": "VIP"})
    assert renamed.status_code == 200
    assert seeded.delete(f"/api/v1/destinations/{spare['id']}").status_code == 204
