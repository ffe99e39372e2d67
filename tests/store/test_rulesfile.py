"""The rules file: validation by path, all-or-nothing import, idempotency, masked secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select, text

from crmroute import rulesfile
from crmroute.errors import ConfigError
from crmroute.store.models import Destination, Did, Integration, Ivr, Rule
from crmroute.store.secrets import MASK

SAMPLE = (Path(__file__).parent / "sample_rules.yaml").read_text()
ENV = {"ZOHO_SECRET": "zs-very-secret", "ZOHO_REFRESH": "zr-very-secret", "CRM_KEY": "k-very-secret"}
SECRETS = tuple(ENV.values())


def import_text(store, content: str, environ=ENV, fmt=None):
    data = rulesfile.parse(content, environ=environ, fmt=fmt)
    return rulesfile.import_rules(store.factory, store.box, data)


def export(store) -> dict:
    with store.factory() as session:
        return rulesfile.export_rules(session, store.box)


def counts(store) -> dict:
    with store.factory() as session:
        return {m.__tablename__: session.scalar(select(func.count()).select_from(m)) for m in (Integration, Destination, Rule, Did, Ivr)}  # fmt: skip


def test_import_creates_everything(store):
    summary = import_text(store, SAMPLE)
    assert summary.as_dict()["rules"] == {"created": 2, "updated": 0, "unchanged": 0}
    assert counts(store) == {"integrations": 1, "destinations": 4, "rules": 2, "dids": 1, "ivrs": 1}
    data = export(store)
    vip = next(r for r in data["rules"] if r["name"] == "VIP")
    assert vip["rows"][0] == {"operator": "=", "value": "GOLD", "destination": "queue", "option": "103"}
    assert vip["custom_headers"] == [{"name": "X-Api-Key", "value": MASK}]
    accounts = next(r for r in data["rules"] if r["name"] == "Accounts by number")
    assert accounts["greeting"] == "enter-account-number" and accounts["default_voicemail"] == "yes"
    assert data["dids"] == [{"number": "5551000", "rule": "VIP"}]
    assert data["integrations"][0]["secrets"] == {"client_secret": MASK, "refresh_token": MASK}


def test_import_is_idempotent(store):
    import_text(store, SAMPLE)
    first = export(store)
    summary = import_text(store, SAMPLE)
    assert all(c["created"] == 0 and c["updated"] == 0 for c in summary.as_dict().values())
    assert export(store) == first
    assert counts(store)["rules"] == 2


def test_export_round_trips_without_losing_secrets(store):
    import_text(store, SAMPLE)
    exported = rulesfile.dump(export(store), "yaml")
    for secret in SECRETS:
        assert secret not in exported
    summary = import_text(store, exported, environ={})  # masks keep the stored secrets
    assert all(c["updated"] == 0 for c in summary.as_dict().values())
    with store.factory() as session:
        rule = session.scalar(select(Rule).where(Rule.name == "VIP"))
        assert store.box.decrypt_json(rule.custom_headers_enc, []) == [{"name": "X-Api-Key", "value": "k-very-secret"}]
        integration = session.scalar(select(Integration))
        assert store.box.decrypt_json(integration.secrets_enc, {})["refresh_token"] == "zr-very-secret"


def test_json_export_and_import(store):
    import_text(store, SAMPLE)
    exported = rulesfile.dump(export(store), "json")
    assert json.loads(exported)["rules"][0]["name"] == "Accounts by number"
    summary = import_text(store, exported, environ={}, fmt="json")
    assert summary.as_dict()["rules"]["unchanged"] == 2


def test_secrets_are_encrypted_at_rest(store):
    import_text(store, SAMPLE)
    with store.engine.connect() as connection:
        dump = " ".join(
            str(row)
            for table in ("integrations", "rules")
            for row in connection.execute(text(f"SELECT * FROM {table}"))
        )
    for secret in SECRETS:
        assert secret not in dump


def test_changing_a_secret_updates_the_rule(store):
    import_text(store, SAMPLE)
    summary = import_text(store, SAMPLE, environ=ENV | {"CRM_KEY": "rotated"})
    assert summary.as_dict()["rules"] == {"created": 0, "updated": 1, "unchanged": 1}


def test_every_bad_field_is_reported_by_path():
    bad = yaml.safe_load(SAMPLE)
    bad["rules"][0]["custom_url"] = "http://crm.example.com/lookup"
    bad["rules"][0]["rows"][1]["operator"] = "<"
    bad["rules"][0]["rows"][1]["value"] = "SILVER"
    bad["rules"][1]["crm_module"] = ""
    bad["rules"][1]["location"] = "somewhere"
    bad["destinations"][1]["number"] = None
    del bad["rules"][0]["crm_field"]
    with pytest.raises(ConfigError) as caught:
        rulesfile.parse(yaml.safe_dump(bad), environ=ENV)
    fields = dict(caught.value.problems)
    assert fields["rules[0].custom_url"] == "must start with https://"
    assert "number" in fields["rules[0].rows[1].value"]
    assert fields["rules[0].crm_field"] == "required"
    assert "did" in fields["rules[1].location"]
    assert fields["destinations[1].number"].startswith("required")


def test_regex_is_checked_on_save():
    bad = yaml.safe_load(SAMPLE)
    bad["rules"][0]["rows"][0] = {"operator": "regex", "value": "([unclosed", "destination": "queue", "option": "103"}
    with pytest.raises(ConfigError) as caught:
        rulesfile.parse(yaml.safe_dump(bad), environ=ENV)
    assert caught.value.problems[0][0] == "rules[0].rows[0].value"
    assert "regular expression" in caught.value.problems[0][1]


def test_missing_environment_variable_is_named():
    with pytest.raises(ConfigError) as caught:
        rulesfile.parse(SAMPLE, environ={"ZOHO_SECRET": "x", "ZOHO_REFRESH": "y"})
    assert ("rules[0].custom_headers[0].value", "environment variable CRM_KEY is not set") in caught.value.problems


def test_literal_dollar_brace_is_kept():
    data = rulesfile.parse(SAMPLE.replace("${CRM_KEY}", "$${NOT_A_VAR}"), environ=ENV)
    assert data.rules[0].custom_headers[0].value == "${NOT_A_VAR}"


def test_import_is_all_or_nothing(store):
    bad = yaml.safe_load(SAMPLE)
    bad["rules"][0]["rows"][0]["option"] = "999"  # no such queue
    bad["dids"].append({"number": "5552000", "rule": "Nope"})
    with pytest.raises(ConfigError) as caught:
        import_text(store, yaml.safe_dump(bad))
    assert dict(caught.value.problems) == {
        "rules[0].rows[0].option": "no queue '999' among destinations",
        "dids[1].rule": "no rule named 'Nope'",
    }
    assert counts(store) == {"integrations": 0, "destinations": 0, "rules": 0, "dids": 0, "ivrs": 0}


def test_references_may_point_at_stored_objects(store):
    import_text(store, SAMPLE)
    only_did = "dids:\n  - {number: '5553000', rule: VIP}\n"
    summary = import_text(store, only_did)
    assert summary.as_dict()["dids"]["created"] == 1


def test_duplicates_and_wrong_location_are_refused(store):
    bad = yaml.safe_load(SAMPLE)
    bad["rules"].append(dict(bad["rules"][0]))
    bad["ivrs"].append({"number": "8", "rule": "VIP"})
    with pytest.raises(ConfigError) as caught:
        import_text(store, yaml.safe_dump(bad))
    problems = dict(caught.value.problems)
    assert problems["rules[2].name"] == "the same as Rule 1"
    assert problems["ivrs[1].rule"] == "rule 'VIP' has location did, not ivr"


def test_rule_names_repeat_ignoring_case_and_spacing(store):
    twice = yaml.safe_load(SAMPLE)
    twice["rules"].append(dict(twice["rules"][0], name=f"  {twice['rules'][0]['name'].lower()} "))
    with pytest.raises(ConfigError) as caught:
        import_text(store, yaml.safe_dump(twice))
    assert dict(caught.value.problems)["rules[2].name"] == "the same as Rule 1"


def test_not_a_mapping_is_a_clear_error():
    with pytest.raises(ConfigError) as caught:
        rulesfile.parse("- just\n- a list\n")
    assert caught.value.problems[0][0] == "file"
    with pytest.raises(ConfigError):
        rulesfile.parse("rules: [\n", environ={})


@pytest.mark.parametrize("text,fmt", [("", None), ("# nothing yet\n", None), ("{}", None), ("null", "json"), ("{}", "json")])
def test_an_empty_file_is_refused(text, fmt):
    with pytest.raises(ConfigError) as caught:
        rulesfile.parse(text, environ={}, fmt=fmt)
    assert caught.value.problems == [
        ("file", "the file is empty: give at least one of integrations, destinations, rules, dids, ivrs, agents, "
                 "schedules")
    ]
    assert rulesfile.parse("rules: []\n", environ={}).rules == []  # naming a section, even empty, is enough
