"""API test fixtures: the app trusts the fake Custom CRM's CA; helpers to seed destinations and rules."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from crmroute.fieldlabels import describe
from crmroute.settings import Settings
from crmroute.web.app import create_app
from tests.conftest import make_settings
from tests.web.conftest import Web

DESTINATIONS = [
    {"type": "extension", "number": "100", "name": "Reception", "voicemail": True},
    {"type": "queue", "number": "103", "name": "Gold support"},
    {"type": "queue", "number": "104", "name": "Sales"},
    {"type": "ivr", "number": "5", "name": "Main menu"},
    {"type": "recording", "name": "closed-today"},
]
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
HEADER_SECRET = "hdr-value-never-shown"
PASSWORD_SECRET = "pw-value-never-shown"


@pytest.fixture
def settings(data_dir: Path, db_url: str, custom_crm) -> Settings:  # overrides tests/conftest.py's
    """The store's settings, trusting the fake Custom CRM's CA so dry runs reach it."""
    return make_settings(data_dir, db_url, ca_bundle=str(custom_crm.ca_path))


@pytest.fixture
def api(web: Web) -> Iterator[TestClient]:
    """``web.api()`` kept open: one event loop for all its requests, as under uvicorn (the router's
    shared HTTP client keeps connections to the fake CRM bound to the loop that opened them)."""
    with web.api() as client:
        yield client


@pytest.fixture
def seeded(api: TestClient) -> TestClient:
    """The API client, with the destinations every sample rule needs."""
    for dest in DESTINATIONS:
        response = api.post("/api/v1/destinations", json=dest)
        assert response.status_code == 201, response.text
    return api


def rule_body(url: str = "https://crm.example.com/lookup", **changes: Any) -> dict:
    body = {
        "name": "VIP", "crm_field": "Status", "location": "did", "crm_source": "custom", "custom_url": url,
        "custom_headers": [{"name": "X-Api-Key", "value": HEADER_SECRET}],
        "default_destination": "100", "default_voicemail": "not_set",
        "rows": [{"operator": "=", "value": "GOLD", "destination": "queue", "option": "103"},
                 {"operator": "=", "value": "SILVER", "destination": "ivr", "option": "5"}],
    }  # fmt: skip
    body.update(changes)
    return body


def create(client: TestClient, resource: str, body: dict) -> dict:
    response = client.post(f"/api/v1/{resource}", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def fields(response) -> dict[str, str]:
    """``{field: message}`` of a 422 answer, each message checked to start with its field's label (which is cut)."""
    assert response.status_code == 422, response.text
    found = {}
    for problem in response.json()["detail"]:
        label = describe(problem["field"])
        prefix = f"{label}: " if label else ""
        assert problem["message"].startswith(prefix), problem
        found[problem["field"]] = problem["message"].removeprefix(prefix)
    return found


def with_settings(web: Web, **changes: Any) -> Web:
    """The same store and token behind an app built with other settings (e.g. a license key)."""
    settings = dataclasses.replace(web.app.state.settings, **changes)
    return Web(create_app(settings, web.store, router=web.app.state.router), web.store, web.token)
