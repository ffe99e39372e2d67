"""Agents in the store and the rules file: identities by integration name, round trip, matching by e-mail."""

from __future__ import annotations

import pytest
import yaml
from sqlalchemy import func, select

from crmroute import rulesfile
from crmroute.connectors.base import CrmUser
from crmroute.errors import ConfigError, Conflict
from crmroute.schemas import AgentIn
from crmroute.store import agents, integrations
from crmroute.store.db import transaction
from crmroute.store.models import AgentIdentity, Integration

ENV = {"ZOHO_SECRET": "zs", "ZOHO_REFRESH": "zr", "HS_TOKEN": "pat-1"}
FILE = """
integrations:
  - name: Main Zoho
    kind: zoho
    settings: {accounts_url: "https://accounts.zoho.eu", api_domain: "https://www.zohoapis.eu", client_id: "1000.X"}
    secrets: {client_secret: "${ZOHO_SECRET}", refresh_token: "${ZOHO_REFRESH}"}
  - name: Hub
    kind: hubspot
    secrets: {access_token: "${HS_TOKEN}"}
agents:
  - name: Olivia Owner
    extension: 201
    identities:
      Main Zoho: "4876876000000111"
      Hub: Olivia.Owner@Example.com
  - name: Bob Busy
    extension: "202"
    devices: [PJSIP/202, Local/202@queue-agents]
    identities:
      Main Zoho: {user_id: "4876876000000222", email: bob@example.com}
"""


def import_text(store, text: str):
    return rulesfile.import_rules(store.factory, store.box, rulesfile.parse(text, environ=ENV))


def export(store) -> dict:
    with store.factory() as session:
        return rulesfile.export_rules(session, store.box)


def test_agents_round_trip_through_the_rules_file(store):
    summary = import_text(store, FILE)
    assert summary.as_dict()["agents"] == {"created": 2, "updated": 0, "unchanged": 0}
    exported = export(store)
    assert exported["agents"] == [
        {"name": "Bob Busy", "extension": "202", "devices": ["PJSIP/202", "Local/202@queue-agents"],
         "identities": {"Main Zoho": {"user_id": "4876876000000222", "email": "bob@example.com"}}},
        {"name": "Olivia Owner", "extension": "201",
         "identities": {"Hub": "Olivia.Owner@Example.com", "Main Zoho": "4876876000000111"}},
    ]  # fmt: skip
    again = import_text(store, yaml.safe_dump(exported))  # the export imports as is (secrets masked: kept)
    assert again.as_dict()["agents"] == {"created": 0, "updated": 0, "unchanged": 2}
    assert export(store)["agents"] == exported["agents"]


def test_an_identity_must_name_an_integration(store):
    text = "agents:\n  - {name: Olivia, extension: 201, identities: {Nowhere CRM: olivia@example.com}}\n"
    with pytest.raises(ConfigError) as caught:
        import_text(store, text)
    assert caught.value.problems == [("agents[0].identities.Nowhere CRM", "no integration named 'Nowhere CRM'")]


@pytest.mark.parametrize(("agent", "field", "message"), [
    ({"extension": "201"}, "agents[0].name", "required"),
    ({"name": "A", "extension": "2 01"}, "agents[0].extension", "use digits, letters and * # + - _ . only"),
    ({"name": "A", "extension": "201", "devices": ["201"]}, "agents[0].devices",
     "'201' is not an Asterisk device such as PJSIP/201 or Local/201@agents"),
    ({"name": "A", "extension": "201", "identities": {"Hub": "not an id"}}, "agents[0].identities.Hub.user_id",
     "a CRM user id has no spaces and no @ (an e-mail goes in email)"),
    ({"name": "A", "extension": "201", "identities": {"Hub": "a@b@c"}}, "agents[0].identities.Hub.email",
     "must be an e-mail address such as olivia.owner@example.com"),
    ({"name": "A", "extension": "201", "identities": {"Hub": {}}}, "agents[0].identities.Hub",
     "give the CRM user id, the e-mail, or both"),
])  # fmt: skip
def test_bad_agents_name_the_field(agent, field, message):
    with pytest.raises(ConfigError) as caught:
        rulesfile.parse(yaml.safe_dump({"agents": [agent]}), environ={})
    assert (field, message) in caught.value.problems


def test_duplicate_names_and_extensions_in_a_file(store):
    text = "agents:\n  - {name: A, extension: 201}\n  - {name: A, extension: 201}\n"
    with pytest.raises(ConfigError) as caught:
        import_text(store, text)
    assert ("agents[1].name", "the same as Agent 1") in caught.value.problems
    assert ("agents[1].extension", "the same as Agent 1") in caught.value.problems


