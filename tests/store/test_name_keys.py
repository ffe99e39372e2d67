"""Names compared ignoring case, spacing and Unicode forms: the 0011 migration and the store's checks."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

from crmroute.errors import Conflict
from crmroute.names import name_key
from crmroute.schemas import DestinationIn, IntegrationIn, RuleIn
from crmroute.store import destinations, integrations, rules
from crmroute.store.db import MIGRATIONS, transaction

RULE = {"crm_field": "Status", "location": "did", "crm_source": "custom", "custom_url": "https://crm.example.com/x",
        "default_destination": "100"}  # fmt: skip


def zoho(name: str) -> IntegrationIn:
    return IntegrationIn.model_validate({"name": name, "kind": "zoho", "settings": {"client_id": "1000.X"},
                                         "secrets": {"client_secret": "s", "refresh_token": "r"}})


@pytest.fixture
def store(store):
    with transaction(store.factory) as session:
        destinations.create(session, DestinationIn(type="extension", number="100"))
    return store


def migrate(url: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        engine.dispose()


def test_migration_keys_names_and_renames_collisions_without_loss(settings):
    url = settings.db_url
    migrate(url, "0010")
    now = datetime.now(timezone.utc)
    engine = create_engine(url)
    with engine.begin() as connection:
        for row_id, name in ((1, "Zoho Main"), (2, "zoho  main"), (3, "Other")):
            connection.execute(text("INSERT INTO integrations (id, name, kind, enabled, settings, secrets_enc, "
                                    "log_options, updated_at) VALUES (:i, :n, 'zoho', true, '{}', '', '{}', :t)"),
                               {"i": row_id, "n": name, "t": now})  # fmt: skip
        # "VIP" is older than "vip" and "ＶＩＰ" (full-width); "vip (2)" already exists and must not be taken
        for row_id, name in ((1, "VIP"), (2, "vip"), (3, "ＶＩＰ"), (4, "vip (2)"), (5, "Müller")):
            connection.execute(text("INSERT INTO rules (id, name, crm_field, location, greeting, dtmf_timeout_ms, "
                                    "dtmf_max_digits, crm_source, integration_id, crm_module, crm_username, "
                                    "crm_password_enc, custom_url, custom_post, custom_headers_enc, "
                                    "default_destination, default_voicemail, keep_company, moh_class, updated_at) "
                                    "VALUES (:i, :n, 'Status', 'did', '', 5000, 10, 'integration', 2, 'accounts', "
                                    "'', '', '', false, '', '100', 'not_set', 'none', 'default', :t)"),
                               {"i": row_id, "n": name, "t": now})  # fmt: skip
    engine.dispose()
    migrate(url, "head")
    engine = create_engine(url)
    with engine.connect() as connection:
        found = dict(connection.execute(text("SELECT id, name FROM rules")).all())
        keys = dict(connection.execute(text("SELECT id, name_key FROM rules")).all())
        integration_names = dict(connection.execute(text("SELECT id, name FROM integrations")).all())
        linked = set(connection.execute(text("SELECT integration_id FROM rules")).scalars())
    engine.dispose()
    assert found == {1: "VIP", 2: "vip (3)", 3: "ＶＩＰ (4)", 4: "vip (2)", 5: "Müller"}  # every row kept
    assert keys == {i: name_key(n) for i, n in found.items()} and len(set(keys.values())) == 5
    assert integration_names == {1: "Zoho Main", 2: "zoho  main (2)", 3: "Other"}
    assert linked == {2}  # references are by id: the renamed integration is still the rules' CRM


def test_names_unique_ignoring_case_spacing_and_forms(store):
    with transaction(store.factory) as session:
        integrations.create(session, store.box, zoho("Zoho Main"))
        rules.create(session, store.box, RuleIn.model_validate(RULE | {"name": "Müller VIP"}))
    for same in ("müller vip", "MÜLLER   VIP", "Mu\u0308ller VIP"):  # the last with a combining diaeresis
        with transaction(store.factory) as session, pytest.raises(Conflict, match="'Müller VIP' already exists"):
            rules.create(session, store.box, RuleIn.model_validate(RULE | {"name": same}))
    with transaction(store.factory) as session, pytest.raises(Conflict, match="ignoring case"):
        integrations.create(session, store.box, zoho("ZOHO main"))
    with transaction(store.factory) as session:  # renaming a rule to another spelling of its own name is fine
        rule = rules.list_all(session)[0]
        rules.update(session, store.box, rule.id, RuleIn.model_validate(RULE | {"name": "MÜLLER vip"}))
    with store.factory() as session:
        assert [r.name for r in rules.list_all(session)] == ["MÜLLER vip"]


def test_rules_file_updates_a_name_spelt_otherwise(store):
    with transaction(store.factory) as session:
        rules.create(session, store.box, RuleIn.model_validate(RULE | {"name": "VIP"}))
    with transaction(store.factory) as session:
        rules.upsert(session, store.box, RuleIn.model_validate(RULE | {"name": "vip", "crm_field": "Tier"}), {})
    with store.factory() as session:
        assert [(r.name, r.crm_field) for r in rules.list_all(session)] == [("vip", "Tier")]
