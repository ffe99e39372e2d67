"""/api/v1/license: state, installing, and the rule limit of an installed license."""

from __future__ import annotations

import json
from datetime import date, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import func, select

from crmroute.licensing import sign_license
from crmroute.store.db import config_version
from crmroute.store.models import License
from tests.web.api.conftest import SQLITE_ONLY, create, fields, rule_body, with_settings


def make_license(key: Ed25519PrivateKey, **changes) -> str:
    payload = {"licensee": "Example Ltd", "features": ["crm_routing"], "limits": {"rules": 1},
               "issued": date.today() - timedelta(days=1), "expires": date.today() + timedelta(days=30)}  # fmt: skip
    return sign_license(payload | changes, key)


def public_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


@SQLITE_ONLY  # request validation: the same on both engines
def test_not_enforced_without_a_key(api):
    assert api.get("/api/v1/license").json() == {
        "status": "not_enforced", "routing_enabled": True,
        "message": "No license key is configured: CRM routing is enabled.",
        "licensee": None, "features": [], "limits": {}, "issued": None, "expires": None,
    }  # fmt: skip


def test_install_and_state_with_a_key(web):
    key = Ed25519PrivateKey.generate()
    api = with_settings(web, license_key=public_hex(key)).api()
    missing = api.get("/api/v1/license").json()
    assert (missing["status"], missing["routing_enabled"]) == ("missing", False)

    forged = make_license(Ed25519PrivateKey.generate())
    assert fields(api.post("/api/v1/license", content=forged, headers={"Content-Type": "application/json"})) == {
        "license": "signature does not match the configured key"
    }
    assert "license" in fields(api.post("/api/v1/license", content=b"{}", headers={"Content-Type": "application/json"}))

    with web.store.factory() as session:
        version = config_version(session)
    text = make_license(key)
    installed = api.post("/api/v1/license", json=json.loads(text))  # the file's JSON object
    assert installed.status_code == 201, installed.text
    state = installed.json()
    assert (state["status"], state["routing_enabled"], state["licensee"]) == ("valid", True, "Example Ltd")
    assert state["features"] == ["crm_routing"] and state["limits"] == {"rules": 1}
    assert state["expires"] == (date.today() + timedelta(days=30)).isoformat()
    assert api.get("/api/v1/license").json() == state
    with web.store.factory() as session:
        assert session.scalar(select(func.count()).select_from(License)) == 1
        assert config_version(session) > version  # AGI workers reload the license

    as_text = api.post("/api/v1/license", content=make_license(key, licensee="Other Ltd"), headers={"Content-Type": "text/plain"})  # fmt: skip
    assert as_text.json()["licensee"] == "Other Ltd"


def test_rule_limit(web):
    key = Ed25519PrivateKey.generate()
    licensed = with_settings(web, license_key=public_hex(key))
    api = licensed.api()
    for dest in ({"type": "extension", "number": "100"}, {"type": "queue", "number": "103"}, {"type": "ivr", "number": "5"}):
        create(api, "destinations", dest)
    assert api.post("/api/v1/license", content=make_license(key), headers={"Content-Type": "text/plain"}).status_code == 201
    create(api, "rules", rule_body())
    assert fields(api.post("/api/v1/rules", json=rule_body(name="Second"))) == {
        "name": "the license allows at most 1 rules"
    }
    rules_file = {"rules": [rule_body(name="Second")]}
    for item in rules_file["rules"]:
        item["custom_headers"] = []
    assert fields(api.post("/api/v1/import", json=rules_file)) == {"rules[0].name": "the license allows at most 1 rules"}
    assert web.api().post("/api/v1/rules", json=rule_body(name="Second")).status_code == 201  # no key: not enforced