def test_two_agents_may_swap_extensions_in_one_import(store):
    import_text(store, "agents:\n  - {name: A, extension: 201}\n  - {name: B, extension: 202}\n")
    summary = import_text(store, "agents:\n  - {name: A, extension: 202}\n  - {name: B, extension: 201}\n")
    assert summary.as_dict()["agents"] == {"created": 0, "updated": 2, "unchanged": 0}
    assert [(a["name"], a["extension"]) for a in export(store)["agents"]] == [("A", "202"), ("B", "201")]


def test_an_extension_held_by_an_agent_the_file_leaves_alone_is_refused(store):
    import_text(store, "agents:\n  - {name: A, extension: 201}\n")
    with pytest.raises(ConfigError) as caught:
        import_text(store, "agents:\n  - {name: B, extension: 201}\n")
    assert caught.value.problems == [("agents[0].extension", "extension '201' belongs to agent 'A'")]
    assert [a["name"] for a in export(store)["agents"]] == ["A"]  # all or nothing


def test_crud_refuses_duplicates_and_deleting_an_integration_drops_its_identities(store):
    import_text(store, FILE)
    with transaction(store.factory) as session:
        with pytest.raises(Conflict, match="extension '201'"):
            agents.create(session, AgentIn(name="Other", extension="201"))
    with transaction(store.factory) as session:
        hub = session.scalar(select(Integration).where(Integration.name == "Hub"))
        integrations.delete(session, hub.id)
    with transaction(store.factory) as session:
        assert session.scalar(select(func.count()).select_from(AgentIdentity)) == 2  # Hub's one is gone
        olivia = next(a for a in agents.list_all(session) if a.name == "Olivia Owner")
        assert agents.to_data(olivia)["identities"] == {"Main Zoho": "4876876000000111"}


def test_the_directory_resolves_ids_exactly_and_emails_ignoring_case(store):
    import_text(store, FILE)
    with store.factory() as session:
        directory = agents.directory(session)
        zoho = session.scalar(select(Integration.id).where(Integration.name == "Main Zoho"))
        hub = session.scalar(select(Integration.id).where(Integration.name == "Hub"))
        found = agents.resolve(session, "Hub", "olivia.owner@EXAMPLE.com")
    assert directory.resolve(zoho, "4876876000000111").agent.extension == "201"
    assert directory.resolve(zoho, "4876876000000111").by == "user_id"
    assert directory.resolve(hub, "4876876000000111") is None  # ids belong to one integration
    match = directory.resolve(hub, "OLIVIA.OWNER@example.COM")
    assert match.agent.name == "Olivia Owner" and match.by == "email"
    assert match.explain("Olivia Owner") == "Olivia Owner, OLIVIA.OWNER@example.COM → extension 201 (agent Olivia Owner)"
    assert directory.resolve(zoho, email="BOB@example.com").agent.extension == "202"
    assert directory.resolve(zoho, "unknown") is None
    assert found[0].agent.extension == "201"
    assert directory.by_extension("202").watched_devices == ("PJSIP/202", "Local/202@queue-agents")
    assert directory.by_extension("201").watched_devices == ("PJSIP/201",)  # the default device


def test_match_users_records_ids_by_email(store):
    import_text(store, FILE)
    users = [CrmUser("u-olivia", "Olivia Owner", "OLIVIA.owner@example.com"), CrmUser("u-bob", "Bob", "bob@example.com"),
             CrmUser("u-x", "Twin 1", "twin@example.com"), CrmUser("u-y", "Twin 2", "twin@example.com"),
             CrmUser("u-none", "No mail", "")]  # fmt: skip
    with transaction(store.factory) as session:
        agents.create(session, AgentIn.model_validate({"name": "Twin", "extension": "203",
                                                       "identities": {"Main Zoho": "twin@example.com"}}))
        agents.create(session, AgentIn(name="No identity", extension="204"))
        hub = session.scalar(select(Integration).where(Integration.name == "Hub"))
        result = agents.match_users(session, hub, users)
    assert result.users == 5 and result.updated == 2
    assert result.matched == ["Bob, bob@example.com → extension 202 (agent Bob Busy)",
                              "Olivia Owner, OLIVIA.owner@example.com → extension 201 (agent Olivia Owner)"]
    assert result.unmatched_agents == ["Twin (twin@example.com)"]  # two CRM users share the e-mail: nobody
    identities = {a["name"]: a["identities"] for a in export(store)["agents"]}
    assert identities["Olivia Owner"]["Hub"] == {"user_id": "u-olivia", "email": "OLIVIA.owner@example.com"}
    assert identities["Bob Busy"]["Hub"] == {"user_id": "u-bob", "email": "bob@example.com"}
    with transaction(store.factory) as session:  # again: nothing changes
        hub = session.scalar(select(Integration).where(Integration.name == "Hub"))
        assert agents.match_users(session, hub, users).updated == 0
