"""The store's CRUD layer (shared by the API and the UI), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import func, select

from crmroute import rulesfile
from crmroute.errors import ConfigError, Conflict, LicenseError, NotFound
from crmroute.licensing import sign_license
from crmroute.schemas import DestinationIn, DidIn, IntegrationIn, IvrIn, RuleIn
from crmroute.store import assignments, destinations, integrations, licenses, rules
from crmroute.store.db import config_version, transaction
from crmroute.store.models import RuleRow
from crmroute.store.secrets import MASK

DESTS = [
    {"type": "extension", "number": "100", "name": "Reception", "voicemail": True},
    {"type": "queue", "number": "103", "name": "Sales"},
    {"type": "queue", "number": "104", "name": "Support"},
    {"type": "ivr", "number": "5", "name": "Main menu"},
    {"type": "recording", "name": "closed-today"},
]


def vip(**changes) -> RuleIn:
    data = {
        "name": "VIP", "crm_field": "Status", "location": "did", "crm_source": "custom",
        "custom_url": "https://crm.example.com/lookup", "custom_headers": [{"name": "X-Api-Key", "value": "k-secret"}],
        "default_destination": "100",
        "rows": [{"operator": "=", "value": "GOLD", "destination": "queue", "option": "103"}],
    }  # fmt: skip
    data.update(changes)
    return RuleIn.model_validate(data)


def zoho(**changes) -> IntegrationIn:
    data = {"name": "Main Zoho", "kind": "zoho", "settings": {"client_id": "1000.X"},
            "secrets": {"client_secret": "zs-secret", "refresh_token": "zr-secret"}}  # fmt: skip
    data.update(changes)
    return IntegrationIn.model_validate(data)


@pytest.fixture
def seeded(store):
    with transaction(store.factory) as session:
        for d in DESTS:
            destinations.create(session, DestinationIn.model_validate(d))
    return store


def problems_of(caught: pytest.ExceptionInfo[ConfigError]) -> dict[str, str]:
    return dict(caught.value.problems)


# --- rules --------------------------------------------------------------------------


def test_rule_create_get_update_delete(seeded):
    box = seeded.box
    with transaction(seeded.factory) as session:
        before = config_version(session)
        rule = rules.create(session, box, vip())
        rule_id = rule.id
        assert config_version(session) == before + 1
    with seeded.factory() as session:
        public = rules.to_public(rules.get(session, rule_id), box)
    assert public["id"] == rule_id and public["name"] == "VIP"
    assert public["custom_headers"] == [{"name": "X-Api-Key", "value": MASK}]
    assert public["used_by"] == {"dids": [], "ivrs": []}
    assert public["rows"] == [{"operator": "=", "value": "GOLD", "destination": "queue", "option": "103"}]

    with transaction(seeded.factory) as session:  # rename, new rows, header value sent back masked
        changed = vip(name="Gold callers", custom_headers=[{"name": "X-Api-Key", "value": MASK}],
                      rows=[{"operator": "contains", "value": "GOLD", "destination": "recording", "option": "closed-today"},
                            {"operator": "=", "value": "SILVER", "destination": "ivr", "option": "5"}])  # fmt: skip
        rules.update(session, box, rule_id, changed)
    with seeded.factory() as session:
        rule = rules.get(session, rule_id)
        assert rule.name == "Gold callers" and [r.position for r in rule.rows] == [1, 2]
        assert box.decrypt_json(rule.custom_headers_enc, []) == [{"name": "X-Api-Key", "value": "k-secret"}]
        assert session.scalar(select(func.count()).select_from(RuleRow)) == 2  # old rows gone

    with transaction(seeded.factory) as session:
        rules.delete(session, rule_id)
    with seeded.factory() as session:
        with pytest.raises(NotFound, match=f"no rule with id {rule_id}"):
            rules.get(session, rule_id)
        assert session.scalar(select(func.count()).select_from(RuleRow)) == 0


def test_rule_duplicate_name_is_a_conflict(seeded):
    with transaction(seeded.factory) as session:
        rules.create(session, seeded.box, vip())
        other = rules.create(session, seeded.box, vip(name="Other"))
        with pytest.raises(Conflict, match="a rule named 'VIP' already exists"):
            rules.create(session, seeded.box, vip())
        with pytest.raises(Conflict, match="a rule named 'VIP' already exists"):
            rules.update(session, seeded.box, other.id, vip())


def test_rule_references_are_checked_with_relative_paths(seeded):
    bad = vip(crm_source="integration", integration="Nope", crm_module="accounts", default_destination="999",
              rows=[{"operator": "=", "value": "A", "destination": "queue", "option": "103"},
                    {"operator": "=", "value": "B", "destination": "queue", "option": "999"}])  # fmt: skip
    with seeded.factory() as session:
        with pytest.raises(ConfigError) as caught:
            rules.create(session, seeded.box, bad)
    assert problems_of(caught) == {
        "integration": "no integration named 'Nope'",
        "default_destination": "no extension '999' among destinations",
        "rows[1].option": "no queue '999' among destinations",
    }


def test_rule_with_integration_and_password_mask(seeded):
    box = seeded.box
    with transaction(seeded.factory) as session:
        integration = integrations.create(session, box, zoho())
        rule = rules.create(session, box, vip(crm_source="integration", integration="Main Zoho", crm_module="leads",
                                              crm_username="bob", crm_password="pw-secret"))  # fmt: skip
        rule_id, integration_id = rule.id, integration.id
    with transaction(seeded.factory) as session:
        public = rules.to_public(rules.get(session, rule_id), box)
        assert public["crm_password"] == MASK and public["integration"] == "Main Zoho"
        rules.update(session, box, rule_id, RuleIn.model_validate({k: v for k, v in public.items() if k not in ("id", "used_by")}))  # fmt: skip
    with seeded.factory() as session:
        assert box.decrypt(rules.get(session, rule_id).crm_password_enc) == "pw-secret"
        assert integrations.to_public(integrations.get(session, integration_id), box)["used_by"] == {"rules": ["VIP"]}
        with pytest.raises(Conflict, match="integration 'Main Zoho' is used by rule 'VIP'; give it another CRM first"):
            integrations.delete(session, integration_id)


def test_rule_in_use_cannot_be_deleted_or_change_location(seeded):
    with transaction(seeded.factory) as session:
        did_rule = rules.create(session, seeded.box, vip())
        assignments.create_did(session, DidIn(number="5551000", rule="VIP"))
        assignments.create_did(session, DidIn(number="_555XXXX", rule="VIP"))
        ivr_rule = rules.create(session, seeded.box, vip(name="Menu", location="ivr"))
        assignments.create_ivr(session, IvrIn(number="7", rule="Menu"))
        ivr_rule_id, did_rule_id = ivr_rule.id, did_rule.id
    with transaction(seeded.factory) as session:
        assert rules.to_public(rules.get(session, did_rule_id), seeded.box)["used_by"] == {
            "dids": ["5551000", "_555XXXX"], "ivrs": []}  # fmt: skip
        with pytest.raises(Conflict) as caught:
            rules.delete(session, did_rule_id)
        assert str(caught.value) == "rule 'VIP' is used by DIDs 5551000, _555XXXX; assign them another rule first"
        with pytest.raises(Conflict, match="rule 'Menu' is used by IVR 7; assign it another rule first"):
            rules.delete(session, ivr_rule_id)
        with pytest.raises(ConfigError) as caught:
            rules.update(session, seeded.box, ivr_rule_id, vip(name="Menu", location="did"))
        assert problems_of(caught) == {
            "location": "rule 'Menu' is used by IVR 7; assign it another rule before changing the location to did"
        }


def test_rule_search_and_paging(seeded):
    with transaction(seeded.factory) as session:
        for name, field in (("VIP", "Status"), ("accounts", "Account_Name"), ("Billing", "Balance"), ("vip 2", "Tier")):
            rules.create(session, seeded.box, vip(name=name, crm_field=field))
    with seeded.factory() as session:
        total, found = rules.search(session)
        assert total == 4 and [r.name for r in found] == ["accounts", "Billing", "VIP", "vip 2"]
        total, found = rules.search(session, search="vip")
        assert total == 2 and [r.name for r in found] == ["VIP", "vip 2"]
        assert [r.name for r in rules.search(session, search="ACCOUNT_")[1]] == ["accounts"]  # crm_field, any case
        assert rules.search(session, search="did")[0] == 4  # location
        assert rules.search(session, search="%")[0] == 0  # no wildcards
        total, page = rules.search(session, offset=1, limit=2)
        assert total == 4 and [r.name for r in page] == ["Billing", "VIP"]


# --- destinations -------------------------------------------------------------------


def test_destination_crud_and_policy(seeded):
    with transaction(seeded.factory) as session:
        rules.create(session, seeded.box, vip())
        total, found = destinations.search(session, type="queue")
        assert total == 2 and [d.ref for d in found] == ["103", "104"]
        assert [destinations.to_public(d)["name"] for d in destinations.search(session, search="SUPP")[1]] == ["Support"]
        queue = next(d for d in found if d.ref == "103")
        assert destinations.to_public(queue) == {"id": queue.id, "type": "queue", "number": "103", "name": "Sales"}
        with pytest.raises(Conflict, match="a queue numbered '103' already exists"):
            destinations.create(session, DestinationIn(type="queue", number="103"))
        with pytest.raises(Conflict, match="queue '103' is used by rule 'VIP'; point it at another destination first"):
            destinations.delete(session, queue.id)
        with pytest.raises(ConfigError) as caught:
            destinations.update(session, queue.id, DestinationIn(type="queue", number="110", name="Sales"))
        assert list(problems_of(caught)) == ["number"]
        extension = destinations.search(session, type="extension")[1][0]
        with pytest.raises(Conflict, match="extension '100' is used by rule 'VIP'"):
            destinations.delete(session, extension.id)
        updated = destinations.update(session, queue.id, DestinationIn(type="queue", number="103", name="Gold sales"))
        assert updated.name == "Gold sales"
        spare = next(d for d in found if d.ref == "104")
        destinations.update(session, spare.id, DestinationIn(type="queue", number="105"))
        with pytest.raises(Conflict, match="a queue numbered '103' already exists"):
            destinations.update(session, spare.id, DestinationIn(type="queue", number="103"))
        destinations.delete(session, spare.id)
        with pytest.raises(NotFound, match=f"no destination with id {spare.id}"):
            destinations.get(session, spare.id)


# --- DIDs and IVRs ------------------------------------------------------------------


def test_did_and_ivr_crud(seeded):
    with transaction(seeded.factory) as session:
        rules.create(session, seeded.box, vip())
        rules.create(session, seeded.box, vip(name="Menu", location="ivr"))
        did = assignments.create_did(session, DidIn(number="5551000", rule="VIP", name="Main line"))
        ivr = assignments.create_ivr(session, IvrIn(number="7", rule="Menu"))
        assert assignments.did_public(did) == {"id": did.id, "number": "5551000", "name": "Main line", "rule": "VIP",
                                               "rule_id": did.rule_id}  # fmt: skip
        assert assignments.ivr_public(ivr)["rule"] == "Menu"
        with pytest.raises(Conflict, match="a DID numbered '5551000' already exists"):
            assignments.create_did(session, DidIn(number="5551000", rule="VIP"))
        with pytest.raises(Conflict, match="an IVR numbered '7' already exists"):
            assignments.create_ivr(session, IvrIn(number="7", rule="Menu"))
        with pytest.raises(ConfigError) as caught:
            assignments.create_did(session, DidIn(number="5552000", rule="Menu"))
        assert problems_of(caught) == {"rule": "rule 'Menu' has location ivr, not did"}
        with pytest.raises(ConfigError) as caught:
            assignments.update_ivr(session, ivr.id, IvrIn(number="7", rule="Nope"))
        assert problems_of(caught) == {"rule": "no rule named 'Nope'"}
        assignments.update_did(session, did.id, DidIn(number="5551001", rule="VIP"))
        assert assignments.search_dids(session, search="vip")[0] == 1  # by rule name
        assert assignments.search_dids(session, search="1001")[1][0].name == ""
        assignments.delete_did(session, did.id)
        assignments.delete_ivr(session, ivr.id)
        with pytest.raises(NotFound, match=f"no DID with id {did.id}"):
            assignments.get_did(session, did.id)
        with pytest.raises(NotFound, match=f"no IVR with id {ivr.id}"):
            assignments.get_ivr(session, ivr.id)


# --- integrations -------------------------------------------------------------------


def test_integration_crud_and_secret_mask(store):
    box = store.box
    with transaction(store.factory) as session:
        row = integrations.create(session, box, zoho())
        row_id = row.id
        with pytest.raises(Conflict, match="an integration named 'Main Zoho' already exists"):
            integrations.create(session, box, zoho())
    with transaction(store.factory) as session:
        public = integrations.to_public(integrations.get(session, row_id), box)
        assert public["secrets"] == {"client_secret": MASK, "refresh_token": MASK}
        integrations.update(session, box, row_id, zoho(name="Zoho EU", secrets={"client_secret": MASK, "refresh_token": "new"}))  # fmt: skip
    with transaction(store.factory) as session:
        row = integrations.get(session, row_id)
        assert row.name == "Zoho EU"
        assert box.decrypt_json(row.secrets_enc, {}) == {"client_secret": "zs-secret", "refresh_token": "new"}
        assert integrations.search(session, search="zoho")[0] == 1
        integrations.delete(session, row_id)
        with pytest.raises(NotFound):
            integrations.get(session, row_id)


# --- the rules file uses the same checks --------------------------------------------


def test_rules_file_refuses_moving_a_used_rule(seeded):
    with transaction(seeded.factory) as session:
        rules.create(session, seeded.box, vip())
        assignments.create_did(session, DidIn(number="5551000", rule="VIP"))
    moved = vip(location="ivr").model_dump(mode="json")
    data = rulesfile.RulesFile.model_validate({"rules": [moved]})
    with pytest.raises(ConfigError) as caught:
        rulesfile.import_rules(seeded.factory, seeded.box, data)
    assert problems_of(caught) == {
        "rules[0].location": "rule 'VIP' is used by DID 5551000; assign it another rule before changing the location to ivr"
    }
    # ... unless the same file moves the DID to another rule
    other = vip(name="Other").model_dump(mode="json")
    data = rulesfile.RulesFile.model_validate({"rules": [moved, other], "dids": [{"number": "5551000", "rule": "Other"}]})
    assert rulesfile.import_rules(seeded.factory, seeded.box, data).as_dict()["rules"]["updated"] == 1


# --- the license's rule limit ---------------------------------------------------------


def make_license(limit: int, key: Ed25519PrivateKey | None = None) -> tuple[str, str]:
    key = key or Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    text = sign_license({"licensee": "Example Ltd", "features": ["crm_routing"], "limits": {"rules": limit},
                         "issued": date.today() - timedelta(days=1), "expires": None}, key)  # fmt: skip
    return public, text


def test_rule_limit_applies_to_create_and_import(seeded):
    public, text = make_license(2)
    with transaction(seeded.factory) as session:
        with pytest.raises(LicenseError):
            licenses.install(session, text.replace("Example", "Forged"), public)
    with transaction(seeded.factory) as session:
        licenses.install(session, text, public)
        assert licenses.current_state(session, public).status == "valid"
        rules.create(session, seeded.box, vip(), license_key=public)
        rules.create(session, seeded.box, vip(name="Second"))  # no key given: not enforced
    with seeded.factory() as session:
        with pytest.raises(ConfigError) as caught:
            rules.create(session, seeded.box, vip(name="Third"), license_key=public)
        assert problems_of(caught) == {"name": "the license allows at most 2 rules"}
        rules.update(session, seeded.box, rules.search(session, search="VIP")[1][0].id, vip(crm_field="Tier"))  # updates are fine
    data = rulesfile.RulesFile.model_validate({"rules": [vip(name="Second").model_dump(mode="json"),
                                                         vip(name="Third").model_dump(mode="json")]})  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        rulesfile.import_rules(seeded.factory, seeded.box, data, license_key=public)
    assert problems_of(caught) == {"rules[1].name": "the license allows at most 2 rules"}
    assert rulesfile.import_rules(seeded.factory, seeded.box, data).as_dict()["rules"]["created"] == 1  # unenforced
