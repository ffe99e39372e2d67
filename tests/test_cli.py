"""The crmroute command, run as a user runs it: a subprocess with CRMROUTE_* set."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from crmroute.licensing import sign_license
from tests.connectors.fakecustom import custom_crm, custom_crm_server  # noqa: F401

SAMPLE = Path(__file__).parent / "store" / "sample_rules.yaml"
SECRETS = {"ZOHO_SECRET": "zs-cli-secret", "ZOHO_REFRESH": "zr-cli-secret", "CRM_KEY": "k-cli-secret"}


def run(env: dict, *args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crmroute", *args], env=env, input=stdin, capture_output=True,
                          text=True, timeout=60, cwd=cwd)  # fmt: skip


@pytest.fixture
def env(data_dir: Path, db_url: str) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CRMROUTE_")}
    return base | {"CRMROUTE_DATA_DIR": str(data_dir), "CRMROUTE_DATABASE_URL": db_url}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_db_upgrade(env):
    result = run(env, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout


def test_rules_import_export_round_trip(env):
    result = run(env | SECRETS, "rules", "import", str(SAMPLE))
    assert result.returncode == 0, result.stderr
    assert "rules: 2 created, 0 updated, 0 unchanged" in result.stdout
    again = run(env | SECRETS, "rules", "import", str(SAMPLE))
    assert "rules: 0 created, 0 updated, 2 unchanged" in again.stdout
    exported = run(env, "rules", "export")
    assert exported.returncode == 0
    for secret in SECRETS.values():
        assert secret not in exported.stdout + exported.stderr
    assert "********" in exported.stdout
    as_json = json.loads(run(env, "rules", "export", "--format", "json").stdout)
    assert [r["name"] for r in as_json["rules"]] == ["Accounts by number", "VIP"]
    reimport = run(env, "rules", "import", "-", "--format", "json", stdin=json.dumps(as_json))
    assert reimport.returncode == 0, reimport.stderr
    assert "rules: 0 created, 0 updated, 2 unchanged" in reimport.stdout


def test_rules_import_errors_list_every_field_and_change_nothing(env, tmp_path):
    bad = SAMPLE.read_text().replace('"https://crm.example.com/lookup"', '"http://crm.example.com/lookup"')
    bad = bad.replace("crm_module: accounts", "crm_module: planets")
    path = tmp_path / "bad.yaml"
    path.write_text(bad)
    result = run(env | SECRETS, "rules", "import", str(path))
    assert result.returncode == 2
    # the admin's words (rules counted from 1, fields by their label), then the path in the file
    assert "Rule 1, CRM URL: must start with https:// (rules[0].custom_url)" in result.stderr
    assert "Rule 2, CRM Modules: must be one of accounts, contacts or leads (rules[1].crm_module)" in result.stderr
    assert "Traceback" not in result.stderr
    assert run(env, "rules", "export", "--format", "json").stdout.count('"name"') == 0


def test_rules_import_check_only(env):
    result = run(env | SECRETS, "rules", "import", "--check", str(SAMPLE))
    assert result.returncode == 0 and "nothing was changed" in result.stdout
    assert json.loads(run(env, "rules", "export", "--format", "json").stdout)["rules"] == []


def test_missing_file_and_bad_setting(env):
    result = run(env, "rules", "import", "/nonexistent.yaml")
    assert result.returncode == 2 and "File: cannot read /nonexistent.yaml" in result.stderr
    result = run(env | {"CRMROUTE_AGI_ALLOW": "not-an-address"}, "db", "upgrade")
    assert result.returncode == 2 and "CRMROUTE_AGI_ALLOW" in result.stderr


def test_route_dry_run(env, custom_crm, tmp_path):  # noqa: F811
    rules = SAMPLE.read_text().replace("https://crm.example.com/lookup", custom_crm.url)
    (tmp_path / "rules.yaml").write_text(rules)
    env = env | SECRETS | {"CRMROUTE_CA_BUNDLE": str(custom_crm.ca_path)}
    assert run(env, "rules", "import", str(tmp_path / "rules.yaml")).returncode == 0
    custom_crm.records = {"+15551230001": {"Status": "GOLD"}}
    result = run(env, "route", "--did", "5551000", "--caller", "+15551230001", "--json")
    assert result.returncode == 0, result.stderr
    trace = json.loads(result.stdout)
    assert trace["status"] == "matched" and trace["row"] == 1 and trace["value"] == "GOLD"
    assert trace["destination"] == {"type": "queue", "option": "103"}
    assert trace["jump"] == "crmroute-queue,103,1"
    assert trace["crm_ms"] > 0 and trace["steps"]
    assert custom_crm.last.headers["x-api-key"] == SECRETS["CRM_KEY"]
    text = run(env, "route", "--did", "5551000", "--caller", "+15550000000")
    assert "status:      default (no_value)" in text.stdout
    assert "destination: extension 100" in text.stdout
    nothing = json.loads(run(env, "route", "--did", "999", "--caller", "1", "--json").stdout)
    assert nothing["status"] == "no_rule"


def test_route_at_a_given_time_checks_schedules(env, custom_crm, tmp_path):  # noqa: F811
    rules = {
        "destinations": [{"type": "extension", "number": "100"}, {"type": "queue", "number": "103"},
                         {"type": "recording", "name": "closed-today"}],
        "schedules": [{"name": "Office hours", "timezone": "America/New_York", "hours": {"mon-fri": "09:00-17:00"},
                       "holidays": ["2026-12-25"]}],
        "rules": [{"name": "VIP", "crm_field": "Status", "location": "did", "crm_source": "custom",
                   "custom_url": custom_crm.url, "default_destination": "100",
                   "rows": [{"operator": "=", "value": "GOLD", "destination": "queue", "option": "103",
                             "conditions": [{"schedule": "Office hours"}]},
                            {"operator": "=", "value": "GOLD", "destination": "recording", "option": "closed-today"}]}],
    }  # fmt: skip
    (tmp_path / "rules.json").write_text(json.dumps(rules))
    env = env | {"CRMROUTE_CA_BUNDLE": str(custom_crm.ca_path)}
    assert run(env, "rules", "import", str(tmp_path / "rules.json")).returncode == 0
    custom_crm.records = {"+15551230001": {"Status": "GOLD"}}
    route = ("route", "--rule", "VIP", "--caller", "+15551230001", "--json", "--at")
    assert json.loads(run(env, *route, "2026-03-09T13:00:00Z").stdout)["row"] == 1  # 09:00 EDT
    held = json.loads(run(env, *route, "2026-12-25T15:00:00Z").stdout)
    assert held["row"] == 2 and any("is a holiday" in step for step in held["steps"])
    bad = run(env, *route, "tomorrow")
    assert bad.returncode == 2 and "At: must be an ISO 8601 date and time" in bad.stderr


def make_license(tmp_path: Path, features=("crm_routing",), expires=None, issued_days_ago=1) -> tuple[str, Path]:
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    text = sign_license({"licensee": "Example Ltd", "features": list(features), "limits": {"rules": 10},
                         "issued": date.today() - timedelta(days=issued_days_ago), "expires": expires}, key)  # fmt: skip
    path = tmp_path / "license.json"
    path.write_text(text)
    return public, path


def test_license_install_and_show(env, tmp_path):
    public, path = make_license(tmp_path)
    env = env | {"CRMROUTE_LICENSE_KEY": public}
    shown = run(env, "license", "show")
    assert shown.returncode == 1 and "license: missing" in shown.stdout
    installed = run(env, "license", "install", str(path))
    assert installed.returncode == 0, installed.stderr
    assert "Example Ltd" in installed.stdout
    assert "license: valid; CRM routing enabled" in run(env, "license", "show").stdout
    other, forged = make_license(tmp_path / "..")
    refused = run(env, "license", "install", str(forged))
    assert refused.returncode == 1 and "signature" in refused.stderr


def test_license_install_refuses_an_expired_license(env, tmp_path):
    expired = date.today() - timedelta(days=3)
    public, path = make_license(tmp_path, expires=expired, issued_days_ago=30)
    env = env | {"CRMROUTE_LICENSE_KEY": public}
    refused = run(env, "license", "install", str(path))
    assert refused.returncode == 1 and f"this license expired on {expired.isoformat()}" in refused.stderr
    assert "license: missing" in run(env, "license", "show").stdout  # nothing was installed


def test_serve_opens_both_ports(env, tmp_path):
    agi_port, http_port = free_port(), free_port()
    env = env | {"CRMROUTE_AGI_PORT": str(agi_port), "CRMROUTE_HTTP_PORT": str(http_port)}
    process = subprocess.Popen([sys.executable, "-m", "crmroute", "serve"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        health = None
        started = time.monotonic()
        while process.poll() is None and time.monotonic() - started < 60:  # a loaded machine starts it slowly
            try:
                health = httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert health is not None and health.status_code == 200
        body = health.json()
        assert body["database"] == "ok" and body["agi"] == "listening" and body["status"] == "ok"
        assert body["ready"] is True and body["shared_state"] == "ok" and body["node"].endswith(f":{agi_port}")
        with socket.create_connection(("127.0.0.1", agi_port), timeout=2) as sock:
            sock.sendall(b"agi_network: yes\nagi_network_script: did\nagi_extension: 1\nagi_callerid: 1\n\n")
            reply = sock.recv(1000).decode()
        assert reply.startswith('SET VARIABLE CRMROUTE_STATUS "no_rule"')
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=15)
    assert process.returncode == 0, output
    assert "crmroute user create" in output  # tells the operator how to create the first user


def test_user_and_token_create(env, store_for_env):
    created = run(env, "user", "create", "admin", "--password-stdin", stdin="correct horse\n")
    assert created.returncode == 0, created.stderr
    duplicate = run(env, "user", "create", "admin", "--password-stdin", stdin="correct horse\n")
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr
    short = run(env, "user", "create", "bob", "--password-stdin", stdin="short\n")
    assert short.returncode == 2 and "Password: must be at least 8 characters" in short.stderr
    token = run(env, "token", "create", "admin").stdout.strip()
    assert token.startswith("crt_") and len(token) > 40
    assert run(env, "token", "create", "nobody").returncode == 1

    from sqlalchemy import select

    from crmroute.store.models import ApiToken, User
    from crmroute.store.users import check_password, hash_token

    with store_for_env.factory() as session:
        user = session.scalar(select(User).where(User.username == "admin"))
        assert "correct horse" not in user.password_hash and check_password(user, "correct horse")
        assert session.scalar(select(ApiToken.token_hash)) == hash_token(token)


@pytest.fixture
def store_for_env(settings):
    from crmroute.service import Store

    store = Store(settings)
    yield store
    store.close()


def test_crm_kinds_lists_each_kind_and_its_settings(env):
    from crmroute.connectors import registry

    result = run(env, "crm", "kinds", "--json")
    assert result.returncode == 0, result.stderr
    kinds = {k["kind"]: k for k in json.loads(result.stdout)}
    assert set(kinds) == set(registry()) | {"custom"}
    zoho = {s["name"]: s for s in kinds["zoho"]["settings"]}
    assert zoho["client_secret"] == {"name": "client_secret", "type": "secret", "required": True, "secret": True,
                                     "help": zoho["client_secret"]["help"]} and zoho["client_secret"]["help"]  # fmt: skip
    assert zoho["client_id"]["required"] is True
    text = run(env, "crm", "kinds").stdout
    assert "zoho: Zoho CRM" in text and "client_secret" in text


def test_crm_test_runs_the_integrations_test_action(env, tmp_path):
    from tests.connectors.contract import CALLER, STORED_PHONE
    from tests.connectors.fakecrm import FakeRecord, serve_vendor
    from tests.connectors.test_zoho import CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, make_app

    with serve_vendor(make_app, tmp_path) as zoho:
        zoho.records = [FakeRecord("contacts", "4150868000000224001", STORED_PHONE, {"Customer_Tier": "GOLD"})]
        rules = {"integrations": [{"name": "Zoho EU", "kind": "zoho",
                                   "settings": {"accounts_url": zoho.base_url, "client_id": CLIENT_ID},
                                   "secrets": {"client_secret": CLIENT_SECRET, "refresh_token": REFRESH_TOKEN}}]}  # fmt: skip
        env = env | {"CRMROUTE_CA_BUNDLE": str(zoho.ca_path)}
        assert run(env, "rules", "import", "-", "--format", "json", stdin=json.dumps(rules)).returncode == 0
        result = run(env, "crm", "test", "Zoho EU", "--key", CALLER, "--field", "Customer_Tier", "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads(result.stdout)
        assert report["ok"] and report["record"]["fields"]["Customer_Tier"] == "GOLD"
        text = run(env, "crm", "test", "Zoho EU", "--key", CALLER, "--field", "Customer_Tier")
        assert "ok  authenticate" in text.stdout and "Customer_Tier: GOLD" in text.stdout
        assert CLIENT_SECRET not in text.stdout + text.stderr
        assert zoho.token_requests == 1, "each run took the stored access token"
        zoho.reject_credentials = True  # the refresh token is revoked and the access token with it
        zoho.expire_tokens()
        failed = run(env, "crm", "test", "Zoho EU")
        assert failed.returncode == 1 and "FAIL verify credentials" in failed.stdout
    missing = run(env, "crm", "test", "Nope")
    assert missing.returncode == 2 and "Name: no integration named 'Nope'" in missing.stderr


def test_user_create_without_a_terminal_says_to_use_password_stdin(env):
    result = run(env, "user", "create", "admin", stdin="")  # standard input is a pipe, not a terminal
    assert result.returncode == 2, result.stderr
    assert "Password: no terminal to prompt on: pipe the password in with --password-stdin" in result.stderr
    assert "Traceback" not in result.stderr


STORE_COMMANDS = [
    ("route", "--did", "5551000"), ("user", "create", "admin", "--password-stdin"), ("token", "create", "admin"),
    ("rules", "export"), ("license", "show"), ("crm", "test", "Zoho"), ("agi",), ("web",),
]  # fmt: skip


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_only_serve_and_db_upgrade_create_a_data_directory(env, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    base = {k: v for k, v in env.items() if not k.startswith("CRMROUTE_")}
    for args in STORE_COMMANDS:  # run from another directory: ./data is not there
        result = run(base, *args, stdin="correct horse\n", cwd=elsewhere)
        assert result.returncode == 2, (args, result.stderr)
        assert f"CRMROUTE_DATA_DIR: no data directory at {elsewhere / 'data'}" in result.stderr
        assert "Traceback" not in result.stderr
    assert not (elsewhere / "data").exists()
    assert run(base, "crm", "kinds", cwd=elsewhere).returncode == 0  # needs no store

    upgraded = run(base, "db", "upgrade", cwd=elsewhere)
    assert upgraded.returncode == 0 and f"data directory {elsewhere / 'data'}" in upgraded.stderr
    assert (elsewhere / "data" / "crmroute.db").is_file()
    created = run(base, "user", "create", "admin", "--password-stdin", stdin="correct horse\n", cwd=elsewhere)
    assert created.returncode == 0 and f"data directory {elsewhere / 'data'}" in created.stderr
    token = run(base, "token", "create", "admin", cwd=elsewhere)  # the token alone on standard output
    assert token.returncode == 0 and token.stdout.startswith("crt_") and len(token.stdout.split()) == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_file_errors_are_messages(env, tmp_path):
    deep, binary, latin1 = tmp_path / "deep.json", tmp_path / "rules.yaml.gz", tmp_path / "latin1.yaml"
    deep.write_text("[" * 5000)
    binary.write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03")
    latin1.write_bytes("destinations:\n  - {type: queue, number: '1', name: Caf\xe9}\n".encode("latin-1"))
    large = tmp_path / "large.yaml"
    large.write_bytes(b"#" * (5 * 1024 * 1024 + 1))
    expected = {
        tmp_path / "missing.yaml": "File: cannot read {path}: No such file or directory",
        tmp_path: "File: cannot read {path}: Is a directory",
        deep: "[0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0]: "
              "line 1: nested more than 32 levels deep",
        binary: "File: not text: a NUL byte at offset 3 (a binary or UTF-16 file?)",
        latin1: "File: not UTF-8 text: byte 0xe9 at offset 54",
        large: "File: larger than 5 MB",
    }  # fmt: skip
    for path, message in expected.items():
        result = run(env, "rules", "import", str(path))
        assert result.returncode == 2, result.stderr
        assert f"error: invalid rules file {path}:\n  {message.format(path=path)}\n" in result.stderr
        assert "Traceback" not in result.stderr
    piped = run(env, "rules", "import", "-", stdin="rules: []\nrules: []\n")
    assert piped.returncode == 2
    assert "invalid rules file from standard input:\n  Rules: line 2: duplicate key 'rules'" in piped.stderr
    for path, message in ((binary, "not text: a NUL byte"), (deep, "license file is not JSON"),
                          (tmp_path / "missing.json", "cannot read")):  # fmt: skip
        result = run(env, "license", "install", str(path))
        assert result.returncode in (1, 2) and message in result.stderr and "Traceback" not in result.stderr
    unwritable = run(env, "rules", "export", "-o", str(tmp_path / "missing" / "rules.yaml"))
    assert unwritable.returncode == 2 and "Output: cannot write" in unwritable.stderr
    assert "Traceback" not in unwritable.stderr
