"""Real processes sharing one integration's credentials: a running ``crmroute serve`` and 20 CLI runs at once.

Zoho allows 10 access tokens per refresh token in 10 minutes: all of them together stay within it. Vtiger
keeps one live login challenge per user: parallel logins as the same user would fail each other.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.agi.fakeasterisk import call_agi
from tests.connectors.contract import CALLER, STORED_PHONE
from tests.connectors.fakecrm import FakeRecord, VendorFake, serve_vendor
from tests.test_cli import free_port

DID = "5551000"
PROCESSES = 20
TEST_ACTIONS = 4  # of the 20: `crm test` (the Test action logs in anew); the rest `crmroute route` dry runs


@pytest.fixture
def env(data_dir: Path, db_url: str) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CRMROUTE_")}
    return base | {"CRMROUTE_DATA_DIR": str(data_dir), "CRMROUTE_DATABASE_URL": db_url}


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "crmroute", *args]


def import_rules(env: dict, kind: str, settings: dict, secrets: dict, field: str) -> None:
    rules = {
        "integrations": [{"name": "The CRM", "kind": kind, "settings": settings, "secrets": secrets}],
        "destinations": [{"type": "extension", "number": "100"}, {"type": "queue", "number": "103"}],
        "rules": [{"name": "By CRM", "crm_field": field, "location": "did", "crm_source": "integration",
                   "integration": "The CRM", "crm_module": "contacts", "default_destination": "100",
                   "rows": [{"operator": "=", "value": "gold", "destination": "queue", "option": "103"}]}],
        "dids": [{"number": DID, "rule": "By CRM"}],
    }  # fmt: skip
    done = subprocess.run(command("rules", "import", "-", "--format", "json"), env=env, input=json.dumps(rules),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr


def serve(env: dict) -> tuple[subprocess.Popen, int]:
    agi_port, http_port = free_port(), free_port()
    env = env | {"CRMROUTE_AGI_PORT": str(agi_port), "CRMROUTE_HTTP_PORT": str(http_port)}
    process = subprocess.Popen(command("serve"), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started = time.monotonic()
    while process.poll() is None and time.monotonic() - started < 90:  # a loaded machine starts it slowly
        try:
            if httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=5).status_code == 200:
                return process, agi_port
        except httpx.TransportError:
            time.sleep(0.1)
    process.terminate()
    raise AssertionError(f"crmroute serve did not start: {process.communicate(timeout=15)[0]}")


def call(agi_port: int) -> dict[str, str]:
    result = asyncio.run(call_agi(agi_port, "did", env={"extension": DID, "callerid": CALLER}, timeout=30))
    return result.variables


def run_all(env: dict) -> list[subprocess.CompletedProcess]:
    """PROCESSES CLI runs at once; each bounded."""
    dry_run = command("route", "--did", DID, "--caller", CALLER, "--json")
    test = command("crm", "test", "The CRM")
    argvs = [test if i % (PROCESSES // TEST_ACTIONS) == 0 else dry_run for i in range(PROCESSES)]
    running = [(argv, subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
               for argv in argvs]  # fmt: skip
    done = []
    for argv, process in running:
        try:
            out, err = process.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        done.append(subprocess.CompletedProcess(argv, process.returncode, out, err))
    return done


def check(runs: list[subprocess.CompletedProcess]) -> None:
    for run in runs:
        assert run.returncode == 0, (run.args, run.stdout, run.stderr)
        if "route" in run.args:
            trace = json.loads(run.stdout)
            assert trace["status"] == "matched" and trace["value"] == "GOLD", json.dumps(trace)


def scenario(env: dict, fake: VendorFake, kind: str, settings: dict, secrets: dict, field: str, record_id: str) -> None:
    fake.records = [FakeRecord("contacts", record_id, STORED_PHONE, {field: "GOLD"})]
    env = env | {"CRMROUTE_CA_BUNDLE": str(fake.ca_path)}
    import_rules(env, kind, settings, secrets, field)
    process, agi_port = serve(env)
    try:
        assert call(agi_port)["CRMROUTE_STATUS"] == "matched"
        check(run_all(env))
        after = call(agi_port)  # the service still routes with what the others saved or used
        assert after["CRMROUTE_STATUS"] == "matched" and after["CRMROUTE_VALUE"] == "GOLD", after
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert "credentials_refused" not in output and "invalid_grant" not in output, output


def test_zoho_twenty_processes_and_the_service_stay_within_ten_tokens(env, tmp_path):
    from tests.connectors.test_zoho import CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, make_app

    with serve_vendor(make_app, tmp_path) as zoho:
        scenario(env, zoho, "zoho", {"accounts_url": zoho.base_url, "client_id": CLIENT_ID},
                 {"client_secret": CLIENT_SECRET, "refresh_token": REFRESH_TOKEN}, "Customer_Tier",
                 "4150868000000224001")  # fmt: skip
        # One login for the service and the dry runs (the token is stored), one per Test action.
        assert zoho.token_requests <= 1 + TEST_ACTIONS <= 10, zoho.token_requests


def test_vtiger_twenty_processes_and_the_service_never_fail_a_login(env, tmp_path):
    from tests.connectors.test_vtiger import ACCESS_KEY, CONTACT_IDS, USERNAME, make_app

    with serve_vendor(make_app, tmp_path) as vtiger:
        scenario(env, vtiger, "vtiger", {"site_url": vtiger.base_url, "username": USERNAME},
                 {"access_key": ACCESS_KEY}, "cf_851", CONTACT_IDS[0])  # fmt: skip
        assert vtiger.state.get("login_failures", 0) == 0
        assert len(vtiger.state.get("logins", [])) <= 1 + TEST_ACTIONS
