"""`crmroute agents list|sync`, run as a user runs it, against the Zoho fake's user list."""

from __future__ import annotations

import json

from tests.test_cli import env, run  # noqa: F401


def test_agents_sync_records_the_zoho_user_ids_by_email(env, tmp_path):  # noqa: F811
    from tests.connectors.fakecrm import serve_vendor
    from tests.connectors.test_zoho import CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, make_app

    with serve_vendor(make_app, tmp_path) as zoho:
        zoho.state["users"] = [
            {"id": "4150868000000225013", "full_name": "Olivia Owner", "email": "olivia.owner@example.com", "status": "active"},
            {"id": "4150868000000225014", "full_name": "Bob", "email": "bob@example.com", "status": "active"},
        ]  # fmt: skip
        rules = {"integrations": [{"name": "Zoho EU", "kind": "zoho",
                                   "settings": {"accounts_url": zoho.base_url, "client_id": CLIENT_ID},
                                   "secrets": {"client_secret": CLIENT_SECRET, "refresh_token": REFRESH_TOKEN}}],
                 "agents": [{"name": "Olivia", "extension": "201", "identities": {"Zoho EU": "Olivia.Owner@Example.com"}},
                            {"name": "Nobody", "extension": "299", "identities": {"Zoho EU": "nobody@example.com"}}]}  # fmt: skip
        env = env | {"CRMROUTE_CA_BUNDLE": str(zoho.ca_path)}
        assert run(env, "rules", "import", "-", "--format", "json", stdin=json.dumps(rules)).returncode == 0
        result = run(env, "agents", "sync", "Zoho EU", "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        assert json.loads(result.stdout) == {
            "integration": "Zoho EU", "users": 2, "updated": 1,
            "matched": ["Olivia Owner, olivia.owner@example.com → extension 201 (agent Olivia)"],
            "unmatched_agents": ["Nobody (nobody@example.com)"]}  # fmt: skip
        listed = json.loads(run(env, "agents", "list", "--json").stdout)
        olivia = next(a for a in listed if a["name"] == "Olivia")
        assert olivia["identities"]["Zoho EU"] == {"user_id": "4150868000000225013", "email": "olivia.owner@example.com"}
        text = run(env, "agents", "list").stdout
        assert "Zoho EU: olivia.owner@example.com, user id 4150868000000225013 → extension 201" in text
        assert CLIENT_SECRET not in text
    missing = run(env, "agents", "sync", "Nope")
    assert missing.returncode == 2 and "Integration: no integration named 'Nope'" in missing.stderr
