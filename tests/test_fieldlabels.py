"""Field paths in the admin's words, and names in any script."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from crmroute.fieldlabels import describe, explain
from crmroute.names import name_key, name_problem, tidy
from crmroute.schemas import RouteIn, RuleIn, problems


@pytest.mark.parametrize(("path", "label"), [
    ("rows[1].option", "Row 2, Destination Option"),
    ("rows[0].value", "Row 1, Value"),
    ("rules[2].rows[0].operator", "Rule 3, Row 1, Operator"),
    ("custom_headers[0].name", "Header 1, Header name"),
    ("settings.client_id", "Client ID"),
    ("secrets.api_token", "API token"),
    ("zoho.client_id", "Zoho, Client ID"),
    ("identities.Zoho Main.email", "CRM identity for Zoho Main, E-mail"),
    ("crm_field", "CRM Field Name"),
    ("", ""),
])  # fmt: skip
def test_describe(path, label):
    assert describe(path) == label


def test_explain_and_plain_pydantic_messages():
    data = {"name": "", "crm_field": "Status", "location": "did", "crm_source": "custom",
            "custom_url": "https://crm.example.com/x", "default_destination": "100", "dtmf_timeout_ms": 10,
            "rows": [{"operator": "=", "value": "A", "destination": "queue", "option": "103"},
                     {"operator": "=", "value": "B", "destination": "queue", "option": ""}]}  # fmt: skip
    with pytest.raises(ValidationError) as caught:
        RuleIn.model_validate(data)
    found = dict(problems(caught.value))
    assert found["name"] == "required"
    assert found["rows[1].option"] == "required for a queue destination"
    assert found["dtmf_timeout_ms"] == "must be 500 or more"
    assert explain("rows[1].option", found["rows[1].option"]) == "Row 2, Destination Option: required for a queue destination"
    with pytest.raises(ValidationError) as caught:
        RouteIn.model_validate({})
    assert problems(caught.value) == [("did", "give exactly one of a DID number, an IVR number or a rule")]


@pytest.mark.parametrize("name", ["Müller VIP", "東京 ルール", "Ελληνικά", "हिन्दी", "VIP-2.b_c", "Ölçü 3"])
def test_names_in_any_script(name):
    assert name_problem(tidy(name)) is None


@pytest.mark.parametrize("name", ["-lead", "a/b", "a@b", "tab\tinside?", "emoji 🚀", "_x"])
def test_names_refused(name):
    assert "letters (any language)" in (name_problem(tidy(name)) or "")


def test_name_key_ignores_case_spacing_and_forms():
    assert tidy("  Müller \t VIP ") == "Müller VIP"
    assert len({name_key(n) for n in ("VIP", "vip", " v i p ".replace(" ", ""), "ＶＩＰ")}) == 1
    assert name_key("Mu\u0308ller  vip") == name_key("MÜLLER VIP")
    assert name_key("Straße") == name_key("STRASSE")
    assert name_key("VIP 1") != name_key("VIP1")
